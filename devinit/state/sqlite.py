"""``state.sqlite``: an embedded SQLite file (or ``:memory:``).

Layout: one table (``tableName``, default ``state``) of ``key``, ``value`` (bytes as given),
``etag`` (random per write) and ``expire_at`` (epoch seconds or NULL).

Concurrency: every write runs on one writer thread inside ``BEGIN IMMEDIATE``, which takes
SQLite's write lock before the etag check, so check and write are one atomic step even when
several devinit processes share the file (they wait up to ``busyTimeout`` for the lock).
Durability: WAL with ``synchronous=NORMAL``; a strong write switches the writer connection to
``synchronous=FULL`` for its commit, so it is fsynced before it is acknowledged.
Reads run on the event loop thread on their own connection: a primary-key lookup in WAL mode
never waits for a writer and costs less than a hop to a thread.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from devinit.errors import EtagMismatch, StoreError
from devinit.state.base import (
    DeleteOp,
    Op,
    SetOp,
    Store,
    StoredItem,
    expire_at,
    failed_keys_in_order,
    new_etag,
    precondition_holds,
)

T = TypeVar("T")
_BULK_CHUNK = 500
_BATCH = 256  # writes per group commit at most


class SqliteStore(Store):
    """A state store in one SQLite database file."""

    # Reads run synchronously (no deadline could interrupt them) and writes wait at most
    # busyTimeout for the database lock.
    bounded = True

    def __init__(
        self,
        name: str,
        database: str,
        table: str = "state",
        busy_timeout: float = 5.0,
        cleanup_interval: float | None = 600.0,
    ) -> None:
        super().__init__(name)
        self.database = database
        self.table = table
        self.busy_timeout = busy_timeout
        self.cleanup_interval = cleanup_interval
        self._in_memory = database == ":memory:" or "mode=memory" in database
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{name}")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._cleaner: asyncio.Task[None] | None = None
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], bool, asyncio.Future[Any]]] = []
        self._writing = False
        t = f'"{table}"'
        self._sql_get = f"SELECT value, etag, expire_at FROM {t} WHERE key = ?"
        self._sql_upsert = (
            f"INSERT INTO {t} (key, value, etag, expire_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, etag = excluded.etag, "
            "expire_at = excluded.expire_at"
        )
        self._sql_delete = f"DELETE FROM {t} WHERE key = ?"

    # -- connections -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        uri = self.database.startswith("file:")
        if not uri and not self._in_memory:
            Path(self.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            os.path.expanduser(self.database) if not uri else self.database,
            uri=uri,
            timeout=self.busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        return conn

    def _open_writer(self) -> None:
        conn = self._connect()
        if not self._in_memory:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{self.table}" (key TEXT PRIMARY KEY NOT NULL, '
            "value BLOB NOT NULL, etag TEXT NOT NULL, expire_at REAL) WITHOUT ROWID"
        )
        conn.execute(
            f'CREATE INDEX IF NOT EXISTS "{self.table}_expire_at" ON "{self.table}" (expire_at) WHERE expire_at IS NOT NULL'
        )
        self._wconn = conn

    async def start(self) -> None:
        try:
            await self._on_writer(self._open_writer)
            if not self._in_memory:
                self._rconn = self._connect()
                self._rconn.execute("PRAGMA query_only = 1")
        except (sqlite3.Error, OSError) as e:
            # OSError: the folder cannot be made (a file in the way, no permission). Uncaught, it
            # ended the whole server at start instead of failing this one component.
            raise StoreError(f"cannot open SQLite database {self.database!r} for store {self.name!r}: {e}") from e
        if self.cleanup_interval:
            self._cleaner = asyncio.get_running_loop().create_task(self._clean_forever(self.cleanup_interval))

    async def close(self) -> None:
        if self._cleaner is not None:
            self._cleaner.cancel()
        if self._rconn is not None:
            self._rconn.close()
        if self._wconn is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._wconn.close)
        self._writer.shutdown(wait=True)

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    async def _clean_forever(self, interval: float) -> None:
        sql = f'DELETE FROM "{self.table}" WHERE expire_at IS NOT NULL AND expire_at <= ?'
        while True:
            await asyncio.sleep(interval)
            try:
                await self._write(lambda c: c.execute(sql, (time.time(),)), strong=False)
            except StoreError:
                pass  # the next round tries again; reads never return expired items anyway

    # -- plumbing ----------------------------------------------------------------------

    async def _on_writer(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._rconn is not None:
                return fn(self._rconn)
            return await self._on_writer(lambda: fn(self._conn()))  # :memory: has one connection
        except sqlite3.Error as e:
            raise StoreError(f"SQLite store {self.name!r} ({self.database}): read failed: {e}") from e

    def _conn(self) -> sqlite3.Connection:
        if self._wconn is None:
            raise StoreError(f"SQLite store {self.name!r} is not open")
        return self._wconn

    async def _write(self, fn: Callable[[sqlite3.Connection], T], strong: bool) -> T:
        """Run ``fn`` in a write transaction; its exceptions come back to the caller.

        Group commit: writes that arrive while the writer thread is busy wait for it and then go
        in ONE transaction (one fsync), each inside a savepoint of its own, so an etag failure
        or an error undoes that write alone. A strong write in a batch makes its commit FULL.
        """
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, strong, fut))
        if not self._writing:
            self._submit()
        try:
            return await fut
        except sqlite3.Error as e:
            raise StoreError(f"SQLite store {self.name!r} ({self.database}): write failed: {e}") from e

    def _submit(self) -> None:
        batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
        self._writing = True
        done = asyncio.wrap_future(self._writer.submit(self._commit, [(fn, strong) for fn, strong, _ in batch]))
        done.add_done_callback(lambda d: self._committed(batch, d))

    def _committed(self, batch: list[Any], done: asyncio.Future[list[tuple[bool, Any]]]) -> None:
        self._writing = False
        if done.exception() is not None:
            outcomes: list[tuple[bool, Any]] = [(False, done.exception())] * len(batch)
        else:
            outcomes = done.result()
        for (_, _, fut), (ok, value) in zip(batch, outcomes, strict=True):
            if fut.done():
                continue  # the caller went away
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        if self._pending:
            self._submit()

    def _commit(self, batch: list[tuple[Callable[[sqlite3.Connection], Any], bool]]) -> list[tuple[bool, Any]]:
        """On the writer thread: one transaction, a savepoint per write."""
        c = self._conn()
        strong = any(s for _, s in batch)
        outcomes: list[tuple[bool, Any]] = []
        if strong:
            c.execute("PRAGMA synchronous = FULL")
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                for fn, _ in batch:
                    c.execute("SAVEPOINT op")
                    try:
                        outcomes.append((True, fn(c)))
                    except Exception as e:
                        c.execute("ROLLBACK TO op")
                        outcomes.append((False, e))
                    c.execute("RELEASE op")
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        finally:
            if strong:
                c.execute("PRAGMA synchronous = NORMAL")
        return outcomes

    def _live(self, c: sqlite3.Connection, key: str) -> StoredItem | None:
        row = c.execute(self._sql_get, (key,)).fetchone()
        if row is None or (row[2] is not None and row[2] <= time.time()):
            return None
        return StoredItem(row[0], row[1], row[2])

    def _apply(self, c: sqlite3.Connection, op: Op) -> None:
        if isinstance(op, SetOp):
            c.execute(self._sql_upsert, (op.key, op.value, new_etag(), expire_at(op.ttl)))
        else:
            c.execute(self._sql_delete, (op.key,))

    def _checked(self, c: sqlite3.Connection, ops: Sequence[Op]) -> list[str]:
        failed = []
        for op in ops:
            if precondition_holds(op, self._live(c, op.key)):
                self._apply(c, op)
            else:
                failed.append(op.key)
        return failed

    # -- the contract ------------------------------------------------------------------

    async def get(self, key: str, strong: bool = False) -> StoredItem | None:
        return await self._read(lambda c: self._live(c, key))

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        def fetch(c: sqlite3.Connection) -> dict[str, StoredItem]:
            found: dict[str, StoredItem] = {}
            now = time.time()
            unique = list(dict.fromkeys(keys))
            for i in range(0, len(unique), _BULK_CHUNK):
                chunk = unique[i : i + _BULK_CHUNK]
                marks = ",".join("?" * len(chunk))
                sql = f'SELECT key, value, etag, expire_at FROM "{self.table}" WHERE key IN ({marks})'
                for k, v, e, x in c.execute(sql, chunk):
                    if x is None or x > now:
                        found[k] = StoredItem(v, e, x)
            return found

        found = await self._read(fetch)
        return [found.get(k) for k in keys]

    async def scan(self, prefix: str) -> list[tuple[str, StoredItem]]:
        sql = (
            f'SELECT key, value, etag, expire_at FROM "{self.table}" '
            "WHERE substr(key, 1, ?) = ? AND (expire_at IS NULL OR expire_at > ?)"
        )

        def fetch(c: sqlite3.Connection) -> list[tuple[str, StoredItem]]:
            return [(k, StoredItem(v, e, x)) for k, v, e, x in c.execute(sql, (len(prefix), prefix, time.time()))]

        return await self._read(fetch)

    async def set(self, op: SetOp, strong: bool = False) -> None:
        if await self._write(lambda c: self._checked(c, (op,)), strong):
            raise EtagMismatch([op.key])

    async def set_many(self, ops: Sequence[SetOp], strong: bool = False) -> list[str]:
        # One transaction (one fsync when strong); each item is checked and applied on its own.
        return await self._write(lambda c: self._checked(c, ops), strong)

    async def delete(self, op: DeleteOp, strong: bool = False) -> None:
        if await self._write(lambda c: self._checked(c, (op,)), strong):
            raise EtagMismatch([op.key])

    async def delete_many(self, ops: Sequence[DeleteOp], strong: bool = False) -> list[str]:
        return await self._write(lambda c: self._checked(c, ops), strong)

    async def transact(self, ops: Sequence[Op], strong: bool = False) -> None:
        def run(c: sqlite3.Connection) -> None:
            failed = failed_keys_in_order(ops, lambda k: self._live(c, k))
            if failed:
                raise EtagMismatch(failed)  # nothing written yet; _write rolls back
            for op in ops:
                self._apply(c, op)

        await self._write(run, strong)
