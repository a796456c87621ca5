"""`devinit run -f`: Dapr's Multi-App Run template, read as dapr/cli reads it (paths, precedence,
defaults, the fields it knows), and run end to end: several apps, each with its own server,
ports and app id, output prefixed and in log files, exit codes, Ctrl-C, list and stop; the
quickstart-style apps on the official Python (gRPC) and JavaScript (HTTP) SDKs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devinit.errors import UsageError
from devinit.runfile import RunFileError, find, load
from run_support import APPS, PROBE, RunHome, alive, redis_hget, wait_until
from support import ROOT, RedisServer, free_port, write_component

DEFAULT = Path("/default/components")


@pytest.fixture
def rh(tmp_path: Path) -> Iterator[RunHome]:
    h = RunHome(tmp_path)
    yield h
    h.cleanup()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- the template, as dapr/cli reads it ---------------------------------------------------------


def test_paths_resolve_as_dapr_resolves_them(tmp_path: Path) -> None:
    for d in ("proj/common-res", "proj/svc/a/own-res", "proj/svc/b/.dapr/resources", "proj/svc/c", "proj/svc/d"):
        (tmp_path / d).mkdir(parents=True)
    f = write(
        tmp_path / "proj" / "dapr.yaml",
        """
version: 1
common:
  resourcesPath: ./common-res
  env: {SHARED: common, DEBUG: true, LEVEL: 2}
apps:
  - appID: a
    appDirPath: ./svc/a
    resourcesPaths: [own-res]      # relative to the app's folder
    command: [python3, app.py]
    env: {SHARED: mine}
  - appDirPath: svc/b               # its .dapr/resources wins over common's; its id is its folder's name
    command: ["node", "."]
  - appID: c
    appDirPath: ./svc/c             # common's resources
    daprHTTPPort: 3601
    daprGRPCPort: 50101
    appPort: 8080
""",
    )
    rf = load(str(tmp_path / "proj"), DEFAULT)  # a folder: its dapr.yaml
    assert rf.path == f.resolve() and rf.notes == []
    a, b, c = rf.apps
    proj = (tmp_path / "proj").resolve()
    assert (a.app_id, a.cwd, a.resources) == ("a", proj / "svc/a", [proj / "svc/a/own-res"])
    assert a.env == {"SHARED": "mine", "DEBUG": "true", "LEVEL": "2"}  # the app's over common's; YAML scalars as text
    assert a.command == ["python3", "app.py"] and a.http_port is None and a.grpc_port is None
    assert (b.app_id, b.resources) == ("b", [proj / "svc/b/.dapr/resources"])
    assert (c.resources, c.http_port, c.grpc_port, c.app_port, c.command) == ([proj / "common-res"], 3601, 50101, 8080, [])
    # Dapr's log destinations: the app's to file and console, the sidecar's to a file
    assert (a.app_log, a.server_log, a.shares_terminal) == ("fileAndConsole", "file", False)
    # a file path works as well as its folder, .yml too
    assert [x.app_id for x in load(str(f), DEFAULT).apps] == ["a", "b", "c"]


def test_no_resources_anywhere_means_devinits_home(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    write(tmp_path / "dapr.yaml", "version: 1\napps:\n  - appDirPath: app\n")
    [app] = load(str(tmp_path), DEFAULT).apps
    assert app.resources == [DEFAULT] and app.app_id == "app"


def test_home_prefix_and_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "res").mkdir()
    (tmp_path / "app").mkdir()
    write(
        tmp_path / "x" / "dapr.yaml", f"version: 1\ncommon:\n  resourcesPath: ~/res\napps:\n  - appDirPath: {tmp_path / 'app'}\n"
    )
    [app] = load(str(tmp_path / "x" / "dapr.yaml"), DEFAULT).apps
    assert app.resources == [(tmp_path / "res").resolve()] and app.cwd == (tmp_path / "app").resolve()


def test_log_settings_and_common_log_level(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write(
        tmp_path / "dapr.yaml",
        """version: 1
