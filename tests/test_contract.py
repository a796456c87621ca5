"""The state API contract (docs/state-api.md), row by row, on every store, over real HTTP.

The `server` fixture runs one `devinit serve` per store kind (memory, SQLite, Redis) with a
store called `statestore`; each test uses keys of its own.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx
import pytest

S = "/v1.0/state/statestore"


def save(client: httpx.Client, *items: dict, **kw) -> httpx.Response:
    return client.post(S, json=list(items), **kw)


def get(client: httpx.Client, key: str, **kw) -> httpx.Response:
    return client.get(f"{S}/{key}", **kw)


def etag_of(client: httpx.Client, key: str) -> str:
    r = get(client, key)
    assert r.status_code == 200, r.text
    return r.headers["etag"]


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["errorCode"] == code, body
    assert body["message"]
    return body


# -- save / get / delete --------------------------------------------------------------


def test_save_get_delete_roundtrip(client, key):
    assert save(client, {"key": key, "value": {"a": [1, 2.5, "x", None, True]}}).status_code == 204
    r = get(client, key)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.content == b'{"a":[1,2.5,"x",null,true]}'  # compact JSON text
    assert r.headers["etag"]
    assert client.delete(f"{S}/{key}").status_code == 204
    r = get(client, key)
    assert r.status_code == 204 and r.content == b""


def test_string_value_is_stored_with_quotes(client, key):
    save(client, {"key": key, "value": "v"})
    assert get(client, key).content == b'"v"'


def test_missing_key_is_204_never_404(client, key):
    r = get(client, key)
    assert r.status_code == 204 and "etag" not in r.headers


def test_put_is_accepted_like_post(client, key):
    assert client.put(S, json=[{"key": key, "value": 1}]).status_code == 204
    assert get(client, key).json() == 1


def test_empty_array_is_a_no_op(client):
    assert save(client).status_code == 204


def test_unknown_fields_are_ignored(client, key):
    assert save(client, {"key": key, "value": 3, "color": "red"}).status_code == 204
    assert get(client, key).json() == 3


def test_delete_missing_key_without_etag_is_204(client, key):
    assert client.delete(f"{S}/{key}").status_code == 204


def test_big_integers_and_unicode_survive(client, key):
    body = '[{"key": "%s", "value": {"n": 123456789012345678901234567890, "s": "h\\u00e9llo \\ud83d\\ude00"}}]' % key
    assert client.post(S, content=body).status_code == 204
    r = get(client, key)
    assert r.content == '{"n":123456789012345678901234567890,"s":"héllo 😀"}'.encode()


# -- concurrency: etags, first-write, last-write ----------------------------------------


def test_etags_are_not_reused_after_delete(client, key):
    seen = []
    for i in range(3):
        save(client, {"key": key, "value": i})
        seen.append(etag_of(client, key))
        client.delete(f"{S}/{key}")
    assert len(set(seen)) == 3
    save(client, {"key": key, "value": "new"})
    assert etag_of(client, key) not in seen
    for stale in seen:  # an etag from before a delete cannot overwrite the re-created item
        assert_error(save(client, {"key": key, "value": "lost?", "etag": stale}), 409, "ERR_STATE_SAVE")
    assert get(client, key).json() == "new"


def test_every_write_makes_a_new_etag(client, key):
    save(client, {"key": key, "value": 1})
    e1 = etag_of(client, key)
    save(client, {"key": key, "value": 1})
    e2 = etag_of(client, key)
    assert e1 != e2


def test_last_write_without_etag_is_unconditional(client, key):
    save(client, {"key": key, "value": 1})
    assert save(client, {"key": key, "value": 2, "options": {"concurrency": "last-write"}}).status_code == 204
    assert get(client, key).json() == 2


def test_first_write_without_etag_inserts_only(client, key):
    fw = {"concurrency": "first-write"}
    assert save(client, {"key": key, "value": 1, "options": fw}).status_code == 204
    r = save(client, {"key": key, "value": 2, "options": fw})
    assert_error(r, 409, "ERR_STATE_SAVE")
    assert get(client, key).json() == 1
    client.delete(f"{S}/{key}")
    assert save(client, {"key": key, "value": 3, "options": fw}).status_code == 204


@pytest.mark.parametrize("mode", ["first-write", "last-write"])
def test_save_with_etag_must_match(client, key, mode):
    save(client, {"key": key, "value": 1})
    etag = etag_of(client, key)
    opts = {"concurrency": mode}
    assert save(client, {"key": key, "value": 2, "etag": etag, "options": opts}).status_code == 204
    r = save(client, {"key": key, "value": 3, "etag": etag, "options": opts})  # now stale
    body = assert_error(r, 409, "ERR_STATE_SAVE")
    assert key in body["message"]
    assert get(client, key).json() == 2


@pytest.mark.parametrize("etag", ["1", "not-a-number", "00000000-0000-0000-0000-000000000000"])
def test_etag_on_missing_item_is_a_mismatch_not_400(client, key, etag):
    assert_error(save(client, {"key": key, "value": 1, "etag": etag}), 409, "ERR_STATE_SAVE")
    assert get(client, key).status_code == 204


def test_unparseable_etag_on_existing_item_is_409(client, key):
    save(client, {"key": key, "value": 1})
    assert_error(save(client, {"key": key, "value": 2, "etag": "zz-not-an-etag"}), 409, "ERR_STATE_SAVE")


def test_empty_etag_means_no_etag(client, key):
    save(client, {"key": key, "value": 1})
    assert save(client, {"key": key, "value": 2, "etag": ""}).status_code == 204
    assert get(client, key).json() == 2
    r = client.delete(f"{S}/{key}", headers={"If-Match": ""})
    assert r.status_code == 204


def test_delete_with_etag(client, key):
    save(client, {"key": key, "value": 1})
    etag = etag_of(client, key)
    assert_error(client.delete(f"{S}/{key}", headers={"If-Match": etag + "0"}), 409, "ERR_STATE_DELETE")
    assert get(client, key).status_code == 200
    assert client.delete(f"{S}/{key}", headers={"If-Match": etag}).status_code == 204
    assert get(client, key).status_code == 204
    # with an etag, a missing item is a mismatch
    assert_error(client.delete(f"{S}/{key}", headers={"If-Match": etag}), 409, "ERR_STATE_DELETE")


def test_multi_item_save_applies_items_independently(client, key):
    a, b, c = key + "a", key + "b", key + "c"
    save(client, {"key": b, "value": "old"})
    r = save(
        client,
        {"key": a, "value": 1},
        {"key": b, "value": "new", "etag": "stale"},
        {"key": c, "value": 3},
    )
    body = assert_error(r, 409, "ERR_STATE_SAVE")
    assert b in body["message"] and a not in body["message"]
    assert get(client, a).json() == 1
    assert get(client, b).json() == "old"
    assert get(client, c).json() == 3


def test_numeric_etag_is_taken_as_its_string(client, key):
    save(client, {"key": key, "value": 1})
    etag = etag_of(client, key)
    if not etag.isdigit():
        # the store's etags are not numbers: a number can only mismatch
        assert_error(client.post(S, content=f'[{{"key":"{key}","value":2,"etag":1}}]'), 409, "ERR_STATE_SAVE")
        return
    body = f'[{{"key":"{key}","value":2,"etag":{etag}}}]'
    assert client.post(S, content=body).status_code == 204
    assert get(client, key).json() == 2


# -- consistency -----------------------------------------------------------------------


def test_strong_and_eventual_are_accepted_everywhere(client, key):
    for c in ("strong", "eventual"):
        assert save(client, {"key": key, "value": c, "options": {"consistency": c}}).status_code == 204
        assert get(client, key, params={"consistency": c}).json() == c
        assert get(client, key, headers={"consistency": c}).json() == c
    assert client.delete(f"{S}/{key}", params={"consistency": "strong"}).status_code == 204


@pytest.mark.parametrize(
    "options",
    [{"consistency": "sometimes"}, {"concurrency": "second-write"}, {"consistency": 1}, "strong", ["x"]],
)
def test_bad_options_are_400_and_nothing_written(client, key, options):
    r = save(client, {"key": key + "ok", "value": 1}, {"key": key, "value": 1, "options": options})
    assert_error(r, 400, "ERR_MALFORMED_REQUEST")
    assert get(client, key).status_code == 204
    assert get(client, key + "ok").status_code == 204  # validation comes before any write


def test_unknown_consistency_is_ignored_on_reads_and_400_on_deletes(client, key):
    save(client, {"key": key, "value": 1})
    # daprd's stores ignore it on a read (issue 16.7): the read is served
    assert get(client, key, params={"consistency": "x"}).json() == 1
    assert get(client, key, headers={"consistency": "x"}).json() == 1
    assert_error(client.delete(f"{S}/{key}", params={"concurrency": "x"}), 400, "ERR_MALFORMED_REQUEST")
    assert_error(client.delete(f"{S}/{key}", params={"consistency": "x"}), 400, "ERR_MALFORMED_REQUEST")
    assert get(client, key).status_code == 200


# -- TTL -------------------------------------------------------------------------------


def test_ttl_header_and_clearing(client, key):
    before = time.time()
    save(client, {"key": key, "value": 1, "metadata": {"ttlInSeconds": "100"}})
    r = get(client, key)
    expires = datetime.strptime(r.headers["metadata.ttlExpireTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before + 95 <= expires.timestamp() <= time.time() + 101
    save(client, {"key": key, "value": 2})  # an overwrite without a TTL clears it
    assert "metadata.ttlExpireTime" not in get(client, key).headers
    save(client, {"key": key, "value": 3, "metadata": {"ttlInSeconds": "-1"}})
    assert "metadata.ttlExpireTime" not in get(client, key).headers
    # query parameter metadata works too and overrides the body
    client.post(S, params={"metadata.ttlInSeconds": "50"}, json=[{"key": key, "value": 4, "metadata": {"ttlInSeconds": "900"}}])
    r = get(client, key)
    assert "metadata.ttlExpireTime" in r.headers
    exp = datetime.strptime(r.headers["metadata.ttlExpireTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert exp.timestamp() <= time.time() + 51


def test_ttl_zero_means_no_expiry(client, key):
    """ttlInSeconds "0" is no expiry, as on every daprd store (on Redis a PERSIST): a key that
    had a TTL keeps none after a save with "0" (in the body, a query parameter, a transaction)."""
    for how in ("body", "query", "transaction"):
        assert save(client, {"key": key, "value": 1, "metadata": {"ttlInSeconds": "100"}}).status_code == 204
        assert "metadata.ttlExpireTime" in get(client, key).headers
        if how == "body":
            r = save(client, {"key": key, "value": 2, "metadata": {"ttlInSeconds": "0"}})
        elif how == "query":
            r = client.post(S, params={"metadata.ttlInSeconds": "0"}, json=[{"key": key, "value": 2}])
        else:
            op = {"operation": "upsert", "request": {"key": key, "value": 2, "metadata": {"ttlInSeconds": "0"}}}
            r = client.post(f"{S}/transaction", json={"operations": [op]})
        assert r.status_code == 204, (how, r.text)
        got = get(client, key)
        assert got.json() == 2 and "metadata.ttlExpireTime" not in got.headers, how


@pytest.mark.parametrize("ttl", ["-2", "--5", "+5", "1_0", "abc", "1.5", "", " ", "1e3", "٣", "2147483648", [1], {"a": 1}])
def test_bad_ttl_is_400(client, key, ttl):
    r = save(client, {"key": key, "value": 1, "metadata": {"ttlInSeconds": ttl}})
    if ttl == "":  # empty means "no ttl given"
        assert r.status_code == 204
        return
    assert_error(r, 400, "ERR_MALFORMED_REQUEST")
    assert get(client, key).status_code == 204


def test_expired_items_are_missing_everywhere(client, key):
    a, b, c = key + "a", key + "b", key + "c"
    for k in (a, b, c):
        assert save(client, {"key": k, "value": k, "metadata": {"ttlInSeconds": "1"}}).status_code == 204
    etag_b = etag_of(client, b)
    time.sleep(2.1)
    assert get(client, a).status_code == 204
    bulk = client.post(f"{S}/bulk", json={"keys": [a, b]}).json()
    assert bulk == [{"key": a}, {"key": b}]
    # an etag check against an expired item fails; first-write on it succeeds
    assert_error(save(client, {"key": b, "value": 1, "etag": etag_b}), 409, "ERR_STATE_SAVE")
    assert save(client, {"key": c, "value": 2, "options": {"concurrency": "first-write"}}).status_code == 204
    assert get(client, c).json() == 2


# -- bulk ------------------------------------------------------------------------------


def test_bulk_get_order_missing_and_data(client, key):
    a, b = key + "a", key + "b"
    save(client, {"key": a, "value": {"x": 1}}, {"key": b, "value": "s", "metadata": {"ttlInSeconds": "60"}})
    r = client.post(f"{S}/bulk", json={"keys": [b, key + "missing", a], "parallelism": 4})
    assert r.status_code == 200
    out = r.json()
    assert [o["key"] for o in out] == [b, key + "missing", a]
    assert out[1] == {"key": key + "missing"}
    assert out[2]["data"] == {"x": 1} and out[2]["etag"] == etag_of(client, a)
    assert out[0]["data"] == "s" and "ttlExpireTime" in out[0]["metadata"]


def test_bulk_get_is_also_put_and_empty_is_empty(client):
    r = client.put(f"{S}/bulk", json={"keys": []})
    assert r.status_code == 200 and r.json() == []


@pytest.mark.parametrize(
    "body", [{"keys": "a"}, {"keys": [1]}, {"keys": [""]}, {"keys": ["a||b"]}, [], {"keys": ["a"], "parallelism": "x"}]
)
def test_bulk_get_bad_bodies(client, body):
    assert_error(client.post(f"{S}/bulk", json=body), 400, "ERR_MALFORMED_REQUEST")


# -- transactions ----------------------------------------------------------------------


def tx(client: httpx.Client, *ops: tuple, metadata=None) -> httpx.Response:
    body = {"operations": [{"operation": o, "request": r} for o, r in ops]}
    if metadata is not ...:
        body["metadata"] = metadata
    return client.post(f"{S}/transaction", json=body)


def test_transaction_applies_in_order(client, key):
    a, b = key + "a", key + "b"
    save(client, {"key": b, "value": "gone soon"})
    r = tx(
        client,
        ("upsert", {"key": a, "value": 1}),
        ("upsert", {"key": a, "value": 2}),
        ("delete", {"key": b}),
        ("upsert", {"key": key, "value": "ttl", "metadata": {"ttlInSeconds": "60"}}),
    )
    assert r.status_code == 204, r.text
    assert get(client, a).json() == 2
    assert get(client, b).status_code == 204
    assert "metadata.ttlExpireTime" in get(client, key).headers


def test_transaction_is_all_or_nothing(client, key):
    a, b = key + "a", key + "b"
    save(client, {"key": a, "value": "a0"}, {"key": b, "value": "b0"})
    etag_a = etag_of(client, a)
    r = tx(
        client,
        ("upsert", {"key": a, "value": "a1", "etag": etag_a}),
        ("delete", {"key": b}),
        ("upsert", {"key": key, "value": "new", "etag": "stale"}),
    )
    body = assert_error(r, 409, "ERR_STATE_TRANSACTION")
    assert key in body["message"]
    assert get(client, a).json() == "a0" and get(client, a).headers["etag"] == etag_a
    assert get(client, b).json() == "b0"
    assert get(client, key).status_code == 204
    # with the right etags it applies
    assert (
        tx(
            client, ("upsert", {"key": a, "value": "a1", "etag": etag_a}), ("delete", {"key": b, "etag": etag_of(client, b)})
        ).status_code
        == 204
    )
    assert get(client, a).json() == "a1" and get(client, b).status_code == 204


def test_transaction_checks_see_earlier_operations(client, key):
    fw = {"concurrency": "first-write"}
    # first-write twice on the same new key: the second sees the first
    r = tx(client, ("upsert", {"key": key, "value": 1, "options": fw}), ("upsert", {"key": key, "value": 2, "options": fw}))
    assert_error(r, 409, "ERR_STATE_TRANSACTION")
    assert get(client, key).status_code == 204
    # delete then first-write insert is fine
    save(client, {"key": key, "value": 0})
    r = tx(client, ("delete", {"key": key}), ("upsert", {"key": key, "value": 5, "options": fw}))
    assert r.status_code == 204
    assert get(client, key).json() == 5


def test_transaction_accepts_null_metadata_and_empty_operations(client, key):
    assert tx(client, ("upsert", {"key": key, "value": 1}), metadata=None).status_code == 204
    assert client.post(f"{S}/transaction", json={"operations": []}).status_code == 204


def test_transaction_takes_request_level_options_and_metadata(client, key):
    ops = {"operations": [{"operation": "upsert", "request": {"key": key, "value": 1}}]}
    r = client.post(f"{S}/transaction", json=ops, params={"metadata.ttlInSeconds": "60", "consistency": "strong"})
    assert r.status_code == 204, r.text
    assert "metadata.ttlExpireTime" in get(client, key).headers
    assert_error(client.post(f"{S}/transaction", json=ops, headers={"consistency": "sometimes"}), 400, "ERR_MALFORMED_REQUEST")
    r = client.post(f"{S}/transaction", json=ops, headers={"concurrency": "first-write"})  # key exists: 409
    assert_error(r, 409, "ERR_STATE_TRANSACTION")


def test_transaction_unsupported_operation(client, key):
    r = tx(client, ("upsert", {"key": key, "value": 1}), ("merge", {"key": key, "value": 2}))
    assert_error(r, 400, "ERR_NOT_SUPPORTED_STATE_OPERATION")
    assert get(client, key).status_code == 204


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"operations": "x"},
        {"operations": {}},
        {"operations": 0},
        {"operations": [{"operation": "upsert"}]},
        {"operations": [{"operation": "upsert", "request": {"value": 1}}]},
    ],
)
def test_transaction_bad_bodies(client, body):
    assert_error(client.post(f"{S}/transaction", json=body), 400, "ERR_MALFORMED_REQUEST")


# -- keys ------------------------------------------------------------------------------


def test_percent_decoded_keys(client, key):
    k = key + "/a b/ü"
    assert save(client, {"key": k, "value": 1}).status_code == 204
    assert client.get(f"{S}/{key}%2Fa%20b%2F%C3%BC").json() == 1
    assert client.delete(f"{S}/{key}%2Fa%20b%2F%C3%BC").status_code == 204
    assert save(client, {"key": k, "value": 1}).status_code == 204
    assert client.post(f"{S}/bulk", json={"keys": [k]}).json()[0]["data"] == 1


@pytest.mark.parametrize("bad", ["", None, "a||b", 5, ["k"]])
def test_bad_keys_are_400_and_nothing_written(client, key, bad):
    item = {"value": 1} if bad is None else {"key": bad, "value": 1}
    r = save(client, {"key": key, "value": 1}, item)
    assert_error(r, 400, "ERR_MALFORMED_REQUEST")
    assert get(client, key).status_code == 204


def test_key_with_separator_in_url_is_400(client):
    assert_error(client.get(f"{S}/a%7C%7Cb"), 400, "ERR_MALFORMED_REQUEST")
    assert_error(client.delete(f"{S}/a||b"), 400, "ERR_MALFORMED_REQUEST")


# -- malformed requests, errors --------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b'{"key": "x"}', b"[1]", b'["x"]', b"\xff\xfe", b"[" * 3000 + b"]" * 3000, b'"[1"'],
)
def test_malformed_save_bodies(client, body):
    assert_error(client.post(S, content=body), 400, "ERR_MALFORMED_REQUEST")


def test_body_over_4_mib_is_413(client, key):
    big = b'[{"key":"' + key.encode() + b'","value":"' + b"x" * (4 * 1024 * 1024) + b'"}]'
    r = client.post(S, content=big)
    assert r.status_code == 413
    assert get(client, key).status_code == 204


def test_unknown_store_names_the_loaded_ones(client):
    body = assert_error(client.get("/v1.0/state/nostore/k"), 400, "ERR_STATE_STORE_NOT_FOUND")
    assert "nostore" in body["message"] and "statestore" in body["message"]
    assert_error(client.post("/v1.0/state/nostore", json=[{"key": "k", "value": 1}]), 400, "ERR_STATE_STORE_NOT_FOUND")


def test_content_type_is_ignored(client, key):
    r = client.post(S, content=json.dumps([{"key": key, "value": 1}]), headers={"content-type": "text/plain"})
    assert r.status_code == 204


def test_unknown_route_is_json_404(client):
    r = client.get("/v1.0/nothing")
    assert r.status_code == 404 and r.json()["errorCode"]


# -- query -----------------------------------------------------------------------------

Q = "/v1.0-alpha1/state/statestore/query"
PEOPLE = [
    {"name": "ana", "state": "CA", "age": 31, "person": {"org": "dev"}},
    {"name": "bo", "state": "WA", "age": 25, "person": {"org": "ops"}},
    {"name": "cy", "state": "CA", "age": 40, "person": {"org": "dev"}},
    {"name": "di", "state": "NY", "age": 25},
    {"name": "ed", "state": "CA", "age": "unknown", "person": {"org": "sales"}},
]


@pytest.fixture
def people(client, key) -> str:
    """Five people tagged with a run id (the store is shared with other tests)."""
    save(client, *[{"key": f"{key}-{p['name']}", "value": {**p, "run": key}} for p in PEOPLE])
    save(client, {"key": f"{key}-bytes", "value": "not an object"})
    return key


def query(client, run: str, filt: dict | None = None, **extra) -> httpx.Response:
    f = {"EQ": {"run": run}} if filt is None else {"AND": [{"EQ": {"run": run}}, filt]}
    return client.post(Q, json={"filter": f, **extra})


def names(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return [x["data"]["name"] for x in r.json()["results"]]


def test_query_filters(client, people):
    run = people
    assert sorted(names(query(client, run, {"EQ": {"state": "CA"}}))) == ["ana", "cy", "ed"]
    assert sorted(names(query(client, run, {"NEQ": {"state": "CA"}}))) == ["bo", "di"]
    assert sorted(names(query(client, run, {"GT": {"age": 25}}))) == ["ana", "cy"]
    assert sorted(names(query(client, run, {"GTE": {"age": 31}}))) == ["ana", "cy"]
    assert sorted(names(query(client, run, {"LT": {"age": 31}}))) == ["bo", "di"]
    assert sorted(names(query(client, run, {"LTE": {"name": "bo"}}))) == ["ana", "bo"]
    assert sorted(names(query(client, run, {"IN": {"state": ["WA", "NY"]}}))) == ["bo", "di"]
    assert sorted(names(query(client, run, {"EQ": {"person.org": "dev"}}))) == ["ana", "cy"]
    either = {"OR": [{"EQ": {"state": "NY"}}, {"AND": [{"EQ": {"state": "CA"}}, {"LT": {"age": 35}}]}]}
    assert sorted(names(query(client, run, either))) == ["ana", "di"]
    r = query(client, run)
    assert len(r.json()["results"]) == 5
    first = r.json()["results"][0]
    assert first["key"].startswith(run) and first["etag"] == etag_of(client, first["key"])


def test_query_sort_and_pages(client, people):
    run = people
    r = query(client, run, sort=[{"key": "age", "order": "DESC"}, {"key": "name"}])
    assert names(r) == ["cy", "ana", "bo", "di", "ed"]  # numbers first; "unknown" after them
    r = query(client, run, sort=[{"key": "person.org"}, {"key": "name", "order": "DESC"}])
    assert names(r) == ["cy", "ana", "bo", "ed", "di"]  # di has no person.org: last
    seen, token, pages = [], None, 0
    while True:
        page = {"limit": 2, **({"token": token} if token else {})}
        r = query(client, run, sort=[{"key": "name"}], page=page)
        seen += names(r)
        pages += 1
        token = r.json().get("token")
        if token is None:
            break
    assert seen == ["ana", "bo", "cy", "di", "ed"] and pages == 3


def test_query_nothing_matches_is_204(client, people):
    assert query(client, people, {"EQ": {"state": "TX"}}).status_code == 204


def test_query_skips_expired_items(client, key):
    save(client, {"key": key, "value": {"run": key}, "metadata": {"ttlInSeconds": "1"}})
    assert len(query(client, key).json()["results"]) == 1
    time.sleep(1.6)
    assert query(client, key).status_code == 204


@pytest.mark.parametrize(
    "body",
    [
        {"filter": {"LIKE": {"a": 1}}},
        {"filter": {"AND": [{"EQ": {"a": 1}}]}},
        {"filter": {"OR": {"EQ": {"a": 1}}}},
        {"filter": {"IN": {"a": 1}}},
        {"filter": {"EQ": {"a": 1, "b": 2}}},
        {"filter": {"EQ": {"a": 1}, "NEQ": {"b": 1}}},
        {"sort": [{"key": "a", "order": "UP"}]},
        {"sort": {"key": "a"}},
        {"page": {"limit": -1}},
        {"page": {"limit": "ten"}},
        {"page": {"token": "garbage"}},
        {"page": {"token": "²"}},  # a digit to str.isdigit, not to int(): was a 500
        [],
    ],
)
def test_query_bad_documents(client, body):
    assert_error(client.post(Q, json=body), 400, "ERR_MALFORMED_REQUEST")


def test_query_unknown_store_and_bad_json(client):
    assert_error(client.post("/v1.0-alpha1/state/nope/query", json={}), 400, "ERR_STATE_STORE_NOT_FOUND")
    assert_error(client.post(Q, content=b"{"), 400, "ERR_MALFORMED_REQUEST")


# -- the Dapr how-to, as written (requests -> httpx) --------------------------------------


def test_howto_strong_consistency_examples(client):
    # stateReq is a *string*; json= posts it as a JSON string holding the array
    state_req = '[{ "key": "k1", "value": "Some Data", "options": { "consistency": "strong" }}]'
    assert client.post(S, json=state_req).status_code == 204
    r = client.get(S + "/k1", headers={"consistency": "strong"})
    assert r.json() == "Some Data" and r.headers["ETag"]
    assert client.delete(S + "/k1", headers={"consistency": "strong"}).status_code == 204


def test_howto_first_write_with_etag_and_retry_loop(client):
    client.post(S, json=[{"key": "key1", "value": "Old"}])
    r = client.get(S + "/key1", headers={"concurrency": "first-write"})
    etag = r.headers["ETag"]
    new_state = '[{ "key": "key1", "value": "New Data", "etag": "%s", "options": { "concurrency": "first-write" }}]' % etag
    assert client.post(S, json=new_state).status_code == 204
    # the retry-on-mismatch loop: another writer slips in once, the loop rereads and wins
    client.post(S, json=[{"key": "key1", "value": "intruder"}])
    attempts = 0
    success = False
    stale = etag
    while not success:
        attempts += 1
        et = stale if attempts == 1 else client.get(S + "/key1", headers={"concurrency": "first-write"}).headers["ETag"]
        body = '[{ "key": "key1", "value": "New Data", "etag": "%s", "options": { "concurrency": "first-write" }}]' % et
        success = client.post(S, json=body).status_code == 204
        assert attempts < 5
    assert attempts == 2
    assert client.get(S + "/key1").json() == "New Data"
    et = client.get(S + "/key1").headers["ETag"]
    assert client.delete(S + "/key1", headers={"If-Match": et}).status_code == 204


# -- health and metadata ---------------------------------------------------------------


def test_health_routes(client):
    assert client.get("/v1.0/healthz").status_code == 204
    assert client.get("/v1.0/healthz/outbound").status_code == 204


def test_metadata(client, server):
    m = client.get("/v1.0/metadata").json()
    assert m["runtimeVersion"]
    (comp,) = m["components"]
    kind = {"memory": "state.in-memory", "sqlite": "state.sqlite", "redis": "state.redis", "postgres": "state.postgresql"}[
        server.kind
    ]
    assert comp["name"] == "statestore" and comp["type"] == kind
    assert {"ETAG", "TRANSACTIONAL", "TTL", "ACTOR", "QUERY_API"} <= set(comp["capabilities"])
