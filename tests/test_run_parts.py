"""The parts of `devinit run` on their own: dapr run's flags, the prefixed printer, and the
process control per platform. Windows is simulated the way tests/test_daemon.py does it (the one
fault this machine cannot produce): the Windows code paths run for real, against real
processes here, with the calls they make to the OS recorded.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devinit import daemon, process, sidecar
from devinit.printer import Printer, plain, wants_color
from devinit.run import _resolve, app_env
from devinit.runflags import server_log_level, strip_ignored
from run_support import alive, wait_until

# --- dapr run's flags -------------------------------------------------------------------------


def test_flags_devinit_uses_are_kept_the_others_taken_off_with_a_note() -> None:
    args = [
        "-a", "orders", "--app-protocol", "grpc", "-P", "http", "-Pgrpc", "--config=c.yaml", "-c", "d.yaml",
        "--enable-api-logging", "--app-ssl=false", "-k", "--dapr-http-port", "3500", "-d", "comps",
        "--log-level", "warn", "--metrics-port", "9090", "--", "python", "app.py", "--config", "x",
    ]  # fmt: skip
    kept, notes = strip_ignored(args)
    assert kept == [
        "-a",
        "orders",
        "--dapr-http-port",
        "3500",
        "-d",
        "comps",
        "--log-level",
        "warn",
        "--",
        "python",
        "app.py",
        "--config",
        "x",
    ]
    assert [n.split(": ignored")[0] for n in notes] == [
        "--app-protocol grpc",
        "--app-protocol http",
        "--app-protocol grpc",
        "--config c.yaml",
        "--config d.yaml",
        "--enable-api-logging",
        "--app-ssl false",
        "--kubernetes",
        "--metrics-port 9090",
    ]
    assert all(n.count(": ignored (") == 1 for n in notes)


def test_the_apps_own_flags_are_never_touched() -> None:
    # without "--": everything from the first argument that is not an option is the app's
    kept, notes = strip_ignored(["-a", "x", "node", "app.js", "--app-protocol", "grpc"])
    assert kept == ["-a", "x", "node", "app.js", "--app-protocol", "grpc"] and notes == []
    # a value that looks like a command is the flag's value
    kept, notes = strip_ignored(["--app-id", "python", "--app-max-concurrency", "3", "python", "a.py"])
    assert kept == ["--app-id", "python", "python", "a.py"] and len(notes) == 1
    # unknown flags stay for click to refuse
    assert strip_ignored(["--bogus", "1"]) == (["--bogus", "1"], [])


def test_short_flags_with_an_equals_sign_as_go_reads_them() -> None:
    """pflag reads `-a=orders` as the value `orders` (click would read `=orders`: keys stored
    under the app id '=orders', without a word)."""
    kept, notes = strip_ignored(["-a=orders", "-H=3500", "-p=8080", "-P=grpc", "-k=false", "--", "node", "-x=1"])
    assert kept == ["-aorders", "-H3500", "-p8080", "--", "node", "-x=1"]
    assert [n.partition(": ignored")[0] for n in notes] == ["--app-protocol grpc", "--kubernetes false"]
    from click.testing import CliRunner

    from devinit.cli import cli

    # the whole command line through click: the app id is 'orders'
    got = CliRunner().invoke(cli, ["run", "-a=orders", "-d", "/nonexistent-devinit-folder", "--", "true"])
    assert "(app 'orders') is not a folder" in str(got.exception), (got.output, got.exception)


def test_log_levels_as_dapr_names_them() -> None:
    assert [server_log_level(x) for x in ("debug", "info", "warn", "WARNING", "error", "fatal", "panic")] == [
        "debug",
        "info",
        "warning",
        "warning",
        "error",
        "error",
        "error",
    ]
    with pytest.raises(ValueError, match="'loud' is not a log level"):
        server_log_level("loud")


# --- the printer --------------------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_with_no_color() -> None:
    assert wants_color(_Tty(), {"TERM": "xterm"}) is True
    assert wants_color(io.StringIO(), {}) is False
    assert wants_color(_Tty(), {"NO_COLOR": "1"}) is False
    assert wants_color(_Tty(), {"TERM": "dumb"}) is False
    assert wants_color(io.StringIO(), {"FORCE_COLOR": "1"}) is True


def test_lines_are_prefixed_coloured_per_app_and_whole_under_threads() -> None:
    out, err = _Tty(), _Tty()
    p = Printer(out, err, color=True)
    kept = p.line("alpha", "hello \x1b[1mbold\x1b[0m")
    p.line("beta", "oops", err=True)
    p.line("alpha", "again")
    lines = out.getvalue().splitlines()
    assert lines[0] == "\x1b[36m== APP - alpha ==\x1b[0m hello \x1b[1mbold\x1b[0m"
    assert lines[1] == "\x1b[36m== APP - alpha ==\x1b[0m again"  # the same colour for the same app
    assert err.getvalue() == "\x1b[33m== APP - beta ==\x1b[0m oops\n"  # another for another app
    assert kept == "== APP - alpha == hello bold"  # what a log file keeps
    assert plain("\x1b[2K\x1b[31mred\x1b[0m") == "red"

    plain_out = io.StringIO()
    q = Printer(plain_out, io.StringIO(), color=False)

    def burst(name: str) -> None:
        for i in range(300):
            q.line(name, f"{name}-{i}-" + "x" * 200)

    threads = [threading.Thread(target=burst, args=(n,)) for n in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = plain_out.getvalue().splitlines()
    assert len(got) == 900 and all(line.startswith("== APP - ") and line.endswith("x" * 200) for line in got)


# --- process control per platform (Windows simulated) -------------------------------------------


def test_how_apps_are_started_per_platform() -> None:
    assert process.popen_kwargs(True, "win32") == {"creationflags": 0x200}  # CREATE_NEW_PROCESS_GROUP
    assert process.popen_kwargs(False, "win32") == {"creationflags": 0x200}  # Ctrl-C comes through devinit
    assert process.popen_kwargs(True, "linux") == {"process_group": 0}
    assert process.popen_kwargs(False, "linux") == {}  # shares the terminal: devinit run's group
    assert process.handled_signals("win32") == [signal.SIGINT, 21]  # SIGBREAK: Ctrl-Break
    assert process.handled_signals("linux") == [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    assert process.terminal_sent_it(signal.SIGINT, False, "win32") is False  # apps are in groups of their own there
    assert process.terminal_sent_it(signal.SIGTERM, False, "linux") is False
    assert process.exit_code(-9) == 137 and process.exit_code(3) == 3
    assert sidecar.launch_method("win32") == "spawn"
    assert sidecar.spawn_argv("python3") == ["python3", "-P", "-m", "devinit.sidecar"]
    # the spawned server: no console window, its own group (the terminal's Ctrl-C is not for it)
    assert daemon.popen_kwargs("win32") == {"creationflags": daemon.CREATE_NO_WINDOW | daemon.CREATE_NEW_PROCESS_GROUP}


def test_fork_is_chosen_on_posix_only_while_single_threaded() -> None:
    code = "import threading, time\nfrom devinit.sidecar import launch_method\nprint(launch_method('linux'))\nthreading.Thread(target=time.sleep, args=(5,), daemon=True).start()\nprint(launch_method('linux'))"
    from support import devinit_env

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=devinit_env(), timeout=60)
    assert out.stdout.split() == ["fork", "spawn"], out.stderr


@pytest.fixture
def recorded_kill(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """os.kill as devinit calls it, recorded, then done for real (signal 1, CTRL_BREAK_EVENT's
    value, is SIGHUP here: it ends the process as Windows' default Ctrl-Break handler does)."""
    sent: list[tuple[int, int]] = []
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        if sig != 0:  # 0 only asks whether it lives (alive() below, standing in for OpenProcess)
            sent.append((pid, sig))
        real_kill(pid, sig)

    monkeypatch.setattr(process.os, "kill", kill)
    monkeypatch.setattr(process.os, "killpg", lambda *a: pytest.fail(f"killpg on Windows: {a}"))
    monkeypatch.setattr(daemon, "_win_pid_alive", lambda pid: alive(pid))  # OpenProcess there
    return sent


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_windows_stop_is_ctrl_break_then_terminate(recorded_kill: list[tuple[int, int]]) -> None:
    app = _sleeper()
    process.interrupt(app.pid, True, signal.SIGINT, "win32")
    assert app.wait(timeout=10) is not None
    assert recorded_kill == [(app.pid, 1)]  # CTRL_BREAK_EVENT to its group, whatever the signal was

    app = _sleeper()
    process.kill(app.pid, True, "win32")
    assert app.wait(timeout=10) is not None
    assert recorded_kill[1:] == [(app.pid, signal.SIGTERM)]  # TerminateProcess; no SIGKILL there

    app = _sleeper()  # from outside the app's console (a server whose devinit run died, devinit stop)
    assert process.stop(app.pid, True, 5.0, "win32") is True
    app.wait(timeout=10)
    assert recorded_kill[2:] == [(app.pid, signal.SIGTERM)]


def test_posix_stop_asks_then_kills_after_the_grace_period() -> None:
    app = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ok', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        process_group=0,
    )
    assert app.stdout is not None and app.stdout.readline() == b"ok\n"
    t0 = time.monotonic()
    threading.Thread(target=app.wait, daemon=True).start()  # reap it, as init would
    assert process.stop(app.pid, True, 1.0, "linux") is True
    assert time.monotonic() - t0 >= 1.0 and app.wait(timeout=10) == -signal.SIGKILL


