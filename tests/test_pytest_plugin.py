"""devinit's pytest plugin (devinit_pytest.py), as a user's suite meets it: pytest's own
``pytester`` writes test files and runs them in real pytest processes, which load the plugin
through the ``pytest11`` entry point of pyproject.toml (no ``-p``), and whose tests talk to
their devinit_server with the official Python SDK over gRPC and with HTTP calls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import tomllib

import pytest

from run_support import alive, wait_until
from support import ROOT, devinit_env, free_port

pytest_plugins = ["pytester"]

TIMEOUT = 300  # seconds for one inner pytest run (they take a few; a loaded machine is slower)


@pytest.fixture
def suite(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> pytest.Pytester:
    """``pytester`` whose pytest processes find devinit's plugin as an installed devinit gives it:
    the entry points of pyproject.toml in a dist-info on their path, this checkout first."""
    site = tmp_path_factory.mktemp("site")
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["pytest11"]
    info = site / "devinit_checkout-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: devinit-checkout\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[pytest11]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(site)]))
    for name in ("DAPR_HTTP_PORT", "DAPR_GRPC_PORT", "DAPR_HTTP_ENDPOINT", "DAPR_GRPC_ENDPOINT", "DAPR_API_TOKEN", "APP_ID"):
        monkeypatch.delenv(name, raising=False)
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_XDIST_AUTO_NUM_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SERVERS_OUT", str(pytester.path / "servers.txt"))
    return pytester


def run(suite: pytest.Pytester, *args: str) -> pytest.RunResult:
    return suite.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=TIMEOUT)


def servers(suite: pytest.Pytester) -> list[list[str]]:
    """The lines the inner tests wrote to SERVERS_OUT, split."""
    path = suite.path / "servers.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


#: the code under test of the SDK tests: it creates its DaprClient itself, as an app does
APP = """
from dapr.clients import DaprClient


def save(key, value):
    with DaprClient() as client:
        client.save_state("statestore", key, value)


def load(key):
    with DaprClient() as client:
        return client.get_state("statestore", key).data.decode()
"""

RECORD = """
def record(server):
    with open(os.environ["SERVERS_OUT"], "a") as f:
        f.write(f"{os.environ.get('PYTEST_XDIST_WORKER', '-')} {server.pid} {server.http_port}\\n")
