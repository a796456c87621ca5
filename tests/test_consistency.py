"""Strong consistency has its real meaning per store (docs/state-api.md "Consistency").

SQLite: a strong write's commit runs with synchronous=FULL (fsync before the answer); an
eventual one stays on NORMAL. Redis: a strong write is followed, on the same connection, by
WAIT for the connected replicas (WAITAOF on Redis >= 7.2 with AOF on).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import redis
from conftest import store_component

from devinit.state.base import SetOp
from devinit.state.sqlite import SqliteStore
from support import DevinitServer, RedisServer


def test_sqlite_strong_commit_is_full_sync(tmp_path: Path):
    async def run() -> list[str]:
        store = SqliteStore("s", str(tmp_path / "db.sqlite"))
        await store.start()
        seen: list[str] = []
        assert store._wconn is not None
        store._wconn.set_trace_callback(seen.append)
        await store.set(SetOp("a", b"1"), strong=False)
        seen.append("--")
        await store.set(SetOp("b", b"2"), strong=True)
        await store.close()
        return seen

    trace = asyncio.run(run())
    eventual, strong = " ".join(trace).split("--")
    assert "synchronous = FULL" not in eventual and "COMMIT" in eventual
    assert strong.index("PRAGMA synchronous = FULL") < strong.index("COMMIT") < strong.index("PRAGMA synchronous = NORMAL")


def test_sqlite_uses_wal(tmp_path: Path):
    async def run() -> None:
        store = SqliteStore("s", str(tmp_path / "db.sqlite"))
        await store.start()
        await store.close()

    asyncio.run(run())
    import sqlite3

    assert sqlite3.connect(tmp_path / "db.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _waits(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0)) + int(stats.get("cmdstat_waitaof", {}).get("calls", 0))


def test_redis_strong_write_waits_for_the_replica(tmp_path: Path, redis_server: RedisServer):
    master = RedisServer(tmp_path / "master", "--repl-diskless-sync-delay", "0")
    replica = RedisServer(tmp_path / "replica", "--replicaof", "127.0.0.1", str(master.port))
    folder = tmp_path / "components"
    store_component("redis", folder, "statestore", master)
    srv = DevinitServer(folder)
    try:
        m = redis.Redis(port=master.port)
        deadline = time.monotonic() + 10
        while m.info("replication").get("slave0", {}).get("state") != "online":
            assert time.monotonic() < deadline, "replica did not connect"
            time.sleep(0.05)
        url = srv.url + "/v1.0/state/statestore"
        before = _waits(m)
        assert httpx.post(url, json=[{"key": "e", "value": 1}]).status_code == 204
        assert _waits(m) == before  # eventual: no WAIT
        assert httpx.post(url, json=[{"key": "s", "value": 2, "options": {"consistency": "strong"}}]).status_code == 204
        assert _waits(m) == before + 1
        tx = {"operations": [{"operation": "upsert", "request": {"key": "t", "value": 3, "options": {"consistency": "strong"}}}]}
        assert httpx.post(url + "/transaction", json=tx).status_code == 204
        assert httpx.delete(url + "/s", params={"consistency": "strong"}).status_code == 204
        assert _waits(m) == before + 3
        # the replica has what was acknowledged
        assert redis.Redis(port=replica.port).hget("t", "data") == b"3"
    finally:
        srv.stop()
        replica.stop()
        master.stop()


def test_postgres_strong_commit_is_synchronous(tmp_path: Path):
    from support import PostgresServer

    pg = PostgresServer(tmp_path / "pg", "log_statement=all")
    folder = tmp_path / "components"
    store_component("postgres", folder, "statestore", pg)
    srv = DevinitServer(folder)
    log = pg.workdir / "postgres.log"
    try:
        url = srv.url + "/v1.0/state/statestore"
        mark = log.stat().st_size
        assert httpx.post(url, json=[{"key": "e", "value": 1}]).status_code == 204
        eventual = log.read_bytes()[mark:].decode()
        assert "INSERT INTO" in eventual and "synchronous_commit = on" not in eventual
        mark = log.stat().st_size
        assert httpx.post(url, json=[{"key": "s", "value": 2, "options": {"consistency": "strong"}}]).status_code == 204
        strong = log.read_bytes()[mark:].decode()
        assert strong.index("SET LOCAL synchronous_commit = on") < strong.index("INSERT INTO") < strong.index("COMMIT")
        # sessions default to asynchronous commit for eventual writes
        assert "SET synchronous_commit = off" in log.read_text()
    finally:
        srv.stop()
        pg.stop()
