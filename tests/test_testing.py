"""devinit.testing.StateServer on its own: real servers (spawned sidecars), real stores (a
redis-server with a password, SQLite files), the official SDK over gRPC and HTTP calls.

The pytest plugin built on it is tested in tests/test_pytest_plugin.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from devinit.errors import StateServerError
from devinit.run import sidecar_vars
from devinit.testing import StateServer, redis_metadata
from run_support import alive, wait_until
from support import RedisServer, free_port, point_sdk_at, write_component

SECRET = "s3cret-pa:ss/w@rd"


def server_children() -> set[int]:
    """The state servers this test process runs now (Linux: /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"devinit.sidecar" in cmdline:
            found.add(int(entry.name))
    return found


def temp_folders() -> set[Path]:
    """The folders StateServer made for itself (none given)."""
    return set(Path(tempfile.gettempdir()).glob("devinit-test-*"))


@pytest.fixture
def no_server_left() -> Iterator[None]:
    """Whatever the test does, no state server of it outlives it."""
    before = server_children()
    yield
    wait_until(lambda: not (server_children() - before), 15, "the test's state servers to end")


def put(server: StateServer, key: str, value: object, token: str | None = None) -> None:
    """A key as stored (prefix and all), through the devinit route: any app id."""
    headers = {"dapr-api-token": token} if token else {}
    r = httpx.put(
        f"{server.http_url}/devinit/v1/stores/statestore/keys/{key.replace('|', '%7C')}",
        json={"value": value},
        headers=headers,
        trust_env=False,
    )
    assert r.status_code == 200, r.text


def keys(server: StateServer, token: str | None = None) -> list[str]:
    headers = {"dapr-api-token": token} if token else {}
    r = httpx.get(f"{server.http_url}/devinit/v1/stores/statestore/keys?limit=1000", headers=headers, trust_env=False)
    assert r.status_code == 200, r.text
    return sorted(k["key"] for k in r.json()["keys"])


def test_in_memory_server_serves_both_apis_and_says_where(no_server_left: None, monkeypatch: pytest.MonkeyPatch) -> None:
    folders = temp_folders()
    with StateServer(app_id="orders") as server:
        assert len(temp_folders() - folders) == 1  # its component file
        assert server.http_port != server.grpc_port and server.running
        assert server.stores == ["statestore"]
        # the same variables devinit run gives an app
        assert server.env() == sidecar_vars("orders", server.http_port, server.grpc_port)
        assert server.env()["DAPR_HTTP_ENDPOINT"] == server.http_url == f"http://127.0.0.1:{server.http_port}"
        assert server.env()["DAPR_GRPC_ENDPOINT"] == server.grpc_endpoint and "DAPR_API_TOKEN" not in server.env()
        # the official SDK over gRPC, pointed at it by the variables
        point_sdk_at(monkeypatch, server)
        from dapr.clients import DaprClient

        with DaprClient() as client:
            client.save_state("statestore", "order-1", "paid")
            assert client.get_state("statestore", "order-1").data == b"paid"
        r = httpx.get(f"{server.http_url}/v1.0/state/statestore/order-1", trust_env=False)
        assert r.status_code == 200 and r.text == "paid"
        assert keys(server) == ["orders||order-1"]  # stored as under devinit run -a orders
        page = httpx.get(server.inspector_url, trust_env=False)
        assert page.status_code == 200 and "<html" in page.text.lower()
        pid = server.pid
        assert pid in server_children()
    assert not server.running and not alive(pid) and temp_folders() <= folders  # its folder removed
    with pytest.raises(StateServerError, match="not running"):
        server.http_port  # noqa: B018


def test_reset_empties_keys_of_every_app_id_and_keeps_the_server(no_server_left: None, tmp_path: Path) -> None:
    with StateServer("sqlite", app_id="a", tmp_dir=tmp_path) as server:
        assert (tmp_path / "state.db").is_file()  # the SQLite file lives in the test's folder
        pid = server.pid
        for i in range(3):
            r = httpx.post(f"{server.http_url}/v1.0/state/statestore", json=[{"key": f"k{i}", "value": i}], trust_env=False)
            assert r.status_code == 204
        put(server, "other-app||x", {"n": 1})
        put(server, "no-prefix", "y")
        assert keys(server) == ["a||k0", "a||k1", "a||k2", "no-prefix", "other-app||x"]
        server.reset()
        assert keys(server) == [] and server.pid == pid
        assert httpx.get(f"{server.http_url}/v1.0/state/statestore/k1", trust_env=False).status_code == 204
        server.reset()  # empty already: still fine
    assert (tmp_path / "state.db").exists()  # a folder given is the caller's: left as it is


def test_reset_goes_past_a_page(no_server_left: None) -> None:
    with StateServer() as server:
        items = [{"key": f"k{i}", "value": i} for i in range(2500)]  # the clear route deletes 1000 a page
        r = httpx.post(f"{server.http_url}/v1.0/state/statestore", json=items, trust_env=False, timeout=30)
        assert r.status_code == 204
        server.reset()
        assert keys(server) == []


def test_a_token_is_required_and_reset_carries_it(no_server_left: None) -> None:
    with StateServer(api_token="tok-123") as server:
        assert server.env()["DAPR_API_TOKEN"] == "tok-123"
        url = f"{server.http_url}/v1.0/state/statestore"
        assert httpx.post(url, json=[{"key": "k", "value": 1}], trust_env=False).status_code == 401
        r = httpx.post(url, json=[{"key": "k", "value": 1}], headers={"dapr-api-token": "tok-123"}, trust_env=False)
        assert r.status_code == 204
        server.reset()
        assert keys(server, "tok-123") == []


def test_redis_url_with_a_password_and_a_database(no_server_left: None, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis", "--requirepass", SECRET)
    try:
        url = f"redis://:{quote(SECRET, safe='')}@127.0.0.1:{redis.port}/3"
        cli = ["redis-cli", "-p", str(redis.port), "-a", SECRET, "--no-auth-warning", "-n", "3"]
        subprocess.run([*cli, "SET", "not-dapr", "mine"], check=True, capture_output=True)
        with StateServer(url, app_id="svc", tmp_dir=tmp_path / "srv") as server:
            assert SECRET not in server.describe_store() and SECRET not in repr(server)
            assert server.describe_store() == f"redis://:***@127.0.0.1:{redis.port}/3"
            component = tmp_path / "srv" / "components" / "statestore.yaml"
            assert stat.S_IMODE(component.stat().st_mode) == 0o600  # it holds the password
            r = httpx.post(f"{server.http_url}/v1.0/state/statestore", json=[{"key": "k", "value": "v"}], trust_env=False)
            assert r.status_code == 204
            got = subprocess.run([*cli, "HGET", "svc||k", "data"], check=True, capture_output=True, text=True).stdout
            assert got.strip() == '"v"'  # in database 3, in Dapr's layout
            server.reset()
            listed = subprocess.run([*cli, "--scan"], check=True, capture_output=True, text=True).stdout.split()
            assert listed == ["not-dapr"]  # Dapr's keys emptied, another program's left alone
            assert SECRET not in "\n".join(server.log)
    finally:
        redis.stop()


def test_redis_url_where_nothing_listens_fails_at_start(no_server_left: None) -> None:
    port = free_port()
    with pytest.raises(StateServerError) as err:
        StateServer(f"redis://:{quote(SECRET, safe='')}@127.0.0.1:{port}/0").start()
    message = str(err.value)
    assert f"for store redis://:***@127.0.0.1:{port}/0 cannot reach its store" in message
    assert "Start the store, or give another one" in message and SECRET not in message


def test_a_broken_component_folder_says_why(no_server_left: None, tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad-yaml"
    bad_yaml.mkdir()
    (bad_yaml / "statestore.yaml").write_text("apiVersion: dapr.io/v1alpha1\nkind: [Component\n")
    with pytest.raises(StateServerError) as err:
        StateServer(bad_yaml).start()
    assert "found no state store component" in str(err.value) and "not valid YAML" in str(err.value)
    bad_meta = tmp_path / "bad-meta"
    write_component(bad_meta, "cache", "state.redis", {"redisHost": "nowhere"})
    with pytest.raises(StateServerError) as err:
        StateServer(str(bad_meta)).start()
    assert "could not load its store (cache:" in str(err.value) and "redisHost" in str(err.value)


def test_a_component_folder_of_its_own_is_served(no_server_left: None, tmp_path: Path) -> None:
    folder = tmp_path / "components"
    write_component(folder, "orders", "state.in-memory")
    write_component(folder, "carts", "state.sqlite", {"connectionString": str(tmp_path / "carts.db")})
    with StateServer(folder) as server:
        assert server.stores == ["carts", "orders"]
        for store in server.stores:
            r = httpx.post(f"{server.http_url}/v1.0/state/{store}", json=[{"key": "k", "value": 1}], trust_env=False)
            assert r.status_code == 204
        server.reset()
        for store in server.stores:
            assert httpx.get(f"{server.http_url}/v1.0/state/{store}/k", trust_env=False).status_code == 204


@pytest.mark.parametrize(
    ("store", "says"),
    [
        ("in-memroy", "is not one of in-memory, sqlite, a redis:// URL or a folder"),
        (f"redis://:{quote(SECRET, safe='')}@127.0.0.1:notaport/0", "cannot be read"),
        (f"redis://:{quote(SECRET, safe='')}@127.0.0.1:6379/zero", "does not end in a database number"),
        (f"redis://:{SECRET}@127.0.0.1:6379/0", "cannot be read"),  # a password not percent-encoded
        ("redis://", "names no host"),
    ],
)
def test_a_bad_store_argument_is_refused_before_anything_starts(store: str, says: str) -> None:
    before, folders = server_children(), temp_folders()
    with pytest.raises(StateServerError, match=says) as err:
        StateServer(store).start()
    assert all(part not in str(err.value) for part in ("s3cret", "w@rd", "w%40rd")), str(err.value)
    assert server_children() == before and temp_folders() == folders


def test_redis_metadata_from_urls() -> None:
    assert redis_metadata("redis://127.0.0.1") == {"redisHost": "127.0.0.1:6379", "redisDB": "0"}
    assert redis_metadata("rediss://me:p%40ss@[::1]:7000/2") == {
        "redisHost": "[::1]:7000",
        "redisDB": "2",
        "redisPassword": "p@ss",
        "redisUsername": "me",
        "enableTLS": "true",
    }


def test_start_and_stop_twice(no_server_left: None) -> None:
    server = StateServer().start()
    try:
        with pytest.raises(StateServerError, match="running already"):
            server.start()
    finally:
        server.stop()
    server.stop()
    with server:  # started again, on new ports
        assert server.running


def test_a_server_that_dies_before_it_listens(no_server_left: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real fault: the server's interpreter exits at start (a sitecustomize that exits 3)."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text("import os\nos.write(2, b'boom: this interpreter is broken\\n')\nos._exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(broken))
    with pytest.raises(StateServerError) as err:
        StateServer().start()
    assert "exited with code 3 before it listened" in str(err.value) and "boom: this interpreter is broken" in str(err.value)


def test_an_interpreter_that_cannot_be_started_leaves_no_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A real fault: the server's interpreter is not there (a venv removed under the test run).
    The error says so, and the temporary folder made for the component file is removed."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where StateServer makes its folder
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-such-python"))
    with pytest.raises(StateServerError, match="cannot start the state server"):
        StateServer("sqlite").start()
    assert temp_folders() == set()
