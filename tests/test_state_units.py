"""Fast table tests of the state layer's pure parts: the TTL rule (requests and components),
each store's component metadata (``from_spec``: defaults and every error), the store
registry, the query evaluator, and the small helpers of the key listing and Redis routing.
No server, no database: each row runs in microseconds."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devinit.components import STATE_TYPES, ComponentSpec
from devinit.errors import ApiError, BadCursor, ComponentError, QueryError
from devinit.server.runtime import BULK_SLICE, MAX_BULK_ANSWER, MAX_EXTENDED_BYTES, Runtime, StoreEntry, parse_ttl
from devinit.state import STORE_MODULES, create_store, default_ttl, store_class
from devinit.state.base import MAX_SCAN_BYTES, MAX_TTL_SECONDS, SetOp, Store, ttl_seconds
from devinit.state.memory import MemoryStore
from devinit.state.postgres import PostgresStore
from devinit.state.query import Query, matches, parse_query, run_query
from devinit.state.redis import RedisStore, glob_escape
from devinit.state.redis_nodes import Ask, Cluster, Moved, SingleNode, TryAgain, redirection
from devinit.state.resp import ReplyError
from devinit.state.sql import prefix_end
from devinit.state.sqlite import SqliteStore
from support import devinit_env


def spec(ctype: str, metadata: dict[str, str] | None = None, name: str = "s") -> ComponentSpec:
    return ComponentSpec(name=name, type=ctype, version="v1", metadata=dict(metadata or {}), path=Path("/c/s.yaml"))


# -- the TTL rule ------------------------------------------------------------------------

TTL_OK = [
    ("1", 1),
    ("60", 60),
    (" 5 ", 5),
    ("007", 7),
    (str(MAX_TTL_SECONDS), MAX_TTL_SECONDS),
    ("0", None),  # no expiry, as on every daprd store (Redis: PERSIST)
    ("-1", None),
    ("-0", None),
]
TTL_BAD = ["-2", "-100", "+5", "1_0", "1.5", "1e3", "0x10", "٣", "abc", "--5", "-", " ", "5s", str(MAX_TTL_SECONDS + 1), "9" * 30]


@pytest.mark.parametrize("text, seconds", TTL_OK)
def test_the_ttl_rule_takes(text: str, seconds: int | None) -> None:
    assert ttl_seconds(text) == seconds


@pytest.mark.parametrize("text", TTL_BAD)
def test_the_ttl_rule_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="0 or -1 for no expiry"):
        ttl_seconds(text)


@pytest.mark.parametrize(
    "metadata, default, expected",
    [
        ({}, None, None),
        ({}, 60, 60),  # the component's default when the request gives none
        ({"ttlInSeconds": ""}, 60, 60),
        ({"ttlInSeconds": "10"}, 60, 10),
        ({"ttlInSeconds": "0"}, 60, None),  # an explicit "no expiry" beats the default
        ({"ttlInSeconds": "-1"}, 60, None),
        ({"other": "x"}, None, None),
    ],
)
def test_a_request_ttl(metadata: dict[str, str], default: int | None, expected: int | None) -> None:
    assert parse_ttl(metadata, default) == expected


@pytest.mark.parametrize("text", TTL_BAD)
def test_a_bad_request_ttl_is_a_400_naming_the_field(text: str) -> None:
    with pytest.raises(ApiError) as e:
        parse_ttl({"ttlInSeconds": text}, None)
    assert (e.value.http_status, e.value.error_code) == (400, "ERR_MALFORMED_REQUEST")
    assert e.value.message.startswith("metadata.ttlInSeconds ")


@pytest.mark.parametrize("text, seconds", [*TTL_OK, ("", None)])
def test_a_component_ttl(text: str, seconds: int | None) -> None:
    assert default_ttl(spec("state.in-memory", {"ttlInSeconds": text})) == seconds


@pytest.mark.parametrize("text", TTL_BAD)
def test_a_bad_component_ttl_names_the_field(text: str) -> None:
    """The request's rule: "1_0" and "+5" were 10 and 5 in a component (int()), a 400 in a request."""
    with pytest.raises(ComponentError) as e:
        default_ttl(spec("state.in-memory", {"ttlInSeconds": text}))
    assert e.value.field == "spec.metadata.ttlInSeconds" and e.value.component == "s"


# -- the registry ------------------------------------------------------------------------


