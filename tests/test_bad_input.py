"""Bad input harms nothing: a battery of malformed requests on every route, on every store.

Every case must answer a 4xx JSON error (``errorCode`` and ``message``), never a 5xx; the
server stays healthy; and nothing of a refused request is written: each bad save or
transaction carries a *valid* sibling item whose key is recorded, and at the end none of
those keys exists, while the good writes made between the bad requests all do.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

S = "/v1.0/state/statestore"
MIB = 1024 * 1024


@dataclass
class Case:
    """One bad request: what to send, and the status class expected."""

    name: str
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None  # exact status expected; None: any 4xx
    code: str | None = None  # exact errorCode expected, when it matters


def _j(value: object) -> bytes:
    return json.dumps(value).encode()


def _chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def bad_cases(marker: str) -> list[Case]:
    """The battery; ``marker`` prefixes the valid sibling keys that must never be written."""
    ok = {"key": marker + "-sib", "value": 1}
    huge_key = os.urandom(1500).hex()  # 3000 bytes: past the 2048-byte key limit, incompressible
    deep_value = "[" * 1000 + "]" * 1000
    cases: list[Case] = []

    def save(name: str, body: bytes, **kw: object) -> None:
        cases.append(Case(f"save: {name}", "POST", S, body, **kw))  # type: ignore[arg-type]

    def item(name: str, bad: dict, **kw: object) -> None:
        """A save whose second item is bad and whose first is fine: nothing may be written."""
        save(name, _j([ok, bad]), **kw)

    save("empty body", b"")
    save("not JSON", b"hello")
    save("invalid UTF-8", b"\xff\xfe\xfd")
    save("invalid UTF-8 in a string", b'[{"key": "k\xff", "value": 1}]')
    save("deeply nested body", b"[" * 5000 + b"]" * 5000)
    save("value nested 1000 deep", ('[{"key": "%s-d", "value": %s}]' % (marker, deep_value)).encode())
    save(
        "value nested 1000 deep, big int",
        ('[{"key": "%s-d", "value": [%s, 123456789012345678901]}]' % (marker, deep_value)).encode(),
    )
    save(
        "lone surrogate key, big-int path", ('[%s, {"key": "\\ud800", "value": 123456789012345678901}]' % json.dumps(ok)).encode()
    )
    save(
        "lone surrogate value, big-int path",
        ('[%s, {"key": "%s-s", "value": ["\\udc00", 123456789012345678901]}]' % (json.dumps(ok), marker)).encode(),
    )
    save("lone surrogate value", ('[%s, {"key": "%s-s", "value": "\\ud800"}]' % (json.dumps(ok), marker)).encode())
    save(
        "NaN, big-int path",
        ('[%s, {"key": "%s-n", "value": NaN, "x": 123456789012345678901}]' % (json.dumps(ok), marker)).encode(),
    )
    save("object, not array", _j(ok))
    save("number", b"5")
    save("JSON string holding an object", _j(json.dumps(ok)))
    save("JSON string holding bad JSON", _j("[{"))
    save("5 MiB body", b"[" + b" " * (5 * MIB) + b"]", status=413)
    save("array of numbers", _j([ok, 1]))
    save("array of strings", _j([ok, "k"]))
    save("array with null", _j([ok, None]))
    item("no key", {"value": 1})
    for bad_key in ("", None, 5, 1.5, True, ["k"], {"k": 1}, "a||b", "||", "a\x00b", huge_key):
        item(f"key {str(bad_key)[:12]!r}", {"key": bad_key, "value": 1})
    for bad_etag in ({"e": 1}, ["1"], True):
        item(f"etag {bad_etag!r}", {"key": marker + "-e", "value": 1, "etag": bad_etag})
    for options in (
        "strong",
        ["strong"],
        5,
        {"concurrency": "x"},
        {"consistency": "x"},
        {"consistency": 5},
        {"concurrency": ["first-write"]},
        {"consistency": {"a": 1}},
        {"concurrency": True},
    ):
        item(f"options {options!r}", {"key": marker + "-o", "value": 1, "options": options})
    for metadata in ("ttl", ["ttlInSeconds"], 5, {"ttlInSeconds": {"a": 1}}, {"ttlInSeconds": [1]}, {"contentType": {"x": 1}}):
        item(f"metadata {metadata!r}", {"key": marker + "-m", "value": 1, "metadata": metadata})
    for ttl in ("-2", "+5", "1_0", "abc", "1.5", " ", "1e3", "0x10", "٣", "99999999999999999999", str(2**31), "-1-1"):
        item(f"ttl {ttl!r}", {"key": marker + "-t", "value": 1, "metadata": {"ttlInSeconds": ttl}})
    cases.append(Case("save: bad consistency param", "POST", S + "?consistency=sometimes", _j([ok])))
    cases.append(Case("save: bad concurrency param", "POST", S + "?concurrency=x", _j([ok])))
    cases.append(Case("save: bad ttl param", "POST", S + "?metadata.ttlInSeconds=abc", _j([ok])))
    cases.append(Case("save: a bad escape in a query parameter", "POST", S + "?metadata.note=%zz", _j([ok]), status=400))
    cases.append(Case("save: a query parameter not UTF-8", "POST", S + "?metadata.note=%C3", _j([ok]), status=400))
    cases.append(Case("save: bad consistency header", "POST", S, _j([ok]), {"consistency": "sometimes"}))
    cases.append(Case("save: bad concurrency header", "POST", S, _j([ok]), {"concurrency": "all-write"}))
    cases.append(Case("save: unknown store", "POST", "/v1.0/state/nosuchstore", _j([ok]), code="ERR_STATE_STORE_NOT_FOUND"))
    cases.append(Case("save: store name not UTF-8", "POST", "/v1.0/state/%FF", _j([ok])))
    cases.append(Case("save: no store name", "POST", "/v1.0/state/", _j([ok])))
    cases.append(Case("save: PATCH", "PATCH", S, _j([ok]), status=405))

    # get and delete: bad keys in the URL, bad options
    for verb in ("GET", "DELETE"):
        for name, path in [
            ("|| in key", f"{S}/a%7C%7Cb"),
            ("NUL in key", f"{S}/a%00b"),
            ("key not UTF-8", f"{S}/%C3%28"),
            ("key too long", f"{S}/{huge_key}"),
            ("unknown store", "/v1.0/state/nosuchstore/k"),
            ("empty store", "/v1.0/state//k"),
            ("bad escape", f"{S}/a%zzb"),
        ]:
            cases.append(Case(f"{verb.lower()}: {name}", verb, path))
    # a read ignores an unknown consistency (as daprd); a delete refuses it
    cases.append(Case("delete: bad consistency", "DELETE", f"{S}/k?consistency=x"))
    cases.append(Case("delete: bad consistency header", "DELETE", f"{S}/k", headers={"consistency": "x"}))
    cases.append(Case("delete: bad concurrency", "DELETE", f"{S}/k?concurrency=x"))

    # bulk get
    for name, body in [
        ("empty", b""),
        ("not JSON", b"{"),
        ("invalid UTF-8", b'{"keys": ["\xff"]}'),
        ("array", b"[]"),
        ("keys a string", _j({"keys": "a"})),
        ("keys numbers", _j({"keys": [1]})),
        ("keys empty string", _j({"keys": [""]})),
        ("keys with ||", _j({"keys": ["a||b"]})),
        ("keys with NUL", _j({"keys": ["a\x00"]})),
        ("key too long", _j({"keys": [huge_key]})),
        ("parallelism string", _j({"keys": ["a"], "parallelism": "x"})),
        ("parallelism bool", _j({"keys": ["a"], "parallelism": True})),
        ("parallelism 1.5", _j({"keys": ["a"], "parallelism": 1.5})),
        ("deep", b"[" * 5000 + b"]" * 5000),
    ]:
        cases.append(Case(f"bulk: {name}", "POST", S + "/bulk", body))
    cases.append(Case("bulk: 5 MiB", "POST", S + "/bulk", b'{"keys": [' + b" " * (5 * MIB) + b"]}", status=413))
    cases.append(
        Case("bulk: unknown store", "POST", "/v1.0/state/nosuchstore/bulk", _j({"keys": ["a"]}), code="ERR_STATE_STORE_NOT_FOUND")
    )

    # transactions: a valid upsert first, then something bad: nothing may be applied
    up = {"operation": "upsert", "request": ok}

    def tx(name: str, ops: object, **kw: object) -> None:
        cases.append(Case(f"tx: {name}", "POST", S + "/transaction", _j({"operations": ops}), **kw))  # type: ignore[arg-type]

    for name, body in [
        ("empty", b""),
        ("not JSON", b"nope"),
        ("array", _j([up])),
        ("string", _j("x")),
        ("deep", b'{"operations":' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ]:
        cases.append(Case(f"tx: {name}", "POST", S + "/transaction", body))
    cases.append(Case("tx: 5 MiB", "POST", S + "/transaction", b'{"operations": [' + b" " * (5 * MIB) + b"]}", status=413))
    tx("operations a string", "x")
    tx("operation a number", [up, 1])
    tx("no request", [up, {"operation": "upsert"}])
    tx("request a string", [up, {"operation": "upsert", "request": "k"}])
    tx("unknown operation", [up, {"operation": "get", "request": {"key": "k"}}], code="ERR_NOT_SUPPORTED_STATE_OPERATION")
    tx("operation missing", [up, {"request": {"key": "k", "value": 1}}], code="ERR_NOT_SUPPORTED_STATE_OPERATION")
    for bad_key in ("", None, 7, "a||b", "a\x00", huge_key):
        tx(f"key {str(bad_key)[:12]!r}", [up, {"operation": "upsert", "request": {"key": bad_key, "value": 1}}])
        tx(f"delete key {str(bad_key)[:12]!r}", [up, {"operation": "delete", "request": {"key": bad_key}}])
    tx(
        "bad ttl",
        [up, {"operation": "upsert", "request": {"key": marker + "-t", "value": 1, "metadata": {"ttlInSeconds": "-2"}}}],
    )
    tx(
        "huge ttl",
        [up, {"operation": "upsert", "request": {"key": marker + "-t", "value": 1, "metadata": {"ttlInSeconds": "9" * 30}}}],
    )
    tx("bad etag type", [up, {"operation": "delete", "request": {"key": marker + "-x", "etag": {"a": 1}}}])
    tx(
        "bad options",
        [up, {"operation": "upsert", "request": {"key": marker + "-x", "value": 1, "options": {"consistency": "x"}}}],
    )
    cases.append(Case("tx: bad shared metadata", "POST", S + "/transaction", _j({"operations": [up], "metadata": ["x"]})))
    cases.append(Case("tx: bad ttl param", "POST", S + "/transaction?metadata.ttlInSeconds=x", _j({"operations": [up]})))
    projection = {"operation": "upsert", "request": {**ok, "key": marker + "-x", "metadata": {"outbox.projection": "true"}}}
    tx("outbox projection alone", [up, projection])
    cases.append(
        Case(
            "tx: unknown store",
            "POST",
            "/v1.0/state/nosuchstore/transaction",
            _j({"operations": [up]}),
            code="ERR_STATE_STORE_NOT_FOUND",
        )
    )

    # the other routes
    cases.append(
        Case(
            "query: unknown store",
            "POST",
            "/v1.0-alpha1/state/nosuchstore/query",
            _j({"filter": {}}),
            code="ERR_STATE_STORE_NOT_FOUND",
        )
    )
    cases.append(Case("query: GET", "GET", "/v1.0-alpha1/state/statestore/query", status=405))
    cases.append(Case("metadata: POST", "POST", "/v1.0/metadata", b"{}", status=404))
    cases.append(Case("metadata: GET a key", "GET", "/v1.0/metadata/k", status=405))
    cases.append(Case("metadata: PUT too much", "PUT", "/v1.0/metadata/k", b"x" * (2 * MIB), status=400))
    cases.append(Case("healthz: POST", "POST", "/v1.0/healthz", b"{}", status=404))
    cases.append(Case("healthz: unknown", "GET", "/v1.0/healthz/nope", status=404))
    cases.append(Case("unknown route", "GET", "/v1.0/nothing", status=404))
    cases.append(Case("no route at all", "GET", "/", status=404))
    return cases


MARKER = f"bad-{uuid.uuid4().hex[:8]}"
CASES = bad_cases(MARKER)


def test_battery_covers_every_route():
    routes = {c.name.split(":")[0] for c in CASES}
    assert {"save", "get", "delete", "bulk", "tx", "query", "metadata", "healthz"} <= routes
    assert len(CASES) > 120


def test_every_bad_request_is_a_4xx_json_error_and_writes_nothing(server, client: httpx.Client):
    """The whole battery on one store; good writes between bad ones must all land."""
    failures: list[str] = []
    good: dict[str, int] = {}
    for i, case in enumerate(CASES):
        r = client.request(case.method, case.path, content=case.body, headers=case.headers)
        if not 400 <= r.status_code < 500 or (case.status is not None and r.status_code != case.status):
            failures.append(f"{case.name}: {r.status_code} {r.text[:200]}")
            continue
        try:
            body = r.json()
        except ValueError:
            failures.append(f"{case.name}: not JSON: {r.text[:200]}")
            continue
        if (
            not r.headers.get("content-type", "").startswith("application/json")
            or not body.get("errorCode")
            or not body.get("message")
        ):
            failures.append(f"{case.name}: not a JSON error: {r.headers.get('content-type')} {r.text[:200]}")
        elif case.code is not None and body["errorCode"] != case.code:
            failures.append(f"{case.name}: errorCode {body['errorCode']}, expected {case.code}")
        if i % 10 == 0:  # a good write between the bad ones: the server still works
            k = f"{MARKER}-good-{i}"
            w = client.post(S, json=[{"key": k, "value": i}])
            if w.status_code != 204:
                failures.append(f"good write after {case.name}: {w.status_code} {w.text[:200]}")
            good[k] = i
    assert not failures, "\n".join(failures)

    # the same battery in chunked form for the big bodies (no Content-Length to check first)
    for path in (S, S + "/bulk", S + "/transaction"):
        r = client.post(path, content=_chunks(b"[" + b" " * (5 * MIB) + b"]"))
        assert r.status_code == 413 and r.json()["errorCode"] == "ERR_BODY_TOO_LARGE", (path, r.text)

    assert client.get("/v1.0/healthz").status_code == 204
    assert client.get("/v1.0/healthz/outbound").status_code == 204
    # only valid writes were applied: every good one, none of the refused requests' siblings
    sibling_keys = [f"{MARKER}-{s}" for s in ("sib", "d", "s", "n", "e", "o", "m", "t", "x")]
    found = client.post(S + "/bulk", json={"keys": sibling_keys + list(good)}).json()
    written = {it["key"]: it.get("data") for it in found if "data" in it}
    assert written == good


def test_limits_are_exact(server, client: httpx.Client, key: str):
    """The [devinit] limits: a key of exactly 2048 bytes (prefix included) and a TTL of 2**31-1 are fine."""
    edge = key + "é" * ((2048 - len(key)) // 2)
    edge += "x" * (2048 - len(edge.encode()))
    assert len(edge.encode()) == 2048
    assert client.post(S, json=[{"key": edge, "value": 1}]).status_code == 204
    assert client.get(f"{S}/{edge}").json() == 1
    r = client.post(S, json=[{"key": edge + "x", "value": 1}])
    assert r.status_code == 400 and "2048 bytes" in r.json()["message"]
    r = client.post(S, json=[{"key": key, "value": 1, "metadata": {"ttlInSeconds": str(2**31 - 1)}}])
    assert r.status_code == 204, r.text
    assert client.get(f"{S}/{key}").headers["metadata.ttlexpiretime"].startswith("20")


def test_values_at_the_edges_are_stored(server, client: httpx.Client, key: str):
    """What is valid must still work: deep (300) and wide values, big ints, astral characters, 3 MiB."""
    deep = json.loads("[" * 300 + "]" * 300)
    for value in (deep, [123456789012345678901234567890, -1], "😀\u0000\u2028", "x" * (3 * MIB)):
        r = client.post(S, json=[{"key": key, "value": value}])
        assert r.status_code == 204, r.text[:200]
        assert client.get(f"{S}/{key}").json() == value
