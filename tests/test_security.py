"""Security of `devinit serve`: loopback only, the token compared in constant time on both front
ends, no secret in the logs even at debug level, broken component files named precisely.

The Redis container side (loopback binding, password, 0600 files, status output) is in
tests/test_docker_reliability.py; the token on every HTTP route in tests/test_server.py and
on every RPC in tests/test_grpc_sdk.py.
"""

from __future__ import annotations

import asyncio
import hmac
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import store_component
from test_docker_reliability import LOOPBACK, listening

from support import DevinitServer, RedisServer, write_component

_REAL_COMPARE = hmac.compare_digest
SECRET = "pw-" + "9f8e7d6c5b4a"


def test_server_listens_on_loopback_only(tmp_path: Path):
    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.in-memory")
    srv = DevinitServer(folder)  # no --host: the default
    try:
        for port in (srv.http_port, srv.grpc_port):
            addrs = listening(port)
            assert addrs and set(addrs) <= LOOPBACK, (port, addrs)
    finally:
        srv.stop()


class _Spy:
    """Records calls to hmac.compare_digest, then does the real comparison."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((a, b))
        return _REAL_COMPARE(a, b)


def test_http_front_end_compares_the_token_in_constant_time(monkeypatch: pytest.MonkeyPatch):
    """The HTTP handler (in process) reaches hmac.compare_digest for a wrong token of any length."""
    from devinit.server import runtime as rt
    from devinit.server.http_api import HttpApp
    from devinit.server.http_wire import Request

    spy = _Spy()
    monkeypatch.setattr(rt.hmac, "compare_digest", spy)
    app = HttpApp(rt.Runtime({}, {}, api_token="s3cret"))
    for given in (b"s3creX", b"s", b"s3cret-and-more"):
        request = Request("GET", b"/v1.0/metadata", b"", {b"dapr-api-token": given}, b"")
        status, _, _ = asyncio.run(app(request))
        assert status == 401
    assert [a for a, _ in spy.calls] == [b"s3creX", b"s", b"s3cret-and-more"]
    assert all(b == b"s3cret" for _, b in spy.calls)


def test_grpc_front_end_compares_the_token_in_constant_time(monkeypatch: pytest.MonkeyPatch):
    from devinit.server import runtime as rt
    from devinit.server.grpc_api import DaprServicer
    from devinit.server.grpc_wire import UNAUTHENTICATED, Call

    spy = _Spy()
    monkeypatch.setattr(rt.hmac, "compare_digest", spy)

    class Runtime:  # route() reads the token only
        api_token = "s3cret"
        app_id = None

    servicer = DaprServicer(Runtime())  # type: ignore[arg-type]
    reply = servicer.route(Call("/dapr.proto.runtime.v1.Dapr/GetState", {"dapr-api-token": b"s3creX"}))
    assert reply is not None and reply.status == UNAUTHENTICATED
    assert spy.calls == [(b"s3creX", b"s3cret")]


def test_no_secret_in_debug_logs(tmp_path: Path):
    """Redis with a password, refused, down and back; a token, wrong and right: none of it logged."""
    rs = RedisServer(tmp_path / "redis", "--requirepass", SECRET)
    folder = tmp_path / "components"
    store_component("redis", folder, "statestore", rs, {"redisPassword": SECRET})
    store_component("redis", folder, "wrongpw", rs, {"redisPassword": SECRET + "-wrong"})
    token = "tok-" + "0a1b2c3d4e5f"
    srv = DevinitServer(folder, "--log-level", "debug", env={"DAPR_API_TOKEN": token})
    base = srv.url + "/v1.0/state/"
    try:
        with httpx.Client(timeout=15) as c:
            assert c.get(base + "statestore/k", headers={"dapr-api-token": token + "x"}).status_code == 401
            auth = {"dapr-api-token": token}
            assert c.post(base + "statestore", json=[{"key": "k", "value": 1}], headers=auth).status_code == 204
            r = c.get(base + "wrongpw/k", headers=auth)
            assert r.status_code == 500 and SECRET not in r.text
            rs.stop()
            r = c.get(base + "statestore/k", headers=auth)
            assert r.status_code == 500 and SECRET not in r.text
            meta = c.get(srv.url + "/v1.0/metadata", headers=auth).text
            assert SECRET not in meta
            rs.start()
    finally:
        srv.stop()
        rs.stop()
    log = srv.log()
    assert "DEBUG" in log  # it really ran at debug level
    assert SECRET not in log and token not in log


def test_no_token_in_debug_logs_over_grpc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The official SDK over gRPC, with a token, at --log-level debug: the HPACK library
    decodes every header (its own debug log would print them); the token never reaches the log."""
    from dapr.clients import DaprClient
    from dapr.conf import settings

    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.in-memory")
    token = "tok-" + "5e6f7a8b9c0d"
    srv = DevinitServer(folder, "--log-level", "debug", env={"DAPR_API_TOKEN": token})
    try:
        for name, value in (("DAPR_HTTP_PORT", srv.http_port), ("DAPR_GRPC_PORT", srv.grpc_port), ("DAPR_API_TOKEN", token)):
            monkeypatch.setenv(name, str(value))
            monkeypatch.setattr(settings, name, value, raising=False)
        for name in ("DAPR_GRPC_ENDPOINT", "DAPR_HTTP_ENDPOINT"):
            monkeypatch.delenv(name, raising=False)
            monkeypatch.setattr(settings, name, None, raising=False)
        with DaprClient() as d:
            d.save_state("statestore", "k", b"v")
            assert d.get_state("statestore", "k").data == b"v"
    finally:
        srv.stop()
    log = srv.log()
    assert "DEBUG devinit" in log  # devinit's own debug lines are there
    assert token not in log