def test_every_type_is_served_by_the_module_the_registry_names() -> None:
    assert STATE_TYPES == tuple(STORE_MODULES)
    for component_type, module in STORE_MODULES.items():
        cls = store_class(component_type)
        assert cls.__module__ == module and component_type in cls.component_types and issubclass(cls, Store)


def test_an_unknown_type_names_the_field() -> None:
    with pytest.raises(ComponentError) as e:
        create_store(spec("state.cassandra"))
    assert e.value.field == "spec.type" and "not supported" in e.value.reason


# -- from_spec: defaults -----------------------------------------------------------------


def test_in_memory_defaults_and_settings() -> None:
    assert isinstance(store := create_store(spec("state.in-memory")), MemoryStore) and store.cleanup_interval == 30.0
    assert create_store(spec("state.in-memory", {"cleanupInterval": "5s"})).cleanup_interval == 5.0
    assert create_store(spec("state.in-memory", {"cleanupInterval": "0"})).cleanup_interval is None


@pytest.mark.parametrize(
    "metadata, table, busy, cleanup",
    [
        ({"connectionString": "/d/x.db"}, "state", 5.0, 600.0),
        (
            {"connectionString": ":memory:", "tableName": "my_state", "busyTimeout": "250ms", "cleanupInterval": "1h"},
            "my_state",
            0.25,
            3600.0,
        ),
        ({"connectionString": ":memory:", "busyTimeout": "2", "cleanupInterval": "-1"}, "state", 2.0, None),
        ({"connectionString": ":memory:", "tableName": ""}, "state", 5.0, 600.0),
    ],
)
def test_sqlite_defaults_and_settings(metadata: dict[str, str], table: str, busy: float, cleanup: float | None) -> None:
    store = create_store(spec("state.sqlite", metadata))
    assert isinstance(store, SqliteStore)
    assert (store.database, store.table, store.busy_timeout, store.cleanup_interval) == (
        metadata["connectionString"],
        table,
        busy,
        cleanup,
    )
    store._writer.shutdown()


def test_postgres_defaults_and_settings() -> None:
    async def go() -> None:  # the pool wants a running loop
        store = create_store(spec("state.postgresql", {"connectionString": "host=db user=u dbname=d password=secret"}))
        assert isinstance(store, PostgresStore)
        assert (store.table, store.timeout, store.cleanup_interval) == ("state", 5.0, 600.0)
        assert "secret" not in store._where and "db:5432/d" == store._where
        other = create_store(
            spec("state.postgresql", {"connectionString": "host=db", "tableName": "t2", "timeout": "2s", "cleanupInterval": "0"})
        )
        assert isinstance(other, PostgresStore) and (other.table, other.timeout, other.cleanup_interval) == ("t2", 2.0, None)

    asyncio.run(go())


def test_redis_defaults_and_settings() -> None:
    store = create_store(spec("state.redis", {"redisHost": "127.0.0.1:6379"}))
    assert isinstance(store, RedisStore) and isinstance(store._nodes, SingleNode) and store._main is not None
    lane = store._main.lanes[0]
    assert (lane.host, lane.port, lane.db, lane.tls, lane.password, lane.username) == ("127.0.0.1", 6379, 0, False, None, None)
    assert (lane.dial_timeout, lane.read_timeout, lane.resolver) == (2.0, 3.0, None)
    assert store.cleanup_interval is None  # Redis expires keys itself

    full = {
        "redisHost": "redis.local:6380",
        "redisPassword": "pw",
        "redisUsername": "me",
        "redisDB": "3",
        "enableTLS": "true",
        "dialTimeout": "500ms",
        "readTimeout": "1s",
    }
    store = create_store(spec("state.redis", full))
    assert isinstance(store, RedisStore) and store._main is not None
    lane = store._main.lanes[0]
    assert (lane.host, lane.port, lane.db, lane.tls, lane.password, lane.username) == ("redis.local", 6380, 3, True, "pw", "me")
    assert (lane.dial_timeout, lane.read_timeout) == (0.5, 1.0)

    sentinel = create_store(spec("state.redis", {"redisHost": "s:26379", "failover": "yes", "sentinelMasterName": "mymaster"}))
    assert isinstance(sentinel, RedisStore) and sentinel.address == "sentinel s:26379 master mymaster"
    assert sentinel._main is not None and sentinel._main.lanes[0].resolver is not None

    cluster = create_store(spec("state.redis", {"redisHost": "a:7000, [::1]:7001", "redisType": "cluster"}))
    assert isinstance(cluster, RedisStore) and isinstance(cluster._nodes, Cluster) and cluster._main is None
    assert cluster.address == "cluster a:7000,::1:7001"


