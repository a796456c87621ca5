"""``state.redis``: Redis, in Dapr's own data layout.

Each key is a hash with fields ``data`` (the stored bytes) and ``version`` (an integer that
is also the etag), exactly as Dapr's Redis store keeps it, so a Dapr sidecar and devinit can
share one Redis. Every check-and-write is one Lua script, atomic in the server, so several
devinit processes never lose an update. TTLs are Redis expiries on the hash.

A strong write is sent on one connection together with ``WAITAOF`` (Redis >= 7.2 with AOF
on) or ``WAIT`` (when replicas are connected), so it is acknowledged only once Redis says it
is durable/replicated. Without either, Redis' own AOF policy is all there is.

Failures (refused, timed out, an error reply) are raised as ``StoreError`` within the
configured timeouts; broken connections are dropped by redis-py and stale pooled ones are
PINGed before reuse, so the store recovers by itself when Redis comes back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from devinit.errors import EtagMismatch, StoreError
from devinit.state.base import DeleteOp, Op, SetOp, Store, StoredItem

# Returns {data, version, pttl} or nil when the key holds no item.
_GET = """
local v = redis.call("HMGET", KEYS[1], "data", "version")
if not v[2] then return false end
return {v[1], v[2], redis.call("PTTL", KEYS[1])}
"""

# ARGV: data, etag ("" = none), first-write ("1"/"0"), ttl seconds ("" = none).
# Returns the new version, or -1 when the etag / first-write check fails.
_SET = """
local cur = redis.call("HGET", KEYS[1], "version")
if ARGV[2] ~= "" then
  if not cur or cur ~= ARGV[2] then return -1 end
elseif ARGV[3] == "1" and cur then
  return -1
end
redis.call("HSET", KEYS[1], "data", ARGV[1])
local v = redis.call("HINCRBY", KEYS[1], "version", 1)
if ARGV[4] ~= "" then redis.call("EXPIRE", KEYS[1], ARGV[4]) else redis.call("PERSIST", KEYS[1]) end
return v
"""

# ARGV: etag ("" = none). Returns 1 deleted, 0 absent, -1 etag mismatch.
_DELETE = """
if ARGV[1] ~= "" then
  local cur = redis.call("HGET", KEYS[1], "version")
  if not cur or cur ~= ARGV[1] then return -1 end
