"""The devinit route (/devinit/v1, docs/state-api.md "The devinit route") on every store, and the
inspector page's static files: a real `devinit serve` per store kind, talked to over HTTP (and
gRPC, for what the feed sees). The page itself is tested in a real browser (test_inspector_browser.py).
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from conftest import STORES, backing_server, store_component
from dapr.proto import api_v1, common_v1
from dapr.proto.runtime.v1 import dapr_pb2_grpc

from devinit.errors import ApiError
from devinit.server.inspector_api import EXPORT_BUDGET, MAX_TICKETS, MAX_USED_TICKETS, TICKET_SECONDS, Tickets
from support import DevinitServer, write_component

R = "/devinit/v1/"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module", params=STORES)
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevinitServer]:
    """`devinit serve --app-id alpha` with one store called ``statestore`` of each kind in turn."""
    kind: str = request.param
    folder = tmp_path_factory.mktemp(f"inspect-{kind}") / "components"
    store_component(kind, folder, "statestore", backing_server(request, kind))
    s = DevinitServer(folder, "--app-id", "alpha")
    s.kind = kind  # type: ignore[attr-defined]
    yield s
    s.stop()


@pytest.fixture
def c(srv: DevinitServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=30) as client:
        yield client


@pytest.fixture
def tag() -> str:
    """A key part no other test uses (the stores are shared by the module)."""
    return uuid.uuid4().hex[:10]


def q(key: str) -> str:
    from urllib.parse import quote

    return quote(key, safe="")


def put(c: httpx.Client, key: str, body: dict, store: str = "statestore") -> httpx.Response:
    return c.put(f"{R}stores/{store}/keys/{q(key)}", json=body)


def list_all(c: httpx.Client, prefix: str, limit: int = 100) -> list[dict]:
    """Every key under ``prefix``, following cursors (a Redis page may hold a few more than
    ``limit``: a SCAN step cannot be split)."""
    out: list[dict] = []
    cursor = None
    for _ in range(1000):
        params = {"prefix": prefix, "limit": limit, **({"cursor": cursor} if cursor else {})}
        r = c.get(f"{R}stores/statestore/keys", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["keys"]) <= limit * 2
        out += page["keys"]
        cursor = page["cursor"]
        if not cursor:
            return out
    raise AssertionError("the listing never ended")


def test_stores_with_health_and_prefix(c: httpx.Client, srv: DevinitServer):
    doc = c.get(R + "stores").json()
    assert doc["appId"] == "alpha" and doc["failed"] == []
    (store,) = doc["stores"]
    assert store["name"] == "statestore" and store["prefix"] == "alpha||" and store["appId"] == "alpha"
    assert store["type"].startswith("state.") and store["health"]["status"] in ("up", "unknown")
    assert isinstance(doc["now"], float)


def test_keys_of_every_app_id_with_etag_size_and_expiry(c: httpx.Client, tag: str):
    # this server's own writes (Dapr's API adds alpha||), and another app's key written raw
    assert c.post("/v1.0/state/statestore", json=[{"key": f"{tag}-a", "value": {"n": 1}}]).status_code == 204
    ttl = c.post("/v1.0/state/statestore", json=[{"key": f"{tag}-t", "value": "x", "metadata": {"ttlInSeconds": "300"}}])
    assert ttl.status_code == 204
    assert put(c, f"beta||{tag}-b", {"value": [1, 2, 3]}).status_code == 200
    got = {k["key"]: k for k in list_all(c, "alpha||" + tag) + list_all(c, "beta||" + tag)}
    assert set(got) == {f"alpha||{tag}-a", f"alpha||{tag}-t", f"beta||{tag}-b"}
    a = got[f"alpha||{tag}-a"]
    assert a["appId"] == "alpha" and a["size"] == len(b'{"n":1}') and a["expireAt"] is None
    assert a["etag"] == c.get(f"/v1.0/state/statestore/{tag}-a").headers["etag"]
    assert 250 < got[f"alpha||{tag}-t"]["expireAt"] - time.time() <= 301
    assert got[f"beta||{tag}-b"]["appId"] == "beta"
    # Dapr's own routes cannot reach the other app's key; this route can
    assert c.get(f"/v1.0/state/statestore/beta||{tag}-b").status_code == 400
    assert c.get(f"{R}stores/statestore/keys/{q(f'beta||{tag}-b')}").json()["value"] == [1, 2, 3]


def test_pages_cover_every_key_once(c: httpx.Client, tag: str):
    keys = {f"pg||{tag}-{i:03d}" for i in range(57)}
    r = c.post(f"{R}stores/statestore/import", json={"items": [{"key": k, "value": i} for i, k in enumerate(sorted(keys))]})
    assert r.json() == {"written": 57}
    listed = [k["key"] for k in list_all(c, f"pg||{tag}-", limit=10)]
    assert sorted(listed) == sorted(keys)  # each once, whatever the store's order


def test_prefix_with_glob_characters_is_literal(c: httpx.Client, tag: str):
    odd = [f"g*[x]?\\{tag}||k", f"g*[x]?\\{tag}||k2", f"gZ[x]?\\{tag}||k", f"g*x?\\{tag}||k"]
    for k in odd:
        assert put(c, k, {"value": 1}).status_code == 200
    assert sorted(k["key"] for k in list_all(c, f"g*[x]?\\{tag}||")) == sorted(odd[:2])


def test_expired_keys_are_not_listed(c: httpx.Client, tag: str):
    assert put(c, f"exp||{tag}", {"value": 1, "ttl": 1}).status_code == 200
    assert put(c, f"exp||{tag}-stays", {"value": 1}).status_code == 200
    deadline = time.monotonic() + 10  # the TTL is 1 s: gone well before this
    while time.monotonic() < deadline and len(list_all(c, f"exp||{tag}")) > 1:
        time.sleep(0.2)
    assert [k["key"] for k in list_all(c, f"exp||{tag}")] == [f"exp||{tag}-stays"]
    assert c.get(f"{R}stores/statestore/keys/{q(f'exp||{tag}')}").status_code == 404


def test_raw_key_etag_rules(c: httpx.Client, tag: str):
    key = f"beta||{tag}"
    url = f"{R}stores/statestore/keys/{q(key)}"
    created = put(c, key, {"value": {"v": 1}, "firstWrite": True})
    assert created.status_code == 200, created.text
    etag = created.json()["etag"]
    assert created.json()["value"] == {"v": 1} and created.json()["contentType"] == "application/json"
    # first-write over an existing key, and a stale etag: 409, nothing changed
    again = put(c, key, {"value": 2, "firstWrite": True})
    assert again.status_code == 409 and again.json()["errorCode"] == "ERR_STATE_SAVE"
    assert key in again.json()["message"]  # the key named whole, prefix and all
    updated = put(c, key, {"value": {"v": 2}, "etag": etag})
    assert updated.status_code == 200 and updated.json()["etag"] != etag
    stale = put(c, key, {"value": {"v": 3}, "etag": etag})
    assert stale.status_code == 409
    assert c.get(url).json()["value"] == {"v": 2}
    # delete with a stale etag: 409; with the current one: gone
    assert c.delete(url, params={"etag": etag}).status_code == 409
    assert c.delete(url, headers={"If-Match": updated.json()["etag"]}).status_code == 204
    missing = c.get(url)
    assert missing.status_code == 404 and missing.json()["errorCode"] == "ERR_KEY_NOT_FOUND"
    assert c.delete(url).status_code == 204  # without an etag a missing key is fine, as on Dapr's route


def test_values_json_text_and_bytes(c: httpx.Client, srv: DevinitServer, tag: str):
    binary = bytes(range(256))
    assert (
        put(
            c, f"alpha||{tag}-bin", {"value": base64.b64encode(binary).decode(), "contentType": "application/octet-stream"}
        ).status_code
        == 200
    )
    # written raw, read through Dapr's own route: the same bytes
    assert c.get(f"/v1.0/state/statestore/{tag}-bin").content == binary
    got = c.get(f"{R}stores/statestore/keys/{q(f'alpha||{tag}-bin')}").json()
    assert got["contentType"] == "application/octet-stream" and base64.b64decode(got["value"]) == binary
    # JSON bytes that are not compact JSON text (a gRPC client's) travel as text, so they come back exact
    with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as ch:
        dapr_pb2_grpc.DaprStub(ch).SaveState(
            api_v1.SaveStateRequest(store_name="statestore", states=[common_v1.StateItem(key=f"{tag}-sp", value=b'{"a": 1}')])
        )
    got = c.get(f"{R}stores/statestore/keys/{q(f'alpha||{tag}-sp')}").json()
    assert got["contentType"] == "text/plain; charset=utf-8" and base64.b64decode(got["value"]) == b'{"a": 1}'
    # ?as=base64 (the page's form): bytes even for JSON
    assert put(c, f"alpha||{tag}-j", {"value": {"big": 12345678901234567890}}).status_code == 200
    raw = c.get(f"{R}stores/statestore/keys/{q(f'alpha||{tag}-j')}", params={"as": "base64"}).json()
    assert raw["contentType"] == "application/json" and base64.b64decode(raw["value"]) == b'{"big":12345678901234567890}'


def test_export_import_clear(c: httpx.Client, tag: str):
    items = [
        {"key": f"ex||{tag}-1", "value": {"a": 1}, "contentType": "application/json"},
        {
            "key": f"ex||{tag}-2",
            "value": base64.b64encode(b"\xff\x00").decode(),
            "contentType": "application/octet-stream",
            "ttl": 600,
        },
        {"key": f"ex||{tag}-3", "value": base64.b64encode("héllo".encode()).decode(), "contentType": "text/plain; charset=utf-8"},
    ]
    assert c.post(f"{R}stores/statestore/import", json={"items": items}).json() == {"written": 3}
    assert c.post(f"{R}stores/statestore/import", json={"items": items}).json() == {"written": 3}  # twice: same state
    page = c.get(f"{R}stores/statestore/export", params={"prefix": f"ex||{tag}"}).json()
    assert page["cursor"] is None
    out = sorted(page["items"], key=lambda i: i["key"])
    assert 500 <= out[1].pop("ttl") <= 600
    assert out == [{k: v for k, v in i.items() if k != "ttl"} for i in items]
    r = c.post(f"{R}stores/statestore/clear", json={"prefix": f"ex||{tag}-"})
    assert r.json() == {"deleted": 3, "cursor": None}
    assert list_all(c, f"ex||{tag}") == []


def test_an_export_page_holds_a_bounded_size_of_values(c: httpx.Client, tag: str):
    """Six values of 1 MiB under one prefix: pages end early, cursors go on, nothing is lost."""
    mib = 1024 * 1024
    values = {f"big||{tag}-{i}": bytes([i]) * mib for i in range(6)}
    for key, value in values.items():
        item = {"key": key, "value": base64.b64encode(value).decode(), "contentType": "application/octet-stream"}
        assert c.post(f"{R}stores/statestore/import", json={"items": [item]}).json() == {"written": 1}
    seen: dict[str, bytes] = {}
    cursor = None
    for _ in range(100):
        params = {"prefix": f"big||{tag}", **({"cursor": cursor} if cursor else {})}
        page = c.get(f"{R}stores/statestore/export", params=params).json()
        size = sum(len(base64.b64decode(i["value"])) for i in page["items"])
        assert size <= EXPORT_BUDGET or len(page["items"]) == 1, [i["key"] for i in page["items"]]
        seen.update((i["key"], base64.b64decode(i["value"])) for i in page["items"])
        cursor = page["cursor"]
        if not cursor:
            break
    assert seen == values
    body: dict = {"prefix": f"big||{tag}"}
    while body.get("cursor", "") is not None:  # a Redis clear may take several pages
        body["cursor"] = c.post(f"{R}stores/statestore/clear", json=body).json()["cursor"]
    assert list_all(c, f"big||{tag}") == []


def test_query_parameters_are_read_by_the_state_apis_rule(c: httpx.Client, tag: str):
    """One rule for every route's query string (server/urls.py): the first of a repeated name
    wins (as daprd, Go's url.Values.Get), %XX is UTF-8, '+' is a space, a bad escape or bytes
    that are not UTF-8 are a 400 naming the parameter."""
    for key in (f"q||{tag}-é", f"q||{tag}-a b"):
        assert put(c, key, {"value": 1}).status_code == 200

    def keys(raw_query: bytes) -> tuple[int, dict]:
        """GET the listing with the query's bytes as they are (httpx would encode them)."""
        head = f"GET {R}stores/statestore/keys?".encode() + raw_query + b" HTTP/1.1\r\nHost: localhost\r\n"
        with socket.create_connection((c.base_url.host, c.base_url.port), timeout=10) as s:
            s.sendall(head + b"Connection: close\r\n\r\n")
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        status_line, _, rest = got.partition(b"\r\n")
        return int(status_line.split()[1]), json.loads(rest.split(b"\r\n\r\n", 1)[1])

    def found(raw_query: bytes) -> list[str]:
        status, body = keys(raw_query)
        assert status == 200, body
        return [k["key"] for k in body["keys"]]

    prefix = f"q||{tag}-".encode()
    assert found(b"prefix=" + prefix + b"%C3%A9") == [f"q||{tag}-é"]
    assert found(b"prefix=" + prefix + b"a+b") == [f"q||{tag}-a b"]
    assert found(b"prefix=" + prefix + b"a&prefix=" + prefix + b"%C3") == [f"q||{tag}-a b"]  # the first wins
    for bad in (b"prefix=%zz", b"prefix=%C3"):  # (raw bytes past ASCII: httptools answers 400)
        status, body = keys(bad)
        assert status == 400 and "prefix" in body["message"], (bad, body)


def test_bad_requests_say_what_to_do(c: httpx.Client, tag: str):
    base = f"{R}stores/statestore"
    for params in ({"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"limit": "²"}, {"limit": "1" * 5000}):
        r = c.get(base + "/keys", params=params)
        assert r.status_code == 400 and "limit" in r.json()["message"], params
    for after in ("²", "1" * 5000):  # digits to str.isdigit, not to int(): was a 500
        r = c.get(R + "events", params={"after": after})
        assert r.status_code == 400 and "after" in r.json()["message"], after
    bad_bodies = [
        ({"value": "!!", "contentType": "application/octet-stream"}, "base64"),
        ({"value": 1, "ttl": -2}, "ttl"),
        ({"value": 1, "ttl": "60"}, "ttl"),
        ({"value": 1, "etag": 5}, "etag"),
        ({"value": 1, "firstWrite": "yes"}, "firstWrite"),
    ]
    for body, word in bad_bodies:
        r = put(c, f"x||{tag}", body)
        assert r.status_code == 400 and word in r.json()["message"], (body, r.text)
    r = c.put(f"{base}/keys/{q('x||' + tag)}", content=b'{"value": 1}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["message"]
    r = c.post(f"{base}/import", content=b'{"items": []}')  # no Content-Type: what a form post would send
    assert r.status_code == 415
    r = c.post(f"{base}/import", json={"items": [{"key": "ok", "value": 1}, {"key": "", "value": 1}]})
    assert r.status_code == 400 and r.json()["message"].startswith("items[1].key")
    assert c.get(f"{R}stores/statestore/keys/{q('ok')}").status_code == 404  # nothing of a bad import was written
    r = c.post(f"{base}/import", json={"items": [{"key": "k", "value": 1}] * 10_001})
    assert r.status_code == 400 and "10000" in r.json()["message"]
    r = c.get(base + "/keys", params={"cursor": "not-a-cursor"})
    assert r.status_code == 400 and "without a cursor" in r.json()["message"]  # BadCursor: start again
    r = c.get(f"{R}stores/nope/keys")
    assert r.status_code == 400 and r.json()["errorCode"] == "ERR_STATE_STORE_NOT_FOUND" and "statestore" in r.json()["message"]
    r = c.get(f"{R}stores/statestore/nothing-here")
    assert r.status_code == 404 and "docs/state-api.md" in r.json()["message"]
    r = c.get(f"{R}stores/statestore/keys/{q('k' * 2049)}")
    assert r.status_code == 400 and "too long" in r.json()["message"]
    r = c.get(R + "events", params={"wait": "31"})
    assert r.status_code == 400 and "wait" in r.json()["message"]


def test_page_files_with_strict_headers(c: httpx.Client):
    r = c.get("/ui")
    assert r.status_code == 308 and r.headers["location"] == "/ui/"
    for path, kind in (
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ):
        r = c.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind) and r.content, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert c.get("/ui/nope.js").status_code == 404
    assert c.post("/ui/", content=b"").status_code == 405
    html = c.get("/ui/").text
    assert '<script src="app.js"' in html and "<script>" not in html and " on" + "click=" not in html  # no inline script


def test_token_guards_the_route_but_not_the_page(tmp_path: Path):
    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.in-memory")
    s = DevinitServer(folder, env={"DAPR_API_TOKEN": "s3cret"})
    try:
        calls = [
            ("GET", "stores", None),
            ("GET", "stores/statestore/keys", None),
            ("GET", "stores/statestore/keys/k", None),
            ("PUT", "stores/statestore/keys/k", {"value": 1}),
            ("DELETE", "stores/statestore/keys/k", None),
            ("GET", "stores/statestore/export", None),
            ("POST", "stores/statestore/import", {"items": []}),
            ("POST", "stores/statestore/clear", {}),
            ("GET", "events", None),
        ]
        for method, path, body in calls:
            for headers in ({}, {"dapr-api-token": "wrong"}):
                r = httpx.request(method, s.url + R + path, json=body, headers=headers)
                assert r.status_code == 401 and r.json()["errorCode"] == "ERR_API_TOKEN", (method, path)
            r = httpx.request(method, s.url + R + path, json=body, headers={"dapr-api-token": "s3cret"})
            assert r.status_code in (200, 204, 404), (method, path, r.text)
        assert httpx.get(s.url + "/ui/").status_code == 200  # the page holds no data; it asks for the token
        assert httpx.get(s.url + "/ui/app.js").status_code == 200
    finally:
        s.stop()


def test_a_ticket_is_traded_for_the_token_once(tmp_path: Path):
    """devinit ui's ticket (POST tickets, with the token) is traded by the page for the token
    (POST tickets/redeem, without it) once; a second use says someone else has the token."""
    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.in-memory")
    s = DevinitServer(folder, env={"DAPR_API_TOKEN": "s3cret"})
    token = {"dapr-api-token": "s3cret"}
    try:
        for headers in ({}, {"dapr-api-token": "wrong"}):  # only a holder of the token gets tickets
            r = httpx.post(s.url + R + "tickets", headers=headers)
            assert r.status_code == 401 and r.json()["errorCode"] == "ERR_API_TOKEN"
        got = httpx.post(s.url + R + "tickets", headers=token).json()
        assert got["expiresIn"] == TICKET_SECONDS and len(got["ticket"]) >= 43
        ticket = got["ticket"]
        redeem = s.url + R + "tickets/redeem"
        # a page of another site is refused before anything happens: the ticket stays good
        r = httpx.post(redeem, json={"ticket": ticket}, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["errorCode"] == "ERR_ORIGIN_NOT_ALLOWED"
        # bad requests: a clear error, the ticket not used up
        r = httpx.post(redeem, content=json.dumps({"ticket": ticket}), headers={"Content-Type": "text/plain"})
        assert r.status_code == 415  # no form post from a page elsewhere
        for body in ({}, {"ticket": 5}, {"ticket": ""}, {"ticket": "x" * 500}, ["x"]):
            r = httpx.post(redeem, json=body)
            assert r.status_code == 400 and '{"ticket": "..."}' in r.json()["message"], (body, r.text)
        r = httpx.post(redeem, json={"ticket": ticket[:-1] + ("A" if ticket[-1] != "A" else "B")})
        assert r.status_code == 403 and r.json()["errorCode"] == "ERR_TICKET_INVALID"
        assert "run devinit ui again" in r.json()["message"]
        # the page (a loopback origin): the token, once
        r = httpx.post(redeem, json={"ticket": ticket}, headers={"Origin": f"http://127.0.0.1:{s.http_port}"})
        assert r.status_code == 200 and r.json() == {"token": "s3cret"}
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["access-control-allow-origin"] == f"http://127.0.0.1:{s.http_port}"
        r = httpx.post(redeem, json={"ticket": ticket})
        assert r.status_code == 403 and r.json()["errorCode"] == "ERR_TICKET_USED"
        assert "someone else" in r.json()["message"] and "new DAPR_API_TOKEN" in r.json()["message"]
        # at most MAX_TICKETS kept: one more pushes the oldest out
        tickets = [httpx.post(s.url + R + "tickets", headers=token).json()["ticket"] for _ in range(MAX_TICKETS + 1)]
        assert len(set(tickets)) == MAX_TICKETS + 1
        assert httpx.post(redeem, json={"ticket": tickets[0]}).json()["errorCode"] == "ERR_TICKET_INVALID"
        for t in tickets[1:]:
            assert httpx.post(redeem, json={"ticket": t}).json() == {"token": "s3cret"}
    finally:
        s.stop()
    s = DevinitServer(folder)  # no token: no ticket to trade, the page works as it is
    try:
        assert httpx.post(s.url + R + "tickets").json() == {"ticket": None, "expiresIn": None}
        assert httpx.post(s.url + R + "tickets/redeem", json={"ticket": "x"}).json()["errorCode"] == "ERR_TICKET_INVALID"
    finally:
        s.stop()


def test_a_ticket_expires():
    """A ticket is good for TICKET_SECONDS (on the clock the tickets are given: no waiting here)."""
    now = [1000.0]
    tickets = Tickets(clock=lambda: now[0])
    late, used = tickets.issue(), tickets.issue()
    tickets.redeem(used)
    now[0] += TICKET_SECONDS - 1
    fresh = tickets.issue()
    with pytest.raises(ApiError) as e:
        tickets.redeem(used)
    assert e.value.error_code == "ERR_TICKET_USED"  # remembered as used while it would be good
    now[0] += 1
    for gone in (late, used):
        with pytest.raises(ApiError) as e:
            tickets.redeem(gone)
        assert e.value.error_code == "ERR_TICKET_INVALID"
    assert len(tickets.kept) == 1  # the expired are forgotten
    tickets.redeem(fresh)


def test_a_used_ticket_cannot_be_hidden_by_using_more():
    """Whoever redeemed the page's ticket first holds the token, and could get and use up more
    tickets: the page's ticket must still be told "used" (the warning to change the token), not
    "unknown". Used tickets are never pushed out by new ones; past MAX_USED_TICKETS within a
    ticket's life no new ticket is given (429), until they expire."""
    now = [1000.0]
    tickets = Tickets(clock=lambda: now[0])
    pages = tickets.issue()
    tickets.redeem(pages)  # taken by someone else
    for _ in range(MAX_USED_TICKETS - 1):
        tickets.redeem(tickets.issue())
    with pytest.raises(ApiError) as e:
        tickets.redeem(pages)
    assert e.value.error_code == "ERR_TICKET_USED"
    with pytest.raises(ApiError) as e:
        tickets.issue()
    assert e.value.error_code == "ERR_TOO_MANY_TICKETS" and e.value.http_status == 429
    assert "wait a minute" in e.value.message
    now[0] += TICKET_SECONDS
    tickets.redeem(tickets.issue())  # the used ones expired: tickets again
    assert len(tickets.used) == 1


def test_live_feed_sees_http_and_grpc_calls(c: httpx.Client, srv: DevinitServer, tag: str):
    # nobody watches: nothing is recorded
    c.get(f"/v1.0/state/statestore/{tag}-before")
    first = c.get(R + "events").json()
    assert first["events"] == []
    start = first["next"]
    # a waiting poll is answered by the next call (from another client)
    answer: dict = {}

    def poll() -> None:
        with httpx.Client(base_url=srv.url, timeout=40) as other:
            answer.update(other.get(R + "events", params={"after": start, "wait": 25}).json())

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.3)
    assert (
        c.post("/v1.0/state/statestore", json=[{"key": f"{tag}-h", "value": 1}, {"key": f"{tag}-h2", "value": 2}]).status_code
        == 204
    )
    t.join(timeout=40)
    assert answer["events"], answer
    with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as ch:
        stub = dapr_pb2_grpc.DaprStub(ch)
        stub.GetState(api_v1.GetStateRequest(store_name="statestore", key=f"{tag}-g"))
        with pytest.raises(grpc.RpcError) as e:
            stub.SaveState(
                api_v1.SaveStateRequest(
                    store_name="statestore",
                    states=[common_v1.StateItem(key=f"{tag}-h", value=b"1", etag=common_v1.Etag(value="1"))],
                )
            )
        assert e.value.code() == grpc.StatusCode.ABORTED
    c.delete(f"/v1.0/state/statestore/{tag}-h")
    c.get("/v1.0/metadata")  # not a state call: not in the feed
    events = c.get(R + "events", params={"after": start}).json()["events"]
    seen = [(e["protocol"], e["operation"], e["key"], e["keys"], e["status"], e["ok"]) for e in events]
    assert seen == [
        ("http", "save", f"{tag}-h", 2, "204", True),
        ("grpc", "get", f"{tag}-g", 1, "OK", True),
        ("grpc", "save", f"{tag}-h", 1, "ABORTED", False),
        ("http", "delete", f"{tag}-h", 1, "204", True),
    ]
    assert all(e["store"] == "statestore" and e["appId"] == "alpha" and e["ms"] >= 0 for e in events)
    assert [e["seq"] for e in events] == list(range(start + 1, start + 5))
