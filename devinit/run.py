"""``devinit run``: apps beside their own state servers, supervised until they end.

For each app: check its components (a state store must be there) and the ports asked for (the
others the server chooses as it binds, and reports), start its server (devinit/sidecar.py: the
server ``devinit serve`` runs, with the app's id, so that keys get Dapr's ``<app-id>||``
prefix), and once the server listens and answers its health route,
start the app with ``APP_ID``, ``DAPR_HTTP_PORT``, ``DAPR_GRPC_PORT``, ``DAPR_HTTP_ENDPOINT``,
``DAPR_GRPC_ENDPOINT`` (and ``DAPR_API_TOKEN``, ``APP_PORT`` when set). All servers start at
once; each app starts as soon as its own server is ready.

One thread per pipe (server status, server log, app output) and per process wait puts events
on one queue; the main thread handles them in order, with the signals (a queue's ``put`` is
safe in a signal handler). When an app ends, its server is told to stop. SIGINT/SIGTERM (Ctrl-C
and Ctrl-Break on Windows): every app is asked to stop (devinit/process.py says how, per
platform), is killed after the grace period (a second signal: at once), and each server stops
once its app has ended. Every wait is bounded: an app still there ``KILL_WAIT`` seconds after
its kill (stuck in the kernel, or out of the kill's reach) is left running, said so with its
pid, and the run goes on as if it had ended. The run ends when every app and every server has
(what an app left running in its process group is stopped then: SIGTERM, SIGKILL after the
grace period); its
exit code is the first non-zero exit code of an app, else 0. A server that fails to start stops the run
with an error showing its last log lines.

Output: a single app shares devinit run's terminal (stdin, colours); apps of a run file are
relayed line by line, prefixed with their app id (devinit/printer.py), and written to log files
as Dapr writes them. Server logs go to the terminal (a single app) or to a log file (a run
file's ``daprdLogDestination``, default ``file``).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from devinit import ports, process
from devinit.daemon import process_start_time
from devinit.errors import DevinitError, UsageError
from devinit.printer import Printer, plain

if TYPE_CHECKING:
    from devinit.runs import RunRecord
    from devinit.sidecar import Sidecar

LOG_DESTINATIONS = ("console", "file", "fileAndConsole")
STARTUP_TIMEOUT = 30.0  # seconds for a server to listen (a store's dialTimeout is far below)
SERVER_STOP_TIMEOUT = 15.0  # seconds for a server to drain and close its stores before it is killed
# Seconds for a killed app to end. SIGKILL ends a process unless it is stuck in the kernel (an
# uninterruptible wait: a hung network file system) or the kill missed it (it left the process
# group it was given, which is what is signalled); past this, it is left running, said so.
KILL_WAIT = 5.0
HOST = "127.0.0.1"


@dataclass
class AppSpec:
    """One app to run: its command and where, its components, ports and output."""

    app_id: str
    command: list[str]
    cwd: Path
    resources: list[Path]
    env: dict[str, str] = field(default_factory=dict)  # over the DAPR_* variables (run files)
    http_port: int | None = None  # None: a free port
    grpc_port: int | None = None
    app_port: int | None = None
    log_level: str = "info"
    app_log: str = "console"  # console | file | fileAndConsole (apps that do not share the terminal)
    server_log: str = "console"
    shares_terminal: bool = False  # a single app: stdin, stdout and stderr are devinit run's


@dataclass
class RunOptions:
    """A whole run: the apps, and what they share."""

    apps: list[AppSpec]
    home: Path
    run_file: Path | None = None
    api_token: str | None = None
    grace: float = process.GRACE
    platform: str | None = None


@dataclass
class Flags:
    """``devinit run``'s flags for one app, as given (Dapr's -1 for "choose" included)."""

    app_id: str | None = None
    app_port: int | None = None
    http_port: int | None = None
    grpc_port: int | None = None
    resources: list[str] = field(default_factory=list)  # --resources-path / --components-path
    log_level: str = "info"


def options_from_flags(flags: Flags, command: list[str], home: Path | None, notes: list[str]) -> RunOptions:
    """One app from ``devinit run`` flags; ``notes`` gets what the user should know (defaults taken)."""
    from devinit import paths
    from devinit.runflags import server_log_level

    try:
        level = server_log_level(flags.log_level)
    except ValueError as e:
        raise UsageError(f"--log-level: {e}") from None
    app_id = flags.app_id
    if not app_id:
        # as a run file names an app without appID: its folder's name, made usable ("My Service": "My-Service")
        name = "".join("-" if c.isspace() or not c.isprintable() else c for c in Path.cwd().name)
        app_id = re.sub(r"-{2,}", "-", name.replace("||", "-")).strip("-") or "app"
        notes.append(f"no --app-id given: using {app_id!r} (the folder's name); keys are stored as '{app_id}||<key>'")
    check_app_id(app_id, "--app-id")
    if not command:
        notes.append("no application command given: the state server alone runs")
    home_dir = paths.home(home)

    def port(value: int | None) -> int | None:
        return value if value and value > 0 else None  # Dapr's -1 (and 0): choose one

    spec = AppSpec(
        app_id=app_id,
        command=command,
        cwd=Path.cwd(),
        resources=[Path(p).expanduser() for p in flags.resources] or [paths.components_dir(home_dir)],
        http_port=port(flags.http_port),
        grpc_port=port(flags.grpc_port),
        app_port=port(flags.app_port),
        log_level=level,
        shares_terminal=True,
    )
    return RunOptions([spec], home_dir, None, _token())


def options_from_file(run_file: str, home: Path | None, notes: list[str]) -> RunOptions:
    """The apps of a Multi-App Run template; ``notes`` gets the fields it ignores."""
    from devinit import paths, runfile

    home_dir = paths.home(home)
    loaded = runfile.load(run_file, paths.components_dir(home_dir))
    notes += loaded.notes
    return RunOptions(loaded.apps, home_dir, loaded.path, _token())


def _token() -> str | None:
    """``DAPR_API_TOKEN``, as a sidecar reads it: the servers require it, the apps get it."""
    return os.environ.get("DAPR_API_TOKEN") or None


def check_app_id(app_id: str, where: str) -> None:
    """UsageError unless ``app_id`` can prefix keys as Dapr does (``<app-id>||<key>``)."""
    if not app_id or "||" in app_id or any(c.isspace() or not c.isprintable() for c in app_id):
        example = "--app-id orders" if where.startswith("--") else f"{where}: orders"
        raise UsageError(f"{where}: {app_id!r} is not a usable app id (no spaces, no '||'); give e.g. {example}")


def run(opts: RunOptions, printer: Printer | None = None) -> int:
    """Run the apps until they end (or a stop signal); returns the exit code for the shell.

    DevinitError before anything starts (no state component, a port in use) and when a
    server does not start (after whatever had started is stopped).
    """
    printer = printer or Printer(sys.stdout, sys.stderr)
    apps = _prepare(opts)
    return _Supervisor(opts, apps, printer).run()


# --- before anything starts -------------------------------------------------------------------


@dataclass
class _App:
    spec: AppSpec
    http_port: int  # 0 until its server reports the port it bound
    grpc_port: int
    stores: str  # "statestore (state.redis)", for the start line
    store_types: set[str]
    known_redis: dict[str, Any] | None
    sidecar: Sidecar | None = None  # once started
    server_start: str | None = None  # daemon.process_start_time of the server, then of the app:
    app_start: str | None = None  # in the run record, so that devinit stop never signals a reused pid
    proc: subprocess.Popen[bytes] | None = None
    ready: bool = False
    exit_code: int | None = None  # the app's, as the shell reports it
    server_code: int | None = None  # the server's exit code once it ended
    server_stopping_since: float | None = None
    kill_at: float | None = None  # the end of the app's grace period
    killed_at: float | None = None  # when it was killed (it has KILL_WAIT seconds to end)
    abandoned: bool = False  # killed, it did not end: left running (said so), no longer waited for
    own_group: bool = False
    failed: bool = False  # its server did not start
    log_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    logs: dict[str, IO[str]] = field(default_factory=dict)  # "app", "daprd": log files as Dapr names them
    relays: list[threading.Thread] = field(default_factory=list)
    server_relay: threading.Thread | None = None

    @property
    def server(self) -> Sidecar:
        """Its server (started before anything else happens to the app)."""
        assert self.sidecar is not None
        return self.sidecar

    @property
    def app_ended(self) -> bool:
        """Its process has ended (or never started)."""
        return self.proc is None or self.exit_code is not None

    @property
    def up(self) -> bool:
        """Running now: the app, or the server alone when there is no command."""
        if not self.ready or self.failed or self.server_code is not None:
            return False
        return self.exit_code is None and (self.proc is not None or not self.spec.command)

    @property
    def done(self) -> bool:
        return self.app_ended and (self.sidecar is None or self.server_code is not None)


def _prepare(opts: RunOptions) -> list[_App]:
    from devinit.components import STATE_TYPES, load_components

    run_file = opts.run_file is not None
    known: dict[str, Any] | None = None
    looked_up = False
    prepared: list[_App] = []
    for spec in opts.apps:
        for folder in spec.resources:
            if not folder.is_dir():
                raise UsageError(
                    f"the resources path {folder} (app {spec.app_id!r}) is not a folder. Pass "
                    f"{'resourcesPath in the run file' if run_file else '--resources-path'} with the folder of your "
                    "component files, or run 'devinit init' to write one to devinit's home"
                )
        loaded = load_components(spec.resources, spec.app_id)
        states = [s for s in loaded.specs if s.type in STATE_TYPES]
        if not states:
            where = ", ".join(str(p) for p in spec.resources)
            found = "; ".join([*loaded.notes, *(str(e) for e in loaded.errors)]) or "no component files"
            raise DevinitError(
                f"no state store component for app {spec.app_id!r} in {where} ({found}). Run 'devinit init' to write "
                f"{opts.home / 'components' / 'statestore.yaml'}, or pass "
                f"{'resourcesPath in the run file' if run_file else '--resources-path'} with a folder that holds one"
            )
        # Dapr's samples name dapr init's password-less Redis: read init's record only for those
        needs = any(s.type == "state.redis" and not s.metadata.get("redisPassword") for s in states)
        if needs and not looked_up:
            known, looked_up = _init_redis(opts.home), True
        names = ", ".join(f"{s.name} ({s.type})" for s in states)
        prepared.append(_App(spec, 0, 0, names, {s.type for s in states}, known if needs else None))
    _choose_ports(
        prepared, "daprHTTPPort" if run_file else "--dapr-http-port", "daprGRPCPort" if run_file else "--dapr-grpc-port"
    )
    return prepared


def _init_redis(home: Path) -> dict[str, Any] | None:
    """The Redis devinit init runs for ``home`` (port, password), for components that name it
    with an empty password (Dapr's samples, written for dapr init's password-less Redis)."""
    from devinit import paths, setup_record

    try:
        record = setup_record.read(paths.home_key(home), str(home))
    except DevinitError:
        return None  # a record from a newer devinit: no password lent (the store says why it fails)
    if record.store != "redis" or record.redis is None:
        return None
    return {"port": record.redis.port, "password": record.redis.password, "home": str(home)}


def _choose_ports(apps: list[_App], http_flag: str, grpc_flag: str) -> None:
    """Requested ports must be free (a clear error names the flag); the others are left to the
    server to choose as it binds (0 until its status line reports them)."""
    taken: dict[int, str] = {}
    for app in apps:
        for port, what, flag in ((app.spec.http_port, "HTTP", http_flag), (app.spec.grpc_port, "gRPC", grpc_flag)):
            if port is None:
                continue
            if port in taken:
                raise UsageError(
                    f"port {port} is asked for twice ({taken[port]} and {what} of app {app.spec.app_id!r}). Give each its own"
                )
            taken[port] = f"{what} of app {app.spec.app_id!r}"
            state = ports.probe(port)
            if state is ports.PortState.IN_USE:
                raise UsageError(
                    f"the {what} port {port} for app {app.spec.app_id!r} ({flag}) is already in use on {HOST}. "
                    f"Stop what uses it, pass another port, or leave {flag} out for a free one"
                )
            if state is ports.PortState.RESERVED:
                raise UsageError(f"the {what} port {port} for app {app.spec.app_id!r}: {ports.refusal(port, flag)}")
    for app in apps:
        # 0: the server binds port 0 and reports the port the OS chose (sidecar.py), so that no
        # other program can take a port between its choice and its bind
        app.http_port = app.spec.http_port or 0
        app.grpc_port = app.spec.grpc_port or 0


def _healthy(port: int, timeout: float = 2.0) -> bool:
    """The server answers ``GET /v1.0/healthz`` with 204 (a raw request: no HTTP client to import)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"GET /v1.0/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 204")
    except OSError:
        return False


