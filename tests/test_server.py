"""Server-level behaviour: component loading, key prefixes, the API token, shutdown, Redis layout."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
import redis
from conftest import backing_server, store_component

from support import DevinitServer, RedisServer, write_component


def test_no_store_configured(tmp_path: Path):
    folder = tmp_path / "components"
    folder.mkdir()
    srv = DevinitServer(folder)
    try:
        r = httpx.get(srv.url + "/v1.0/state/statestore/k")
        assert r.status_code == 500 and r.json()["errorCode"] == "ERR_STATE_STORE_NOT_CONFIGURED"
        assert "devinit init" in r.json()["message"]
        assert httpx.get(srv.url + "/v1.0/healthz").status_code == 204
    finally:
        srv.stop()


def test_broken_components_are_reported_and_others_load(tmp_path: Path):
    folder = tmp_path / "components"
    write_component(folder, "good", "state.in-memory")
    (folder / "bad-yaml.yaml").write_text("apiVersion: [\n")
    write_component(folder, "wrongtype", "state.mongodb")
    write_component(folder, "noconn", "state.sqlite")
    write_component(folder, "badredis", "state.redis", {"redisHost": "localhost", "redisDB": "x"})
    (folder / "pubsub.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.redis\n  version: v1\n"
    )
    (folder / "notes.txt").write_text("not a component")
    srv = DevinitServer(folder)
    try:
        log = srv.log()
        assert "bad-yaml.yaml: (yaml): not valid YAML at line" in log
        assert "wrongtype.yaml: spec.type: 'state.mongodb' is not supported" in log
        assert "noconn.yaml: spec.metadata.connectionString: missing" in log
        assert "badredis.yaml: spec.metadata.redisHost" in log
        assert "pubsub" not in log.split("stores:")[1].splitlines()[0]
        assert httpx.post(srv.url + "/v1.0/state/good", json=[{"key": "k", "value": 1}]).status_code == 204
        r = httpx.get(srv.url + "/v1.0/state/wrongtype/k")
        assert r.status_code == 400 and r.json()["errorCode"] == "ERR_STATE_STORE_NOT_FOUND"
        assert "failed to load" in r.json()["message"] and "state.mongodb" in r.json()["message"]
        r = httpx.get(srv.url + "/v1.0/state/noconn/k")
        assert "connectionString" in r.json()["message"]
        names = [c["name"] for c in httpx.get(srv.url + "/v1.0/metadata").json()["components"]]
        assert names == ["good"]
    finally:
        srv.stop()


def test_api_token_on_every_route_but_health(tmp_path: Path):
    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.in-memory")
    srv = DevinitServer(folder, env={"DAPR_API_TOKEN": "s3cret"})
    try:
        base = srv.url
        calls = [
            ("GET", "/v1.0/state/statestore/k", None),
            ("POST", "/v1.0/state/statestore", [{"key": "k", "value": 1}]),
            ("DELETE", "/v1.0/state/statestore/k", None),
            ("POST", "/v1.0/state/statestore/bulk", {"keys": ["k"]}),
            ("POST", "/v1.0/state/statestore/transaction", {"operations": []}),
            ("POST", "/v1.0-alpha1/state/statestore/query", {"filter": {}}),
            ("GET", "/v1.0/metadata", None),
        ]
        for method, path, body in calls:
            for headers in ({}, {"dapr-api-token": "wrong"}, {"dapr-api-token": "s3cre"}):
                r = httpx.request(method, base + path, json=body, headers=headers)
                assert r.status_code == 401, (method, path, r.status_code)
                assert r.json()["errorCode"] == "ERR_API_TOKEN"
            r = httpx.request(method, base + path, json=body, headers={"dapr-api-token": "s3cret"})
            assert r.status_code in (200, 204), (method, path, r.text)
        assert httpx.get(base + "/v1.0/healthz").status_code == 204
        assert httpx.get(base + "/v1.0/healthz/outbound").status_code == 204
        assert "s3cret" not in srv.log()
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "prefix, app_id, stored",
    [
        (None, "myapp", "myapp||k1"),
        (None, None, "k1"),
        ("appid", "myapp", "myapp||k1"),
        ("name", "myapp", "pfx||k1"),
        ("none", "myapp", "k1"),
        ("team-a", "myapp", "team-a||k1"),
    ],
)
def test_key_prefix_and_dapr_redis_layout(tmp_path: Path, redis_server: RedisServer, prefix, app_id, stored):
    folder = tmp_path / "components"
    meta = {"redisHost": redis_server.host, **({"keyPrefix": prefix} if prefix else {})}
    write_component(folder, "pfx", "state.redis", meta)
    srv = DevinitServer(folder, *(["--app-id", app_id] if app_id else []))
    r = redis.Redis(port=redis_server.port)
    r.delete(stored)
    try:
        assert httpx.post(srv.url + "/v1.0/state/pfx", json=[{"key": "k1", "value": {"v": 1}}]).status_code == 204
        # Dapr's layout: a hash with data and version (= etag), an integer
        fields = r.hgetall(stored)
        assert set(fields) == {b"data", b"version"} and fields[b"data"] == b'{"v":1}'
        assert fields[b"version"].isdigit()
        assert httpx.get(srv.url + "/v1.0/state/pfx/k1").headers["etag"] == fields[b"version"].decode()
        bulk = httpx.post(srv.url + "/v1.0/state/pfx/bulk", json={"keys": ["k1"]}).json()
        assert bulk[0]["key"] == "k1"  # reported without the prefix
        # what a Dapr sidecar wrote (same layout) reads back through devinit
        r.hset(stored, mapping={"data": b'"from dapr"', "version": 7})
        got = httpx.get(srv.url + "/v1.0/state/pfx/k1")
        assert got.json() == "from dapr" and got.headers["etag"] == "7"
    finally:
        r.delete(stored)
        srv.stop()


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
def test_sigterm_stops_cleanly_and_data_stays(tmp_path: Path, request, kind):
    rs = backing_server(request, kind)
    folder = tmp_path / "components"
    store_component(kind, folder, "statestore", rs)
    srv = DevinitServer(folder)
    key = f"sig-{kind}-{tmp_path.name}"
    assert httpx.post(srv.url + "/v1.0/state/statestore", json=[{"key": key, "value": 42}]).status_code == 204
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=15) == 0
    assert "stores closed" in srv.log()
    srv.proc = None
    srv._log.close()
    srv.start()
    try:
        assert httpx.get(srv.url + "/v1.0/state/statestore/" + key).json() == 42
    finally:
        srv.stop()


def test_busy_port_fails_clearly(tmp_path: Path):
    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.in-memory")
    first = DevinitServer(folder)
    try:
        import subprocess
        import sys

        from support import devinit_env

        out = subprocess.run(
            [sys.executable, "-m", "devinit", "serve", "--components-path", str(folder), "--http-port", str(first.http_port)],
            capture_output=True,
            text=True,
            timeout=30,
            env=devinit_env(),
        )
        assert out.returncode != 0
        assert str(first.http_port) in out.stdout + out.stderr
    finally:
        first.stop()


def test_only_a_broken_file_says_why_nothing_is_configured(tmp_path: Path):
    folder = tmp_path / "components"
    folder.mkdir()
    (folder / "statestore.yaml").write_text('apiVersion: "dapr.io/v1alpha1\nkind: Component\n')  # unterminated
    srv = DevinitServer(folder)
    try:
        r = httpx.get(srv.url + "/v1.0/state/statestore/k")
        assert r.status_code == 500 and r.json()["errorCode"] == "ERR_STATE_STORE_NOT_CONFIGURED"
        message = r.json()["message"]
        assert "statestore.yaml" in message and "YAML" in message and "add a component file" not in message
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "ctype, meta, field",
    [
        ("state.redis", {"redisHost": "127.0.0.1:1", "readTimeout": "-1"}, "readTimeout"),
        ("state.redis", {"redisHost": "127.0.0.1:1", "dialTimeout": "0s"}, "dialTimeout"),
        ("state.sqlite", {"connectionString": ":memory:", "busyTimeout": "-1"}, "busyTimeout"),
        ("state.in-memory", {"ttlInSeconds": "99999999999"}, "ttlInSeconds"),
    ],
)
def test_component_values_that_would_break_a_store_are_refused(tmp_path: Path, ctype, meta, field):
    folder = tmp_path / "components"
    write_component(folder, "s", ctype, meta)
    srv = DevinitServer(folder)
    try:
        r = httpx.get(srv.url + "/v1.0/state/s/k")
        assert r.status_code == 400 and r.json()["errorCode"] == "ERR_STATE_STORE_NOT_FOUND"
        assert f"spec.metadata.{field}" in r.json()["message"]
    finally:
        srv.stop()
