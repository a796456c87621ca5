"""The background state server: start it detached, find it, check it, stop it.

``start`` runs ``python -m devinit serve ...`` (with this interpreter) detached from the
terminal: a new session on POSIX, ``DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP`` on Windows
(no fork, no POSIX-only signals there). A pid file (JSON: pid, ports, start time, command
line, log file) in ``paths.state_dir()`` lets ``status`` report it and lets us tell a stale
file (process gone, or the pid reused by another program) from a live server. Its output goes
to a log file in ``paths.log_dir()``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devinit import paths
from devinit.atomic import write_atomic
from devinit.errors import DaemonError

HEALTH_PATH = "/v1.0/healthz/outbound"

# Windows process-creation flags (values from the Win32 API; subprocess only defines them there).
DETACHED_PROCESS = 0x00000008
CREATE_NEW_PROCESS_GROUP = 0x00000200


@dataclass
class ServerRecord:
    """What the pid file says about a background server."""

    pid: int
    http_port: int
    grpc_port: int
    started_at: float  # seconds since the epoch
    argv: list[str]
    log_file: str
    components: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@dataclass
class ServerStatus:
    """A background server as found now."""

    record: ServerRecord | None
    running: bool  # the recorded pid is alive and is our server
    healthy: bool  # it answers /v1.0/healthz/outbound with 204
    stale: bool  # a pid file exists but its process is gone or is another program
    pid_file: Path

    @property
    def uptime(self) -> float | None:
        """Seconds since it started, when it runs."""
        return max(0.0, time.time() - self.record.started_at) if self.running and self.record else None


def pid_file(key: str) -> Path:
    """The pid file of the server for the home folder named by ``key``."""
    return paths.state_dir() / f"server-{key}.json"


def log_file(key: str) -> Path:
    """The log file of the server for the home folder named by ``key``."""
    return paths.log_dir() / f"server-{key}.log"


def server_argv(components: Path, http_port: int, grpc_port: int) -> list[str]:
    """The command line of the background server."""
    return [
        sys.executable,
        "-m",
        "devinit",
        "serve",
        "--components-path",
        str(components),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
    ]


def popen_kwargs(platform: str | None = None) -> dict[str, Any]:
    """How to detach the server from the terminal on ``platform`` (``sys.platform`` when None)."""
    if (platform or sys.platform) == "win32":
        # No fork on Windows: a detached process in its own group does not get the console's
        # Ctrl-C and does not die with the terminal window.
        return {"creationflags": DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP}
    # A new session: no controlling terminal, no SIGHUP when the shell exits.
    return {"start_new_session": True}


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def start(key: str, components: Path, http_port: int, grpc_port: int, timeout: float = 30.0) -> ServerRecord:
    """Start the server in the background and wait until it is healthy.

    DaemonError (with the last log lines) when a port is taken or it does not come up; then
    nothing is left running and the pid file is removed.
    """
    for name, port, option in (("HTTP", http_port, "--http-port"), ("gRPC", grpc_port, "--grpc-port")):
        if _port_in_use(port):
            raise DaemonError(
                f"the {name} port {port} is already in use on 127.0.0.1 by another program. "
                f"Stop it, or pass {option} with a free port"
            )
    argv = server_argv(components, http_port, grpc_port)
    log_path = log_file(key)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    paths.state_dir().mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"--- devinit: starting {' '.join(argv)} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
                cwd=str(paths.state_dir()),  # not the user's cwd: never hold a folder they may delete
                **popen_kwargs(),
            )
        except OSError as e:
            raise DaemonError(f"could not start the state server ({argv[0]}): {e}. Check your Python installation") from None
    record = ServerRecord(proc.pid, http_port, grpc_port, time.time(), argv, str(log_path), str(components))
    write_atomic(pid_file(key), json.dumps(asdict(record), indent=2).encode())
    try:
        return _wait_healthy(proc, key, record, log_path, timeout)
    except BaseException:
        # Ctrl-C or an error while waiting: leave no half-started server behind.
        if proc.poll() is None:
            _terminate(proc.pid, 5.0)
        pid_file(key).unlink(missing_ok=True)
        raise


def _wait_healthy(proc: subprocess.Popen[bytes], key: str, record: ServerRecord, log_path: Path, timeout: float) -> ServerRecord:
    http_port = record.http_port
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            pid_file(key).unlink(missing_ok=True)
            raise DaemonError(
                f"the state server exited with code {code} right after starting. Its last log lines:\n"
                f"{tail(log_path)}\nFix what they say and run devinit init again"
            )
        if health(http_port):
            return record
        if time.monotonic() >= deadline:
            _terminate(proc.pid, 5.0)
            pid_file(key).unlink(missing_ok=True)
            raise DaemonError(
                f"the state server did not answer {HEALTH_PATH} on port {http_port} within {timeout:.0f}s; "
                f"it was stopped. Its last log lines:\n{tail(log_path)}\nSee {log_path}"
            )
        time.sleep(0.1)


def health(http_port: int, timeout: float = 2.0) -> bool:
    """True when the server on ``http_port`` answers ``/v1.0/healthz/outbound`` with 204."""
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{http_port}{HEALTH_PATH}", timeout=timeout).status_code == 204
    except httpx.HTTPError:
        return False


def metadata(http_port: int, token: str | None = None, timeout: float = 5.0) -> dict[str, Any] | None:
    """The server's ``/v1.0/metadata`` document (with each store's health), or None if it does not answer."""
    import httpx

    headers = {"dapr-api-token": token} if token else {}
    try:
        r = httpx.get(f"http://127.0.0.1:{http_port}/v1.0/metadata", headers=headers, timeout=timeout)
        doc = r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_record(key: str) -> ServerRecord | None:
    """The pid file's record, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(pid_file(key).read_text(encoding="utf-8"))
        return ServerRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def pid_alive(pid: int, platform: str | None = None) -> bool:
    """True when process ``pid`` exists and has not exited (zombies count as exited)."""
    if pid <= 0:
        return False
    if (platform or sys.platform) == "win32":
        return _win_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    stat = Path(f"/proc/{pid}/stat")
    try:
        # The state letter follows the ")" closing the command name; Z = exited, not reaped.
        return stat.read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) is all we know