def test_broken_component_files_name_file_and_field(tmp_path: Path):
    """More broken files than tests/test_server.py covers; the good stores keep working."""
    folder = tmp_path / "components"
    write_component(folder, "good", "state.in-memory")
    write_component(folder, "goodsql", "state.sqlite", {"connectionString": str(tmp_path / "g.db")})
    head = "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
    files = {
        "noname.yaml": (head + "metadata: {}\nspec:\n  type: state.redis\n", "metadata.name: missing"),
        "badapi.yaml": (
            "apiVersion: v2\nkind: Component\nmetadata:\n  name: badapi\nspec:\n  type: state.redis\n",
            "apiVersion: 'v2' is not supported",
        ),
        "nospec.yaml": (head + "metadata:\n  name: nospec\n", "spec: missing"),
        "listmeta.yaml": (
            head + "metadata:\n  name: listmeta\nspec:\n  type: state.redis\n  metadata: {a: 1}\n",
            "spec.metadata: must be a list",
        ),
        "entry.yaml": (
            head + "metadata:\n  name: entry\nspec:\n  type: state.redis\n  metadata:\n  - value: x\n",
            "spec.metadata[0]: each entry needs a name",
        ),
        "secretref.yaml": (
            head
            + "metadata:\n  name: secretref\nspec:\n  type: state.redis\n  metadata:\n  - name: redisPassword\n    secretKeyRef: {name: s, key: k}\n",
            "spec.metadata.redisPassword: secretKeyRef is not supported",
        ),
        "dictval.yaml": (
            head
            + "metadata:\n  name: dictval\nspec:\n  type: state.redis\n  metadata:\n  - name: redisHost\n    value: {a: 1}\n",
            "spec.metadata.redisHost: value must be a string",
        ),
        "empty.yaml": ("", None),
        "binary.yaml": ("\udcff", "(file): cannot be read"),
    }
    for name, (text, _) in files.items():
        if name == "binary.yaml":
            (folder / name).write_bytes(b"apiVersion: \xff\xfe\n")
        else:
            (folder / name).write_text(text)
    write_component(folder, "badtimeout", "state.sqlite", {"connectionString": str(tmp_path / "b.db"), "busyTimeout": "soon"})
    write_component(folder, "badtable", "state.sqlite", {"connectionString": str(tmp_path / "t.db"), "tableName": "x; drop"})
    write_component(folder, "badprefix", "state.in-memory", {"keyPrefix": "a||b"})
    write_component(folder, "badttl", "state.in-memory", {"ttlInSeconds": "soon"})
    write_component(folder, "badtls", "state.redis", {"redisHost": "127.0.0.1:1", "enableTLS": "maybe"})
    (tmp_path / "afile").write_text("")
    write_component(folder, "cannotopen", "state.sqlite", {"connectionString": str(tmp_path / "afile" / "x.db")})
    srv = DevinitServer(folder)
    try:
        log = srv.log()
        for name, (_, expected) in files.items():
            if expected:
                assert f"{name}: {expected}" in log, (name, log)
        for name, field in [
            ("badtimeout", "busyTimeout"),
            ("badtable", "tableName"),
            ("badprefix", "keyPrefix"),
            ("badttl", "ttlInSeconds"),
            ("badtls", "enableTLS"),
        ]:
            assert f"{name}.yaml: spec.metadata.{field}: " in log, (name, log)
            r = httpx.get(f"{srv.url}/v1.0/state/{name}/k", timeout=15)
            assert r.status_code == 400 and field in r.json()["message"], r.text
        assert "cannotopen.yaml: spec.metadata.(open): cannot open SQLite database" in log
        for store in ("good", "goodsql"):  # the good ones work
            assert httpx.post(f"{srv.url}/v1.0/state/{store}", json=[{"key": "k", "value": 1}], timeout=15).status_code == 204
            assert httpx.get(f"{srv.url}/v1.0/state/{store}/k", timeout=15).json() == 1
        names = sorted(c["name"] for c in httpx.get(srv.url + "/v1.0/metadata", timeout=15).json()["components"])
        assert names == ["good", "goodsql"]
    finally:
        srv.stop()
