"""The background state server: start it detached, find it, check it, stop it.

``start`` runs ``python -m devinit serve ...`` detached from the terminal: a new session on
POSIX; on Windows ``CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP`` and the real interpreter
rather than a venv's redirector (``server_interpreter``), so that no console window opens and
the recorded pid is the server's. The server writes its own pid into
``paths.server_pid_file`` once it listens; a record (JSON: pid, ports, start time, the
process's start time as the OS reports it, command line, log file) in
``paths.server_record`` lets ``status`` report it and tells a stale record (process gone, or
the pid reused by another program) from a live server. Its output goes to a UTF-8 log in
``paths.log_dir()``.

``stop`` asks the server to shut down through Dapr's ``POST /v1.0/shutdown`` first (so that
requests in flight finish and stores close, also on Windows where a signal would be
TerminateProcess), and only then terminates it.

devinit's own calls to the server never go through a proxy (``trust_env=False``): a system
proxy without its bypass list would otherwise receive them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from devinit import paths, ports
from devinit.atomic import write_atomic
from devinit.errors import DaemonError

HEALTH_PATH = "/v1.0/healthz/outbound"
SHUTDOWN_PATH = "/v1.0/shutdown"

# Windows process-creation flags (values from the Win32 API; subprocess only defines them there).
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000

PROC = Path("/proc")

#: Children this process started and has not reaped yet, by pid: polling them reaps them, so a
#: child that exited is not taken for alive where only ``kill(pid, 0)`` is available (macOS).
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass
class ServerRecord:
    """What the record file says about a background server."""

    pid: int
    http_port: int
    grpc_port: int
    started_at: float  # seconds since the epoch
    argv: list[str]
    log_file: str
    components: str
    process_start: str | None = None  # the OS's start time of ``pid`` (opaque; None: not known)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerRecord:
        """A record from its JSON form; keys it does not know are ignored (newer devinit)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ServerStatus:
    """A background server as found now."""

    record: ServerRecord | None
    running: bool  # the recorded pid is alive and is our server
    healthy: bool  # it answers /v1.0/healthz/outbound with 204
    stale: bool  # a record exists but its process is gone or is another program
    pid_file: Path

    @property
    def uptime(self) -> float | None:
        """Seconds since it started, when it runs."""
        return max(0.0, time.time() - self.record.started_at) if self.running and self.record else None


# --- how the server is started ----------------------------------------------------------------


@dataclass(frozen=True)
class Interpreter:
    """The Python that runs the server, and the environment it needs on top of ours."""

    executable: str
    env: dict[str, str]


def server_interpreter(
    platform: str | None = None,
    executable: str | None = None,
    base_executable: str | None = None,
    prefix: str | None = None,
    base_prefix: str | None = None,
) -> Interpreter:
    """The interpreter for the server on ``platform`` (defaults: this process's values).

    On Windows a venv's ``Scripts\\python.exe`` (also pipx's and uv's) is a redirector that
    starts the real interpreter as its child: detached, that child opens a console window of
    its own, and the redirector's pid is not the server's (cpython gh-85785). So start the
    real interpreter (``sys._base_executable``, else the ``home`` of the venv's
    ``pyvenv.cfg``) with ``__PYVENV_LAUNCHER__`` naming the venv's python.exe: that is what
    the redirector itself does, and CPython then takes the venv's ``sys.prefix`` and
    ``site-packages`` (``.pth`` files included), as multiprocessing does.
    """
    platform = platform or sys.platform
    executable = executable or sys.executable
    prefix = prefix if prefix is not None else sys.prefix
    base_prefix = base_prefix if base_prefix is not None else sys.base_prefix
    if platform != "win32" or prefix == base_prefix:
        return Interpreter(executable, {})
    base = base_executable if base_executable is not None else getattr(sys, "_base_executable", None)
    if not base or _same_file(base, executable) or not Path(base).is_file():
        base = _base_from_pyvenv_cfg(Path(prefix), Path(executable).name)
    if base is None:
        # No real interpreter found: the redirector it is; the server still writes its own
        # pid, so the record names the right process.
        return Interpreter(executable, {})
    return Interpreter(base, {"__PYVENV_LAUNCHER__": executable, "VIRTUAL_ENV": prefix})