# -- from_spec: every error names its field ------------------------------------------------

BAD_METADATA = [
    ("state.in-memory", {"cleanupInterval": "soon"}, "cleanupInterval"),
    ("state.in-memory", {"ttlInSeconds": "1_0"}, "ttlInSeconds"),
    ("state.sqlite", {}, "connectionString"),
    ("state.sqlite", {"connectionString": ""}, "connectionString"),
    ("state.sqlite", {"connectionString": "x.db", "tableName": "x; drop"}, "tableName"),
    ("state.sqlite", {"connectionString": "x.db", "tableName": "tábla"}, "tableName"),
    ("state.sqlite", {"connectionString": "x.db", "busyTimeout": "-1"}, "busyTimeout"),
    ("state.sqlite", {"connectionString": "x.db", "busyTimeout": "0s"}, "busyTimeout"),
    ("state.sqlite", {"connectionString": "x.db", "busyTimeout": "soon"}, "busyTimeout"),
    ("state.sqlite", {"connectionString": "x.db", "cleanupInterval": "1 hour"}, "cleanupInterval"),
    ("state.postgresql", {}, "connectionString"),
    ("state.postgresql", {"connectionString": "host=db", "timeout": "0"}, "timeout"),
    ("state.postgresql", {"connectionString": "host=db", "tableName": "a-b"}, "tableName"),
    ("state.redis", {}, "redisHost"),
    ("state.redis", {"redisHost": "localhost"}, "redisHost"),
    ("state.redis", {"redisHost": ":6379"}, "redisHost"),
    ("state.redis", {"redisHost": "h:0"}, "redisHost"),
    ("state.redis", {"redisHost": "h:65536"}, "redisHost"),
    ("state.redis", {"redisHost": "h:port"}, "redisHost"),
    ("state.redis", {"redisHost": "a:1,b:2"}, "redisHost"),  # several hosts are for a cluster
    ("state.redis", {"redisHost": "a:1,nonsense", "redisType": "cluster"}, "redisHost"),
    ("state.redis", {"redisHost": "h:1", "redisType": "ring"}, "redisType"),
    ("state.redis", {"redisHost": "h:1", "redisType": "cluster", "redisDB": "2"}, "redisDB"),
    ("state.redis", {"redisHost": "h:1", "redisDB": "two"}, "redisDB"),
    ("state.redis", {"redisHost": "h:1", "failover": "true"}, "sentinelMasterName"),
    ("state.redis", {"redisHost": "h:1", "failover": "maybe"}, "failover"),
    ("state.redis", {"redisHost": "h:1", "redisType": "cluster", "failover": "true", "sentinelMasterName": "m"}, "failover"),
    ("state.redis", {"redisHost": "h:1", "enableTLS": "sure"}, "enableTLS"),
    ("state.redis", {"redisHost": "h:1", "dialTimeout": "0s"}, "dialTimeout"),
    ("state.redis", {"redisHost": "h:1", "readTimeout": "-1"}, "readTimeout"),
]


@pytest.mark.parametrize("ctype, metadata, item", BAD_METADATA)
def test_bad_metadata_names_the_item(ctype: str, metadata: dict[str, str], item: str) -> None:
    async def build() -> None:  # the PostgreSQL pool wants a running loop
        store = create_store(spec(ctype, metadata))
        default_ttl(spec(ctype, metadata))
        if isinstance(store, SqliteStore):
            store._writer.shutdown()

    with pytest.raises(ComponentError) as e:
        asyncio.run(build())
    assert e.value.field == f"spec.metadata.{item}" and e.value.component == "s" and e.value.reason


# -- the query evaluator ---------------------------------------------------------------------

PERSON = {"name": "Ann", "age": 31, "tags": ["a"], "address": {"state": "CA", "zip": 94000}, "vip": True, "none": None}

