"""Write files devinit owns atomically: a temp file beside the target, then ``os.replace``.

A reader (or a crash) never sees a half-written file, and the mode is set before the content
lands, so a secret is never readable by others even for a moment.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step; the file gets ``mode`` (POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)  # mkstemp already makes it 0600; be explicit
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if not hasattr(os, "fchmod"):
        os.chmod(path, mode)  # Windows: only the read-only bit means anything