def test_the_lifeline_stops_the_app_when_devinit_run_is_gone_on_windows(recorded_kill: list[tuple[int, int]]) -> None:
    """The server's side: the parent check the Windows way (OpenProcess), then the app
    terminated and the server told to stop."""
    parent, app = _sleeper(), _sleeper()
    r, w = os.pipe()
    line = sidecar.Lifeline(os.fdopen(r, "rb"), parent.pid, grace=5.0, platform="win32")
    assert line.parent_alive()
    parent.kill()
    parent.wait()
    assert not line.parent_alive()
    recorded_kill.clear()  # the test's own kill of the stand-in parent
    line.app = (app.pid, True)
    stopped = threading.Event()
    line._orphan(lambda why: stopped.set())
    assert stopped.is_set() and app.wait(timeout=10) is not None
    assert recorded_kill == [(app.pid, signal.SIGTERM)]
    os.close(w)


def test_the_lifeline_reads_the_app_then_stop_or_end_of_file() -> None:
    r, w = os.pipe()
    line = sidecar.Lifeline(os.fdopen(r, "rb"), os.getpid(), grace=1.0)
    stops: list[int] = []
    t = threading.Thread(target=line._read, args=(lambda why: stops.append(1),))
    t.start()
    os.write(w, b"app 4242 1\nnonsense\nstop\n")
    t.join(10)
    assert line.app == (4242, True) and stops == [1] and not line._orphaned
    # end-of-file without "stop": devinit run is gone (no app known: nothing to stop but us)
    r, w = os.pipe()
    line = sidecar.Lifeline(os.fdopen(r, "rb"), os.getpid(), grace=1.0)
    t = threading.Thread(target=line._read, args=(lambda why: stops.append(2),))
    t.start()
    os.close(w)
    t.join(10)
    assert stops == [1, 2] and line._orphaned