MATCHES = [
    (None, True),
    ({"EQ": {"name": "Ann"}}, True),
    ({"EQ": {"name": "ann"}}, False),
    ({"EQ": {"address.state": "CA"}}, True),
    ({"EQ": {"age": "31"}}, False),  # types are not coerced
    ({"EQ": {"vip": 1}}, False),  # a boolean is not a number
    ({"EQ": {"age": 31.0}}, True),
    ({"EQ": {"missing": None}}, False),
    ({"EQ": {"none": None}}, True),
    ({"NEQ": {"name": "Bob"}}, True),
    ({"NEQ": {"missing": 1}}, True),  # an absent field is "not equal"
    ({"GT": {"age": 30}}, True),
    ({"GT": {"age": 31}}, False),
    ({"GTE": {"age": 31}}, True),
    ({"LT": {"address.zip": 95000}}, True),
    ({"LTE": {"name": "Ann"}}, True),
    ({"GT": {"name": 5}}, False),  # a string and a number do not order
    ({"GT": {"tags": []}}, False),  # arrays do not order
    ({"IN": {"address.state": ["NY", "CA"]}}, True),
    ({"IN": {"address.state": ["NY"]}}, False),
    ({"IN": {"missing": [None]}}, False),
    ({"AND": [{"EQ": {"name": "Ann"}}, {"GT": {"age": 40}}]}, False),
    ({"OR": [{"EQ": {"name": "Bob"}}, {"GT": {"age": 30}}]}, True),
    ({"AND": [{"OR": [{"EQ": {"vip": True}}, {"EQ": {"x": 1}}]}, {"IN": {"age": [31]}}]}, True),
]


@pytest.mark.parametrize("node, expected", MATCHES)
def test_a_filter_matches(node: dict[str, Any] | None, expected: bool) -> None:
    assert matches(node, PERSON) is expected


BAD_QUERIES = [
    ([], "the query must be an object"),
    ({"filter": {"EQ": {"a": 1}, "NEQ": {"b": 2}}}, "exactly one operator"),
    ({"filter": {"LIKE": {"a": 1}}}, "unknown operator 'LIKE'"),
    ({"filter": {"AND": [{"EQ": {"a": 1}}]}}, "two or more filters"),
    ({"filter": {"OR": {"EQ": {"a": 1}}}}, "two or more filters"),
    ({"filter": {"EQ": {"": 1}}}, "the key path is empty"),
    ({"filter": {"EQ": {"a": 1, "b": 2}}}, 'one {"<dotted.path>": value} pair'),
    ({"filter": {"IN": {"a": 1}}}, "IN takes an array"),
    ({"filter": {"AND": [{"EQ": {"a": 1}}, {"NOPE": {}}]}}, "filter.AND[1]: unknown operator"),
    ({"sort": {"key": "a"}}, "sort must be an array"),
    ({"sort": [{"order": "ASC"}]}, "sort[0] needs a 'key'"),
    ({"sort": [{"key": "a", "order": "UP"}]}, "sort[0].order 'UP' is not ASC or DESC"),
    ({"page": ["x"]}, "page must be an object"),
    ({"page": {"limit": -1}}, "page.limit must be an integer"),
    ({"page": {"limit": 10_001}}, "page.limit must be an integer"),
    ({"page": {"limit": True}}, "page.limit must be an integer"),
    ({"page": {"token": "x"}}, "page.token is not a token this server gave out"),
    ({"page": {"token": "²"}}, "page.token is not a token this server gave out"),  # str.isdigit takes it; int() does not
    ({"page": {"token": "1" * 5000}}, "page.token is not a token this server gave out"),  # over int()'s 4300 digits
]


@pytest.mark.parametrize("body, message", BAD_QUERIES)
def test_a_bad_query_says_what_is_wrong(body: Any, message: str) -> None:
    with pytest.raises(QueryError) as e:
        parse_query(body)
    assert message in str(e.value)


@pytest.mark.parametrize("body, message", BAD_QUERIES[:4])
def test_the_runtime_answers_a_bad_query_as_a_malformed_request(body: Any, message: str) -> None:
    """Same message text as the QueryError, as ERR_MALFORMED_REQUEST (HTTP 400, gRPC INVALID_ARGUMENT)."""
    store = MemoryStore("q")
    runtime = Runtime({"q": StoreEntry(store, spec("state.in-memory", name="q"), "", None)}, {})
    with pytest.raises(ApiError) as e:
        asyncio.run(runtime.query("q", body))
    assert (e.value.error_code, e.value.http_status, e.value.grpc_code) == ("ERR_MALFORMED_REQUEST", 400, "INVALID_ARGUMENT")
    with pytest.raises(QueryError) as direct:
        parse_query(body)
    assert e.value.message == str(direct.value) and message in e.value.message


ITEMS = [
    ("b", b'{"n": 2, "s": "x"}', "e2"),
    ("a", b'{"n": 10, "s": "y"}', "e1"),
    ("c", b'{"n": "3"}', "e3"),  # a string n: its own group
    ("d", b'{"s": "z"}', "e4"),  # no n: last, either direction
    ("e", b"not json", "e5"),  # never matches
    ("f", b'{"n": 2.5}', "e6"),
]