def _win_pid_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]  # windll exists on Windows only
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    try:
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def is_our_process(record: ServerRecord) -> bool:
    """True when the recorded pid is alive and still runs the recorded command.

    A reused pid is told apart by its command line where the OS shows it (/proc); elsewhere a
    live pid counts as ours only if the recorded port answers as a devinit server does.
    """
    if not pid_alive(record.pid):
        return False
    cmdline = Path(f"/proc/{record.pid}/cmdline")
    try:
        argv = [a for a in cmdline.read_bytes().decode("utf-8", "replace").split("\0") if a]
    except OSError:
        return health(record.http_port)
    return argv == record.argv


def find(key: str) -> ServerStatus:
    """The background server for ``key``: running? healthy? a stale pid file?"""
    record = read_record(key)
    path = pid_file(key)
    if record is None:
        return ServerStatus(None, False, False, path.exists(), path)
    running = is_our_process(record)
    return ServerStatus(record, running, running and health(record.http_port), not running, path)


def stop(key: str, timeout: float = 10.0) -> ServerRecord | None:
    """Stop the background server; returns its record when one was running, else None.

    A stale pid file is removed. DaemonError when the process survives the kill.
    """
    status = find(key)
    if status.record is None or not status.running:
        status.pid_file.unlink(missing_ok=True)
        return None
    _terminate(status.record.pid, timeout)
    if pid_alive(status.record.pid):
        raise DaemonError(
            f"the state server (pid {status.record.pid}) did not stop. "
            f"End it by hand (kill {status.record.pid}, or Task Manager on Windows) and run the command again"
        )
    status.pid_file.unlink(missing_ok=True)
    return status.record


def _terminate(pid: int, timeout: float, platform: str | None = None) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` (POSIX); TerminateProcess on Windows."""
    windows = (platform or sys.platform) == "win32"
    try:
        # On Windows os.kill with SIGTERM is TerminateProcess: immediate, no POSIX signals.
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError, OSError):
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid, platform) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not windows and pid_alive(pid, platform):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            return
        end = time.monotonic() + 5
        while pid_alive(pid, platform) and time.monotonic() < end:
            time.sleep(0.05)


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ('' when it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])
