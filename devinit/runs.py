"""Records of the ``devinit run`` processes that run now: what ``devinit list``, ``devinit
stop`` and ``devinit status`` read.

Each ``devinit run`` keeps one JSON file, ``paths.state_dir()/runs/run-<pid>.json``: its own
pid and start time, the run file, and per app the app id, the pids of the app and of its
server, the ports, the command and the log files. It rewrites the file as apps start and end,
and removes it when it ends. A run killed outright (SIGKILL) cannot remove its file: whoever
reads the records checks that the run's process is alive and is still that process (its start
time, as the OS reports it: a reused pid has another), removes the file otherwise, and never
shows it. The apps' and servers' pids are checked the same way (their start times are in the
record too): an app whose pid now belongs to another process has ended, is not listed, and
``devinit stop`` never signals that pid.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from devinit import paths
from devinit.atomic import write_atomic
from devinit.daemon import pid_alive, process_start_time
from devinit.errors import DevinitError


@dataclass
class AppRecord:
    """One app of a run, with its server."""

    app_id: str
    server_pid: int
    http_port: int
    grpc_port: int
    command: list[str]
    cwd: str
    started_at: float
    app_pid: int | None = None  # None: no command (the server alone), or not started yet
    own_group: bool = False  # the app leads a process group of its own (POSIX)
    app_port: int | None = None
    app_log: str | None = None
    server_log: str | None = None
    resources: list[str] = field(default_factory=list)
    server_start: str | None = None  # daemon.process_start_time of server_pid (None: not known)
    app_start: str | None = None  # of app_pid


@dataclass
class RunRecord:
    """One ``devinit run`` process and the apps it runs."""

    pid: int
    process_start: str | None  # daemon.process_start_time: tells a reused pid apart
    started_at: float
    run_file: str | None = None
    apps: list[AppRecord] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return record_file(self.pid)

    def save(self) -> None:
        """Write the record (atomically: a reader never sees half of it)."""
        write_atomic(self.path, json.dumps(asdict(self), indent=2).encode())

    def remove(self) -> None:
        """Forget the run (it has ended)."""
        self.path.unlink(missing_ok=True)


def runs_dir() -> Path:
    """Where the records live."""
    return paths.state_dir() / "runs"


def record_file(pid: int) -> Path:
    """The record of the ``devinit run`` with this pid."""
    return runs_dir() / f"run-{pid}.json"


def this_run(run_file: str | None) -> RunRecord:
    """A record for this process (no apps yet)."""
    return RunRecord(os.getpid(), process_start_time(os.getpid()), time.time(), run_file)


def is_alive(record: RunRecord) -> bool:
    """True when the recorded ``devinit run`` still runs (not a dead one whose pid was reused)."""
    return same_process(record.pid, record.process_start)


def same_process(pid: int, start: str | None) -> bool:
    """True when ``pid`` is alive and is the process that started at ``start`` (as
    ``process_start_time`` reported it then); a reused pid has another start time. Without a
    recorded start (an older record), or when the OS cannot tell now, alive is enough."""
    if not pid_alive(pid):
        return False
    now = process_start_time(pid) if start is not None else None
    return start is None or now is None or now == start


def _running(a: AppRecord) -> bool:
    """The app runs (its server, for a server alone): its pid is still that process."""
    return same_process(a.server_pid, a.server_start) if a.app_pid is None else same_process(a.app_pid, a.app_start)


def _read(path: Path) -> RunRecord | None:
    """The record in ``path``; None when it cannot be read. Fields it does not know (a newer
    devinit wrote it) are left out: a live run's record must not pass for unreadable, which
    gets it deleted."""
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        apps = [AppRecord(**_known(AppRecord, a)) for a in data.pop("apps", [])]
        return RunRecord(**_known(RunRecord, data), apps=apps)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def live_runs() -> list[RunRecord]:
    """Every ``devinit run`` that runs now, oldest first; records of dead runs are removed."""
    found: list[RunRecord] = []
    folder = runs_dir()
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("run-*.json")):
        record = _read(path)
        if record is None or not is_alive(record):
            path.unlink(missing_ok=True)  # unreadable, or its run is gone: never shown as running
            continue
        # an app that has ended (its run has not rewritten the file yet) is not running either
        record.apps = [a for a in record.apps if _running(a)]
        found.append(record)
    return sorted(found, key=lambda r: r.started_at)


@dataclass
class RunningApp:
    """One line of ``devinit list`` (and of ``devinit status``)."""

    app_id: str
    http_port: int
    grpc_port: int
    app_port: int | None
    command: str
    age_seconds: float
    created: str
    server_pid: int
    cli_pid: int
    app_pid: int | None
    run_file: str | None
    app_log: str | None
    server_log: str | None

    def to_json(self) -> dict[str, Any]:
        """As ``dapr list -o json`` names its fields (``daprdPid``: the app's devinit server)."""
        return {
            "appId": self.app_id,
            "httpPort": self.http_port,
            "grpcPort": self.grpc_port,
            "appPort": self.app_port or 0,
            "command": self.command,
            "age": age(self.age_seconds),
            "created": self.created,
            "daprdPid": self.server_pid,
            "cliPid": self.cli_pid,
            "appPid": self.app_pid or 0,
            "runTemplatePath": self.run_file or "",
            "appLogPath": self.app_log or "",
            "daprdLogPath": self.server_log or "",
        }


def running_apps() -> list[RunningApp]:
    """Every app that runs under ``devinit run`` now."""
    now = time.time()
    out = []
    for run in live_runs():
        for a in run.apps:
            out.append(
                RunningApp(
                    a.app_id,
                    a.http_port,
                    a.grpc_port,
                    a.app_port,
                    " ".join(a.command),
                    max(0.0, now - a.started_at),
                    time.strftime("%Y-%m-%d %H:%M.%S", time.localtime(a.started_at)),
                    a.server_pid,
                    run.pid,
                    a.app_pid,
                    run.run_file,
                    a.app_log,
                    a.server_log,
                )
            )
    return out


def age(seconds: float) -> str:
    """An age as ``dapr list`` shows it: 45s, 12m, 3h, 2d."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


# --- stop -------------------------------------------------------------------------------------


@dataclass
class Stopped:
    """What ``devinit stop`` stopped."""

    apps: list[str]
    still_running: list[str]

    @property
    def ok(self) -> bool:
        return not self.still_running


def stop(app_id: str | None = None, run_file: Path | None = None, timeout: float = 20.0, platform: str | None = None) -> Stopped:
    """Stop the app ``app_id`` (its server stops with it), or every app of ``run_file``.

    POSIX: a run whose every app is being stopped gets SIGTERM itself (it stops its apps in
    order, then their servers); one app among several gets SIGTERM (to its process group),
    and its run stops its server when it ends. Windows: the apps are terminated, and each run
    stops the servers of apps that ended (a run with no app left ends).
    """
    windows = (platform or sys.platform) == "win32"
    runs = live_runs()
    targets: list[tuple[RunRecord, list[AppRecord]]] = []
    for run in runs:
        if run_file is not None:
            chosen = run.apps if run.run_file == str(run_file) else []
        else:
            chosen = [a for a in run.apps if a.app_id == app_id]
        if chosen:
            targets.append((run, chosen))
    if not targets:
        what = f"with run file {run_file}" if run_file is not None else f"with app id {app_id!r}"
        raise DevinitError(f"no app {what} is running. 'devinit list' shows what runs")
    from devinit import process

    # Each pid is checked again right before it is signalled (it was when listed): a process
    # that has ended since, its pid given to another program, is never signalled.
    waits: list[int] = []
    for run, chosen in targets:
        whole = len(chosen) == len(run.apps)
        if whole and not windows:
            if is_alive(run):
                _signal(run.pid, signal.SIGTERM)
                waits.append(run.pid)
            continue
        for a in chosen:
            if not _running(a):
                continue  # it has ended
            if a.app_pid is None:  # the server alone: stopping it ends that part of the run
                if windows:
                    process.kill(a.server_pid, False, platform)
                else:
                    _signal(a.server_pid, signal.SIGTERM)
                waits.append(a.server_pid)
            elif windows:
                process.kill(a.app_pid, a.own_group, platform)
                waits.append(a.app_pid)
            else:
                process.interrupt(a.app_pid, a.own_group, signal.SIGTERM, platform)
                waits.append(a.app_pid)
    deadline = time.monotonic() + timeout
    for pid in waits:
        process.wait_gone(pid, max(0.0, deadline - time.monotonic()), platform)
    wanted = {(run.pid, a.app_id) for run, chosen in targets for a in chosen}
    left = sorted({a.app_id for run in live_runs() for a in run.apps if (run.pid, a.app_id) in wanted})
    return Stopped(sorted({app for _, app in wanted} - set(left)), left)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
