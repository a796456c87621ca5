"""The store contract on every store class, driven directly (no server in front): the key
listing, the "bounded" rule under the Task-less driver, etags that never repeat, no key of
devinit's own in Redis, the periodic cleanup, and SQLite's strong writes per platform.

Stores: in-memory, SQLite (a file), PostgreSQL (a table of the test's own on the session's
server), Redis (a server of this module's own, emptied per test) and the session's Redis
Cluster (keys under a prefix of the test's own).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from devinit.errors import BadCursor, EtagMismatch, StoreRefused
from devinit.server.drive import Driven
from devinit.state.base import MAX_LIST_LIMIT, DeleteOp, KeyInfo, SetOp, Store
from devinit.state.memory import MemoryStore
from devinit.state.postgres import PostgresStore
from devinit.state.redis import RedisStore
from devinit.state.sqlite import SqliteStore, durability_pragmas
from support import PostgresServer, RedisClusterServers, RedisServer

KINDS = ["memory", "sqlite", "postgres", "redis", "redis-cluster"]
BOUNDED = ["memory", "sqlite", "redis", "redis-cluster"]


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module's own: tests here may look at (and empty) its whole keyspace."""
    server = RedisServer(tmp_path_factory.mktemp("stores-redis"))
    yield server
    server.stop()