@pytest.mark.parametrize(
    "body, keys, token",
    [
        ({}, ["a", "b", "c", "d", "f"], None),  # key order when unsorted
        ({"sort": [{"key": "n"}]}, ["b", "f", "a", "c", "d"], None),
        ({"sort": [{"key": "n", "order": "DESC"}]}, ["a", "f", "b", "c", "d"], None),
        ({"sort": [{"key": "s", "order": "DESC"}, {"key": "n"}]}, ["d", "a", "b", "f", "c"], None),  # no s: last, by n
        ({"filter": {"GTE": {"n": 2}}, "sort": [{"key": "n"}]}, ["b", "f", "a"], None),
        ({"sort": [{"key": "n"}], "page": {"limit": 2}}, ["b", "f"], "2"),
        ({"sort": [{"key": "n"}], "page": {"limit": 2, "token": "2"}}, ["a", "c"], "4"),
        ({"sort": [{"key": "n"}], "page": {"limit": 2, "token": "4"}}, ["d"], None),
        ({"page": {"limit": 0}}, ["a", "b", "c", "d", "f"], None),  # 0: no limit
    ],
)
def test_a_query_filters_sorts_and_pages(body: dict[str, Any], keys: list[str], token: str | None) -> None:
    query: Query = parse_query(body)
    page, next_token = run_query(query, ITEMS)
    assert [k for k, _, _ in page] == keys and next_token == token
    assert all(dict((k, (v, e)) for k, v, e in ITEMS)[k] == (v, e) for k, v, e in page)


# -- listing and routing helpers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix, end",
    [
        ("", None),
        ("a", "b"),
        ("app||", "app|}"),  # "|" + 1
        ("a\U0010ffff", "b"),
        ("\U0010ffff", None),
        ("a\ud7ff", "a\ue000"),  # the successor skips the surrogates
        ("é", "ê"),
    ],
)
def test_the_end_of_a_prefix_range(prefix: str, end: str | None) -> None:
    assert prefix_end(prefix) == end
    if end is not None:
        for key in (prefix, prefix + "\x00", prefix + "\U0010ffff" * 3):
            assert prefix <= key < end


@pytest.mark.parametrize(
    "text, pattern",
    [("", ""), ("app||", "app||"), ("a*[b]?\\", "a\\*\\[b\\]\\?\\\\"), ("{tag}x", "{tag}x"), ("^$.+", "^$.+")],
)
def test_a_prefix_in_a_redis_glob(text: str, pattern: str) -> None:
    assert glob_escape(text) == pattern


@pytest.mark.parametrize(
    "reply, kind, slot, host, port",
    [
        ("MOVED 3999 127.0.0.1:6381", Moved, 3999, "127.0.0.1", 6381),
        ("ASK 12 10.0.0.2:7000", Ask, 12, "10.0.0.2", 7000),
        ("MOVED 7 :7002", Moved, 7, "", 7002),  # an unknown endpoint: the node that answered
        ("MOVED 7 ::1:7002", Moved, 7, "::1", 7002),
        ("TRYAGAIN Multiple keys request during rehashing of slot", TryAgain, None, None, None),
        ("NOSCRIPT No matching script", None, None, None, None),
        ("MOVED nonsense", None, None, None, None),
        ("ERR MOVED 1 h:1", None, None, None, None),
    ],
)
def test_a_redirection_is_parsed_once_into_its_type(reply: str, kind: type | None, slot: int, host: str, port: int) -> None:
    found = redirection(ReplyError(reply))
    if kind is None:
        assert found is None
        return
    assert type(found) is kind
    if isinstance(found, (Moved, Ask)):
        assert (found.slot, found.host, found.port) == (slot, host, port)


def test_only_error_replies_can_be_redirections() -> None:
    assert redirection(b"MOVED 1 h:1") is None and redirection(1) is None and redirection(None) is None


def test_a_cursor_round_trips_and_any_other_text_is_refused() -> None:
    store = MemoryStore("m")
    for position in ("", "0", "key with spaces ü \U0001f600", "a||b"):
        assert store.read_cursor(store.make_cursor(position)) == position
    for bad in ("", "m", "x.MA", "m.M A", "m.!!", "m._w"):
        with pytest.raises(BadCursor, match="start again without a cursor"):
            store.read_cursor(bad)


