"""``state.postgresql``: a table in PostgreSQL, for stores shared beyond one machine.

Layout: one table (``tableName``, default ``state``) of ``key``, ``value`` (bytea, as given),
``etag`` (random per write) and ``expire_at`` (timestamptz or NULL). The key column is made with
``COLLATE "C"`` (byte order), which the key listing pages in: its primary-key index then
serves each page (a table made before that still lists right, with a sort per page).

Every check-and-write is ONE conditional statement (``UPDATE ... WHERE etag = $e``, or
``INSERT ... ON CONFLICT DO UPDATE ... WHERE <expired>`` for first-write), so concurrent
servers never lose an update; its row count says whether the check held. Transactions run
the same statements inside one database transaction and roll back if any check fails.

Durability: pooled sessions run with ``synchronous_commit = off`` (eventual: acknowledged
once PostgreSQL accepted the write); a strong write runs in a transaction with
``SET LOCAL synchronous_commit = on``, so it is flushed (and sent to synchronous standbys)
before the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from devinit.errors import EtagMismatch, StoreError
from devinit.state.base import KeyPage, Op, SetOp, Store, StoredItem, check_limit, cleanup_interval, new_etag
from devinit.state.sql import Listing, keyset_page, table_name

if TYPE_CHECKING:
    from devinit.components import ComponentSpec

T = TypeVar("T")
log = logging.getLogger("devinit.state.postgres")
_LIVE = "(expire_at IS NULL OR expire_at > now())"
# Expiry from a TTL in seconds (NULL: none), on the database's clock, the one _LIVE reads: with
# the server's clock, skew between hosts would stretch or shorten every TTL.
_EXPIRY = "now() + %s::integer * interval '1 second'"


class PostgresStore(Store):
    """A state store in one PostgreSQL table."""

    component_types = ("state.postgresql",)
    cursor_tag = "k"

    def __init__(
        self,
        name: str,
        conninfo: str,
        table: str = "state",
        timeout: float = 5.0,
        cleanup_interval: float | None = 600.0,
        max_connections: int = 16,
    ) -> None:
        super().__init__(name, cleanup_interval)
        self.table = table
        self.timeout = timeout
        self._conninfo = conninfo
        self._where = _describe(conninfo)
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_connections,
            open=False,
            timeout=timeout,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout)), "prepare_threshold": 0},
            configure=self._configure,
        )
        self._table_ready = False
        self._table_lock = asyncio.Lock()
        t = f'"{table}"'
        self._sql_get = f"SELECT value, etag, expire_at FROM {t} WHERE key = %s AND {_LIVE}"
        self._sql_bulk = f"SELECT key, value, etag, expire_at FROM {t} WHERE key = ANY(%s) AND {_LIVE}"
        upsert = f"INSERT INTO {t} AS s (key, value, etag, expire_at) VALUES (%s, %s, %s, {_EXPIRY}) ON CONFLICT (key) DO UPDATE SET value = excluded.value, etag = excluded.etag, expire_at = excluded.expire_at"
        self._sql_upsert = upsert
        self._sql_insert = upsert + " WHERE s.expire_at IS NOT NULL AND s.expire_at <= now()"
        self._sql_update = f"UPDATE {t} SET value = %s, etag = %s, expire_at = {_EXPIRY} WHERE key = %s AND etag = %s AND {_LIVE}"
        self._sql_delete = f"DELETE FROM {t} WHERE key = %s"
        self._sql_delete_if = f"DELETE FROM {t} WHERE key = %s AND etag = %s AND {_LIVE}"
        self._listing = Listing.build(
            f"SELECT key, etag, extract(epoch FROM expire_at)::float8, octet_length(value) FROM {t}",
            'key COLLATE "C"',
            "%s",
            _LIVE,
        )

    @classmethod
    def from_spec(cls, spec: ComponentSpec) -> Self:
        return cls(
            spec.name,
            spec.required("connectionString", "e.g. host=127.0.0.1 user=postgres dbname=dapr"),
            table=table_name(spec),
            timeout=spec.timeout("timeout", 5.0),
            cleanup_interval=cleanup_interval(spec, 600.0),
        )

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute(f"SET statement_timeout = {int(self.timeout * 1000)}")

    def _error(self, what: str, e: BaseException) -> StoreError:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return StoreError(f"PostgreSQL store {self.name!r} at {self._where}: {what} failed: {detail}")

    async def open(self) -> None:
        await self._pool.open(wait=False)
        try:
            await self.ping()  # creates the table
        except StoreError as e:
            # The server may come later: calls fail (500) until it does; the table is made then.
            log.warning("%s; requests will fail until it answers", e)

    async def release(self) -> None:
        await self._pool.close()

    async def ping(self) -> None:
        await self._run("ping", lambda c: c.execute("SELECT 1"))

    async def remove_expired(self) -> None:
        await self._run("cleanup", lambda c: c.execute(f'DELETE FROM "{self.table}" WHERE expire_at <= now()'))

    async def _run(
        self, what: str, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], strong: bool = False, tx: bool = False
    ) -> T:
        try:
            async with self._pool.connection(timeout=self.timeout) as conn:
                if not self._table_ready:
                    async with self._table_lock:  # concurrent CREATE TABLEs can clash in the catalog
                        if not self._table_ready:
                            await self._create_table(conn)
                if not (strong or tx):
                    return await fn(conn)
                async with conn.transaction():
                    if strong:
                        await conn.execute("SET LOCAL synchronous_commit = on")
                    return await fn(conn)
        except EtagMismatch:
            raise
        except (TimeoutError, psycopg.Error, OSError) as e:
            raise self._error(what, e) from e

    async def _create_table(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{self.table}" (key TEXT COLLATE "C" PRIMARY KEY, value BYTEA NOT NULL, '
            "etag TEXT NOT NULL, expire_at TIMESTAMPTZ)"
        )
        await conn.execute(
            f'CREATE INDEX IF NOT EXISTS "{self.table}_expire_at" ON "{self.table}" (expire_at) WHERE expire_at IS NOT NULL'
        )
        self._table_ready = True

    async def _apply(self, conn: psycopg.AsyncConnection[Any], op: Op) -> bool:
        """Run one operation's conditional statement; False when its check failed."""
        if op.etag and "\x00" in op.etag:
            return False  # no etag holds NUL, and PostgreSQL text refuses it (was a 500, not a 409)
        if isinstance(op, SetOp):
            etag, exp = new_etag(), op.ttl
            if op.etag:
                cur = await conn.execute(self._sql_update, (op.value, etag, exp, op.key, op.etag))
            elif op.first_write:
                cur = await conn.execute(self._sql_insert, (op.key, op.value, etag, exp))
            else:
                await conn.execute(self._sql_upsert, (op.key, op.value, etag, exp))
                return True
            return cur.rowcount == 1
        if op.etag:
            cur = await conn.execute(self._sql_delete_if, (op.key, op.etag))
            return cur.rowcount == 1
        await conn.execute(self._sql_delete, (op.key,))
        return True

    @staticmethod
    def _item(value: bytes, etag: str, exp: datetime | None) -> StoredItem:
        return StoredItem(bytes(value), etag, exp.timestamp() if exp is not None else None)

    async def get(self, key: str, strong: bool = False) -> StoredItem | None:
        async def q(c: psycopg.AsyncConnection[Any]) -> StoredItem | None:
            row = await (await c.execute(self._sql_get, (key,))).fetchone()
            return None if row is None else self._item(*row)

        return await self._run("get", q)

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        async def q(c: psycopg.AsyncConnection[Any]) -> dict[str, StoredItem]:
            rows = await (await c.execute(self._sql_bulk, (list(keys),))).fetchall()
            return {k: self._item(v, e, x) for k, v, e, x in rows}

        found = await self._run("bulk get", q) if keys else {}
        return [found.get(k) for k in keys]

    @staticmethod
    async def _lock_in_order(conn: psycopg.AsyncConnection[Any], ops: Sequence[Op]) -> None:
        """Take a transaction lock per key, in one global order, before touching rows.

        Two transactions writing the same keys in opposite orders would otherwise deadlock
        (PostgreSQL then aborts one with a 500). Advisory locks also cover keys not yet in
        the table, which row locks cannot.
        """
        keys = sorted({op.key for op in ops})
        if len(keys) > 1:
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(k)) FROM "
                "(SELECT k FROM unnest(%s::text[]) WITH ORDINALITY AS u(k, i) ORDER BY i) AS ordered",
                (keys,),
            )

    async def apply(self, op: Op, strong: bool = False) -> bool:
        return not await self.apply_each([op], strong)

    async def apply_each(self, ops: Sequence[Op], strong: bool = False) -> list[str]:
        if not ops:
            return []

        async def q(c: psycopg.AsyncConnection[Any]) -> list[str]:
            if strong:  # one transaction for the batch
                await self._lock_in_order(c, ops)
            return [op.key for op in ops if not await self._apply(c, op)]

        return await self._run("save" if isinstance(ops[0], SetOp) else "delete", q, strong)

    async def apply_atomically(self, ops: Sequence[Op], strong: bool = False) -> list[str]:
        async def q(c: psycopg.AsyncConnection[Any]) -> None:
            await self._lock_in_order(c, ops)
            failed = [op.key for op in ops if not await self._apply(c, op)]
            if failed:
                raise EtagMismatch(failed)  # leaves the transaction block: rolled back

        try:
            await self._run("transaction", q, strong, tx=True)
        except EtagMismatch as e:
            return e.keys
        return []

    async def list_keys(self, prefix: str = "", cursor: str | None = None, limit: int = 100) -> KeyPage:
        query = self._listing.statement(self, prefix, cursor, check_limit(limit))
        if query is None:
            return KeyPage([], None)

        async def q(c: psycopg.AsyncConnection[Any]) -> list[Any]:
            return await (await c.execute(*query)).fetchall()

        return keyset_page(self, await self._run("list keys", q), limit)


def _describe(conninfo: str) -> str:
    """Where the store is, without the password."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "(unparseable connection string)"
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    return f"{host}:{port}/{params.get('dbname', '')}"