class Maker:
    """Builds fresh stores of one kind for one test (and knows the test's own key prefix)."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.prefix = f"t{uuid.uuid4().hex[:8]}-"  # the test's keys (the cluster is shared)
        self.table = f"t_{uuid.uuid4().hex[:12]}"
        self.backing: Any = None
        if kind == "redis":
            self.backing = request.getfixturevalue("own_redis")
            redis.Redis(port=self.backing.port).flushall()
        elif kind == "redis-cluster":
            self.backing = request.getfixturevalue("redis_cluster")
        elif kind == "postgres":
            self.backing = request.getfixturevalue("postgres_server")

    def __call__(self, **options: Any) -> Store:
        if self.kind == "memory":
            return MemoryStore("m", **options)
        if self.kind == "sqlite":
            return SqliteStore("s", str(self.tmp_path / "s.db"), **options)
        if self.kind == "postgres":
            assert isinstance(self.backing, PostgresServer)
            return PostgresStore("p", self.backing.conninfo, table=self.table, max_connections=2, **options)
        if self.kind == "redis":
            assert isinstance(self.backing, RedisServer)
            return RedisStore("r", "127.0.0.1", self.backing.port, **options)
        assert isinstance(self.backing, RedisClusterServers)
        seeds = [("127.0.0.1", n.port) for n in self.backing.nodes]
        return RedisStore("rc", *seeds[0], cluster_seeds=seeds, **options)

    def run(self, body: Callable[[Store], Awaitable[None]], **options: Any) -> None:
        """Run ``body`` on a fresh, started store; close it after."""

        async def go() -> None:
            store = self(**options)
            await store.start()
            try:
                await body(store)
            finally:
                await store.close()

        asyncio.run(go())


@pytest.fixture(params=KINDS)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Maker:
    return Maker(request.param, request, tmp_path)


async def walk(store: Store, prefix: str, limit: int, between: Callable[[int], Awaitable[None]] | None = None) -> list[KeyInfo]:
    """Every page of a listing, in order (``between(page number)`` runs after each page)."""
    seen: list[KeyInfo] = []
    cursor: str | None = None
    for page_number in range(100_000):
        page = await store.list_keys(prefix, cursor, limit)
        seen += page.keys
        if page.cursor is None:
            return seen
        cursor = page.cursor
        if between is not None:
            await between(page_number)
    raise AssertionError("the listing never ended")


async def save(store: Store, keys: list[str], ttl: int | None = None) -> None:
    failed = await store.set_many([SetOp(k, f"value of {k}".encode(), ttl=ttl) for k in keys])
    assert not failed


# -- the key listing ---------------------------------------------------------------------


def test_pages_cover_every_key_once_with_etag_size_and_expiry(make: Maker) -> None:
    p = make.prefix

    async def body(store: Store) -> None:
        mine = [f"{p}k{i:03}" for i in range(137)]
        others = [f"x{p}k{i}" for i in range(20)]  # the prefix inside, not in front
        await save(store, mine + others)
        await store.set(SetOp(f"{p}ttl", b"12345", ttl=600))
        listed = await walk(store, p, 10)
        keys = [info.key for info in listed]
        assert sorted(keys) == sorted([*mine, f"{p}ttl"]) and len(keys) == len(set(keys))
        if make.kind in ("sqlite", "postgres"):
            assert keys == sorted(keys)  # ordered by key
        for info in listed:
            item = await store.get(info.key)
            assert item is not None and info.etag == item.etag and info.size == len(item.value)
            if info.key == f"{p}ttl":
                assert info.expire_at is not None and 590 < info.expire_at - time.time() <= 601
            else:
                assert info.expire_at is None
        # the whole store (only this test's keys, except on the shared cluster)
        everything = [info.key for info in await walk(store, "", 50)]
        assert len(everything) == len(set(everything))
        assert set(mine + others) <= set(everything)
        if make.kind != "redis-cluster":
            assert set(everything) == {*mine, *others, f"{p}ttl"}

    make.run(body)


def test_a_page_holds_at_most_the_limit(make: Maker) -> None:
    p = make.prefix

    async def body(store: Store) -> None:
        await save(store, [f"{p}{i}" for i in range(300)])
        sizes = []
        cursor = None
        while True:
            page = await store.list_keys(p, cursor, 25)
            sizes.append(len(page.keys))
            if page.cursor is None:
                break
            cursor = page.cursor
        assert sum(sizes) == 300
        # Redis: a SCAN step cannot be split, so a page may hold a few more (docs: list_keys)
        slack = 10 if make.kind.startswith("redis") else 0
        assert max(sizes) <= 25 + slack, sizes

    make.run(body)


def test_a_prefix_with_glob_characters_is_taken_literally(make: Maker) -> None:
    p = make.prefix + "a*[b]?\\"

    async def body(store: Store) -> None:
        wanted = [p + "1", p + "2"]
        # each would match the prefix read as a glob (or as a LIKE pattern)
        decoys = [make.prefix + "aXXb!\\1", make.prefix + "a*b?\\1", make.prefix + "a*[b]x\\1", make.prefix + "a%[b]_\\1"]
        await save(store, wanted + decoys)
        assert sorted(info.key for info in await walk(store, p, 3)) == wanted
        assert sorted(info.key for info in await walk(store, make.prefix + "a*[", 3)) == [*wanted, make.prefix + "a*[b]x\\1"]

    make.run(body)


def test_expired_keys_never_appear(make: Maker) -> None:
    p = make.prefix

    async def body(store: Store) -> None:
        await save(store, [f"{p}long{i}" for i in range(5)], ttl=3600)
        await save(store, [f"{p}forever{i}" for i in range(5)])
        # the short-lived ones last, and 2 s: the listing must see them alive on a loaded machine
        await save(store, [f"{p}short{i}" for i in range(5)], ttl=2)
        assert len(await walk(store, p, 4)) == 15
        await asyncio.sleep(2.5)
        keys = sorted(info.key for info in await walk(store, p, 4))
        assert keys == sorted([f"{p}long{i}" for i in range(5)] + [f"{p}forever{i}" for i in range(5)])

    make.run(body)


def test_keys_added_during_the_walk_do_not_break_it(make: Maker) -> None:
    p = make.prefix

    async def body(store: Store) -> None:
        before = [f"{p}b{i:03}" for i in range(60)]
        await save(store, before)

        async def add_more(page_number: int) -> None:
            if page_number < 4:  # before and after the keys listed so far (in key order and in time)
                await save(store, [f"{p}{c}{page_number}-{i}" for c in "ac" for i in range(15)])

        listed = [info.key for info in await walk(store, p, 7, add_more)]
        assert sorted(k for k in listed if k in before) == before  # each once
        assert len(listed) == len(set(listed))

    make.run(body)


def test_listing_changes_no_etag_and_no_ttl(make: Maker) -> None:
    p = make.prefix

    async def body(store: Store) -> None:
        await save(store, [f"{p}{i}" for i in range(10)], ttl=900)
        before = {k: await store.get(f"{p}{k}") for k in range(10)}
        await walk(store, p, 3)
        await walk(store, "", 100)
        for k, item in before.items():
            after = await store.get(f"{p}{k}")
            assert item is not None and after is not None
            assert after.etag == item.etag and after.value == item.value
            assert item.expire_at is not None and after.expire_at is not None
            assert abs(after.expire_at - item.expire_at) < 1.5

    make.run(body)


@pytest.mark.parametrize(
    "cursor",
    [
        "nonsense",
        "",
        "m.",  # an empty position
        "k.AA",  # a key holding NUL
        "r.MCAxMjcuMC4wLjE6MSAw",  # "0 127.0.0.1:1 0": a node that is not this store's
        "m.eA",  # "x"
        "k._w",  # not UTF-8
        "x.YQ",  # a tag no store uses
    ],
)
def test_a_bad_cursor_is_a_clear_error(make: Maker, cursor: str) -> None:
    async def body(store: Store) -> None:
        await save(store, [f"{make.prefix}{i}" for i in range(3)])
        with pytest.raises(BadCursor, match="start again without a cursor"):
            await store.list_keys(make.prefix, cursor, 10)

    if make.kind in ("sqlite", "postgres") and cursor == "m.":
        cursor = "r."
    make.run(body)


@pytest.mark.parametrize("kind", ["memory", "redis", "redis-cluster"])
def test_numbers_in_a_cursor_must_be_plain(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """A cursor in the store's own form whose numbers are not plain ones: "²" passes
    str.isdigit and int() then refused it, as it refuses 5000 digits (a 500); a SCAN cursor
    past 64 bits reached Redis, whose error reply is a store failure (the store marked down)."""
    make = Maker(kind, request, tmp_path)

    async def body(store: Store) -> None:
        await save(store, [f"{make.prefix}{i:02}" for i in range(30)])
        page = await store.list_keys(make.prefix, None, 2)
        assert page.cursor is not None
        if kind == "memory":
            forged = ["²", "9" * 5000]
        else:  # "<master's place> <its address> <SCAN cursor>"
            index, address, _ = store.read_cursor(page.cursor).split(" ")
            forged = [f"{index} {address} {2**64}", f"{index} {address} ²", f"¹ {address} 0"]
        for text in forged:
            with pytest.raises(BadCursor, match="start again without a cursor"):
                await store.list_keys(make.prefix, store.make_cursor(text), 2)
        assert len(await walk(store, make.prefix, 7)) == 30  # and the listing goes on as before

    make.run(body)


def test_a_cursor_of_one_kind_of_store_is_refused_by_another(tmp_path: Path) -> None:
    async def go() -> None:
        memory = MemoryStore("m")
        sqlite = SqliteStore("s", str(tmp_path / "x.db"))
        for store in (memory, sqlite):
            await store.start()
            await save(store, [f"k{i}" for i in range(5)])
        try:
            memory_cursor = (await memory.list_keys("", None, 2)).cursor
            sqlite_cursor = (await sqlite.list_keys("", None, 2)).cursor
            assert memory_cursor is not None and sqlite_cursor is not None
            with pytest.raises(BadCursor):
                await sqlite.list_keys("", memory_cursor, 2)
            with pytest.raises(BadCursor):
                await memory.list_keys("", sqlite_cursor, 2)
        finally:
            for store in (memory, sqlite):
                await store.close()

    asyncio.run(go())


@pytest.mark.parametrize("limit", [0, -1, MAX_LIST_LIMIT + 1, True])
def test_the_page_size_is_bounded(tmp_path: Path, limit: int) -> None:
    async def go() -> None:
        store = MemoryStore("m")
        await store.start()
        with pytest.raises(StoreRefused, match=f"1 to {MAX_LIST_LIMIT}"):
            await store.list_keys("", None, limit)
        await store.close()

    asyncio.run(go())


def test_the_memory_store_lists_without_copying_its_keys() -> None:
    """100,000 keys: a page allocates about what it returns, and a walk stays correct while
    deletes compact the creation log between its pages."""

    async def go() -> None:
        store = MemoryStore("m", cleanup_interval=None)
        await store.start()
        keys = [f"key-{i:06}" for i in range(100_000)]
        for k in keys:
            await store.set(SetOp(k, b"v"))
        tracemalloc.start()
        try:
            first = await store.list_keys("key-", None, 100)
            await store.list_keys("key-", first.cursor, 100)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 200_000, f"a page of 100 keys allocated {peak} bytes"  # a copy of the keys: ~800 KB+

        # a walk while most keys go away (the log compacts under it)
        async def delete_some(page_number: int) -> None:
            if page_number == 0:
                assert not await store.delete_many([DeleteOp(k) for k in keys if int(k[4:]) % 10 != 0])

        listed = [info.key for info in await walk(store, "key-", 1000, delete_some)]
        survivors = [k for k in keys if int(k[4:]) % 10 == 0]
        assert set(survivors) <= set(listed) and len(listed) == len(set(listed))
        assert len(store._log.keys) < 20_000, "the creation log was not compacted"
        await store.close()

    asyncio.run(go())


# -- the bounded rule ----------------------------------------------------------------------


def _driven(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` as the front ends run a handler: under drive.Driven, without a Task."""
    done: asyncio.Future[Any] = loop.create_future()

    def finished(result: Any, error: BaseException | None) -> None:
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    loop.call_soon(Driven(coro, finished, loop).step)
    return loop.run_until_complete(done)


