"""``state.sqlite``: an embedded SQLite file (or ``:memory:``).

Layout: one table (``tableName``, default ``state``) of ``key``, ``value`` (bytes as given),
``etag`` (random per write) and ``expire_at`` (epoch seconds or NULL).

Concurrency: every write runs on one writer thread inside ``BEGIN IMMEDIATE``, which takes
SQLite's write lock before the etag check, so check and write are one atomic step even when
several devinit processes share the file (they wait up to ``busyTimeout`` for the lock).
Durability: WAL with ``synchronous=NORMAL``; a strong write switches the writer connection to
``synchronous=FULL`` for its commit, so it is fsynced before it is acknowledged (on macOS with
``fullfsync`` too: ``durability_pragmas``).
Reads run on the event loop thread on their own connection: a primary-key lookup in WAL mode
never waits for a writer and costs less than a hop to a thread.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from devinit.errors import StoreError
from devinit.state.base import (
    KeyPage,
    Op,
    SetOp,
    Store,
    StoredItem,
    all_or_none,
    check_limit,
    cleanup_interval,
    each_checked,
    expire_at,
    new_etag,
)
from devinit.state.sql import Listing, keyset_page, table_name

if TYPE_CHECKING:
    from devinit.components import ComponentSpec

T = TypeVar("T")
_BULK_CHUNK = 500
_BATCH = 256  # writes per group commit at most


@dataclass(frozen=True, slots=True)
class DurabilityPragmas:
    """The PRAGMAs that give "strong" its meaning on one platform (docs/state-api.md "Consistency")."""

    on_open: tuple[str, ...]  # once, on the writer connection
    before_strong: tuple[str, ...]  # before a commit that holds a strong write
    after_strong: tuple[str, ...]  # after it, back to the eventual settings


def durability_pragmas(platform: str = sys.platform) -> DurabilityPragmas:
    """What a strong commit runs on ``platform`` (``sys.platform``'s values).

    Everywhere: ``synchronous = FULL`` for that commit, so the WAL is synced before the answer.
    On macOS (darwin) fsync() leaves the data in the drive's cache, where power loss takes it;
    ``fullfsync`` makes SQLite use F_FULLFSYNC, which flushes that cache, and
    ``checkpoint_fullfsync`` keeps a later checkpoint from undoing it. Linux's fsync() and
    Windows' FlushFileBuffers() already ask the drive to flush its cache.
    """
    on_open: tuple[str, ...] = ()
    before: tuple[str, ...] = ("PRAGMA synchronous = FULL",)
    after: tuple[str, ...] = ("PRAGMA synchronous = NORMAL",)
    if platform == "darwin":
        on_open = ("PRAGMA checkpoint_fullfsync = ON",)
        before += ("PRAGMA fullfsync = ON",)
        after += ("PRAGMA fullfsync = OFF",)
    return DurabilityPragmas(on_open, before, after)


class SqliteStore(Store):
    """A state store in one SQLite database file."""

    component_types = ("state.sqlite",)
    # Reads run synchronously (no deadline could interrupt them) and writes wait at most
    # busyTimeout for the database lock.
    bounded = True
    cursor_tag = "k"

    def __init__(
        self,
        name: str,
        database: str,
        table: str = "state",
        busy_timeout: float = 5.0,
        cleanup_interval: float | None = 600.0,
        platform: str = sys.platform,
    ) -> None:
        super().__init__(name, cleanup_interval)
        self.database = database
        self.table = table
        self.busy_timeout = busy_timeout
        self.pragmas = durability_pragmas(platform)
        self._in_memory = database == ":memory:" or "mode=memory" in database
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{name}")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
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
        self._listing = Listing.build(
            f"SELECT key, etag, expire_at, length(CAST(value AS BLOB)) FROM {t}",
            "key",
            "?",
            "(expire_at IS NULL OR expire_at > ?)",
        )

    @classmethod
    def from_spec(cls, spec: ComponentSpec) -> Self:
        return cls(
            spec.name,
            spec.required("connectionString", "give a database file path or :memory:"),
            table=table_name(spec),
            busy_timeout=spec.timeout("busyTimeout", 5.0),
            cleanup_interval=cleanup_interval(spec, 600.0),
        )

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
        for pragma in self.pragmas.on_open:
            conn.execute(pragma)
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{self.table}" (key TEXT PRIMARY KEY NOT NULL, '
            "value BLOB NOT NULL, etag TEXT NOT NULL, expire_at REAL) WITHOUT ROWID"
        )
        conn.execute(
            f'CREATE INDEX IF NOT EXISTS "{self.table}_expire_at" ON "{self.table}" (expire_at) WHERE expire_at IS NOT NULL'
        )
        self._wconn = conn

    async def open(self) -> None:
        try:
            await self._on_writer(self._open_writer)
            if not self._in_memory:
                self._rconn = self._connect()
                self._rconn.execute("PRAGMA query_only = 1")
        except (sqlite3.Error, OSError) as e:
            # OSError: the folder cannot be made (a file in the way, no permission). Uncaught, it
            # ended the whole server at start instead of failing this one component.
            raise StoreError(f"cannot open SQLite database {self.database!r} for store {self.name!r}: {e}") from e

    async def release(self) -> None:
        if self._rconn is not None:
            self._rconn.close()
        if self._wconn is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._wconn.close)
        self._writer.shutdown(wait=True)

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    async def remove_expired(self) -> None:
        sql = f'DELETE FROM "{self.table}" WHERE expire_at IS NOT NULL AND expire_at <= ?'
        await self._write(lambda c: c.execute(sql, (time.time(),)), strong=False)

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
            for pragma in self.pragmas.before_strong:
                c.execute(pragma)
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
                for pragma in self.pragmas.after_strong:
                    c.execute(pragma)
        return outcomes

    def _live(self, c: sqlite3.Connection, key: str) -> StoredItem | None:
        row = c.execute(self._sql_get, (key,)).fetchone()
        if row is None or (row[2] is not None and row[2] <= time.time()):
            return None
        return StoredItem(row[0], row[1], row[2])

    def _put(self, c: sqlite3.Connection, op: Op) -> None:
        if isinstance(op, SetOp):
            c.execute(self._sql_upsert, (op.key, op.value, new_etag(), expire_at(op.ttl)))
        else:
            c.execute(self._sql_delete, (op.key,))

    def _each(self, c: sqlite3.Connection, ops: Sequence[Op]) -> list[str]:
        return each_checked(ops, lambda k: self._live(c, k), lambda op: self._put(c, op))

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

    async def apply(self, op: Op, strong: bool = False) -> bool:
        return not await self._write(lambda c: self._each(c, (op,)), strong)

    async def apply_each(self, ops: Sequence[Op], strong: bool = False) -> list[str]:
        # One transaction (one fsync when strong); each item is checked and applied on its own.
        return await self._write(lambda c: self._each(c, ops), strong)

    async def apply_atomically(self, ops: Sequence[Op], strong: bool = False) -> list[str]:
        return await self._write(lambda c: all_or_none(ops, lambda k: self._live(c, k), lambda op: self._put(c, op)), strong)

    async def list_keys(self, prefix: str = "", cursor: str | None = None, limit: int = 100) -> KeyPage:
        query = self._listing.statement(self, prefix, cursor, check_limit(limit), time.time())
        if query is None:
            return KeyPage([], None)
        return keyset_page(self, await self._read(lambda c: c.execute(*query).fetchall()), limit)