def _same_file(a: str, b: str) -> bool:
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def _base_from_pyvenv_cfg(venv: Path, exe_name: str) -> str | None:
    """The real interpreter named by ``<venv>/pyvenv.cfg``: ``executable`` (venv, 3.11+) or ``home``."""
    try:
        lines = (venv / "pyvenv.cfg").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    cfg = {k.strip().lower(): v.strip() for k, sep, v in (line.partition("=") for line in lines) if sep}
    candidates = [cfg.get("executable", ""), cfg.get("base-executable", "")]
    if cfg.get("home"):
        candidates += [str(Path(cfg["home"]) / exe_name), str(Path(cfg["home"]) / "python.exe")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def server_argv(python: str, components: Path, http_port: int, grpc_port: int, pid_file: Path) -> list[str]:
    """The command line of the background server."""
    return [
        python,
        "-m",
        "devinit",
        "serve",
        "--components-path",
        str(components),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--pid-file",
        str(pid_file),
    ]


def popen_kwargs(platform: str | None = None) -> dict[str, Any]:
    """How to detach the server from the terminal on ``platform`` (``sys.platform`` when None)."""
    if (platform or sys.platform) == "win32":
        # No fork on Windows. CREATE_NO_WINDOW: the console program gets a console without a
        # window (DETACHED_PROCESS would leave a venv redirector's child to open a visible one,
        # and closing that window would kill the server); its own process group keeps the
        # terminal's Ctrl-C away from it.
        return {"creationflags": CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP}
    # A new session: no controlling terminal, no SIGHUP when the shell exits.
    return {"start_new_session": True}


def child_env(interpreter: Interpreter, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ours, the interpreter's additions, and UTF-8 for its log.

    Without UTF-8 mode Windows writes stderr in the ANSI code page, and the log would be read
    back (as UTF-8) with a non-ASCII path or component name garbled.
    """
    env = dict(os.environ if base is None else base)
    env.update(interpreter.env)
    env["PYTHONUTF8"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"  # wins over PYTHONUTF8 for stdio: set it too
    return env


# --- start ------------------------------------------------------------------------------------


def start(
    key: str,
    components: Path,
    http_port: int,
    grpc_port: int,
    timeout: float = 30.0,
) -> ServerRecord:
    """Start the server in the background and wait until it is healthy.

    DaemonError (with the last log lines) when a port is taken or it does not come up; then
    nothing is left running and the record is removed.
    """
    for name, port, option in (("HTTP", http_port, "--http-port"), ("gRPC", grpc_port, "--grpc-port")):
        state = ports.probe(port)
        if state is ports.PortState.RESERVED:
            raise DaemonError(f"the {name} port {port} cannot be used: {ports.refusal(port, option)}")
        if state is ports.PortState.IN_USE:
            raise DaemonError(
                f"the {name} port {port} is already in use on 127.0.0.1 by another program. "
                f"Stop it, or pass {option} with a free port"
            )
    interpreter = server_interpreter()
    own_pid_file = paths.server_pid_file(key)
    argv = server_argv(interpreter.executable, components, http_port, grpc_port, own_pid_file)
    log_path = paths.server_log(key)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    paths.state_dir().mkdir(parents=True, exist_ok=True)
    own_pid_file.unlink(missing_ok=True)
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
                env=child_env(interpreter),
                **popen_kwargs(),
            )
        except OSError as e:
            raise DaemonError(f"could not start the state server ({argv[0]}): {e}. Check your Python installation") from None
    _children[proc.pid] = proc
    record = ServerRecord(proc.pid, http_port, grpc_port, time.time(), argv, str(log_path), str(components))
    _write_record(key, record)
    try:
        _wait_healthy(proc, record, log_path, timeout)
        # The pid the server wrote itself (not a launcher's), and its start time as the OS tells it.
        record.pid = _read_own_pid(own_pid_file) or proc.pid
        record.process_start = process_start_time(record.pid)
        _write_record(key, record)
        return record
    except BaseException:
        # Ctrl-C or an error while waiting: leave no half-started server behind.
        own = _read_own_pid(own_pid_file)
        if own is not None and own != proc.pid and pid_alive(own):
            _terminate(own, 5.0)
        if proc.poll() is None:
            _terminate(proc.pid, 5.0)
        paths.server_record(key).unlink(missing_ok=True)
        raise


def _write_record(key: str, record: ServerRecord) -> None:
    write_atomic(paths.server_record(key), json.dumps(asdict(record), indent=2).encode())


def _read_own_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def _wait_healthy(proc: subprocess.Popen[bytes], record: ServerRecord, log_path: Path, timeout: float) -> None:
    http_port = record.http_port
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            raise DaemonError(
                f"the state server exited with code {code} right after starting. Its last log lines:\n"
                f"{tail(log_path)}\nFix what they say and run devinit init again"
            )
        if health(http_port):
            return
        if time.monotonic() >= deadline:
            raise DaemonError(
                f"the state server did not answer {HEALTH_PATH} on port {http_port} within {timeout:.0f}s; "
                f"it was stopped. Its last log lines:\n{tail(log_path)}\nSee {log_path}"
            )
        time.sleep(0.1)


# --- talking to it ------------------------------------------------------------------------------


def health(http_port: int, timeout: float = 2.0) -> bool:
    """True when the server on ``http_port`` answers ``/v1.0/healthz/outbound`` with 204."""
    import httpx

    try:
        url = f"http://127.0.0.1:{http_port}{HEALTH_PATH}"
        return httpx.get(url, timeout=timeout, trust_env=False).status_code == 204
    except httpx.HTTPError:
        return False


def metadata(http_port: int, token: str | None = None, timeout: float = 5.0) -> dict[str, Any] | None:
    """The server's ``/v1.0/metadata`` document (with each store's health), or None if it does not answer."""
    import httpx

    headers = {"dapr-api-token": token} if token else {}
    try:
        r = httpx.get(f"http://127.0.0.1:{http_port}/v1.0/metadata", headers=headers, timeout=timeout, trust_env=False)
        doc = r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def store_health(
    http_port: int, token: str | None = None, fresh_after: float | None = None, timeout: float = 10.0
) -> list[dict[str, Any]] | None:
    """Each store as the server reports it (the ``components`` of ``/v1.0/metadata``).

    With ``fresh_after`` (epoch seconds), waits up to ``timeout`` until every store's health
    comes from a check that began after it (reading the metadata asks the server for one), so
    that a result from before a repair is never shown; then returns what it has. None when the
    server does not answer.
    """
    deadline = time.monotonic() + timeout
    while True:
        meta = metadata(http_port, token)
        if meta is None:
            return None
        comps = [c for c in meta.get("components") or [] if isinstance(c, dict)]
        if fresh_after is None or all(_checked_after(c, fresh_after) for c in comps) or time.monotonic() >= deadline:
            return comps
        time.sleep(0.01)  # the read asked for a ping: it usually lands within a millisecond or two


def _checked_after(component: dict[str, Any], after: float) -> bool:
    health = component.get("health")
    if not isinstance(health, dict):
        return True
    checked = health.get("checked")
    if not isinstance(checked, (int, float)):
        return True  # a server that does not say when (an older devinit): take what it has
    return checked >= after and health.get("status") != "unknown"


def request_shutdown(http_port: int, token: str | None = None, timeout: float = 5.0) -> bool:
    """Ask the server for a graceful shutdown (Dapr's ``POST /v1.0/shutdown``); True when it agreed."""
    import httpx

    headers = {"dapr-api-token": token} if token else {}
    try:
        url = f"http://127.0.0.1:{http_port}{SHUTDOWN_PATH}"
        return httpx.post(url, headers=headers, timeout=timeout, trust_env=False).status_code == 204
    except httpx.HTTPError:
        return False


# --- finding it -------------------------------------------------------------------------------


def read_record(key: str) -> ServerRecord | None:
    """The server record, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(paths.server_record(key).read_text(encoding="utf-8"))
        return ServerRecord.from_dict(data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None


def pid_alive(pid: int, platform: str | None = None, proc: Path | None = None) -> bool:
    """True when process ``pid`` exists and has not exited (zombies count as exited).

    ``proc`` is where /proc is (default ``PROC``); a folder that does not exist stands for a
    system without it (macOS), where ``ps`` tells a zombie.
    """
    if pid <= 0:
        return False
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:  # polling reaps it once it has exited
            return True
        del _children[pid]
        return False
    if (platform or sys.platform) == "win32":
        return _win_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        # The state letter follows the ")" closing the command name; Z = exited, not reaped.
        return ((proc or PROC) / str(pid) / "stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        pass
    state = _ps(pid, "stat")  # no /proc (macOS)
    return state is None or not state.startswith("Z")


def process_start_time(pid: int, platform: str | None = None, proc: Path | None = None) -> str | None:
    """When process ``pid`` started, as the OS says (an opaque token to compare), or None.

    Linux: ``starttime`` of /proc/<pid>/stat (clock ticks since boot); without /proc (macOS):
    ``ps -o lstart=``; Windows: the creation time from GetProcessTimes. A pid reused by
    another program has another start time.
    """
    if pid <= 0:
        return None
    if (platform or sys.platform) == "win32":
        return _win_process_start(pid)
    try:
        # Field 22 of stat; the fields after the command name start at field 3.
        return "ticks:" + ((proc or PROC) / str(pid) / "stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        pass
    started = _ps(pid, "lstart")
    return f"lstart:{started}" if started else None


def _ps(pid: int, column: str) -> str | None:
    """One column of ``ps`` for ``pid`` (C locale), or None when ps cannot tell."""
    try:
        out = subprocess.run(
            ["ps", "-o", f"{column}=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=5,
            env={**os.environ, "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = " ".join(out.stdout.split())
    return text if out.returncode == 0 and text else None


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


def _win_process_start(pid: int) -> str | None:
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]  # windll exists on Windows only
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return None
    try:
        created, exited, kernel, user = (wintypes.FILETIME() for _ in range(4))
        ok = kernel32.GetProcessTimes(
            handle, ctypes.byref(created), ctypes.byref(exited), ctypes.byref(kernel), ctypes.byref(user)
        )
        return f"filetime:{(created.dwHighDateTime << 32) | created.dwLowDateTime}" if ok else None
    finally:
        kernel32.CloseHandle(handle)


def is_our_process(record: ServerRecord, proc: Path | None = None) -> bool:
    """True when the recorded pid is alive and is still the process devinit started.

    A reused pid is told apart by the process's start time, recorded at start; for a record
    without one (older devinit), by its command line where /proc shows it, else by whether
    the recorded port answers as a devinit server does.
    """
    if not pid_alive(record.pid, proc=proc):
        return False
    if record.process_start is not None:
        now = process_start_time(record.pid, proc=proc)
        if now is not None:
            return now == record.process_start
    try:
        raw = ((proc or PROC) / str(record.pid) / "cmdline").read_bytes()
    except OSError:
        return health(record.http_port, timeout=5.0)
    return [a for a in raw.decode("utf-8", "replace").split("\0") if a] == record.argv


def find(key: str) -> ServerStatus:
    """The background server for ``key``: running? healthy? a stale record?"""
    record = read_record(key)
    path = paths.server_record(key)
    if record is None:
        return ServerStatus(None, False, False, path.exists(), path)
    running = is_our_process(record)
    return ServerStatus(record, running, running and health(record.http_port), not running, path)


# --- stopping it ------------------------------------------------------------------------------


def stop(key: str, timeout: float = 10.0) -> ServerRecord | None:
    """Stop the background server; returns its record when one was running, else None.

    First Dapr's ``POST /v1.0/shutdown`` (with ``DAPR_API_TOKEN`` when set): the server
    finishes what is in flight and closes its stores. If it does not end within ``timeout``,
    it is terminated. A stale record is removed. DaemonError when the process survives.
    """
    status = find(key)
    if status.record is None or not status.running:
        status.pid_file.unlink(missing_ok=True)
        return None
    pid = status.record.pid
    if request_shutdown(status.record.http_port, os.environ.get("DAPR_API_TOKEN") or None):
        _wait_gone(pid, timeout)
    if pid_alive(pid):
        _terminate(pid, timeout)
    if pid_alive(pid):
        raise DaemonError(
            f"the state server (pid {pid}) did not stop. "
            f"End it by hand (kill {pid}, or Task Manager on Windows) and run the command again"
        )
    status.pid_file.unlink(missing_ok=True)
    return status.record


def _wait_gone(pid: int, timeout: float, platform: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid, platform) and time.monotonic() < deadline:
        time.sleep(0.05)


def _terminate(pid: int, timeout: float, platform: str | None = None) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` (POSIX); TerminateProcess on Windows."""
    windows = (platform or sys.platform) == "win32"
    try:
        # On Windows os.kill with SIGTERM is TerminateProcess: immediate, no POSIX signals.
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError, OSError):
        return
    _wait_gone(pid, timeout, platform)
    if not windows and pid_alive(pid, platform):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0, platform)


#: bytes ``tail`` reads from a log's end (the log grows with every start and is never cut)
TAIL_BYTES = 64 * 1024


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file, from its last ``TAIL_BYTES`` ('' when it
    cannot be read)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read(TAIL_BYTES)
    except OSError:
        return ""
    if size > TAIL_BYTES:
        data = data.partition(b"\n")[2]  # the first line read is a part of one
    return "\n".join(data.decode("utf-8", "replace").rstrip().splitlines()[-lines:])