def sidecar_vars(
    app_id: str | None, http_port: int, grpc_port: int, app_port: int | None = None, token: str | None = None
) -> dict[str, str]:
    """The variables a Dapr sidecar's app gets, for a server on these ports (``devinit run``'s
    apps and ``devinit.testing``'s ``env()`` get the same); no ``APP_ID`` without an app id."""
    env = {
        "DAPR_HTTP_PORT": str(http_port),
        "DAPR_GRPC_PORT": str(grpc_port),
        "DAPR_HTTP_ENDPOINT": f"http://{HOST}:{http_port}",
        "DAPR_GRPC_ENDPOINT": f"{HOST}:{grpc_port}",
    }
    if app_id:
        env["APP_ID"] = app_id
    if app_port:
        env["APP_PORT"] = str(app_port)
    if token:
        env["DAPR_API_TOKEN"] = token
    return env


def app_env(
    app_id: str, http_port: int, grpc_port: int, app_port: int | None, token: str | None, extra: dict[str, str]
) -> dict[str, str]:
    """The app's environment: ours, the variables a Dapr sidecar's app gets, then its own."""
    return {**os.environ, **sidecar_vars(app_id, http_port, grpc_port, app_port, token), **extra}


# --- the supervisor -----------------------------------------------------------------------------


