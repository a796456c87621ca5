"""An app's state server in a process of its own, tied to ``devinit run`` by a lifeline.

``devinit run`` starts one server per app: the server ``devinit serve`` runs
(``server.serve.serve``), on the app's ports, with its app id and components. Three pipes join
them: the server's stdin is the lifeline (the settings as one JSON line, then ``app <pid>
<own-group>`` once the app runs, ``stop`` when the app is done), its stdout says ``ready
<http-port> <grpc-port>`` once both front ends listen (a port asked for as 0 is the one the OS
chose: no race between choosing a free port and binding it), and its stderr is its log, which
``devinit run`` shows or writes to a file. Secrets (the API token, the Redis password) travel in the JSON line: never on a
command line or in the environment.

The server notices when ``devinit run`` is gone, even killed with SIGKILL: the lifeline's write
end closes with it, so the server reads end-of-file without ``stop``. It then stops the app (it
knows its pid) and itself. As a second guard it checks every second that its parent lives.

How the process starts, per platform (``launch_method``):

- POSIX: ``fork`` from ``devinit run`` once the server's modules are imported. Importing them is
  most of a server's start-up (~200 ms); a forked server listens within milliseconds, and N
  apps import once, not N times. Each child gets its own session (the terminal's Ctrl-C goes to
  ``devinit run`` and the app, which stop first), and closes every other lifeline's write end
  so that only ``devinit run`` holds each one open.
- Windows (and anywhere without fork): ``python -m devinit.sidecar`` started as the background
  server is (``daemon.server_interpreter``: the real interpreter, no console window, a process
  group of its own), the same three pipes.

``devinit.testing`` starts its servers here too, always spawned: a test process may run threads
and holds the user's open files and sockets, which a forked server would keep.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("devinit.sidecar")

#: parent ends of every lifeline, status and log pipe made by fork: a forked child closes them
_PARENT_ENDS: set[int] = set()


@dataclass
class SidecarSpec:
    """What one app's server is to do (sent as JSON on the lifeline)."""

    app_id: str  # "": none (keys are stored as given)
    resources: list[str]
    http_port: int  # 0: a free port, chosen as it binds (the status line says which)
    grpc_port: int
    cwd: str  # the server runs where the app runs: relative paths in components mean the same
    log_level: str = "info"
    api_token: str | None = None
    known_redis: dict[str, Any] | None = None  # components.KnownRedis as a dict
    store_timeout: float = 10.0
    host: str = "127.0.0.1"
    grace: float = 5.0  # seconds the app gets when the server has to stop it


def launch_method(platform: str | None = None) -> str:
    """``fork`` (POSIX, while this process has a single thread) or ``spawn`` (Windows)."""
    if (platform or sys.platform) == "win32" or not hasattr(os, "fork"):
        return "spawn"
    # fork() copies only the calling thread: a lock another thread held would stay locked.
    return "fork" if threading.active_count() == 1 else "spawn"


class Sidecar:
    """``devinit run``'s side of one server process."""

    def __init__(self, pid: int, lifeline: IO[bytes], status: IO[bytes], log_pipe: IO[bytes], waiter: Callable[[], int]) -> None:
        self.pid = pid
        self.lifeline = lifeline
        self.status = status
        self.log = log_pipe
        self._waiter = waiter  # blocks until the process ends; its exit code
        self._wait_lock = threading.Lock()
        self.returncode: int | None = None

    def tell(self, message: str) -> bool:
        """Write one line on the lifeline; False when the server is gone."""
        try:
            self.lifeline.write(message.encode() + b"\n")
            self.lifeline.flush()
            return True
        except (OSError, ValueError):  # broken pipe, or closed already
            return False

    def app_started(self, pid: int, own_group: bool) -> None:
        """Tell the server the app's pid: it stops the app if ``devinit run`` dies."""
        self.tell(f"app {pid} {int(own_group)}")

    def stop(self) -> None:
        """Ask the server to stop (the app is done): it drains, closes its stores and exits."""
        self.tell("stop")
        self.close_lifeline()

    def close_lifeline(self) -> None:
        """Close our end: the server reads end-of-file (as when ``devinit run`` dies)."""
        fd = _fileno(self.lifeline)
        try:
            self.lifeline.close()
        except OSError:
            pass
        _PARENT_ENDS.discard(fd)

    def wait(self) -> int:
        """Block until the server exits; its exit code (negative: killed by that signal).
        Safe from several threads (a pid can be waited for once)."""
        with self._wait_lock:
            if self.returncode is None:
                self.returncode = self._waiter()
        return self.returncode

    def kill(self, platform: str | None = None) -> None:
        """End the server now (it did not stop when asked)."""
        from devinit.process import kill

        kill(self.pid, own_group=False, platform=platform)


