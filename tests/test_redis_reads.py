"""The Redis store's reads: HMGET + PTTL written together, their two replies paired on one
shared connection (state/resp.py ``send_one(pair=True)``, state/redis.py ``read_commands``)."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from devinit.state.base import SetOp
from devinit.state.redis import RedisStore
from devinit.state.resp import RedisFailure, _Connection
from support import RedisServer


def _reply(value: Any) -> bytes:
    """RESP2 encoding of a reply (bulk strings, nil, integers, arrays)."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value) + b"".join(_reply(v) for v in value)


@given(st.lists(st.integers(min_value=1, max_value=200), max_size=12))
@settings(max_examples=200, deadline=None)
def test_pairs_and_singles_get_their_own_replies_however_the_bytes_arrive(cuts: list[int]) -> None:
    loop = asyncio.new_event_loop()
    try:
        conn = _Connection(loop)
        # a read (pair), a single command, two reads, a single: as the shared lane interleaves them
        plan = [("pair", [b"a", b"1"], -1), ("one", 5), ("pair", [None, None], -2), ("pair", [b"c", b"3"], 1500), ("one", 7)]
        futures, wire = [], b""
        for entry in plan:
            if entry[0] == "pair":
                futures.append(conn.send_one(b"(two commands)", pair=True))
                wire += _reply(entry[1]) + _reply(entry[2])
            else:
                futures.append(conn.send_one(b"(one command)"))
                wire += _reply(entry[1])
        points = sorted({min(c, len(wire)) for c in cuts} | {len(wire)})
        start = 0
        for p in points:  # the replies arrive split at arbitrary byte offsets
            conn.data_received(wire[start:p])
            start = p
        got = [f.result() for f in futures]
        assert got == [([b"a", b"1"], -1), 5, ([None, None], -2), ([b"c", b"3"], 1500), 7]
        assert not conn.waiters
    finally:
        loop.close()


def test_a_connection_lost_between_the_two_replies_fails_the_read() -> None:
    loop = asyncio.new_event_loop()
    try:
        conn = _Connection(loop)
        read = conn.send_one(b"(two commands)", pair=True)
        conn.data_received(_reply([b"v", b"9"]))  # the HMGET's reply; the PTTL's never comes
        assert not read.done()
        conn.connection_lost(ConnectionResetError("reset by peer"))
        with pytest.raises(RedisFailure, match="connection lost"):
            read.result()
        assert not conn.waiters
    finally:
        loop.close()


def test_an_item_that_went_away_between_the_two_commands_reads_as_missing() -> None:
    assert RedisStore._item([b"v", b"3"], -2) is None  # HMGET saw it, PTTL did not: expired or deleted
    assert RedisStore._item([None, None], -2) is None
    assert RedisStore._item([b"v", None], -1) is None  # a hash without a version is not an item
    item = RedisStore._item([b"v", b"3"], -1)
    assert item is not None and item.value == b"v" and item.etag == "3" and item.expire_at is None


def test_concurrent_reads_and_writes_on_one_connection_each_get_their_own_key(redis_server: RedisServer) -> None:
    async def run() -> None:
        store = RedisStore("reads", "127.0.0.1", redis_server.port)
        await store.start()
        try:
            keys = [f"reads-{i}" for i in range(50)]
            for k in keys:
                await store.set(SetOp(k, k.encode(), None, False, None))
            await store.set(SetOp("reads-ttl", b"t", None, False, 30))

            async def read(k: str) -> None:
                item = await store.get(k)
                assert item is not None and item.value == k.encode(), (k, item)

            async def write(k: str) -> None:
                await store.set(SetOp(k, k.encode(), None, False, None))

            jobs = [read(k) for k in keys * 20] + [write(k) for k in keys]
            random.Random(7).shuffle(jobs)
            await asyncio.gather(*jobs)
            bulk = await store.bulk_get(["reads-3", "reads-missing", "reads-ttl", "reads-7"])
            assert [i.value if i else None for i in bulk] == [b"reads-3", None, b"t", b"reads-7"]
            assert bulk[2] is not None and bulk[2].expire_at is not None and 25 < bulk[2].expire_at - time.time() <= 30
            assert bulk[0] is not None and bulk[0].expire_at is None
        finally:
            await store.close()

    asyncio.run(run())