def test_windows_finds_npm_as_npm_cmd_through_the_apps_path(tmp_path: Path) -> None:
    tool = tmp_path / "npm"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    env = {"PATH": str(tmp_path)}
    assert _resolve(["npm", "start"], env, "win32") == [str(tool), "start"]
    assert _resolve(["npm", "start"], env, "linux") == ["npm", "start"]  # POSIX searches the app's PATH itself
    assert _resolve(["missing"], env, "win32") == ["missing"]


def test_the_apps_environment() -> None:
    env = app_env("orders", 3601, 50101, 8080, "tok", {"DAPR_HTTP_PORT": "9", "MINE": "1"})
    assert env["APP_ID"] == "orders" and env["DAPR_GRPC_PORT"] == "50101" and env["APP_PORT"] == "8080"
    assert env["DAPR_HTTP_ENDPOINT"] == "http://127.0.0.1:3601" and env["DAPR_GRPC_ENDPOINT"] == "127.0.0.1:50101"
    assert env["DAPR_API_TOKEN"] == "tok" and env["MINE"] == "1"
    assert env["DAPR_HTTP_PORT"] == "9"  # a run file's env wins, as in Dapr
    assert env["PATH"] == os.environ["PATH"]  # the rest of ours is inherited


def test_a_spawned_server_serves_and_stops_its_app_when_its_lifeline_closes(tmp_path: Path) -> None:
    """The Windows mechanism, for real on this machine (POSIX flags: Popen refuses Windows'
    creationflags here): python -m devinit.sidecar, settings on the lifeline, ready, app pid,
    end-of-file."""
    from support import devinit_env, free_port, write_component

    comps = tmp_path / "components"
    write_component(comps, "statestore", "state.in-memory")
    spec = sidecar.SidecarSpec(
        app_id="w", resources=[str(comps)], http_port=free_port(), grpc_port=free_port(), cwd=str(tmp_path), grace=2.0
    )
    server = sidecar._spawn(spec, "linux", devinit_env())
    app = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], process_group=0)
    threading.Thread(target=app.wait, daemon=True).start()
    try:
        import json
        from dataclasses import asdict

        server.tell(json.dumps(asdict(spec)))
        assert server.status.readline() == f"ready {spec.http_port} {spec.grpc_port}\n".encode()
        from devinit.run import _healthy

        assert _healthy(spec.http_port)
        server.app_started(app.pid, True)
        server.close_lifeline()  # as when devinit run dies
        assert server.wait() == 0
        wait_until(lambda: app.poll() is not None, 10, "the app to be stopped")
        log = server.log.read().decode()
        assert "its lifeline closed without 'stop'" in log and f"stopping the app (pid {app.pid})" in log
    finally:
        for p in (app,):
            if p.poll() is None:
                p.kill()
        if server.returncode is None:
            server.kill()


