"""Write files devinit owns atomically: a temp file beside the target, then ``os.replace``.

A reader (or a crash) never sees a half-written file, and the protection is set before the
content lands, so a secret is never readable by others even for a moment:

- POSIX: the mode (0600 for secrets) on the temp file.
- Windows: ``chmod`` only sets the read-only bit, so a secret file (mode without group/other
  bits) gets an owner-only ACL instead: inherited entries removed, full control for the
  current user alone (``icacls /inheritance:r /grant:r *<SID>:(F)``). Where that cannot be
  done the write still happens and the caller gets a warning to show.

``os.replace`` over a file that another program holds open (an editor, a sync tool, antivirus
on Windows) fails with PermissionError; it is retried for about 1.5 s, then reported as a
``FileWriteError`` that says what to do.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devinit.errors import FileWriteError

#: waits between attempts of ``os.replace`` (seconds): ~1.5 s in all
REPLACE_RETRIES = (0.05, 0.1, 0.2, 0.4, 0.8)


def write_atomic(path: Path, data: bytes, mode: int = 0o600, platform: str | None = None) -> list[str]:
    """Replace ``path`` with ``data`` in one step, protected as ``mode`` says (see the module).

    Returns warnings for the user (empty unless a Windows ACL could not be set).
    """
    windows = (platform or sys.platform) == "win32"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    warnings: list[str] = []
    try:
        with os.fdopen(fd, "wb") as f:
            if not windows:
                os.fchmod(f.fileno(), mode)  # mkstemp already makes it 0600; be explicit
            elif not mode & 0o077:
                why = protect_owner_only(Path(tmp))
                if why is not None:
                    warnings.append(f"{path} could not be made readable by you alone ({why}); it holds a secret")
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return warnings


def _replace(tmp: str, path: Path) -> None:
    for delay in (*REPLACE_RETRIES, None):
        try:
            os.replace(tmp, path)
            return
        except PermissionError as e:
            if delay is None:
                raise FileWriteError(
                    f"could not replace {path}: {e.strerror or e}. Another program may hold it open "
                    "(an editor, a sync tool, antivirus): close it and run the command again"
                ) from None
            time.sleep(delay)


def owner_only_acl_command(path: Path, sid: str) -> list[str]:
    """The icacls command that leaves ``path`` with one ACL entry: full control for ``sid``."""
    # /inheritance:r drops the entries inherited from the folder (a new file has only those);
    # /grant:r replaces any explicit grant to the SID. The owner keeps the right to change it.
    return ["icacls", str(path), "/inheritance:r", "/grant:r", f"*{sid}:(F)", "/q"]


def parse_whoami_sid(output: str) -> str | None:
    """The SID in ``whoami /user /fo csv /nh`` output (``"DOMAIN\\user","S-1-5-21-..."``)."""
    found = re.search(r"\bS-1-\d+(?:-\d+)+\b", output)
    return found.group(0) if found else None


@functools.cache
def current_user_sid() -> str | None:
    """The current Windows user's SID (from ``whoami``), or None."""
    try:
        out = subprocess.run(["whoami", "/user", "/fo", "csv", "/nh"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_whoami_sid(out.stdout.decode("utf-8", "replace")) if out.returncode == 0 else None


def protect_owner_only(path: Path) -> str | None:
    """Give ``path`` an owner-only ACL (Windows); None when done, else why not."""
    sid = current_user_sid()
    if sid is None:
        return "whoami did not tell the current user's SID"
    try:
        out = subprocess.run(owner_only_acl_command(path, sid), capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"icacls could not run: {e}"
    if out.returncode != 0:
        return "icacls failed: " + (out.stdout + out.stderr).decode("utf-8", "replace").strip()
    return None