def test_a_store_module_is_imported_only_when_a_component_uses_it() -> None:
    """The registry imports lazily: the CLI, and a server with in-memory and SQLite stores,
    never load the Redis or PostgreSQL drivers (a fresh interpreter, so nothing is cached)."""
    code = (
        "import sys; from pathlib import Path; import devinit.cli\n"
        "from devinit.components import ComponentSpec\n"
        "from devinit.state import create_store\n"
        "create_store(ComponentSpec('m', 'state.in-memory', 'v1', {}, Path('m.yaml')))\n"
        "create_store(ComponentSpec('s', 'state.sqlite', 'v1', {'connectionString': ':memory:'}, Path('s.yaml')))._writer.shutdown()\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'hiredis', 'psycopg', 'psycopg_pool')"
        " or m in ('devinit.state.redis', 'devinit.state.postgres'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=devinit_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


class _CountingStore(MemoryStore):
    """The in-memory store, counting the keys each bulk_get reads (what the server holds)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.read: list[int] = []

    async def bulk_get(self, keys: Any) -> Any:
        self.read.append(len(keys))
        return await super().bulk_get(keys)


def test_a_bulk_get_over_the_limit_stops_reading_the_store_early() -> None:
    """Many large values: refused after a slice of keys, not after reading every value named."""
    store = _CountingStore("b")
    runtime = Runtime({"b": StoreEntry(store, spec("state.in-memory", name="b"), "", None)}, {})
    value = b"x" * (MAX_BULK_ANSWER // BULK_SLICE + 1)  # one slice is just over the limit
    keys = [f"k{i}" for i in range(BULK_SLICE * 4)]

    async def go() -> None:
        for k in keys:
            await store.set(SetOp(k, value))
        with pytest.raises(ApiError) as e:
            await runtime.bulk_get("b", keys)
        assert (e.value.http_status, e.value.grpc_code) == (400, "RESOURCE_EXHAUSTED")
        assert "fewer keys" in e.value.message
        assert sum(store.read) <= BULK_SLICE, store.read
        store.read.clear()
        items = await runtime.bulk_get("b", keys[: BULK_SLICE - 1] + ["missing"] + keys[:3])  # within the limit
        assert [i.key for i in items] == keys[: BULK_SLICE - 1] + ["missing"]
        assert items[0].item is not None and items[0].item.value == value and items[-1].item is None
        assert store.read == [BULK_SLICE]  # a request of one slice of keys: one round trip

    asyncio.run(go())


def test_extended_metadata_is_bounded_in_bytes_across_entries() -> None:
    """The 1 MiB bound on what clients keep under ``extended`` counts UTF-8 bytes of every
    entry (characters let 4 MiB through), and a replaced entry counts once."""
    runtime = Runtime({}, {})
    third = "é" * (MAX_EXTENDED_BYTES // 6 + 1)  # over a third of the bound in bytes, a sixth in characters
    runtime.set_metadata("a", third)
    runtime.set_metadata("b", third)
    with pytest.raises(ApiError) as e:
        runtime.set_metadata("c", third + third)
    assert e.value.http_status == 400 and "over devinit's limit" in e.value.message
    assert sorted(runtime.extended) == ["a", "b"]
    for _ in range(3):  # replacing an entry frees what it held
        runtime.set_metadata("a", "x" * (MAX_EXTENDED_BYTES // 2))
    runtime.set_metadata("a", "")
    runtime.set_metadata("c", third)
    with pytest.raises(ApiError):
        runtime.set_metadata("d", third)


def test_a_query_reads_a_bounded_size_of_values() -> None:
    """The query API holds and parses every item under the prefix: past MAX_SCAN_BYTES of
    values it is refused (400 ERR_STATE_QUERY saying why) before the rest is read."""
    store = _CountingStore("q")
    runtime = Runtime({"q": StoreEntry(store, spec("state.in-memory", name="q"), "app||", None)}, {})
    value = b'"' + b"x" * ((1 << 20) - 2) + b'"'  # 1 MiB of JSON
    body = {"filter": {"EQ": {"n": 1}}}

    async def go() -> None:
        for i in range(MAX_SCAN_BYTES >> 20):
            await store.set(SetOp(f"app||k{i}", value))
        await store.set(SetOp("other||k", value * 4))  # another app's keys are not read
        assert await runtime.query("q", body) == ([], None)
        store.read.clear()
        await store.set(SetOp("app||last", value))
        with pytest.raises(ApiError) as e:
            await runtime.query("q", body)
        assert (e.value.error_code, e.value.http_status) == ("ERR_STATE_QUERY", 400) and "in memory" in e.value.message
        assert store.read == []  # refused before any value was read

    asyncio.run(go())