# --- the run records ----------------------------------------------------------------------------


def test_a_run_record_from_a_newer_devinit_is_read_not_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live run's record with fields this devinit does not know (a newer devinit wrote it):
    `devinit list` shows the run, and the record stays (it was taken for unreadable and deleted)."""
    from devinit import runs

    monkeypatch.setenv("DEVINIT_DATA_DIR", str(tmp_path))
    record = runs.this_run(None)  # this process: alive, and the start time matches
    record.apps = [runs.AppRecord("newer", os.getpid(), 3500, 50001, ["python", "app.py"], str(tmp_path), time.time())]
    record.save()
    data = json.loads(record.path.read_text())
    data["schema"] = 2
    data["apps"][0]["appProtocol"] = "grpc"
    record.path.write_text(json.dumps(data))
    [app] = runs.running_apps()
    assert app.app_id == "newer" and app.cli_pid == os.getpid()
    assert record.path.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX")
def test_a_leftover_group_is_ours_only_while_no_other_process_has_its_id() -> None:
    """An ended app's process group is swept at the end of a run. Its leftovers keep the id
    from being given to another process; once they are gone, the id may lead a stranger's group
    (every job a shell starts leads one), which must never be signalled."""
    # An app that started a child in its group and ended: the child is a leftover.
    leader = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; print(subprocess.Popen(['sleep', '60']).pid, flush=True)"],
        stdout=subprocess.PIPE,
        text=True,
        process_group=0,
    )
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    leader.wait(timeout=30)  # reaped, as devinit run reaps its apps
    # A stranger leading its own group: its pid stands for a group id reused after ours emptied.
    stranger = subprocess.Popen(["sleep", "60"], process_group=0)
    try:
        assert process.leftover_group(leader.pid) is True  # our leftover child is still in it
        assert process.leftover_group(stranger.pid) is False  # a live process has that id: not ours
        process.end_groups([leader.pid], grace=5)
        wait_until(lambda: not alive(child), 10, "the leftover child to end")
        assert process.leftover_group(leader.pid) is False
        assert stranger.poll() is None  # untouched
    finally:
        for p in (child, stranger.pid):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        stranger.wait(timeout=10)