def test_the_driver_has_no_task_so_asyncio_timeout_fails_there() -> None:
    """The harness below can tell: asyncio.timeout under Driven raises (no current task)."""

    async def uses_timeout() -> None:
        assert asyncio.current_task() is None
        async with asyncio.timeout(1):
            await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="inside a task"):
            _driven(loop, uses_timeout())
    finally:
        loop.close()


@pytest.mark.parametrize("kind", BOUNDED)
def test_every_bounded_store_runs_without_a_task(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Every operation of every store that declares ``bounded`` runs under the Task-less
    driver, from its very first call (connecting, reading a cluster's slot map) on."""
    make = Maker(kind, request, tmp_path)
    p = make.prefix
    loop = asyncio.new_event_loop()
    store = make()
    assert store.bounded
    try:
        loop.run_until_complete(store.start())
        run = lambda coro: _driven(loop, coro)  # noqa: E731 - a short alias keeps the list below readable
        assert run(store.get(f"{p}a")) is None  # the first call: connects
        run(store.ping())
        run(store.set(SetOp(f"{p}a", b"1")))
        run(store.set(SetOp(f"{p}b", b"2", ttl=60), strong=True))
        etag = run(store.get(f"{p}a")).etag
        with pytest.raises(EtagMismatch):
            run(store.set(SetOp(f"{p}a", b"x", etag="0")))
        assert run(store.set_many([SetOp(f"{p}c", b"3"), SetOp(f"{p}d", b"4")])) == []
        assert [i.value for i in run(store.bulk_get([f"{p}a", f"{p}c"]))] == [b"1", b"3"]
        tx_a, tx_b = f"{p}{{tx}}a", f"{p}{{tx}}b"  # one hash slot (a cluster needs that)
        run(store.transact([SetOp(tx_a, b"5"), SetOp(tx_b, b"6")]))
        run(store.transact([SetOp(tx_a, b"7", etag=run(store.get(tx_a)).etag), DeleteOp(tx_b)]))
        listed = sorted(info.key for info in run(walk(store, p, 10)))  # list_keys, page after page
        assert listed == sorted([f"{p}a", f"{p}b", f"{p}c", f"{p}d", tx_a])
        assert len(run(store.scan(p))) == 5
        with pytest.raises(StoreRefused):  # the listing's sizes bound what a scan reads
            run(store.scan(p, max_bytes=4))
        run(store.delete(DeleteOp(f"{p}c", run(store.get(f"{p}c")).etag)))
        assert run(store.delete_many([DeleteOp(f"{p}a", etag), DeleteOp(f"{p}b"), DeleteOp(f"{p}d"), DeleteOp(tx_a)])) == []
        assert run(store.bulk_get([f"{p}a", f"{p}b", f"{p}c", tx_a])) == [None, None, None, None]
    finally:
        loop.run_until_complete(store.close())
        loop.close()


# -- etags ---------------------------------------------------------------------------------


def test_an_etag_from_before_a_delete_never_matches_after(make: Maker) -> None:
    key = make.prefix + "reborn"

    async def body(store: Store) -> None:
        etags = []
        for round_ in range(20):
            await store.set(SetOp(key, b"v%d" % round_))
            item = await store.get(key)
            assert item is not None
            etags.append(item.etag)
            await store.delete(DeleteOp(key, item.etag))
        assert len(set(etags)) == len(etags), etags
        await store.set(SetOp(key, b"new"))
        for old in etags:
            with pytest.raises(EtagMismatch):
                await store.set(SetOp(key, b"stale", etag=old))
            with pytest.raises(EtagMismatch):
                await store.delete(DeleteOp(key, old))
        if make.kind.startswith("redis"):  # versions grow, and stay exact for JavaScript
            numbers = [int(e) for e in etags]
            assert numbers == sorted(numbers) and numbers[-1] < 2**53

    make.run(body)


def test_redis_versions_stay_dapr_compatible(own_redis: RedisServer) -> None:
    """Dapr's layout: a hash with data and an integer version; Dapr's HINCRBY on a version
    devinit wrote gives the next etag, and devinit writes above a version Dapr wrote."""
    r = redis.Redis(port=own_redis.port)
    r.flushall()

    async def go() -> None:
        store = RedisStore("r", "127.0.0.1", own_redis.port)
        await store.start()
        try:
            await store.set(SetOp("order", b'"v1"'))
            fields = r.hgetall("order")
            assert set(fields) == {b"data", b"version"} and fields[b"data"] == b'"v1"'
            version = int(fields[b"version"])
            assert fields[b"version"] == str(version).encode() and 10**15 < version < 2**53
            assert r.hincrby("order", "version", 1) == version + 1  # as Dapr's save does
            item = await store.get("order")
            assert item is not None and item.etag == str(version + 1)
            await store.set(SetOp("order", b'"v2"', etag=item.etag))
            assert int(r.hget("order", "version")) > version + 1
            r.hset("dapr-made", mapping={"data": b"x", "version": 7})  # a key Dapr created
            await store.set(SetOp("dapr-made", b"y", etag="7"))
            assert int(r.hget("dapr-made", "version")) > 7
        finally:
            await store.close()

    asyncio.run(go())


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
def test_redis_keeps_no_key_of_its_own(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Writes, deletes, transactions and strong writes leave the user's keys and nothing else
    (no etag sequence, in a Cluster no per-slot one either)."""
    make = Maker(kind, request, tmp_path)
    p = make.prefix
    nodes = [make.backing] if kind == "redis" else list(make.backing.nodes)

    def count() -> int:
        return sum(redis.Redis(port=n.port).dbsize() for n in nodes)

    start = count()

    async def body(store: Store) -> None:
        keys = [f"{p}{{tag}}{i}" for i in range(12)]
        await save(store, keys)
        await store.set(SetOp(f"{p}strong", b"s"), strong=True)
        await store.delete_many([DeleteOp(k) for k in keys[:4]])
        await store.transact([SetOp(keys[4], b"t"), DeleteOp(keys[5]), SetOp(f"{p}{{tag}}tx", b"n")])
        with pytest.raises(EtagMismatch):
            await store.transact([SetOp(keys[6], b"t"), DeleteOp(keys[7], etag="1")])
        live = {info.key for info in await walk(store, p, 100)}
        assert live == {*keys[4:5], *keys[6:], f"{p}strong", f"{p}{{tag}}tx"}
        assert count() - start == len(live), "a key that is not the user's"
        assert not [k for n in nodes for k in redis.Redis(port=n.port).scan_iter(match="*devinit*")]

    make.run(body)


# -- the cleanup loop ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_expired_items_are_removed_for_good(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    make = Maker(kind, request, tmp_path)

    async def stored_rows(store: Store) -> int:
        if isinstance(store, MemoryStore):
            return len(store._items)
        if isinstance(store, SqliteStore):
            with sqlite3.connect(store.database) as c:
                return int(c.execute(f'SELECT count(*) FROM "{store.table}"').fetchone()[0])
        import psycopg

        async with await psycopg.AsyncConnection.connect(make.backing.conninfo) as c:
            row = await (await c.execute(f'SELECT count(*) FROM "{make.table}"')).fetchone()
            return int(row[0]) if row else -1

    async def body(store: Store) -> None:
        await save(store, ["a", "b"], ttl=1)
        await save(store, ["c"])
        assert await stored_rows(store) == 3
        deadline = time.monotonic() + 20
        while await stored_rows(store) != 1:
            assert time.monotonic() < deadline, "expired items were never removed"
            await asyncio.sleep(0.2)
        assert [info.key for info in await walk(store, "", 10)] == ["c"]

    make.run(body, cleanup_interval=0.3)


# -- SQLite on macOS ---------------------------------------------------------------------------


@pytest.mark.parametrize("platform, fullfsync", [("darwin", True), ("linux", False), ("win32", False), ("freebsd14", False)])
def test_strong_sqlite_writes_use_fullfsync_on_macos_only(tmp_path: Path, platform: str, fullfsync: bool) -> None:
    """The pragmas are chosen per platform (callable with any platform here), and the store
    built for macOS runs them around a strong commit, and only then, on this real SQLite."""
    pragmas = durability_pragmas(platform)
    assert ("PRAGMA fullfsync = ON" in pragmas.before_strong) is fullfsync
    assert ("PRAGMA checkpoint_fullfsync = ON" in pragmas.on_open) is fullfsync
    assert "PRAGMA synchronous = FULL" in pragmas.before_strong

    async def go() -> None:
        store = SqliteStore("s", str(tmp_path / "f.db"), platform=platform, cleanup_interval=None)
        await store.start()
        try:
            statements: list[str] = []
            assert store._wconn is not None
            store._wconn.set_trace_callback(statements.append)
            await store.set(SetOp("eventual", b"1"))
            eventual, statements[:] = list(statements), []
            await store.set(SetOp("strong", b"2"), strong=True)
            assert not any("fullfsync" in s for s in eventual)
            assert ("PRAGMA fullfsync = ON" in statements) is fullfsync
            if fullfsync:
                assert statements.index("PRAGMA fullfsync = ON") < statements.index("COMMIT")
                assert statements.index("PRAGMA fullfsync = OFF") > statements.index("COMMIT")
            store._wconn.set_trace_callback(None)
            flags = await asyncio.get_running_loop().run_in_executor(
                store._writer,
                lambda: [store._wconn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("fullfsync", "checkpoint_fullfsync")],  # type: ignore[union-attr]
            )
            assert flags == [0, int(fullfsync)]  # fullfsync only for the strong commit
            item = await store.get("strong")
            assert item is not None and item.value == b"2"
        finally:
            await store.close()

    asyncio.run(go())