def _fileno(f: IO[bytes]) -> int:
    try:
        return f.fileno()
    except (OSError, ValueError):
        return -1


def start(spec: SidecarSpec, platform: str | None = None, spawn: bool = False, env: dict[str, str] | None = None) -> Sidecar:
    """Start the server for one app (``launch_method`` decides how, unless ``spawn`` asks for a
    new interpreter) and send it its settings. ``env``: a spawned server's environment (ours
    by default)."""
    sidecar = _fork() if not spawn and launch_method(platform) == "fork" else _spawn(spec, platform, env)
    sidecar.tell(json.dumps(asdict(spec)))  # if it died at once, its log and exit code say why
    return sidecar


def preload(store_types: Iterable[str], platform: str | None = None) -> None:
    """Import the server and the stores of ``store_types`` now, when servers will be forked:
    the children then start serving at once, and every fork (one per app) shares this import."""
    if launch_method(platform) != "fork":
        return  # a spawned server imports for itself
    import encodings.idna  # noqa: F401  # a server's first listening socket imports it (2-6 ms)

    import devinit.server.browser
    import devinit.server.grpc_api
    import devinit.server.http_api
    import devinit.server.http_wire
    import devinit.server.serve  # noqa: F401

    try:
        import uvloop  # noqa: F401  # serve() imports it lazily: 8-17 ms in every child otherwise
    except ImportError:
        pass
    from devinit.state import store_class

    for kind in store_types:
        try:
            store_class(kind)  # imports its module
        except (KeyError, ImportError):
            pass  # the server says what is missing (psycopg for PostgreSQL), in its log


def _fork() -> Sidecar:
    import devinit.server.serve  # noqa: F401  # (preload imported it, and the stores, before)

    # What is loaded now lives as long as every server: out of the collector's sight, so that
    # a server's gc.collect() before it serves walks its own few objects (11-50 ms otherwise,
    # measured), and its memory pages stay shared with this process.
    gc.freeze()
    lifeline_r, lifeline_w = os.pipe()
    status_r, status_w = os.pipe()
    log_r, log_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would write our buffered output a second time
    pid = os.fork()
    if pid == 0:  # the server
        code = 70
        try:
            os.setsid()  # no controlling terminal: the terminal's Ctrl-C is for devinit run
            os.dup2(lifeline_r, 0)
            os.dup2(status_w, 1)
            os.dup2(log_w, 2)
            for fd in {lifeline_r, lifeline_w, status_r, status_w, log_r, log_w, *_PARENT_ENDS}:
                try:
                    os.close(fd)
                except OSError:
                    pass
            code = child_main(os.getppid())
        except BaseException:
            try:
                os.write(2, traceback.format_exc().encode())
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(lifeline_r)
    os.close(status_w)
    os.close(log_w)
    _PARENT_ENDS.update((lifeline_w, status_r, log_r))

    def wait() -> int:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    return Sidecar(pid, os.fdopen(lifeline_w, "wb"), os.fdopen(status_r, "rb"), os.fdopen(log_r, "rb"), wait)


def spawn_argv(python: str) -> list[str]:
    """The spawned server's command line (-P: the app's folder, its cwd, must not shadow a
    module the server imports)."""
    return [python, "-P", "-m", "devinit.sidecar"]