end
return redis.call("DEL", KEYS[1])
"""

# KEYS: one per operation. ARGV: 5 per operation: kind ("s"/"d"), etag, first-write, ttl, data.
# Checks every operation in order (seeing the effect of the earlier ones), then applies all,
# or none. Returns the keys whose check failed (empty: applied).
_TRANSACT = """
local state = {}
local failed = {}
for i = 1, #KEYS do
  local k, b = KEYS[i], (i - 1) * 5
  local kind, etag, fw = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local cur
  if state[k] == nil then cur = redis.call("HGET", k, "version")
  elseif state[k] == "set" then cur = "\\0pending"
  else cur = false end
  local ok = true
  if etag ~= "" then ok = (cur ~= false and cur ~= nil and cur == etag)
  elseif kind == "s" and fw == "1" then ok = (cur == false or cur == nil) end
  if not ok then
    failed[#failed + 1] = k
  elseif kind == "s" then state[k] = "set" else state[k] = "del" end
end
if #failed > 0 then return failed end
for i = 1, #KEYS do
  local k, b = KEYS[i], (i - 1) * 5
  if ARGV[b + 1] == "s" then
    redis.call("HSET", k, "data", ARGV[b + 5])
    redis.call("HINCRBY", k, "version", 1)
    if ARGV[b + 4] ~= "" then redis.call("EXPIRE", k, ARGV[b + 4]) else redis.call("PERSIST", k) end
  else
    redis.call("DEL", k)
  end
end
return {}
"""

class _ReconnectingHealthCheck:
    """Mixin for a connection whose idle-time health check reconnects once instead of failing.

    The PING of the health check goes out before the caller's command, so when it finds the
    socket dead (Redis restarted while the connection sat in the pool) reconnecting and going
    on is safe: the command has not been sent. Commands themselves are never retried.
    """

    async def check_health(self) -> None:
        try:
            await super().check_health()  # type: ignore[misc]
        except (RedisConnectionError, RedisTimeoutError, OSError):
            await self.disconnect()  # type: ignore[attr-defined]
            await self.connect()  # type: ignore[attr-defined]  # a fresh connection needs no PING; a failure here is real


class _Connection(_ReconnectingHealthCheck, aioredis.Connection):
    pass


class _SSLConnection(_ReconnectingHealthCheck, aioredis.SSLConnection):
    pass


_DURABILITY_TTL = 10.0  # seconds to trust a reading of AOF / replica settings


@dataclass(slots=True)
class _Durability:
    aof: bool
    waitaof: bool
    replicas: int
    read_at: float


class RedisStore(Store):
    """A state store in a Redis server (standalone, or the master behind Sentinel)."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        password: str | None = None,
        username: str | None = None,
        db: int = 0,
        tls: bool = False,
        dial_timeout: float = 2.0,
        read_timeout: float = 3.0,
        sentinel_master: str | None = None,
    ) -> None:
        super().__init__(name)
        self.address = f"{host}:{port}"
        self.read_timeout = read_timeout
        options: dict[str, Any] = dict(
            password=password or None,
            username=username or None,
            db=db,
            socket_timeout=read_timeout,
            socket_connect_timeout=dial_timeout,
            # No silent retries: a write that timed out may have been applied, and a blind
            # retry would turn it into a false etag conflict. The caller sees the error.
            retry=Retry(NoBackoff(), 0),
            # Pooled connections idle this long are PINGed before reuse, so the first calls
            # after a Redis restart do not fail on dead sockets.
            health_check_interval=1,
        )
        if sentinel_master:
            from redis.asyncio.sentinel import Sentinel

            sentinel = Sentinel([(host, port)], socket_timeout=read_timeout, socket_connect_timeout=dial_timeout)
            self.client: aioredis.Redis = sentinel.master_for(sentinel_master, ssl=tls, **options)
            self.address = f"sentinel {host}:{port} master {sentinel_master}"
        else:
            connection_class = _SSLConnection if tls else _Connection
            pool = aioredis.ConnectionPool(host=host, port=port, connection_class=connection_class, **options)
            self.client = aioredis.Redis(connection_pool=pool)
        self._get = self.client.register_script(_GET)
        self._set = self.client.register_script(_SET)
        self._del = self.client.register_script(_DELETE)
        self._tx = self.client.register_script(_TRANSACT)
        self._durability: _Durability | None = None

    def _error(self, what: str, e: BaseException) -> StoreError:
        detail = str(e) or type(e).__name__
        return StoreError(f"Redis store {self.name!r} at {self.address}: {what} failed: {detail}")

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except (RedisError, OSError) as e:
            raise self._error("PING", e) from e

    # -- reads -------------------------------------------------------------------------

    @staticmethod
    def _item(reply: Any) -> StoredItem | None:
        if not reply:
            return None
        data, version, pttl = reply
        return StoredItem(data or b"", version.decode(), time.time() + pttl / 1000 if pttl > 0 else None)

    async def get(self, key: str, strong: bool = False) -> StoredItem | None:
        try:
            return self._item(await self._get(keys=[key]))
        except (RedisError, OSError) as e:
            raise self._error("get", e) from e

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        if not keys:
            return []
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for k in keys:
                    await self._get(keys=[k], client=pipe)
                replies = await pipe.execute()
        except (RedisError, OSError) as e:
            raise self._error("bulk get", e) from e
        return [self._item(r) for r in replies]

    async def scan(self, prefix: str) -> list[tuple[str, StoredItem]]:
        # Keys are matched with a glob: escape its special characters in the prefix.
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        out: list[tuple[str, StoredItem]] = []
        try:
            cursor: int = 0
            while True:
                cursor, keys = await self.client.scan(cursor, match=pattern, count=1000)
                if keys:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for k in keys:
                            await self._get(keys=[k], client=pipe)
                        replies = await pipe.execute(raise_on_error=False)
                    for k, reply in zip(keys, replies):
                        if isinstance(reply, Exception):
                            continue  # not a hash (a key some other program wrote): not state
                        item = self._item(reply)
                        if item is not None:
                            out.append((k.decode("utf-8", "replace"), item))
                if cursor == 0:
                    return out
        except (RedisError, OSError) as e:
            raise self._error("query scan", e) from e

    # -- writes ------------------------------------------------------------------------

    @staticmethod
    def _set_args(op: SetOp) -> list[Any]:
        return [op.value, op.etag or "", "1" if op.first_write else "0", "" if op.ttl is None else op.ttl]

    async def _durability_now(self) -> _Durability:
        d = self._durability
        if d is None or time.monotonic() - d.read_at > _DURABILITY_TTL:
            info = await self.client.info("everything")
            version = tuple(int(p) for p in str(info.get("redis_version", "0.0")).split(".")[:2])
            d = _Durability(
                aof=bool(info.get("aof_enabled")),
                waitaof=version >= (7, 2),
                replicas=int(info.get("connected_slaves", 0)),
                read_at=time.monotonic(),
            )
            self._durability = d
        return d

    async def _run(self, what: str, calls: list[tuple[Any, list[str], list[Any]]], strong: bool) -> list[Any]:
        """Run script calls in one round trip; a strong write adds WAITAOF/WAIT on the same connection."""
        try:
            durability = await self._durability_now() if strong else None
            if durability is None and len(calls) == 1:
                script, keys, args = calls[0]
                return [await script(keys=keys, args=args)]
            async with self.client.pipeline(transaction=False) as pipe:
                for script, keys, args in calls:
                    await script(keys=keys, args=args, client=pipe)
                wait_ms = int(self.read_timeout * 1000 * 0.8)
                if durability is not None and durability.aof and durability.waitaof:
                    pipe.execute_command("WAITAOF", 1, durability.replicas, wait_ms)
                elif durability is not None and durability.replicas:
                    pipe.execute_command("WAIT", durability.replicas, wait_ms)
                replies = await pipe.execute()
        except (RedisError, OSError) as e:
            raise self._error(what, e) from e
        if len(replies) > len(calls):
            self._check_durable(replies[-1], durability)
            replies = replies[: len(calls)]
        return replies

    def _check_durable(self, reply: Any, d: _Durability | None) -> None:
        assert d is not None
        if d.aof and d.waitaof:
            local, replicas = reply
            if local < 1 or replicas < d.replicas:
                raise StoreError(
                    f"Redis store {self.name!r} at {self.address}: the write was applied but not confirmed "
                    f"durable in time (fsynced locally: {bool(local)}, replicas: {replicas}/{d.replicas})"
                )
        elif reply < d.replicas:
            raise StoreError(
                f"Redis store {self.name!r} at {self.address}: the write was applied but reached only "
                f"{reply} of {d.replicas} replicas in time"
            )

    async def set(self, op: SetOp, strong: bool = False) -> None:
        (reply,) = await self._run("save", [(self._set, [op.key], self._set_args(op))], strong)
        if reply == -1:
            raise EtagMismatch([op.key])

    async def set_many(self, ops: Sequence[SetOp], strong: bool = False) -> list[str]:
        replies = await self._run("save", [(self._set, [op.key], self._set_args(op)) for op in ops], strong)
        return [op.key for op, r in zip(ops, replies) if r == -1]

    async def delete(self, op: DeleteOp, strong: bool = False) -> None:
        (reply,) = await self._run("delete", [(self._del, [op.key], [op.etag or ""])], strong)
        if reply == -1:
            raise EtagMismatch([op.key])

    async def delete_many(self, ops: Sequence[DeleteOp], strong: bool = False) -> list[str]:
        replies = await self._run("delete", [(self._del, [op.key], [op.etag or ""]) for op in ops], strong)
        return [op.key for op, r in zip(ops, replies) if r == -1]

    async def transact(self, ops: Sequence[Op], strong: bool = False) -> None:
        if not ops:
            return
        keys: list[str] = []
        args: list[Any] = []
        for op in ops:
            keys.append(op.key)
            if isinstance(op, SetOp):
                args += ["s", op.etag or "", "1" if op.first_write else "0", "" if op.ttl is None else op.ttl, op.value]
            else:
                args += ["d", op.etag or "", "0", "", ""]
        (failed,) = await self._run("transaction", [(self._tx, keys, args)], strong)
        if failed:
            raise EtagMismatch([k.decode() if isinstance(k, bytes) else k for k in failed])
