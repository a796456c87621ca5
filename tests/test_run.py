"""`devinit run` with one app, end to end: real `python -m devinit run` processes, real stores
(Redis from the session's redis-server, SQLite files), real apps (tests/apps/probe.py, and a
sample in the style of dapr/python-sdk's examples/state_store on the official SDK over gRPC),
real signals (SIGINT, SIGTERM, SIGKILL, a Ctrl-C typed into a pseudo-terminal).
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from run_support import APPS, PROBE, RunHome, Running, alive, redis_hget, wait_until
from support import RedisServer, write_component


@pytest.fixture
def rh(tmp_path: Path) -> Iterator[RunHome]:
    h = RunHome(tmp_path)
    yield h
    h.cleanup()


def sqlite_components(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "components"
    db = tmp_path / "state.db"
    write_component(folder, "statestore", "state.sqlite", {"connectionString": str(db)})
    return folder, db


def sqlite_value(db: Path, key: str) -> bytes | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute('SELECT value FROM "state" WHERE key = ?', (key,)).fetchone()
    return None if row is None else bytes(row[0])


def test_app_gets_the_sidecar_environment_and_its_exit_code_is_the_runs(rh: RunHome, tmp_path: Path) -> None:
    comps, db = sqlite_components(tmp_path)
    report = tmp_path / "report.json"
    out = rh.cli(
        "run", "--app-id", "orders", "--app-port", "8080", "-d", str(comps), "--",
        sys.executable, str(PROBE), str(report), "--save", "k=v", "--exit", "3",
    )  # fmt: skip
    assert out.returncode == 3, out.stderr
    r = json.loads(report.read_text())
    http, grpc = int(r["DAPR_HTTP_PORT"]), int(r["DAPR_GRPC_PORT"])
    assert r["APP_ID"] == "orders" and r["APP_PORT"] == "8080" and http != grpc
    assert r["DAPR_HTTP_ENDPOINT"] == f"http://127.0.0.1:{http}" and r["DAPR_GRPC_ENDPOINT"] == f"127.0.0.1:{grpc}"
    assert r["DAPR_API_TOKEN"] is None
    assert r["cwd"] == str(rh.root)  # the app runs where devinit run was started
    assert f"inspector http://127.0.0.1:{http}/ui/" in out.stderr  # as devinit init shows it
    # written as a Dapr sidecar with app id "orders" writes it: <app-id>||<key>
    assert sqlite_value(db, "orders||k") == b'"v"' and sqlite_value(db, "k") is None
    assert "app 'orders' exited with code 3" in out.stderr
    assert rh.records() == []  # the run's record is gone with it


def test_exit_code_zero_and_requested_ports(rh: RunHome, tmp_path: Path) -> None:
    from support import free_port

    comps, _ = sqlite_components(tmp_path)
    report = tmp_path / "report.json"
    http, grpc = free_port(), free_port()
    out = rh.cli(
        "run", "-a", "a1", "-H", str(http), "-G", str(grpc), "-d", str(comps), "--", sys.executable, str(PROBE), str(report)
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(report.read_text())
    assert (r["DAPR_HTTP_PORT"], r["DAPR_GRPC_PORT"]) == (str(http), str(grpc))


def test_api_token_reaches_the_server_and_the_app(rh: RunHome, tmp_path: Path) -> None:
    comps, db = sqlite_components(tmp_path)
    report = tmp_path / "report.json"
    env = {"DAPR_API_TOKEN": "s3cret-token"}
    out = rh.cli("run", "-a", "tok", "-d", str(comps), "--", sys.executable, str(PROBE), str(report), "--save", "k=1", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(report.read_text())["DAPR_API_TOKEN"] == "s3cret-token"
    assert sqlite_value(db, "tok||k") == b'"1"'
    # the server requires it: an app without the token is refused (401), and probe exits 1
    out = rh.cli(
        "run", "-a", "tok", "-d", str(comps), "--", sys.executable, "-c",
        "import os, urllib.request as u, urllib.error as e\n"
        "try:\n u.urlopen(os.environ['DAPR_HTTP_ENDPOINT'] + '/v1.0/state/statestore/k')\nexcept e.HTTPError as x:\n print(x.code)",
        env={**env, "DAPR_API_TOKEN": "s3cret-token"},
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "401", out.stdout + out.stderr


def test_same_keys_of_two_apps_stay_apart_in_redis(rh: RunHome, tmp_path: Path, redis_server: RedisServer) -> None:
    comps = tmp_path / "components"
    write_component(comps, "statestore", "state.redis", {"redisHost": redis_server.host})
    key = f"k-{os.getpid()}-{time.monotonic_ns()}"
    for app in ("alpha", "beta"):
        out = rh.cli("run", "-a", app, "-d", str(comps), "--", sys.executable, str(PROBE), "--save", f"{key}={app}")
        assert out.returncode == 0, out.stderr
    # redis-cli sees Dapr's layout: one hash per key, "<app-id>||<key>", the JSON value in "data"
    assert redis_hget(redis_server.port, f"alpha||{key}") == '"alpha"'
    assert redis_hget(redis_server.port, f"beta||{key}") == '"beta"'
    assert redis_hget(redis_server.port, key) == ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_goes_to_the_app_first_then_the_server_stops(rh: RunHome, tmp_path: Path, sig: signal.Signals) -> None:
    comps, db = sqlite_components(tmp_path)
    run = rh.start("run", "-a", "waiter", "-d", str(comps), "--", sys.executable, str(PROBE), "--wait")
    run.wait_for("waiting")
    [app] = rh.listed()
    run.signal(sig)
    code = run.wait()
    # the app stopped on the signal, and its server still answered while it did (it saved a key)
    assert code == 7, run.both()
    assert sqlite_value(db, "waiter||stopped-by") == json.dumps(sig.name).encode()
    assert not alive(app["daprdPid"]) and not alive(app["appPid"])
    assert rh.records() == [] and rh.listed() == []
    assert f"{sig.name}: stopping the apps" in run.err()


def test_ctrl_c_in_a_terminal_reaches_the_app_once(rh: RunHome, tmp_path: Path) -> None:
    """In a terminal, Ctrl-C reaches the app (in devinit run's process group) directly; devinit
    run must not send it a second SIGINT in the middle of its clean-up."""
    comps, db = sqlite_components(tmp_path)
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session of its own with the pseudo-terminal as its terminal
        os.chdir(rh.root)
        argv = rh.argv("run", "-a", "tty", "-d", str(comps), "--", sys.executable, str(PROBE), "--wait")
        os.execvpe(argv[0], argv, rh.env)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"waiting" not in seen and time.monotonic() < deadline:
            seen += _read_pty(fd)
        assert b"waiting" in seen, seen.decode(errors="replace")
        os.write(fd, b"\x03")  # Ctrl-C: the terminal sends SIGINT to its foreground process group
        _, status = os.waitpid(pid, 0)
        seen += _read_pty(fd, until_eof=True)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (OSError, ChildProcessError):
            pass
        os.close(fd)
    text = seen.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 7, text
    # devinit run knew the terminal had given the app the signal, and did not send a second
    # (two SIGINTs close together often arrive as one, so the app's count alone proves little)
    assert "SIGINT: stopping the apps, then their state servers (the terminal gave the app the signal itself)" in text
    assert text.count("stopped by SIGINT\r\n") == 1, text
    assert sqlite_value(db, "tty||stopped-by") == b'"SIGINT"'


def _read_pty(fd: int, until_eof: bool = False) -> bytes:
    import select

    got = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            if until_eof:
                continue
            return got
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the terminal's other side is closed
            return got
        if not chunk:
            return got
        got += chunk


def start_stubborn(rh: RunHome, tmp_path: Path) -> tuple[Running, dict[str, Any]]:
    """A run whose app ignores SIGINT and SIGTERM, and its `devinit list` entry."""
    comps, _ = sqlite_components(tmp_path)
    run = rh.start("run", "-a", "stubborn", "-d", str(comps), "--", sys.executable, str(PROBE), "--ignore-signals")
    run.wait_for("ignoring signals")
    [app] = rh.listed()
    return run, app


def test_an_app_that_ignores_signals_is_killed_after_the_grace_period(rh: RunHome, tmp_path: Path) -> None:
    run, app = start_stubborn(rh, tmp_path)
    run.signal(signal.SIGTERM)
    run.wait_for("did not stop within 5s: killing it", timeout=30)
    assert run.wait() == 128 + signal.SIGKILL
    assert not alive(app["appPid"]) and not alive(app["daprdPid"])


def test_a_second_signal_kills_at_once(rh: RunHome, tmp_path: Path) -> None:
    run, app = start_stubborn(rh, tmp_path)
    run.signal(signal.SIGTERM)
    run.wait_for("stopping the apps")
    run.signal(signal.SIGINT)
    run.wait_for("second stop signal: killing the apps now")
    assert run.wait() == 128 + signal.SIGKILL
    assert "did not stop within" not in run.err()  # it did not wait for the grace period
    assert not alive(app["appPid"]) and not alive(app["daprdPid"])


def test_sigkill_of_devinit_run_leaves_no_server_and_no_app(rh: RunHome, tmp_path: Path) -> None:
    comps, db = sqlite_components(tmp_path)
    run = rh.start("run", "-a", "orphan", "-d", str(comps), "--", sys.executable, str(PROBE), "--wait")
    run.wait_for("waiting")
    [app] = rh.listed()
    run.signal(signal.SIGKILL)
    run.wait()
    # The server notices at once (its lifeline closes), stops the app (SIGTERM: it saves a key
    # through the server, still up), then itself.
    wait_until(lambda: not alive(app["daprdPid"]) and not alive(app["appPid"]), 20, "the server and the app to end")
    assert sqlite_value(db, "orphan||stopped-by") == b'"SIGTERM"'
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", app["httpPort"])) != 0
    # the dead run's record is not shown, and is removed by whoever reads the records
    assert len(rh.records()) == 1
    assert rh.listed() == [] and rh.records() == []


FAMILY = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "open(sys.argv[1], 'w').write(str(child.pid))\n"
    "print('waiting', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.mark.parametrize("how", ["SIGTERM", "devinit stop", "SIGKILL"])
def test_the_apps_own_children_stop_with_it_when_there_is_no_terminal(rh: RunHome, tmp_path: Path, how: str) -> None:
    """An app that starts processes of its own (npm start -> node, go run, a reloader) and dies
    on SIGTERM without passing it on: its children must not outlive the run. Without a
    terminal to share, the app leads a process group of its own and the whole group is
    stopped (as dapr run does), whether devinit run is stopped, `devinit stop`ped or killed."""
    comps, _ = sqlite_components(tmp_path)
    child_pid_file = tmp_path / "child.pid"
    run = rh.start(
        "run", "-a", "family", "-d", str(comps), "--", sys.executable, "-c", FAMILY, str(child_pid_file),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    run.wait_for("waiting")
    child = int(child_pid_file.read_text())
    [app] = wait_until(rh.listed, 10, "the run to be listed")
    try:
        if how == "devinit stop":
            out = rh.cli("stop", "--app-id", "family")
            assert out.returncode == 0, out.stderr
        else:
            run.signal(getattr(signal, how))
        run.wait()
        wait_until(lambda: not alive(app["appPid"]) and not alive(app["daprdPid"]), 20, "the app and its server to end")
        wait_until(lambda: not alive(child), 10, f"the app's own child (pid {child}) to end")
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_in_a_terminal_the_apps_own_children_stop_with_it_too(rh: RunHome, tmp_path: Path, how: str) -> None:
    """An app sharing the terminal stays in devinit run's process group (stdin). Stopped by a
    signal that does not come from the terminal (SIGTERM from an IDE or `devinit stop`, or
    devinit run killed and its server stopping the app), the processes it started in that
    group get the signal too, as a terminal's Ctrl-C would give it to them."""
    comps, _ = sqlite_components(tmp_path)
    child_pid_file = tmp_path / "child.pid"
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session of its own with the pseudo-terminal as its terminal
        os.chdir(rh.root)
        argv = rh.argv("run", "-a", "tty-family", "-d", str(comps), "--", sys.executable, "-c", FAMILY, str(child_pid_file))
        # under a shell that stays, as in a terminal: the session's leader ending would hang
        # up the terminal, and that SIGHUP would end every process of its foreground group
        os.execvpe("sh", ["sh", "-c", '"$@"; echo run-ended; sleep 60', "sh", *argv], rh.env)
    seen = b""
    child = 0
    try:
        deadline = time.monotonic() + 60
        while b"waiting" not in seen and time.monotonic() < deadline:
            seen += _read_pty(fd)
        assert b"waiting" in seen, seen.decode(errors="replace")
        child = int(child_pid_file.read_text())
        [app] = wait_until(rh.listed, 10, "the run to be listed")
        assert app["appPid"] != child and alive(child)
        os.kill(app["cliPid"], getattr(signal, how))
        wait_until(lambda: not alive(app["cliPid"]), 30, "devinit run to end")
        wait_until(lambda: not alive(app["appPid"]) and not alive(app["daprdPid"]), 20, "the app and its server to end")
        wait_until(lambda: not alive(child), 10, f"the app's own child (pid {child}) to end")
    finally:
        for p in (pid, child):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        os.close(fd)


def test_what_an_app_left_behind_when_it_ended_stops_with_the_run(rh: RunHome, tmp_path: Path) -> None:
    """An app that ends on its own but leaves a process of its own running (a child it did not
    wait for): the run ends with its apps, and what they left behind in their process groups
    ends with it, as dapr run stops an app's whole group even when its leader has exited."""
    comps, _ = sqlite_components(tmp_path)
    child_pid_file = tmp_path / "child.pid"
    leaver = FAMILY.replace("time.sleep(600)\n", "")  # starts its child and exits 0 at once
    assert leaver.endswith("print('waiting', flush=True)\n")
    run = rh.start(
        "run", "-a", "leaver", "-d", str(comps), "--", sys.executable, "-c", leaver, str(child_pid_file),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    code = run.wait()
    child = int(child_pid_file.read_text())
    try:
        assert code == 0, run.both()
        wait_until(lambda: not alive(child), 10, f"the app's leftover child (pid {child}) to end")
        assert "app 'leaver' left processes running in its process group: stopping them" in run.err()
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass


def test_a_busy_requested_port_is_a_clear_error(rh: RunHome, tmp_path: Path) -> None:
    comps, _ = sqlite_components(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        report = tmp_path / "report.json"
        out = rh.cli("run", "-a", "x", "-H", str(port), "-d", str(comps), "--", sys.executable, str(PROBE), str(report))
    assert out.returncode == 1
    assert out.stderr.startswith(f"Error: the HTTP port {port} for app 'x' (--dapr-http-port) is already in use on 127.0.0.1."), (
        out.stderr
    )
    assert "leave --dapr-http-port out for a free one" in out.stderr
    assert not report.exists()  # the app did not start
    assert rh.records() == []


def test_no_state_component_says_where_it_looked_and_what_to_run(rh: RunHome, tmp_path: Path) -> None:
    folder = tmp_path / "only-pubsub"
    write_component(folder, "pubsub", "pubsub.redis", {"redisHost": "localhost:6379"})
    out = rh.cli("run", "-a", "x", "-d", str(folder), "--", sys.executable, str(PROBE))
    assert out.returncode == 1
    assert f"Error: no state store component for app 'x' in {folder}" in out.stderr
    assert "skipped component 'pubsub' (pubsub.redis)" in out.stderr and "devinit init" in out.stderr
    # the default: devinit's home, which init has not filled
    out = rh.cli("run", "-a", "x", "--", sys.executable, str(PROBE))
    assert out.returncode == 1 and str(rh.home / "components") in out.stderr and "devinit init" in out.stderr, out.stderr
    out = rh.cli("run", "-a", "x", "-d", str(tmp_path / "nope"), "--", sys.executable, str(PROBE))
    assert out.returncode == 1 and f"the resources path {tmp_path / 'nope'} (app 'x') is not a folder" in out.stderr


def test_several_resources_paths_and_skipped_components(rh: RunHome, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_component(a, "statestore", "state.sqlite", {"connectionString": str(tmp_path / "a.db")})
    write_component(a, "pubsub", "pubsub.redis", {"redisHost": "localhost:6379"})
    write_component(b, "other", "state.in-memory")
    out = rh.cli(
        "run", "-a", "multi", "--resources-path", str(a), "--components-path", str(b), "--", sys.executable, "-c",
        "import json, os, urllib.request as u\n"
        "m = json.load(u.urlopen(os.environ['DAPR_HTTP_ENDPOINT'] + '/v1.0/metadata'))\n"
        "print(sorted(c['name'] for c in m['components']), m['id'])",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['other', 'statestore'] multi"
    assert out.stderr.count("skipped component 'pubsub' (pubsub.redis)") == 1  # one line in the server's log
    # comma-separated, as dapr's --resources-path takes them
    out = rh.cli("run", "-a", "multi", "--resources-path", f"{a},{b}", "--", sys.executable, str(PROBE))
    assert out.returncode == 0, out.stderr


def test_dapr_run_flags_devinit_has_no_use_for_are_ignored_with_a_line(rh: RunHome, tmp_path: Path) -> None:
    comps, _ = sqlite_components(tmp_path)
    out = rh.cli(
        "run", "--app-id", "pasted", "--app-protocol", "grpc", "--config=./config.yaml", "--enable-api-logging",
        "-M", "9090", "--app-ssl=false", "--log-level", "warn", "--resources-path", str(comps),
        "--", sys.executable, str(PROBE), "--exit", "0",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for line in (
        "--app-protocol grpc: ignored",
        "--config ./config.yaml: ignored",
        "--enable-api-logging: ignored",
        "--metrics-port 9090: ignored",
        "--app-ssl false: ignored",
    ):
        assert out.stderr.count(line) == 1, (line, out.stderr)
    assert "INFO" not in out.stderr  # --log-level warn: the server's info lines are not shown
    out = rh.cli("run", "--log-level", "loud", "-d", str(comps), "--", sys.executable, str(PROBE))
    assert out.returncode == 2 or out.returncode == 1
    assert "'loud' is not a log level" in out.stderr


def test_the_app_id_defaults_to_the_folders_name(rh: RunHome, tmp_path: Path) -> None:
    comps, db = sqlite_components(tmp_path)
    # a folder's name with spaces (common on macOS and Windows) gives a usable id, not an error
    # about an --app-id the user never gave
    for name, app_id, value in (("my-service", "my-service", "1"), ("My Service", "My-Service", "2")):
        folder = tmp_path / name
        folder.mkdir()
        out = rh.cli("run", "-d", str(comps), "--", sys.executable, str(PROBE), "--save", f"k={value}", cwd=folder)
        assert out.returncode == 0, out.stderr
        assert f"no --app-id given: using '{app_id}'" in out.stderr
        assert sqlite_value(db, f"{app_id}||k") == f'"{value}"'.encode()
    out = rh.cli("run", "-a", "bad||id", "-d", str(comps), "--", sys.executable, str(PROBE))
    assert out.returncode == 1 and "is not a usable app id" in out.stderr


def test_a_command_that_does_not_exist(rh: RunHome, tmp_path: Path) -> None:
    comps, _ = sqlite_components(tmp_path)
    out = rh.cli("run", "-a", "x", "-d", str(comps), "--", "no-such-program-devinit")
    assert out.returncode == 127
    assert "cannot start 'no-such-program-devinit'" in out.stderr
    assert rh.records() == []


def test_the_server_alone_list_and_stop(rh: RunHome, tmp_path: Path) -> None:
    comps, _ = sqlite_components(tmp_path)
    run = rh.start("run", "-a", "lonely", "-d", str(comps))
    run.wait_for("the state server alone runs")
    [app] = wait_until(rh.listed, 10, "the run to be listed")
    assert app["appId"] == "lonely" and app["appPid"] == 0 and app["cliPid"] == run.pid and alive(app["daprdPid"])
    # the inspector's URL is shown, and the page is there
    [url] = re.findall(r"inspector (http://\S+/ui/)", run.err())
    assert url == f"http://127.0.0.1:{app['httpPort']}/ui/"
    page = httpx.get(url, timeout=10, trust_env=False)
    assert page.status_code == 200 and "<html" in page.text.lower()
    # `devinit state` finds no server of init's: the error names the run's server and its port
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nothing = closed.getsockname()[1]
    out = rh.cli("state", "ls", env={"DAPR_HTTP_PORT": str(nothing)})
    assert out.returncode == 1, out.stderr
    assert f"--http-port {app['httpPort']} for app 'lonely'" in out.stderr, out.stderr
    assert rh.cli("state", "ls", "--http-port", str(app["httpPort"])).stdout.strip() == "(no keys)"
    out = rh.cli("stop", "--app-id", "lonely")
    assert out.returncode == 0 and "stopped: lonely" in out.stdout, out.stderr
    assert run.wait() == 0
    assert not alive(app["daprdPid"]) and rh.listed() == []


def test_list_and_stop_an_app(rh: RunHome, tmp_path: Path) -> None:
    comps, db = sqlite_components(tmp_path)
    run = rh.start("run", "-a", "listed", "-p", "7000", "-d", str(comps), "--", sys.executable, str(PROBE), "--wait")
    run.wait_for("waiting")
    [app] = wait_until(rh.listed, 10, "the run to be listed")
    assert app["appId"] == "listed" and app["appPort"] == 7000 and app["cliPid"] == run.pid
    assert app["command"] == f"{sys.executable} {PROBE} --wait" and app["runTemplatePath"] == ""
    assert alive(app["appPid"]) and alive(app["daprdPid"]) and app["age"].endswith("s")
    table = rh.cli("list").stdout
    assert table.splitlines()[0].split()[:3] == ["APP", "ID", "HTTP"] and "listed" in table
    status = rh.cli("status", "--json")
    apps = json.loads(status.stdout)["apps"]
    assert [(a["app_id"], a["http_port"]) for a in apps] == [("listed", app["httpPort"])]
    assert "listed" in rh.cli("status").stdout
    out = rh.cli("stop", "--app-id", "listed")
    assert out.returncode == 0 and out.stdout.strip() == "stopped: listed", out.stdout + out.stderr
    assert run.wait() == 7  # SIGTERM went to devinit run, which stopped the app: its exit code
    assert sqlite_value(db, "listed||stopped-by") == b'"SIGTERM"'
    out = rh.cli("stop", "--app-id", "listed")
    assert out.returncode == 1 and "no app with app id 'listed' is running" in out.stderr
    assert rh.cli("stop").returncode == 1


def test_python_sdk_sample_over_grpc(rh: RunHome, tmp_path: Path, redis_server: RedisServer) -> None:
    """The examples/state_store-style sample, on the official Python SDK (gRPC), unchanged but
    for its component's Redis (the session's)."""
    sample = tmp_path / "state_store"
    shutil.copytree(APPS / "state_store", sample)
    yaml_path = sample / "components" / "statestore.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("localhost:6379", f"localhost:{redis_server.port}"))
    out = rh.cli(
        "run", "--app-id", "state-store", "--resources-path", "components/", "--", sys.executable, "state_store.py", cwd=sample
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "saved order-1" and lines[1] == "stale etag refused: StatusCode.ABORTED" and lines[-1] == "done"
    assert "bulk: order-1=shipped, order-2=pending, order-3=paid" in lines
    assert "after the transaction: order-2=cancelled, order-3=(none)" in lines
    assert redis_hget(redis_server.port, "state-store||order-1") == "shipped"
    assert "skipped component 'pubsub' (pubsub.redis)" in out.stderr


def test_the_spawned_server_path_runs_a_whole_app(rh: RunHome, tmp_path: Path) -> None:
    """Where fork is not used (Windows, or a process with threads), the server is
    `python -m devinit.sidecar` with the same lifeline: run an app that way, and SIGKILL it."""
    comps, db = sqlite_components(tmp_path)
    script = tmp_path / "threaded_run.py"
    # a second thread makes devinit run choose spawn, as on Windows
    script.write_text(
        "import threading, time, sys\nfrom devinit.cli import main\nthreading.Thread(target=time.sleep, args=(600,), daemon=True).start()\nsys.argv[0] = 'devinit'\nmain()\n"
    )
    out = subprocess_run(
        [
            sys.executable,
            str(script),
            "run",
            "-a",
            "spawned",
            "-d",
            str(comps),
            "--",
            sys.executable,
            str(PROBE),
            "--save",
            "k=1",
            "--exit",
            "4",
        ],
        rh,
    )
    assert out.returncode == 4, out.stderr
    assert sqlite_value(db, "spawned||k") == b'"1"'
    run = Running(
        [sys.executable, str(script), "run", "-a", "spawned", "-d", str(comps), "--", sys.executable, str(PROBE), "--wait"],
        rh.env,
        rh.root,
        tmp_path / "out",
    )
    rh.running.append(run)
    run.wait_for("waiting")
    [app] = wait_until(rh.listed, 10, "the run to be listed")
    assert _cmdline(app["daprdPid"])[1:4] == ["-P", "-m", "devinit.sidecar"]
    run.signal(signal.SIGKILL)
    run.wait()
    wait_until(lambda: not alive(app["daprdPid"]) and not alive(app["appPid"]), 20, "the spawned server and the app to end")
    assert sqlite_value(db, "spawned||stopped-by") == b'"SIGTERM"'


def test_free_ports_are_chosen_by_the_server_as_it_binds(rh: RunHome, tmp_path: Path) -> None:
    """Ports left to devinit are chosen by the server's own bind (port 0) and read from its
    status line: no moment between choosing a free port and binding it in which another
    program (another devinit run starting, a client's ephemeral port) can take it. The other
    program is simulated: whatever port the server is told to use is taken just before."""
    comps, _ = sqlite_components(tmp_path)
    report = tmp_path / "report.json"
    script = tmp_path / "racing_run.py"
    script.write_text(
        "import socket, sys\n"
        "from devinit import sidecar\n"
        "from devinit.cli import main\n"
        "real, taken = sidecar.start, []\n"
        "def start(spec, *a, **k):\n"
        "    for port in (spec.http_port, spec.grpc_port):\n"
        "        if port:  # another program binds it first\n"
        "            s = socket.socket(); s.bind(('127.0.0.1', port)); s.listen(); taken.append(s)\n"
        "    return real(spec, *a, **k)\n"
        "sidecar.start = start\n"
        "sys.argv[0] = 'devinit'\n"
        "main()\n"
    )
    out = subprocess_run(
        [sys.executable, str(script), "run", "-a", "racer", "-d", str(comps), "--", sys.executable, str(PROBE), str(report)], rh
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(report.read_text())
    assert int(r["DAPR_HTTP_PORT"]) > 0 and int(r["DAPR_GRPC_PORT"]) > 0
    assert f"HTTP 127.0.0.1:{r['DAPR_HTTP_PORT']}, gRPC 127.0.0.1:{r['DAPR_GRPC_PORT']}" in out.stderr


def subprocess_run(argv: list[str], rh: RunHome) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=rh.env, cwd=rh.root, capture_output=True, text=True, timeout=120)


def _cmdline(pid: int) -> list[str]:
    return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") if a]


ESCAPER = """
import os, time
child = os.fork()
if child == 0:
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    time.sleep(600)
    os._exit(0)
try:
    os.setpgid(child, child)
except OSError:
    pass
os.setpgid(0, child)  # leave the process group devinit run gave it: signals to that group miss it now
print(f"escaped {os.getpid()} {child}", flush=True)
time.sleep(600)
"""


def test_an_app_the_kill_cannot_reach_is_left_running_said_so_and_the_run_ends(rh: RunHome, tmp_path: Path) -> None:
    """Every wait has a bound: an app that survives its kill (here it left its process group,
    which is what devinit run signals) does not hold the run forever. Before, devinit run waited
    for it without end."""
    comps, _ = sqlite_components(tmp_path)
    script = tmp_path / "escaper.py"
    script.write_text(ESCAPER)
    run = rh.start("run", "-a", "escaper", "-d", str(comps), "--", sys.executable, str(script), stdin=subprocess.DEVNULL)
    pids: list[int] = []
    try:
        run.wait_for("escaped")
        pids = [int(p) for p in re.findall(r"escaped (\d+) (\d+)", run.out())[0]]
        [app] = wait_until(rh.listed, 10, "the run to be listed")
        run.signal(signal.SIGTERM)
        code = run.wait(timeout=90)
        assert code == 128 + signal.SIGKILL, run.both()
        err = run.err()
        assert f"app 'escaper' (pid {pids[0]}) did not end within" in err and "it is left running" in err, err
        assert f"kill -9 {pids[0]}" in err
        assert alive(pids[0])  # what it says: left running
        assert not alive(app["daprdPid"]) and rh.records() == []
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def test_stop_never_signals_a_pid_another_process_has_now(rh: RunHome, tmp_path: Path) -> None:
    """A run record names an app whose pid now belongs to another process (its start time is not
    the recorded one): devinit stop does not signal it, and devinit list does not show it. Before,
    that process got the SIGTERM."""
    from devinit.daemon import process_start_time

    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    run_proc = subprocess.Popen(sleeper)  # stands for the devinit run process (alive, itself)
    keeper = subprocess.Popen(sleeper)  # the run's other app, still running
    stranger = subprocess.Popen(sleeper)  # another program, given the pid of the app that ended
    try:
        for p in (run_proc, keeper, stranger):
            wait_until(lambda p=p: process_start_time(p.pid), 10, "the start time")
        common = {"http_port": 1, "grpc_port": 2, "command": ["app"], "cwd": str(tmp_path), "started_at": time.time()}
        kept = process_start_time(keeper.pid)
        record = {  # as devinit run writes it (runs.RunRecord, runs.AppRecord)
            "pid": run_proc.pid,
            "process_start": process_start_time(run_proc.pid),
            "started_at": time.time(),
            "apps": [
                {"app_id": "keeper", "server_pid": keeper.pid, "app_pid": keeper.pid, "server_start": kept, "app_start": kept},
                {
                    "app_id": "gone",
                    "server_pid": stranger.pid,
                    "app_pid": stranger.pid,
                    "server_start": "ticks:1",
                    "app_start": "ticks:1",
                },
            ],
        }
        for app in record["apps"]:
            app.update(common)
        runs = rh.data / "state" / "runs"
        runs.mkdir(parents=True)
        (runs / f"run-{run_proc.pid}.json").write_text(json.dumps(record))
        out = rh.cli("stop", "--app-id", "gone")
        assert stranger.poll() is None and keeper.poll() is None and run_proc.poll() is None, out  # nobody signalled
        assert out.returncode == 1 and "no app with app id 'gone' is running" in out.stderr, out.stdout + out.stderr
        assert [a["appId"] for a in rh.listed()] == ["keeper"]
    finally:
        for p in (run_proc, keeper, stranger):
            p.kill()
            p.wait()