def _spawn(spec: SidecarSpec, platform: str | None, env: dict[str, str] | None = None) -> Sidecar:
    import subprocess

    from devinit.daemon import child_env, popen_kwargs, server_interpreter

    # As the background server: the real interpreter rather than a venv's redirector on
    # Windows (the pid must be the server's), its log in UTF-8.
    python = server_interpreter(platform)
    proc = subprocess.Popen(
        spawn_argv(python.executable),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=spec.cwd,
        env=child_env(python, env),
        **popen_kwargs(platform),  # Windows: no console window, its own group (no Ctrl-C)
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    return Sidecar(proc.pid, proc.stdin, proc.stdout, proc.stderr, proc.wait)


# --- the server's side ------------------------------------------------------------------------


def child_main(parent_pid: int) -> int:
    """The server process: read the settings from the lifeline, serve, watch the lifeline."""
    from devinit.components import KnownRedis
    from devinit.server.serve import ServeOptions, serve

    lifeline = open(0, "rb", closefd=False)  # for the whole life of the process
    status = open(1, "wb", buffering=0, closefd=False)
    sys.stdout = sys.stderr  # a stray print must not land on the status pipe
    first = lifeline.readline()
    if not first:
        return 0  # devinit run went away before it sent anything
    spec = SidecarSpec(**json.loads(first))
    if sys.path and sys.path[0] == "":  # forked from `python -m devinit` run in its checkout
        sys.path[0] = os.getcwd()  # before chdir: lazy imports must not look in the app's folder
    os.chdir(spec.cwd)
    known = KnownRedis(**spec.known_redis) if spec.known_redis else None
    opts = ServeOptions(
        [Path(p) for p in spec.resources],
        host=spec.host,
        http_port=spec.http_port,
        grpc_port=spec.grpc_port,
        app_id=spec.app_id,
        api_token=spec.api_token,
        log_level=spec.log_level,
        store_timeout=spec.store_timeout,
        known_redis=known,
    )
    watch = Lifeline(lifeline, parent_pid, spec.grace)

    def on_ready(stop: Callable[[str], None], http_port: int, grpc_port: int) -> None:
        try:
            status.write(f"ready {http_port} {grpc_port}\n".encode())
        except OSError:
            pass  # devinit run is gone: the lifeline says so too
        watch.start(stop)

    return serve(opts, on_ready=on_ready)


class Lifeline:
    """The server's end of the lifeline: the app's pid, ``stop``, or end-of-file (parent gone)."""

    def __init__(self, pipe: IO[bytes], parent_pid: int, grace: float, platform: str | None = None) -> None:
        self.pipe = pipe
        self.parent_pid = parent_pid
        self.grace = grace
        self.platform = platform
        self.app: tuple[int, bool] | None = None  # pid, own process group
        self._orphaned = False
        self._lock = threading.Lock()

    def start(self, stop: Callable[[str], None]) -> None:
        """Watch from a thread (a blocking read works on every platform's pipes) and, as a
        second guard, check the parent every second from the loop."""
        import asyncio

        loop = asyncio.get_running_loop()

        def stop_soon(why: str) -> None:
            loop.call_soon_threadsafe(stop, why)

        threading.Thread(target=self._read, args=(stop_soon,), name="lifeline", daemon=True).start()

        def check() -> None:
            if self._orphaned:
                return
            if not self.parent_alive():
                log.warning("devinit run (pid %d) is gone (found by the parent check)", self.parent_pid)
                # not here: stopping the app takes up to the grace period, and the server serves on meanwhile
                threading.Thread(target=self._orphan, args=(stop_soon,), daemon=True).start()
                return
            loop.call_later(1.0, check)

        loop.call_later(1.0, check)

    def parent_alive(self) -> bool:
        """False once the process that started this server is gone."""
        if (self.platform or sys.platform) == "win32":
            from devinit.daemon import pid_alive

            return pid_alive(self.parent_pid, self.platform)
        return os.getppid() == self.parent_pid  # reparented: the parent died

    def _read(self, stop_soon: Callable[[str], None]) -> None:
        while True:
            try:
                line = self.pipe.readline(256)
            except OSError:
                line = b""
            if not line:
                log.warning("devinit run (pid %d) is gone: its lifeline closed without 'stop'", self.parent_pid)
                self._orphan(stop_soon)
                return
            words = line.split()
            if words == [b"stop"]:
                stop_soon("devinit run: the app has ended")
                return
            if len(words) == 3 and words[0] == b"app" and words[1].isdigit():
                self.app = (int(words[1]), words[2] == b"1")

    def _orphan(self, stop_soon: Callable[[str], None]) -> None:
        """``devinit run`` died: stop its app (it must not outlive its supervisor), then us."""
        with self._lock:
            if self._orphaned:
                return
            self._orphaned = True
        if self.app is not None:
            from devinit.process import stop as stop_app

            pid, own_group = self.app
            log.warning("stopping the app (pid %d), then this server", pid)
            stop_app(pid, own_group, self.grace, self.platform)
        stop_soon("devinit run is gone")


def main() -> int:
    """``python -m devinit.sidecar``: the spawned server (Windows)."""
    return child_main(os.getppid())


if __name__ == "__main__":
    sys.exit(main())