common: {logLevel: warn, daprdLogDestination: console}
apps:
  - {appDirPath: a, appLogDestination: file}
  - {appDirPath: b, logLevel: debug, daprdLogDestination: fileAndConsole}
""",
    )
    a, b = load(str(tmp_path), DEFAULT).apps
    assert (a.log_level, a.app_log, a.server_log) == ("warning", "file", "console")
    assert (b.log_level, b.app_log, b.server_log) == ("debug", "fileAndConsole", "fileAndConsole")


def test_fields_devinit_ignores_and_unknown_fields_get_one_note_each(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    write(
        tmp_path / "dapr.yaml",
        """version: 1
name: shop
extra: 1
common: {appProtocol: grpc, configFilePath: ./c.yaml, colour: blue}
apps:
  - {appDirPath: a, appHealthCheckPath: /h, containerImage: img, wat: 2}
""",
    )
    rf = load(str(tmp_path), DEFAULT)
    where = str((tmp_path / "dapr.yaml").resolve())
    assert rf.name == "shop"
    assert rf.notes == [
        f"{where}: extra: unknown field, ignored",
        f"{where}: common.appProtocol: ignored (devinit runs no daprd: only the state API is served)",
        f"{where}: common.configFilePath: ignored (devinit runs no daprd: only the state API is served)",
        f"{where}: common.colour: unknown field, ignored",
        f"{where}: apps[0].appHealthCheckPath: ignored (devinit runs no daprd: only the state API is served)",
        f"{where}: apps[0].containerImage: ignored (devinit runs no daprd: only the state API is served)",
        f"{where}: apps[0].wat: unknown field, ignored",
    ]


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ("apps: [{appDirPath: a}]", "version", "required (write 'version: 1')"),
        ("version: one\napps: [{appDirPath: a}]", "version", "'one' is not a number"),
        ("version: 1", "apps", "required: a list of apps"),
        ("version: 1\napps: []", "apps", "required: a list of apps"),
        ("version: 1\napps: {a: 1}", "apps", "required: a list of apps"),
        ("version: 1\napps: [appDirPath]", "apps[0]", "must be a mapping"),
        ("version: 1\napps: [{command: [x]}]", "apps[0].appDirPath", "required: the app's folder"),
        ("version: 1\napps: [{appDirPath: nowhere}]", "apps[0].appDirPath", "nowhere does not exist"),
        ("version: 1\napps: [{appDirPath: dapr.yaml}]", "apps[0].appDirPath", "dapr.yaml is a file, not a folder"),
        ("version: 1\napps: [{appDirPath: a, resourcesPath: ../dapr.yaml}]", "apps[0].resourcesPath", "is a file, not"),
        ("version: 1\napps: [{appDirPath: a, daprHTTPPort: http}]", "apps[0].daprHTTPPort", "'http' is not a port number"),
        ("version: 1\napps: [{appDirPath: a, appPort: 70000}]", "apps[0].appPort", "70000 is not a port number"),
        ("version: 1\napps: [{appDirPath: a, command: python app.py}]", "apps[0].command", "must be a list of strings"),
        ("version: 1\napps: [{appDirPath: a, env: [A]}]", "apps[0].env", "must be a mapping"),
        ("version: 1\napps: [{appDirPath: a, env: {A: [1]}}]", "apps[0].env.A", "must be a string"),
        ("version: 1\napps: [{appDirPath: a, resourcesPath: gone}]", "apps[0].resourcesPath", "gone does not exist"),
        ("version: 1\ncommon: {resourcesPaths: ./r}\napps: [{appDirPath: a}]", "common.resourcesPaths", "must be a list"),
        ("version: 1\ncommon: [1]\napps: [{appDirPath: a}]", "common", "must be a mapping"),
        ("version: 1\napps: [{appDirPath: a, appLogDestination: screen}]", "apps[0].appLogDestination", "'screen' is not valid"),
        (
            "version: 1\ncommon: {daprdLogDestination: x}\napps: [{appDirPath: a}]",
            "common.daprdLogDestination",
            "'x' is not valid",
        ),
        ("version: 1\napps: [{appDirPath: a, logLevel: loud}]", "apps[0].logLevel", "'loud' is not a log level"),
        ("version: 1\napps: [{appDirPath: a, appID: 'x||y'}]", "apps[0].appID", "is not a usable app id (no spaces"),
        ("version: 1\napps: [{appDirPath: a, appID: 'x y'}]", "apps[0].appID", "give e.g. appID: orders"),
        ("version: 1\napps: [{appDirPath: a}, {appDirPath: a}]", "apps[1].appID", "'a' is also the id of apps[0]"),
        ("version: 1\napps: [{appDirPath: a\n", "(yaml)", "not valid YAML at line"),
        ("- 1\n- 2\n", "(document)", "expected a mapping"),
    ],
)
def test_a_malformed_file_names_the_field_and_the_reason(tmp_path: Path, body: str, field: str, reason: str) -> None:
    (tmp_path / "a").mkdir()
    f = write(tmp_path / "dapr.yaml", body + "\n")
    with pytest.raises(RunFileError) as e:
        load(str(f), DEFAULT)
    assert str(e.value).startswith(f"{f.resolve()}: {field}: ") and reason in str(e.value), str(e.value)


def test_finding_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="has no dapr.yaml"):
        find(str(tmp_path))
    with pytest.raises(UsageError, match="does not exist"):
        find(str(tmp_path / "nope.yaml"))
    with pytest.raises(UsageError, match="is not a YAML file"):
        find(str(write(tmp_path / "run.txt", "version: 1")))
    assert find(str(write(tmp_path / "other.yml", "version: 1"))) == (tmp_path / "other.yml").resolve()
    assert find("-") is None


def test_a_template_from_stdin_resolves_against_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path)
    rf = load("-", DEFAULT, read_stdin=lambda: "version: 1\napps: [{appDirPath: a}]\n")
    assert rf.path is None and rf.apps[0].cwd == (tmp_path / "a").resolve()


# --- running one -----------------------------------------------------------------------------


def probe_app(app_id: str, folder: str, *args: str, extra: str = "") -> str:
    argv = json.dumps([sys.executable, str(PROBE), *args])
    return f"  - appID: {app_id}\n    appDirPath: {folder}\n    command: {argv}\n{extra}"


def test_two_apps_with_the_same_keys_stay_apart_in_redis(rh: RunHome, tmp_path: Path, redis_server: RedisServer) -> None:
    proj = tmp_path / "proj"
    write_component(proj / "resources", "statestore", "state.redis", {"redisHost": redis_server.host})
    (proj / "alpha").mkdir()
    (proj / "beta").mkdir()
    key = f"k-{os.getpid()}-{free_port()}"
    http_alpha = free_port()
    write(
        proj / "dapr.yaml",
        "version: 1\ncommon:\n  resourcesPath: ./resources\n  env:\n    PROBE_COMMON: shared\n    PROBE_OWN: common\napps:\n"
        + probe_app(
            "alpha",
            "./alpha",
            "report.json",
            "--save",
            f"{key}=alpha",
            extra=f"    daprHTTPPort: {http_alpha}\n    env:\n      PROBE_OWN: alpha\n",
        )
        + probe_app("beta", "./beta", "report.json", "--save", f"{key}=beta"),
    )
    out = rh.cli("run", "-f", str(proj))
    assert out.returncode == 0, out.stdout + out.stderr
    # Dapr's layout, per app id: what a sidecar for each would have written
    assert redis_hget(redis_server.port, f"alpha||{key}") == '"alpha"'
    assert redis_hget(redis_server.port, f"beta||{key}") == '"beta"'
    ra = json.loads((proj / "alpha" / "report.json").read_text())  # each app ran in its own folder
    rb = json.loads((proj / "beta" / "report.json").read_text())
    assert ra["cwd"] == str((proj / "alpha").resolve()) and rb["cwd"] == str((proj / "beta").resolve())
    assert (ra["APP_ID"], ra["DAPR_HTTP_PORT"]) == ("alpha", str(http_alpha))
    ports = {ra["DAPR_HTTP_PORT"], ra["DAPR_GRPC_PORT"], rb["DAPR_HTTP_PORT"], rb["DAPR_GRPC_PORT"]}
    assert len(ports) == 4  # a server of its own for each app
    assert ra["extra"] == {"PROBE_COMMON": "shared", "PROBE_OWN": "alpha"}
    assert rb["extra"] == {"PROBE_COMMON": "shared", "PROBE_OWN": "common"}
    # the output, interleaved, each line with its app id (no colour: not a terminal)
    assert f"== APP - alpha == saved {key}" in out.stdout and f"== APP - beta == saved {key}" in out.stdout
    # and the log files, where Dapr writes them
    [alog] = (proj / "alpha" / ".dapr" / "logs").glob("alpha_app_*.log")
    [slog] = (proj / "alpha" / ".dapr" / "logs").glob("alpha_daprd_*.log")
    assert alog.read_text().splitlines() == [f"== APP - alpha == saved {key}"]
    assert "HTTP API on" in slog.read_text() and "== devinit" not in slog.read_text()
    assert "HTTP API on" not in out.stdout + out.stderr  # daprdLogDestination defaults to file


def test_the_first_non_zero_exit_code_is_the_runs(rh: RunHome, tmp_path: Path) -> None:
    comps = tmp_path / "res"
    write_component(comps, "statestore", "state.in-memory")
    for d in ("ok", "first", "later"):
        (tmp_path / d).mkdir()
    write(
        tmp_path / "dapr.yaml",
        f"version: 1\ncommon:\n  resourcesPath: {comps}\napps:\n"
        + probe_app("ok", "ok", "--exit", "0")
        + probe_app("first", "first", "--exit", "4")
        + probe_app("later", "later", "--sleep", "1.5", "--exit", "5"),
    )
    out = rh.cli("run", "-f", str(tmp_path / "dapr.yaml"))
    assert out.returncode == 4, out.stderr
    for app, code in (("ok", 0), ("first", 4), ("later", 5)):
        assert f"app '{app}' exited with code {code}" in out.stderr
    write(tmp_path / "dapr.yaml", f"version: 1\ncommon:\n  resourcesPath: {comps}\napps:\n" + probe_app("ok", "ok"))
    assert rh.cli("run", "-f", str(tmp_path)).returncode == 0


def test_ctrl_c_stops_every_app_and_every_server(rh: RunHome, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    write_component(tmp_path / "res", "statestore", "state.sqlite", {"connectionString": str(db)})
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    write(
        tmp_path / "dapr.yaml",
        "version: 1\ncommon:\n  resourcesPath: ./res\napps:\n" + probe_app("a", "a", "--wait") + probe_app("b", "b", "--wait"),
    )
    run = rh.start("run", "-f", str(tmp_path))
    run.wait_for("waiting", count=2)
    apps = wait_until(lambda: len(rh.listed()) == 2 and rh.listed(), 10, "both apps to be listed")
    run.signal(signal.SIGINT)
    assert run.wait() == 7, run.both()
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT key, value FROM state WHERE key LIKE '%stopped-by'").fetchall())
    assert rows == {"a||stopped-by": b'"SIGINT"', "b||stopped-by": b'"SIGINT"'}
    for a in apps:
        assert not alive(a["daprdPid"]) and not alive(a["appPid"])
    assert rh.records() == []


def test_list_and_stop_with_a_run_file(rh: RunHome, tmp_path: Path) -> None:
    write_component(tmp_path / "res", "statestore", "state.in-memory")
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    f = write(
        tmp_path / "dapr.yaml",
        "version: 1\ncommon:\n  resourcesPath: ./res\napps:\n" + probe_app("a", "a", "--wait") + probe_app("b", "b", "--wait"),
    )
    run = rh.start("run", "-f", str(f))
    run.wait_for("waiting", count=2)
    apps = wait_until(lambda: len(rh.listed()) == 2 and rh.listed(), 10, "both apps to be listed")
    assert {a["appId"] for a in apps} == {"a", "b"}
    assert {a["runTemplatePath"] for a in apps} == {str(f.resolve())} and {a["cliPid"] for a in apps} == {run.pid}
    assert all(a["appLogPath"].endswith(".log") and a["daprdLogPath"].endswith(".log") for a in apps)
    a = next(x for x in apps if x["appId"] == "a")
    # one app of several: it stops, its server with it; the other goes on
    out = rh.cli("stop", "-a", "a")
    assert out.returncode == 0 and out.stdout.strip() == "stopped: a", out.stderr
    wait_until(lambda: not alive(a["daprdPid"]), 20, "a's server to stop")
    assert [x["appId"] for x in rh.listed()] == ["b"] and run.proc.poll() is None
    # the rest, by the run file's folder
    out = rh.cli("stop", "-f", str(tmp_path))
    assert out.returncode == 0 and out.stdout.strip() == "stopped: b", out.stderr
    assert run.wait() == 7
    assert rh.listed() == [] and rh.records() == []
    out = rh.cli("stop", "-f", str(tmp_path))
    assert out.returncode == 1 and f"no app with run file {f.resolve()} is running" in out.stderr


def test_output_is_coloured_on_a_terminal_only(rh: RunHome, tmp_path: Path) -> None:
    write_component(tmp_path / "res", "statestore", "state.in-memory")
    (tmp_path / "a").mkdir()
    write(tmp_path / "dapr.yaml", "version: 1\ncommon:\n  resourcesPath: ./res\napps:\n" + probe_app("a", "a", "--exit", "0"))
    env = {"FORCE_COLOR": "1", "NO_COLOR": ""}
    out = rh.cli("run", "-f", str(tmp_path), env=env)
    assert out.returncode == 0, out.stderr
    assert "\x1b[36m== APP - a ==\x1b[0m exiting" in out.stdout
    [log] = (tmp_path / "a" / ".dapr" / "logs").glob("a_app_*.log")
    assert log.read_text() == "== APP - a == exiting\n"  # never colour codes in a file


def test_flags_beside_a_run_file_are_ignored_with_a_line(rh: RunHome, tmp_path: Path) -> None:
    write_component(tmp_path / "res", "statestore", "state.in-memory")
    (tmp_path / "a").mkdir()
    write(tmp_path / "dapr.yaml", "version: 1\ncommon:\n  resourcesPath: ./res\napps:\n" + probe_app("a", "a"))
    out = rh.cli("run", "-f", str(tmp_path), "--app-id", "zzz", "-H", "3999")
    assert out.returncode == 0, out.stderr
    assert "--app-id: ignored with --run-file" in out.stderr and "--dapr-http-port: ignored with --run-file" in out.stderr


def test_a_busy_port_in_a_run_file_names_its_field(rh: RunHome, tmp_path: Path) -> None:
    write_component(tmp_path / "res", "statestore", "state.in-memory")
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        write(
            tmp_path / "dapr.yaml",
            "version: 1\ncommon:\n  resourcesPath: ./res\napps:\n"
            + probe_app("a", "a", "--wait")
            + probe_app("b", "b", extra=f"    daprGRPCPort: {port}\n"),
        )
        out = rh.cli("run", "-f", str(tmp_path))
    assert out.returncode == 1
    assert f"Error: the gRPC port {port} for app 'b' (daprGRPCPort) is already in use" in out.stderr, out.stderr
    assert "waiting" not in out.stdout  # nothing started


def test_a_server_that_dies_before_it_listens_stops_the_run_with_its_log(rh: RunHome, tmp_path: Path) -> None:
    """b's server is held at start-up (its SQLite file is locked by this test) and killed
    there: the run says so with its log, stops a (already running), and exits 1."""
    db = tmp_path / "b.db"
    write_component(tmp_path / "res-a", "statestore", "state.in-memory")
    write_component(tmp_path / "res-b", "statestore", "state.sqlite", {"connectionString": str(db), "busyTimeout": "60s"})
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    write(
        tmp_path / "dapr.yaml",
        "version: 1\napps:\n"
        + probe_app("a", "a", "--wait", extra="    resourcesPath: ../res-a\n    daprdLogDestination: console\n")
        + probe_app("b", "b", extra="    resourcesPath: ../res-b\n    daprdLogDestination: console\n"),
    )
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("CREATE TABLE t (x)")
    lock.execute("BEGIN EXCLUSIVE")  # b's server waits for it in its start-up (busyTimeout 60s)
    try:
        run = rh.start("run", "-f", str(tmp_path))
        run.wait_for("waiting")  # a runs; b's server (forked with a's) waits for the lock
        [a] = wait_until(rh.listed, 10, "a to be listed")
        children = Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()
        [b_server] = [int(c) for c in children if int(c) not in (a["daprdPid"], a["appPid"])]
        os.kill(b_server, signal.SIGKILL)
        assert run.wait() == 1, run.both()
    finally:
        lock.close()
    err = run.err()
    assert "Error: the state server of app 'b' was killed by SIGKILL before it listened" in err
    assert "before it logged anything. Run again with --log-level debug" in err
    assert "stopped by SIGTERM" in run.out()  # a was stopped, politely
    assert not alive(a["daprdPid"]) and not alive(a["appPid"]) and rh.records() == []


# --- the quickstart-style apps on the official SDKs ---------------------------------------------


def quickstart(tmp_path: Path, redis_server: RedisServer) -> Path:
    """tests/apps/state_management copied, its component pointed at the session's Redis, the
    JavaScript SDK linked in (installed under tests/js)."""
    root = tmp_path / "state_management"
    shutil.copytree(APPS / "state_management", root)
    comp = root / "resources" / "statestore.yaml"
    comp.write_text(comp.read_text().replace("localhost:6379", f"localhost:{redis_server.port}"))
    (root / "javascript" / "order-processor" / "node_modules").symlink_to(ROOT / "tests" / "js" / "node_modules")
    return root


def test_python_sdk_quickstart_over_grpc(rh: RunHome, tmp_path: Path, redis_server: RedisServer) -> None:
    root = quickstart(tmp_path, redis_server)
    out = rh.cli("run", "-f", "python", cwd=root, env={"ORDER_COUNT": "3"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "== APP - order-processor == Getting Order: {'orderId': 3, 'item': 'item-3'}" in out.stdout
    assert "== APP - order-processor == done with 3 orders" in out.stdout
    assert json.loads(redis_hget(redis_server.port, "order-processor||3")) == {"orderId": 3, "item": "item-3"}
    assert redis_hget(redis_server.port, "order-processor||1") == ""  # deleted
    [log] = (root / "python" / "order-processor" / ".dapr" / "logs").glob("order-processor_daprd_*.log")
    assert "skipped Resiliency 'orders-resiliency'" in log.read_text()


def test_javascript_sdk_quickstart_over_http(rh: RunHome, tmp_path: Path, redis_server: RedisServer) -> None:
    from support import need

    need(shutil.which("npm") is not None and shutil.which("node") is not None, "node and npm run the JavaScript quickstart")
    need((ROOT / "tests" / "js" / "node_modules" / "@dapr" / "dapr").is_dir(), "npm ci --prefix tests/js installs @dapr/dapr")
    root = quickstart(tmp_path, redis_server)
    env = {"ORDER_COUNT": "3"}  # DAPR_HOST unset: the app says "localhost", as the quickstart does
    out = rh.cli("run", "-f", "javascript/dapr.yaml", cwd=root, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert '== APP - order-processor == Getting Order: {"orderId":3,"item":"item-3"}' in out.stdout
    assert "== APP - order-processor == done with 3 orders" in out.stdout
    assert json.loads(redis_hget(redis_server.port, "order-processor||2")) == {"orderId": 2, "item": "item-2"}