"""


def test_sdk_over_grpc_and_http_and_nothing_leaks_between_tests(suite: pytest.Pytester) -> None:
    suite.makepyfile(app=APP)
    suite.makepyfile(
        test_orders=textwrap.dedent(
            """
        import os

        import httpx
        from dapr.clients import DaprClient

        import app
        """
        )
        + RECORD
        + textwrap.dedent(
            """

        def test_grpc_sdk(devinit_server, dapr_env):
            record(devinit_server)
            with DaprClient() as client:  # its address from the variables dapr_env set
                client.save_state("statestore", "order", "from-grpc")
                assert client.get_state("statestore", "order").data == b"from-grpc"


        def test_http_and_nothing_from_the_test_before(devinit_server, dapr_env):
            record(devinit_server)
            url = os.environ["DAPR_HTTP_ENDPOINT"] + "/v1.0/state/statestore"
            assert httpx.get(url + "/order", trust_env=False).status_code == 204  # emptied since
            assert httpx.post(url, json=[{"key": "order", "value": "from-http"}], trust_env=False).status_code == 204
            assert httpx.get(url + "/order", trust_env=False).json() == "from-http"


        def test_code_under_test_makes_its_own_client(devinit_server, dapr_env):
            record(devinit_server)
            assert app.load("order") == ""
            app.save("order", "paid")
            assert app.load("order") == "paid"
            assert dapr_env == devinit_server.env() and dapr_env["DAPR_GRPC_PORT"] == str(devinit_server.grpc_port)


        def test_variables_are_put_back():
            assert "DAPR_GRPC_PORT" not in os.environ and "DAPR_HTTP_ENDPOINT" not in os.environ
        """
        )
    )
    result = run(suite)
    result.assert_outcomes(passed=4)
    rows = servers(suite)
    assert len(rows) == 3 and len({pid for _, pid, _ in rows}) == 1  # one server for the session
    assert not alive(int(rows[0][1]))  # stopped with the session


def test_an_sdk_that_read_its_settings_at_import(suite: pytest.Pytester) -> None:
    """The SDK up to 1.18 copies every DAPR_* variable into ``dapr.conf.settings`` once, when it
    is imported: dapr_env must reach it, imported before the fixture ran or during the test,
    and put it back after."""
    closed = free_port()  # where the user's shell pointed the SDK: nothing listens there
    shell = f"""
        import os

        os.environ["DAPR_HTTP_PORT"] = os.environ["DAPR_GRPC_PORT"] = "{closed}"
        os.environ["DAPR_HEALTH_TIMEOUT"] = "3"  # a client pointed at nothing fails soon


        def as_an_sdk_up_to_1_18_imports():
            from dapr.conf import global_settings, settings

            for name in dir(global_settings):
                if name.isupper():
                    default, raw = getattr(global_settings, name), os.environ.get(name)
                    setattr(settings, name, (raw if default is None else type(default)(raw)) if raw else default)
        """
    suite.makepyfile(app=APP)
    # imported before the fixture runs (at collection)
    suite.makeconftest(textwrap.dedent(shell) + "\n\nas_an_sdk_up_to_1_18_imports()\n")
    suite.makepyfile(
        test_sdk="""
        from dapr.conf import settings

        import app


        def test_imported_before_the_fixture(dapr_env):
            assert settings.DAPR_GRPC_PORT == int(dapr_env["DAPR_GRPC_PORT"])
            app.save("k", "v")
            assert app.load("k") == "v"


        def test_put_back_after_it():
            assert vars(settings)["DAPR_GRPC_PORT"] == vars(settings)["DAPR_HTTP_PORT"] == %d
            assert vars(settings)["DAPR_GRPC_ENDPOINT"] is None and vars(settings)["DAPR_API_TOKEN"] is None
        """
        % closed
    )
    run(suite).assert_outcomes(passed=2)
    # imported during the test, after the fixture set the variables
    suite.makeconftest(textwrap.dedent(shell))
    suite.makepyfile(
        test_sdk="""
        import os
        import sys

        import pytest

        from conftest import as_an_sdk_up_to_1_18_imports


        @pytest.mark.devinit_fresh(api_token="tok")
        def test_imported_during_the_test(dapr_env):
            assert "dapr.conf" not in sys.modules
            as_an_sdk_up_to_1_18_imports()  # it reads dapr_env's variables
            import app

            app.save("k", "v")
            assert app.load("k") == "v"


        def test_it_reads_the_environment_again_after_it():
            from dapr.conf import settings

            assert vars(settings)["DAPR_GRPC_PORT"] == %d and vars(settings)["DAPR_API_TOKEN"] is None
            assert vars(settings)["DAPR_GRPC_ENDPOINT"] is None and "DAPR_API_TOKEN" not in os.environ
        """
        % closed
    )
    run(suite).assert_outcomes(passed=2)


def test_an_sdk_that_reads_its_settings_on_each_use(suite: pytest.Pytester) -> None:
    """The SDK from 1.19 reads the environment whenever a setting is used: nothing is pinned on
    its settings by dapr_env, and what a test pins is taken back after it."""
    suite.makepyfile(app=APP)
    suite.makepyfile(
        test_lazy="""
        from dapr.conf import settings

        import app


        def test_reaches_the_server(dapr_env):
            app.save("k", "v")
            assert app.load("k") == "v"
            assert "DAPR_GRPC_PORT" not in vars(settings)
            settings.DAPR_API_MAX_RETRIES = 1
            settings.DAPR_HTTP_PORT = 1  # pinned by the test itself


        def test_nothing_pinned_after_it():
            assert "DAPR_HTTP_PORT" not in vars(settings) and settings.DAPR_HTTP_PORT == 3500
        """
    )
    result = run(suite)
    result.assert_outcomes(passed=2)


def test_the_fresh_marker_gives_a_server_of_its_own(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_fresh="""
        import os

        import httpx
        import pytest
        from dapr.clients import DaprClient

        seen = {}


        def test_session(devinit_server):
            seen["session"] = devinit_server.pid


        @pytest.mark.devinit_fresh
        def test_fresh(devinit_server, dapr_env):
            assert devinit_server.pid != seen["session"]
            seen["fresh"] = devinit_server.pid
            with DaprClient() as client:
                client.save_state("statestore", "k", "fresh")


        @pytest.mark.devinit_fresh(app_id="orders", api_token="tok")
        def test_fresh_with_settings(devinit_server, dapr_env):
            assert devinit_server.pid not in (seen["session"], seen["fresh"])
            assert dapr_env["APP_ID"] == "orders" and os.environ["DAPR_API_TOKEN"] == "tok"
            with DaprClient() as client:  # the SDK sends the token from DAPR_API_TOKEN
                assert client.get_state("statestore", "k").data == b""
                client.save_state("statestore", "k", "v")
            r = httpx.get(devinit_server.http_url + "/devinit/v1/stores/statestore/keys", headers={"dapr-api-token": "tok"})
            assert [k["key"] for k in r.json()["keys"]] == ["orders||k"]
            assert httpx.get(devinit_server.http_url + "/v1.0/state/statestore/k").status_code == 401


        def test_session_again(devinit_server):
            assert devinit_server.pid == seen["session"]
            with pytest.raises(ProcessLookupError):
                os.kill(seen["fresh"], 0)  # stopped after its test
            assert "DAPR_API_TOKEN" not in os.environ and "APP_ID" not in os.environ


        @pytest.mark.devinit_fresh(colour="blue")
        def test_a_wrong_marker(devinit_server):
            pass
        """
    )
    result = run(suite, "--strict-markers")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        ["*devinit: @pytest.mark.devinit_fresh: colour given; it takes the keywords store, app_id, api_token only*"]
    )


def test_store_option_and_ini_setting(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_store="""
        def test_sqlite(devinit_server, tmp_path_factory):
            assert devinit_server.describe_store() == "sqlite"
            assert list(tmp_path_factory.getbasetemp().glob("devinit*/state.db"))
        """
    )
    run(suite, "--devinit-store=sqlite").assert_outcomes(passed=1)
    suite.makeini("[pytest]\ndevinit_store = sqlite\n")
    run(suite).assert_outcomes(passed=1)
    # a folder of component files, relative to where pytest runs; the option wins over the ini
    (suite.path / "components").mkdir()
    (suite.path / "components" / "orders.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: orders\nspec:\n  type: state.in-memory\n  version: v1\n"
    )
    suite.makepyfile(
        test_store="""
        def test_folder(devinit_server, dapr_env):
            assert devinit_server.stores == ["orders"] and dapr_env["APP_ID"] == "shop"
        """
    )
    run(suite, "--devinit-store=components", "--devinit-app-id=shop").assert_outcomes(passed=1)


def test_a_server_that_cannot_start_fails_the_tests_that_need_it_clearly(suite: pytest.Pytester) -> None:
    port = free_port()
    suite.makepyfile(
        test_x="""
        def test_one(devinit_server):
            pass


        def test_two(dapr_env):
            pass


        def test_without_it():
            pass
        """
    )
    result = run(suite, f"--devinit-store=redis://:hunter2@127.0.0.1:{port}/0")
    result.assert_outcomes(passed=1, errors=2)
    out = result.stdout.str() + result.stderr.str()
    assert f"devinit: the devinit state server for store redis://:***@127.0.0.1:{port}/0 cannot reach its store" in out
    assert "Connection refused" in out and "Start the store, or give another one" in out
    assert "hunter2" not in out and "Traceback" not in out and "testing.py" not in out  # the reason, not our stack
    (suite.path / "broken").mkdir()
    (suite.path / "broken" / "statestore.yaml").write_text("kind: [Component\n")
    result = run(suite, "--devinit-store=broken")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*found no state store component*", "*not valid YAML at line 2*"])


def test_xdist_workers_each_get_their_own_server(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_many=textwrap.dedent(
            """
        import os

        import httpx
        import pytest
        """
        )
        + RECORD
        + textwrap.dedent(
            """

        @pytest.mark.parametrize("i", range(10))
        def test_n(i, devinit_server, dapr_env):
            record(devinit_server)
            url = os.environ["DAPR_HTTP_ENDPOINT"] + "/v1.0/state/statestore"
            assert httpx.get(url + "/k", trust_env=False).status_code == 204  # nothing from the worker's test before
            assert httpx.post(url, json=[{"key": "k", "value": i}], trust_env=False).status_code == 204
        """
        )
    )
    result = run(suite, "-n", "2")
    result.assert_outcomes(passed=10)
    rows = servers(suite)
    by_worker: dict[str, set[str]] = {}
    for worker, pid, _ in rows:
        by_worker.setdefault(worker, set()).add(pid)
    assert sorted(by_worker) == ["gw0", "gw1"] and all(len(pids) == 1 for pids in by_worker.values())
    assert by_worker["gw0"] != by_worker["gw1"]  # a server per worker
    assert len({port for _, _, port in rows}) == 2
    for worker, pid, _ in rows:
        assert not alive(int(pid)), f"the server of worker {worker} outlived the session"


def test_no_server_outlives_a_killed_test_process(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_hang="""
        import os
        import time

        import pytest


        @pytest.mark.devinit_fresh
        def test_hangs(devinit_server, devinit_session_server):
            with open(os.environ["SERVERS_OUT"], "w") as f:
                f.write(f"{devinit_server.pid} {devinit_session_server.pid}\\n")
            time.sleep(600)
        """
    )
    with open(suite.path / "inner.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "test_hang.py"],
            cwd=suite.path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: servers(suite) or proc.poll() is not None, 120, "the inner test to start its servers")
        [pids] = servers(suite)
        fresh, session = (int(p) for p in pids)
        assert fresh != session and alive(fresh) and alive(session)
        proc.send_signal(signal.SIGKILL)  # no teardown, no atexit: only the lifelines' end-of-file
        proc.wait(timeout=30)
        wait_until(lambda: not alive(fresh) and not alive(session), 30, "both servers to stop after their test process died")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_plugin_costs_nothing_to_a_suite_that_does_not_use_it(suite: pytest.Pytester) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys, devinit_pytest; print(sorted(m for m in sys.modules if m.startswith('devinit')))"],
        capture_output=True,
        text=True,
        env=devinit_env(),
        cwd=suite.path,
        timeout=60,
    )
    assert out.stdout.strip() == "['devinit_pytest']", out.stderr  # devinit itself is imported by a fixture only
    suite.makepyfile(
        test_plain="""
        import sys


        def test_plain():
            assert "devinit_pytest" in sys.modules and "devinit" not in sys.modules
        """
    )
    run(suite).assert_outcomes(passed=1)
    result = run(suite, "--markers")
    result.stdout.fnmatch_lines(["*@pytest.mark.devinit_fresh(store=None, app_id=None, api_token=None): *"])
    result = run(suite, "--help")
    result.stdout.fnmatch_lines(["*--devinit-store=STORE*", "*--devinit-app-id=ID*"])
    # the entry point's name turns it off
    suite.makepyfile(test_plain="def test_uses(devinit_server):\n    pass\n")
    result = run(suite, "-p", "no:devinit")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'devinit_server' not found*"])


def test_the_readme_example_runs(suite: pytest.Pytester) -> None:
    """README's "Testing your app" example, as written there."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Testing your app") :]
    code = section[section.index("```python\n") + 10 :]
    code = code[: code.index("```")]
    suite.makepyfile(test_readme=textwrap.dedent(code))
    run(suite).assert_outcomes(passed=code.count("\ndef test_"))