def test_a_dapr_written_item_with_a_redis_expiry_reads_with_its_expire_time(redis_server: RedisServer) -> None:
    r = redis.Redis(port=redis_server.port)
    r.hset("dapr-ttl", mapping={"data": b'"x"', "version": 4})
    r.pexpire("dapr-ttl", 60_000)
    r.set("not-a-hash", b"plain")

    async def run() -> None:
        store = RedisStore("reads", "127.0.0.1", redis_server.port)
        await store.start()
        try:
            item = await store.get("dapr-ttl")
            assert item is not None and item.etag == "4" and item.expire_at is not None
            assert 55 < item.expire_at - time.time() <= 60
            with pytest.raises(Exception, match="WRONGTYPE"):  # a key some other program wrote
                await store.get("not-a-hash")
            assert [k for k, _ in await store.scan("dapr-")] == ["dapr-ttl"]
        finally:
            await store.close()

    try:
        asyncio.run(run())
    finally:
        r.delete("dapr-ttl", "not-a-hash")


def test_the_hand_packed_read_is_what_redis_parses(redis_server: RedisServer) -> None:
    """The packed bytes go to a real Redis as two commands with two replies."""
    import socket

    from devinit.state.redis import pack_read

    redis.Redis(port=redis_server.port).hset("packed key ü", mapping={"data": b"d", "version": 2})
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as s:
        s.sendall(pack_read("packed key ü"))
        reader, replies = hiredis.Reader(), []
        while len(replies) < 2:
            reader.feed(s.recv(4096))
            while (x := reader.gets()) is not False:
                replies.append(x)
    assert replies == [[b"d", b"2"], -1]


@pytest.mark.parametrize("strong", [False, True])
def test_after_a_script_flush_only_what_redis_did_not_run_is_sent_again(tmp_path: Path, strong: bool) -> None:
    """Issue 13 point 15. One pipelined batch: a conditional save, then SCRIPT FLUSH (as another
    client may send between two of our commands), then a second save. Redis runs the first,
    flushes, and refuses the second (NOSCRIPT). Only the second may be sent again: sending the
    whole batch again (the old behaviour) ran the first save twice, and its second run found
    its own new etag and answered -1 (a 409 for a write that was applied).

    Strong: the node has a replica, so the batch ends with a WAIT, which must be sent again
    after the re-sent save, so that it covers it."""
    primary = RedisServer(tmp_path / "primary", "--repl-diskless-sync-delay", "0")
    replica = RedisServer(tmp_path / "replica", "--replicaof", "127.0.0.1", str(primary.port)) if strong else None

    async def run() -> None:
        store = RedisStore("flush", "127.0.0.1", primary.port)
        await store.start()
        try:
            if replica is not None:  # wait until the replica is in sync (WAIT counts it then)
                r = redis.Redis(port=primary.port)
                deadline = time.monotonic() + 30
                while r.info("replication").get("slave0", {}).get("state") != "online" and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            for key in ("flush-a", "flush-b"):
                await store.set(SetOp(key, b"1"))
            etags = {k: (await store.get(k)).etag for k in ("flush-a", "flush-b")}  # type: ignore[union-attr]
            node = store._main
            assert node is not None
            batch = [
                RedisStore._call(SetOp("flush-a", b"2", etags["flush-a"])),
                (b"SCRIPT", b"FLUSH"),
                RedisStore._call(SetOp("flush-b", b"2", etags["flush-b"])),
            ]
            replies = await node.run(batch, strong)
            assert replies[1] == b"OK"
            assert replies[0] != -1 and replies[2] != -1, f"a save that ran was run again: {replies}"
            for key, reply in (("flush-a", replies[0]), ("flush-b", replies[2])):
                item = await store.get(key)
                assert item is not None and item.value == b"2" and item.etag == str(reply)
            if replica is not None:
                assert redis.Redis(port=replica.port).hget("flush-b", "data") == b"2"
        finally:
            await store.close()

    try:
        asyncio.run(run())
    finally:
        primary.stop()
        if replica is not None:
            replica.stop()