class _Supervisor:
    def __init__(self, opts: RunOptions, apps: list[_App], printer: Printer) -> None:
        self.opts = opts
        self.apps = apps
        self.printer = printer
        self.events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.stopping = False
        self.first_failure: int | None = None  # the first non-zero app exit code
        self.server_failed = False  # a server died under its app
        self.startup_error: str | None = None
        self.record: RunRecord | None = None  # once an app runs
        self.record_stale = False  # apps started or ended since it was written
        self.started = time.monotonic()

    def run(self) -> int:
        from devinit import sidecar

        previous: dict[int, Any] = {}
        try:
            sidecar.preload({t for app in self.apps for t in app.store_types}, self.opts.platform)
            for app in self.apps:
                app.sidecar = sidecar.start(
                    sidecar.SidecarSpec(
                        app_id=app.spec.app_id,
                        resources=[str(p) for p in app.spec.resources],
                        http_port=app.http_port,
                        grpc_port=app.grpc_port,
                        cwd=str(app.spec.cwd),
                        log_level=app.spec.log_level,
                        api_token=self.opts.api_token,
                        known_redis=app.known_redis,
                        grace=self.opts.grace,
                    ),
                    self.opts.platform,
                )
                # Our child, not waited for yet: its pid cannot have been reused.
                app.server_start = process_start_time(app.sidecar.pid, self.opts.platform)
            # Only now (after the forks: a child must not inherit them) log files, signal handlers, threads.
            stamp = time.strftime("%Y%m%d%H%M%S")
            for app in self.apps:
                self._open_logs(app, stamp)
            for sig in process.handled_signals(self.opts.platform):
                previous[sig] = signal.signal(sig, self._on_signal)
            for app in self.apps:
                self._watch_server(app)
            self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._cleanup()
        if self.startup_error is not None:
            raise DevinitError(self.startup_error)
        if self.first_failure is not None:
            return self.first_failure
        return 1 if self.server_failed else 0

    # -- events --------------------------------------------------------------------------------

    def _on_signal(self, sig: int, frame: Any) -> None:
        self.events.put(("signal", sig))

    def _loop(self) -> None:
        while not all(app.done for app in self.apps):
            try:
                event = self.events.get(timeout=self._next_timeout())
            except queue.Empty:
                event = None
            match event:
                case ("ready", app, http_port, grpc_port):
                    app.http_port, app.grpc_port = http_port, grpc_port
                    self._ready(app)
                case ("app_exit", app, code):
                    self._app_exit(app, code)
                case ("server_exit", app, code):
                    self._server_exit(app, code)
                case ("signal", sig):
                    self._signal(sig)
            self._deadlines()
            if self.record_stale and self.events.empty():  # after the apps that are ready have started
                self._save_record()

    def _next_timeout(self) -> float:
        now = time.monotonic()
        times = [a.kill_at for a in self.apps if a.kill_at is not None and not a.app_ended]
        times += [a.killed_at + KILL_WAIT for a in self.apps if a.killed_at is not None and not a.app_ended]
        times += [
            a.server_stopping_since + SERVER_STOP_TIMEOUT for a in self.apps if a.server_stopping_since and a.server_code is None
        ]
        if any(not a.ready and not a.failed for a in self.apps):
            times.append(self.started + STARTUP_TIMEOUT)
        return max(0.01, min(times, default=now + 1.0) - now)

    def _deadlines(self) -> None:
        now = time.monotonic()
        for app in self.apps:
            if app.kill_at is not None and now >= app.kill_at and not app.app_ended and app.proc is not None:
                self.printer.note(f"app {app.spec.app_id!r} did not stop within {self.opts.grace:g}s: killing it")
                self._kill(app)
                app.kill_at = None
            if app.killed_at is not None and now >= app.killed_at + KILL_WAIT and not app.app_ended:
                # Not waited for any longer: the run goes on (its server stops, the run ends).
                self._abandon(app)
            since = app.server_stopping_since
            if since is not None and now >= since + SERVER_STOP_TIMEOUT and app.server_code is None:
                self.printer.note(
                    f"the state server of app {app.spec.app_id!r} did not stop within {SERVER_STOP_TIMEOUT:g}s: killing it"
                )
                app.server.kill(self.opts.platform)
                app.server_stopping_since = None
            starting = not app.ready and not app.failed and app.server_code is None and app.server_stopping_since is None
            if starting and now >= self.started + STARTUP_TIMEOUT:
                self._fail_startup(app, f"did not listen within {STARTUP_TIMEOUT:g}s")

    def _ready(self, app: _App) -> None:
        app.ready = True
        if self.stopping or app.failed:
            self._stop_server(app)
            return
        deadline = time.monotonic() + 5.0
        while not _healthy(app.http_port):
            if time.monotonic() > deadline or app.server_code is not None:
                self._fail_startup(app, f"does not answer GET /v1.0/healthz on port {app.http_port}")
                return
            time.sleep(0.02)
        spec = app.spec
        where = (
            f"HTTP {HOST}:{app.http_port}, gRPC {HOST}:{app.grpc_port}; stores: {app.stores}; "
            f"inspector http://{HOST}:{app.http_port}/ui/"
        )
        if not spec.command:
            self.printer.note(f"app {spec.app_id!r}: no command given; the state server alone runs ({where}). Ctrl-C stops it")
            self.record_stale = True
            return
        self._start_app(app, where)

    def _start_app(self, app: _App, where: str) -> None:
        spec = app.spec
        platform = self.opts.platform
        env = app_env(spec.app_id, app.http_port, app.grpc_port, spec.app_port, self.opts.api_token, spec.env)
        # A terminal's input is the one reason to share our group: otherwise the app leads its
        # own, and stopping it reaches the processes it started (process.py)
        app.own_group = (
            not spec.shares_terminal or (platform or sys.platform) == "win32" or not process.owns_terminal_input(platform)
        )
        pipes: dict[str, Any] = (
            {} if spec.shares_terminal else {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        )
        try:
            app.proc = subprocess.Popen(
                _resolve(spec.command, env, platform),
                cwd=spec.cwd,
                env=env,
                **pipes,
                **process.popen_kwargs(app.own_group, platform),
            )
        except OSError as e:
            code = 127 if isinstance(e, FileNotFoundError) else 126  # as a shell says it
            self.printer.note(f"app {spec.app_id!r}: cannot start {spec.command[0]!r}: {e.strerror or e}")
            app.exit_code = code
            self.first_failure = self.first_failure or code
            self._stop_server(app)
            return
        app.app_start = process_start_time(app.proc.pid, platform)  # not waited for yet: still the app
        app.server.app_started(app.proc.pid, app.own_group)
        self.printer.note(f"app {spec.app_id!r} started (pid {app.proc.pid}): {where}")
        if not spec.shares_terminal:
            assert app.proc.stdout is not None and app.proc.stderr is not None
            for stream, err in ((app.proc.stdout, False), (app.proc.stderr, True)):
                t = threading.Thread(target=self._relay_app, args=(app, stream, err), daemon=True)
                t.start()
                app.relays.append(t)
        threading.Thread(target=self._wait_app, args=(app, app.proc), daemon=True).start()
        self.record_stale = True
        if self.stopping:  # a signal came while it started
            self._ask_to_stop(app, signal.SIGTERM)

    def _app_exit(self, app: _App, returncode: int) -> None:
        if app.abandoned:  # it ended after all, once the run had stopped waiting for it
            return
        app.exit_code = process.exit_code(returncode)
        if app.exit_code != 0 and self.first_failure is None:
            self.first_failure = app.exit_code
        self.printer.note(f"app {app.spec.app_id!r} exited with code {app.exit_code}; stopping its state server")
        self._stop_server(app)
        self.record_stale = True

    def _server_exit(self, app: _App, code: int) -> None:
        app.server_code = code
        if app.failed:
            return
        if not app.ready:
            if app.server_stopping_since is None:
                self._fail_startup(app, f"{_ended(code)} before it listened")
            return
        if app.server_stopping_since is None:  # it was not asked to stop
            tail = "\n".join(app.log_tail)
            if not app.spec.command and code == 0:
                self.printer.note(f"the state server of app {app.spec.app_id!r} stopped")
            else:
                self.server_failed = True
                self.printer.note(
                    f"the state server of app {app.spec.app_id!r} {_ended(code)}"
                    + ("; stopping the app" if not app.app_ended else "")
                    + (f". Its last log lines:\n{tail}" if tail else "")
                )
                if not app.app_ended:
                    self._ask_to_stop(app, signal.SIGTERM)
        self.record_stale = True

    def _signal(self, sig: int) -> None:
        if self.stopping:
            self.printer.note("second stop signal: killing the apps now")
            for app in self.apps:
                if not app.app_ended and app.proc is not None:
                    self._kill(app)
            return
        self.stopping = True
        passed_on = True
        for app in self.apps:
            if app.proc is not None and not app.app_ended:
                passed_on = self._ask_to_stop(app, sig) and passed_on
            elif app.app_ended and app.server_stopping_since is None and app.server_code is None:
                self._stop_server(app)  # still starting, or the server alone
        self.printer.note(
            f"{_signal_name(sig)}: stopping the apps, then their state servers"
            + ("" if passed_on else " (the terminal gave the app the signal itself)")
        )

    # -- actions -------------------------------------------------------------------------------

    def _ask_to_stop(self, app: _App, sig: int) -> bool:
        """Ask the app to stop (it is killed at the end of the grace period); False when the
        terminal already gave it the signal (a Ctrl-C), so it is not sent a second one."""
        assert app.proc is not None
        if app.kill_at is None:
            app.kill_at = time.monotonic() + self.opts.grace
        if process.terminal_sent_it(sig, app.own_group, self.opts.platform):
            return False
        process.interrupt(app.proc.pid, app.own_group, sig, self.opts.platform)
        return True

    def _kill(self, app: _App) -> None:
        assert app.proc is not None
        process.kill(app.proc.pid, app.own_group, self.opts.platform)
        if app.killed_at is None:
            app.killed_at = time.monotonic()

    def _abandon(self, app: _App) -> None:
        """A killed app that has not ended within KILL_WAIT: say what is left, and go on as if
        it had ended (killed), so that the run is not held forever by a process it cannot end."""
        assert app.proc is not None
        app.abandoned = True
        app.killed_at = None
        self.printer.note(_left_running(app.spec.app_id, app.proc.pid))
        app.exit_code = process.exit_code(-signal.SIGKILL)
        if self.first_failure is None:
            self.first_failure = app.exit_code
        self._stop_server(app)
        self.record_stale = True

    def _stop_server(self, app: _App) -> None:
        if app.sidecar is not None and app.server_stopping_since is None and app.server_code is None:
            app.server_stopping_since = time.monotonic()
            app.server.stop()

    def _fail_startup(self, app: _App, why: str) -> None:
        tail = "\n".join(app.log_tail)
        message = f"the state server of app {app.spec.app_id!r} {why}"
        if tail:
            message += f". Its last log lines:\n{tail}\nFix what they say and run devinit run again"
        else:
            message += ", before it logged anything. Run again with --log-level debug (logLevel: debug in a run file)"
        self.startup_error = self.startup_error or message
        app.failed = True
        if app.server_code is None:
            app.server.kill(self.opts.platform)
        if not self.stopping:
            self.stopping = True
            for other in self.apps:
                if other.proc is not None and not other.app_ended:
                    self._ask_to_stop(other, signal.SIGTERM)
                elif other is not app:
                    self._stop_server(other)

    # -- threads -------------------------------------------------------------------------------

    def _watch_server(self, app: _App) -> None:
        sc = app.server

        def status() -> None:
            for line in pipe_lines(sc.status):
                words = line.split()
                if len(words) == 3 and words[0] == "ready" and words[1].isdigit() and words[2].isdigit():
                    # "ready <http-port> <grpc-port>": the ports it listens on (chosen as it bound them)
                    self.events.put(("ready", app, int(words[1]), int(words[2])))
                    return

        def wait() -> None:
            code = sc.wait()
            if app.server_relay is not None:
                app.server_relay.join(timeout=2.0)  # its last lines first (the error shows them)
            self.events.put(("server_exit", app, code))

        app.server_relay = threading.Thread(target=self._relay_server, args=(app,), daemon=True)
        app.server_relay.start()
        threading.Thread(target=status, daemon=True).start()
        threading.Thread(target=wait, daemon=True).start()

    def _relay_server(self, app: _App) -> None:
        console = app.spec.server_log != "file"
        logfile = app.logs.get("daprd")
        for line in pipe_lines(app.server.log):
            app.log_tail.append(line)
            if console:
                self.printer.line(app.spec.app_id, line, kind="devinit", err=True)
            if logfile is not None:
                _write(logfile, plain(line))  # as Dapr writes daprd's: the lines alone

    def _relay_app(self, app: _App, stream: IO[bytes], err: bool) -> None:
        console = app.spec.app_log != "file"
        logfile = app.logs.get("app")
        for line in pipe_lines(stream):
            if console:
                kept = self.printer.line(app.spec.app_id, line, err=err)
            else:
                kept = plain(f"{self.printer.prefix(app.spec.app_id)} {line}")
            if logfile is not None:
                _write(logfile, kept)  # as Dapr writes an app's: prefixed, without colours

    def _wait_app(self, app: _App, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        for t in app.relays:
            t.join(timeout=1.0)  # a child of the app may hold the pipes open: do not wait for it
        self.events.put(("app_exit", app, code))

    # -- files ---------------------------------------------------------------------------------

    def _open_logs(self, app: _App, stamp: str) -> None:
        """Log files as Dapr names them: ``<appDirPath>/.dapr/logs/<appID>_app_<time>.log``
        and ``<appID>_daprd_<time>.log`` (the server's)."""
        spec = app.spec
        if spec.shares_terminal:
            return
        wanted = [
            kind
            for kind, dest in (("app", spec.app_log if spec.command else "console"), ("daprd", spec.server_log))
            if dest != "console"
        ]
        folder = spec.cwd / ".dapr" / "logs"
        try:
            for kind in wanted:
                folder.mkdir(parents=True, exist_ok=True)
                app.logs[kind] = open(folder / f"{spec.app_id}_{kind}_{stamp}.log", "a", encoding="utf-8")
        except OSError as e:
            raise DevinitError(f"cannot write the log files of app {spec.app_id!r} in {folder}: {e.strerror or e}") from None

    @staticmethod
    def _log_path(app: _App, kind: str) -> str | None:
        f = app.logs.get(kind)
        return str(Path(f.name).resolve()) if f is not None else None

    def _save_record(self) -> None:
        from devinit import runs

        self.record_stale = False
        if self.record is None:
            self.record = runs.this_run(str(self.opts.run_file) if self.opts.run_file else None)
        now = time.time()
        old = {a.app_id: a for a in self.record.apps}
        self.record.apps = [
            runs.AppRecord(
                app_id=app.spec.app_id,
                server_pid=app.server.pid,
                http_port=app.http_port,
                grpc_port=app.grpc_port,
                command=app.spec.command,
                cwd=str(app.spec.cwd),
                started_at=old[app.spec.app_id].started_at if app.spec.app_id in old else now,
                app_pid=app.proc.pid if app.proc is not None else None,
                own_group=app.own_group,
                app_port=app.spec.app_port,
                app_log=self._log_path(app, "app"),
                server_log=self._log_path(app, "daprd"),
                resources=[str(p) for p in app.spec.resources],
                server_start=app.server_start,
                app_start=app.app_start,
            )
            for app in self.apps
            if app.up
        ]
        try:
            self.record.save()
        except OSError as e:
            self.printer.note(f"cannot write the run record ({e}): 'devinit list' will not show this run")

    def _cleanup(self) -> None:
        """Whatever is left (an error, Ctrl-C during start-up): apps killed, servers stopped;
        and what apps that ended left running in their process groups (as dapr run stops an
        app's whole group, its leader gone or not)."""
        for app in self.apps:
            if app.proc is not None and app.proc.poll() is None:
                process.kill(app.proc.pid, app.own_group, self.opts.platform)
                if not app.abandoned:  # an abandoned app was waited for, and said so, already
                    try:
                        app.proc.wait(timeout=KILL_WAIT)
                    except subprocess.TimeoutExpired:
                        self.printer.note(_left_running(app.spec.app_id, app.proc.pid))
            if app.sidecar is not None and app.server_code is None:
                app.server.stop()  # closes the lifeline too: end-of-file alone would stop it
        left = [
            app
            for app in self.apps
            if app.proc is not None
            and app.own_group
            and app.proc.poll() is not None
            and process.leftover_group(app.proc.pid, self.opts.platform)
        ]
        for app in left:
            self.printer.note(f"app {app.spec.app_id!r} left processes running in its process group: stopping them")
        process.end_groups([app.proc.pid for app in left if app.proc is not None], self.opts.grace, self.opts.platform)
        for app in self.apps:
            if app.sidecar is not None and app.server_code is None:
                t = threading.Thread(target=app.server.wait, daemon=True)
                t.start()
                t.join(SERVER_STOP_TIMEOUT)
                if t.is_alive():
                    app.server.kill(self.opts.platform)
            for f in app.logs.values():
                f.close()
        if self.record is not None:
            self.record.remove()


def _left_running(app_id: str, pid: int) -> str:
    """What is left when a killed app does not end: it, running; and how to end it."""
    return (
        f"app {app_id!r} (pid {pid}) did not end within {KILL_WAIT:g}s of being killed: it is left running "
        "(it left its process group, or is stuck in the kernel). "
        f"End it yourself: kill -9 {pid} (Windows: taskkill /F /PID {pid})"
    )


def pipe_lines(stream: IO[bytes]) -> Iterable[str]:
    """Lines of a pipe, decoded, without their end; a line longer than 64 KiB comes in parts."""
    while True:
        try:
            raw = stream.readline(65536)
        except (OSError, ValueError):
            return
        if not raw:
            return
        yield raw.decode("utf-8", "replace").rstrip("\r\n")


def _write(f: IO[str], line: str) -> None:
    try:
        f.write(line + "\n")
        f.flush()
    except (OSError, ValueError):
        pass  # a full disk must not stop the output on the terminal


def _ended(code: int) -> str:
    """How a process ended, from its return code."""
    return f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _resolve(command: list[str], env: dict[str, str], platform: str | None) -> list[str]:
    """Windows finds ``npm`` as ``npm.cmd`` only through PATHEXT: look it up there; POSIX
    searches the app's PATH itself."""
    if (platform or sys.platform) != "win32":
        return command
    import shutil

    found = shutil.which(command[0], path=env.get("PATH"))
    return [found, *command[1:]] if found else command
