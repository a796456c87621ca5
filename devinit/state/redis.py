"""``state.redis``: Redis, in Dapr's own data layout.

Each key is a hash with fields ``data`` (the stored bytes) and ``version`` (an integer that
is also the etag), exactly as Dapr's Redis store keeps it, so a Dapr sidecar and devinit can
share one Redis. Every check-and-write is one Lua script, atomic in the server, so several
devinit processes never lose an update; a read is plain commands (``read_commands``). TTLs are
Redis expiries on the hash.

Connections (``resp.Lane``): one connection shared by all reads and eventual writes, whose
commands go out together once per event-loop turn; strong writes use lanes of their own, as the
``WAITAOF`` (Redis >= 7.2 with AOF on) or ``WAIT`` (replicas connected) sent right after them
holds that connection until Redis confirms durability. Without either, Redis' own AOF policy
is all there is.

Failures (refused, timed out, an error reply) are raised as ``StoreError`` within the
configured timeouts (``dialTimeout``, ``readTimeout``); a lost connection is made again on the
next call, so the store recovers by itself when Redis comes back.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import itertools
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from devinit.errors import EtagMismatch, StoreError, StoreRefused
from devinit.state.base import DeleteOp, Op, SetOp, Store, StoredItem
from devinit.state.resp import Lane, RedisFailure, ReplyError, Script

# A read is two commands written together: HMGET of the two fields, then PTTL. Not a Lua
# script: any script call costs Redis ~3 us of its own, the two commands ~0.25 us (measured:
# redis INFO commandstats under bench/'s GET load, 3.9 us per EVALSHA vs 0.22 per HMGET), and
# with Redis on the same two cores that gave devinit 14% more GETs per second. The data and the
# version come from one command, so they always belong together; the expiry is read right after
# in the same write, so it can only be off when another client rewrites the key between the two
# (the answer then carries the newer item's expiry); a key that went away in between (PTTL -2)
# reads as missing.
_READ_FIELDS = (b"data", b"version")


def read_commands(key: str) -> list[tuple[Any, ...]]:
    """The two commands that read one item (replies: [data, version], then its PTTL)."""
    return [(b"HMGET", key, *_READ_FIELDS), (b"PTTL", key)]


def pack_read(key: str) -> bytes:
    """``read_commands(key)`` already in RESP (hiredis.pack_command costs ~1 us each; this ~0.3)."""
    data = key.encode()
    k = b"$%d\r\n%s\r\n" % (len(data), data)
    return b"*4\r\n$5\r\nHMGET\r\n" + k + b"$4\r\ndata\r\n$7\r\nversion\r\n*2\r\n$4\r\nPTTL\r\n" + k


# Versions come from one sequence per Redis database (and always exceed the key's current
# version), so an etag is never handed out twice for a key, not even after a delete: Dapr's
# HINCRBY restarts a re-created key at 1, and a client still holding "1" from before the
# delete could then overwrite the new item. Dapr reads and bumps these versions as usual.
# Its name starts with "||", which no full key can (a key may not hold "||" and every prefix
# ends with it), so no saved key can collide with the sequence. In a Redis Cluster a script may
# only touch keys of one hash slot, so each slot has a sequence of its own (``sequence_key``),
# named with a {hash tag} of that slot: a key always maps to the same slot, so to one sequence.
# The scripts get the sequence as their last key.
ETAG_SEQUENCE = "||devinit||etag-sequence"
_NEXT_VERSION = """
local function next_version(seq, cur)
  local v = redis.call("INCR", seq)
  local c = tonumber(cur)
  if c and c >= v then
    v = c + 1
    redis.call("SET", seq, v)
  end
  return v
end
"""

# KEYS: the item, its sequence. ARGV: data, etag ("" = none), first-write ("1"/"0"), ttl
# seconds ("" = none). Returns the new version, or -1 when the etag / first-write check fails.
_SET = (
    _NEXT_VERSION
    + """
local cur = redis.call("HGET", KEYS[1], "version")
if ARGV[2] ~= "" then
  if not cur or cur ~= ARGV[2] then return -1 end
elseif ARGV[3] == "1" and cur then
  return -1
end
local v = next_version(KEYS[2], cur)
redis.call("HSET", KEYS[1], "data", ARGV[1], "version", v)
if ARGV[4] ~= "" then redis.call("EXPIRE", KEYS[1], ARGV[4]) else redis.call("PERSIST", KEYS[1]) end
return v
"""
)

# ARGV: etag ("" = none). Returns 1 deleted, 0 absent, -1 etag mismatch.
_DELETE = """
if ARGV[1] ~= "" then
  local cur = redis.call("HGET", KEYS[1], "version")
  if not cur or cur ~= ARGV[1] then return -1 end
end
return redis.call("DEL", KEYS[1])
"""

# KEYS: one per operation, then the sequence. ARGV: 5 per operation: kind ("s"/"d"), etag,
# first-write, ttl, data. Checks every operation in order (seeing the effect of the earlier
# ones), then applies all, or none. Returns the keys whose check failed (empty: applied).
_TRANSACT = (
    _NEXT_VERSION
    + """
local n = #KEYS - 1
local seq = KEYS[#KEYS]
local state = {}
local failed = {}
for i = 1, n do
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
for i = 1, n do
  local k, b = KEYS[i], (i - 1) * 5
  if ARGV[b + 1] == "s" then
    redis.call("HSET", k, "data", ARGV[b + 5], "version", next_version(seq, redis.call("HGET", k, "version")))
    if ARGV[b + 4] ~= "" then redis.call("EXPIRE", k, ARGV[b + 4]) else redis.call("PERSIST", k) end
  else
    redis.call("DEL", k)
  end
end
return {}
"""
)

log = logging.getLogger("devinit.state.redis")
_SET_SCRIPT, _DELETE_SCRIPT, _TX_SCRIPT = (Script(x) for x in (_SET, _DELETE, _TRANSACT))
SCRIPTS = (_SET_SCRIPT, _DELETE_SCRIPT, _TX_SCRIPT)
# Connections for reads and eventual writes. Measured (bench/, wrk -c32 GET and save): once
# handlers ran without a Task, 1 beat 2 by ~7% in rps and ~5% in CPU per request (one write and
# one read per loop turn instead of two); before, 2 had beaten 1.
LANES = 1
# Strong writes: WAITAOF/WAIT holds a connection until Redis confirms (up to a second with
# appendfsync everysec), so they spread over lanes of their own instead of queueing on one.
STRONG_LANES = 4
_DURABILITY_TTL = 10.0  # seconds to trust a reading of AOF / replica settings
_REDIRECTS = 5  # MOVED / ASK / TRYAGAIN answers followed for one key before giving up
_REDIRECTED = ("MOVED ", "ASK ", "TRYAGAIN")


@dataclass(slots=True)
class _Durability:
    aof: bool
    waitaof: bool
    replicas: int
    read_at: float


def _info(text: bytes) -> dict[str, str]:
    out = {}
    for line in text.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            out[name.strip()] = value.strip()
    return out


class _Node:
    """One Redis server: the lane for reads and eventual writes, the lanes for strong writes,
    and what was last read of its durability settings."""

    def __init__(self, address: str, lane: Callable[[], Lane]) -> None:
        self.address = address
        self.lanes = [lane() for _ in range(LANES)]
        self.next_lane = itertools.cycle(self.lanes).__next__
        self.strong_lanes = [lane() for _ in range(STRONG_LANES)]
        self.next_strong = itertools.cycle(self.strong_lanes).__next__
        self.durability: _Durability | None = None

    async def close(self) -> None:
        for lane in (*self.lanes, *self.strong_lanes):
            await lane.close()


HASH_SLOTS = 16384


def key_slot(key: str | bytes) -> int:
    """The Redis Cluster hash slot of a key: CRC16 (XMODEM) of it, or of its {hash tag}."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % HASH_SLOTS


@functools.cache
def _slot_tags() -> list[str]:
    """For each Redis Cluster hash slot, a short string whose slot it is (for sequence keys)."""
    tags = [""] * HASH_SLOTS
    missing, i = HASH_SLOTS, 0
    while missing:
        tag = format(i, "x")
        slot = key_slot(tag.encode())
        if not tags[slot]:
            tags[slot] = tag
            missing -= 1
        i += 1
    return tags


def _masters(slots: list[_Node | None]) -> list[_Node]:
    """The distinct masters in a slot map."""
    return list({id(n): n for n in slots if n is not None}.values())


def sequence_key(key: str | bytes, cluster: bool) -> str:
    """The etag sequence a key's versions come from (one per hash slot in a cluster)."""
    if not cluster:
        return ETAG_SEQUENCE
    return f"{ETAG_SEQUENCE}{{{_slot_tags()[key_slot(key)]}}}"


class RedisStore(Store):
    """A state store in Redis: one server (standalone, or the master behind Sentinel), or a
    Redis Cluster (``seeds``: some of its nodes; the rest is found with CLUSTER SLOTS).

    In a cluster every key's commands go to the master of its hash slot (several keys: one
    write per node, in parallel); MOVED updates that slot as the reply says and ASK is followed
    once, as a cluster client must; a failed node makes the next call read the whole map again. A transaction's keys must share one slot (Redis runs a script on one
    node only): a {hash tag} in the keys does that, and a transaction that spans slots is
    refused with that advice, before anything is written.
    """

    bounded = True  # dialTimeout bounds connecting, readTimeout every reply (resp.Lane)

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
        cluster_seeds: Sequence[tuple[str, int]] = (),
    ) -> None:
        super().__init__(name)
        self.address = f"{host}:{port}"
        self.read_timeout = read_timeout
        self.cluster = bool(cluster_seeds)
        resolver = None
        if sentinel_master:
            resolver = self._sentinel_resolver(host, port, sentinel_master, dial_timeout, read_timeout)
            self.address = f"sentinel {host}:{port} master {sentinel_master}"
        if self.cluster:
            self.address = "cluster " + ",".join(f"{h}:{p}" for h, p in cluster_seeds)

        def make_node(host: str, port: int) -> _Node:
            def lane() -> Lane:
                return Lane(
                    host,
                    port,
                    password=password or None,
                    username=username or None,
                    db=db,
                    tls=tls,
                    dial_timeout=dial_timeout,
                    read_timeout=read_timeout,
                    scripts=SCRIPTS,
                    resolver=resolver,
                )

            return _Node(f"{host}:{port}", lane)

        self._make_node = make_node
        self._nodes: dict[str, _Node] = {}  # cluster: every node seen (seeds, masters) by host:port
        seeds = [self._node_at(h, p) for h, p in cluster_seeds]
        self._main = seeds[0] if seeds else make_node(host, port)  # the node (standalone), or the first seed
        self._slots: list[_Node | None] | None = None  # cluster: the master of each slot
        self._refreshing: asyncio.Task[list[_Node | None]] | None = None

    @staticmethod
    def _sentinel_resolver(host: str, port: int, master: str, dial_timeout: float, read_timeout: float) -> Any:
        async def resolve() -> tuple[str, int]:
            from redis.asyncio.sentinel import Sentinel  # only Sentinel setups need redis-py

            sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves Sentinel.__init__ unannotated
                [(host, port)], socket_timeout=read_timeout, socket_connect_timeout=dial_timeout
            )
            try:
                found = await sentinel.discover_master(master)
            except Exception as e:
                raise RedisFailure(f"Sentinel at {host}:{port} does not know master {master!r}: {e}") from None
            return found[0], int(found[1])

        return resolve

    def _error(self, what: str, detail: object) -> StoreError:
        return StoreError(f"Redis store {self.name!r} at {self.address}: {what} failed: {detail}")

    async def _run(self, what: str, commands: Sequence[Sequence[Any]], lane: Lane | None = None) -> list[Any]:
        """Send commands on one lane; reload the scripts once if Redis forgot them (SCRIPT
        FLUSH), and send again only the commands Redis did not run, plus a durability wait that
        ends the batch, so that it covers them."""
        lane = lane or self._main.next_lane()
        try:
            replies = await lane.run(commands)
            again = [i for i, r in enumerate(replies) if isinstance(r, ReplyError) and str(r).startswith("NOSCRIPT")]
            if again:
                if commands[-1][0] in (b"WAIT", b"WAITAOF") and again[-1] != len(commands) - 1:
                    again.append(len(commands) - 1)
                await lane.run([(b"SCRIPT", b"LOAD", s.source) for s in SCRIPTS])
                for i, r in zip(again, await lane.run([commands[i] for i in again]), strict=True):
                    replies[i] = r
        except RedisFailure as e:
            if self.cluster:
                self._slots = None  # a node went away: maybe a failover; ask the cluster again
                detail: object = f"{e} (node {lane.host}:{lane.port})"
            else:
                detail = e
            raise self._error(what, detail) from None
        return replies

    def _ok(self, what: str, reply: Any) -> Any:
        if isinstance(reply, ReplyError):
            raise self._error(what, reply)
        return reply

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for node in {id(n): n for n in (self._main, *self._nodes.values())}.values():
            await node.close()

    async def ping(self) -> None:
        if not self.cluster:
            self._ok("PING", (await self._run("PING", [(b"PING",)]))[0])
            return
        for node in _masters(await self._slot_map(refresh=True)):
            self._ok("PING", (await self._run("PING", [(b"PING",)], node.next_lane()))[0])

    # -- cluster routing ---------------------------------------------------------------

    def _node_at(self, host: str, port: int) -> _Node:
        address = f"{host}:{port}"
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = self._make_node(host, port)
        return node

    async def _slot_map(self, refresh: bool = False) -> list[_Node | None]:
        """The master of each slot: the map in hand, or (none yet, or ``refresh``) one read
        again with CLUSTER SLOTS: one read at a time, in a task of its own (a caller that gives
        up does not cancel it for the others)."""
        slots = self._slots
        if slots is not None and not refresh:
            return slots
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._read_slots())
            self._refreshing.add_done_callback(self._refreshed)
        return await asyncio.shield(self._refreshing)

    def _refreshed(self, task: asyncio.Task[list[_Node | None]]) -> None:
        self._refreshing = None
        if not task.cancelled():
            task.exception()  # retrieved: the callers waiting on it raise it themselves

    async def _read_slots(self) -> list[_Node | None]:
        """Ask the nodes in turn (the seeds first, then every master seen since) until one
        gives a map that covers slots."""
        failures: list[str] = []
        for node in list(self._nodes.values()):
            try:
                (reply,) = await self._run("CLUSTER SLOTS", [(b"CLUSTER", b"SLOTS")], node.next_lane())
            except StoreError as e:
                failures.append(str(e))
                continue
            if isinstance(reply, ReplyError):
                raise self._error(
                    "CLUSTER SLOTS",
                    f"{reply} (node {node.address}; is it a cluster node? "
                    "redisType: cluster needs Redis Cluster, use redisType: node otherwise)",
                )
            slots: list[_Node | None] = [None] * HASH_SLOTS
            for entry in reply:
                first, last, (host, port, *_) = entry[0], entry[1], entry[2]
                if host == b"?":  # the master's address is unknown (RESP: cluster-preferred-endpoint-type)
                    continue
                # no host (NULL or ""): the node that answered, on that port
                master = self._node_at(host.decode() if host else node.address.rpartition(":")[0], int(port))
                slots[first : last + 1] = [master] * (last - first + 1)
            if not any(slots):  # a node that is not (or no longer) part of the cluster
                failures.append(f"{node.address} knows no slot owners")
                continue
            self._slots = slots
            return slots
        raise StoreError(
            f"Redis store {self.name!r} at {self.address}: no cluster node gave the slot map: " + "; ".join(failures)
        )

    async def _node_for(self, key: str | bytes) -> _Node:
        if not self.cluster:
            return self._main
        slot = key_slot(key)
        node = (await self._slot_map())[slot]
        if node is None:
            self._slots = None  # read it again next time: the slot may have an owner by then
            raise self._error("routing", f"hash slot {slot} has no master (CLUSTER SLOTS): is the cluster state ok?")
        return node

    # -- running commands --------------------------------------------------------------

    async def _batch(
        self, what: str, work: Sequence[tuple[str | bytes, list[tuple[Any, ...]]]], strong: bool = False
    ) -> list[list[Any]]:
        """Run each key's commands on the node that holds the key (one write per node) and
        return each key's replies, in order; in a cluster, MOVED and ASK are followed."""
        if not self.cluster:  # one node, nothing to route: the commands go out as they are
            if len(work) == 1:
                return [await self._on_node(what, self._main, work[0][1], strong)]
            replies = await self._on_node(what, self._main, [c for _, commands in work for c in commands], strong)
            it = iter(replies)
            return [[next(it) for _ in commands] for _, commands in work]
        if not work:
            return []
        out: list[list[Any]] = [[] for _ in work]
        pending = list(range(len(work)))
        asking: dict[int, _Node] = {}  # keys to send to another node once, each command after ASKING
        for attempt in range(_REDIRECTS + 1):
            groups: dict[int, tuple[_Node, list[int]]] = {}
            for i in pending:
                node = asking.get(i) or await self._node_for(work[i][0])
                groups.setdefault(id(node), (node, []))[1].append(i)
            runs = [
                self._on_node(what, node, [c for i in idx for c in self._commands(work[i][1], i in asking)], strong)
                for node, idx in groups.values()
            ]
            results = await asyncio.gather(*runs) if len(runs) > 1 else [await runs[0]]
            redo: list[int] = []
            again = False
            for (node, idx), replies in zip(groups.values(), results, strict=True):
                at = 0
                for i in idx:
                    step = 2 if i in asking else 1  # an ASKING's own reply before each command's
                    n = len(work[i][1]) * step
                    mine = replies[at + step - 1 : at + n : step]
                    at += n
                    redirect = next((r for r in mine if isinstance(r, ReplyError) and str(r).startswith(_REDIRECTED)), None)
                    if not self.cluster or redirect is None:
                        asking.pop(i, None)
                        out[i] = mine
                        continue
                    redo.append(i)
                    kind, *rest = str(redirect).split()
                    asking.pop(i, None)
                    if kind == "TRYAGAIN":  # a multi-key script while the slot moves: wait a moment
                        again = True
                        continue
                    host, _, port = rest[-1].rpartition(":")
                    target = self._node_at(host or node.address.rpartition(":")[0], int(port))
                    if kind == "ASK":  # this once, at the node the slot is moving to
                        asking[i] = target
                    elif self._slots is not None:  # MOVED: the slot's owner now, as the reply says
                        self._slots[int(rest[0])] = target
            if not redo:
                return out
            pending = redo
            if again and attempt < _REDIRECTS:  # 0.05 s, then twice as long each time
                await asyncio.sleep(0.05 * 2**attempt)
        raise self._error(what, f"the cluster still redirects after {_REDIRECTS} tries (slots moving?)")

    @staticmethod
    def _commands(commands: list[tuple[Any, ...]], asking: bool) -> list[tuple[Any, ...]]:
        """A key's commands; after an ASK redirection each one needs an ASKING right before it."""
        return [c for command in commands for c in ((b"ASKING",), command)] if asking else commands

    async def _on_node(self, what: str, node: _Node, commands: list[tuple[Any, ...]], strong: bool) -> list[Any]:
        """Run commands on one node; a strong write is followed on the same connection by
        WAITAOF/WAIT, whose answer is checked (and not returned)."""
        if not strong:
            return await self._run(what, commands, node.next_lane())
        d = await self._durability_now(node)
        wait_ms = int(self.read_timeout * 1000 * 0.8)
        extra: list[tuple[Any, ...]] = []
        if d.aof and d.waitaof:
            extra.append((b"WAITAOF", 1, d.replicas, wait_ms))
        elif d.replicas:
            extra.append((b"WAIT", d.replicas, wait_ms))
        replies = await self._run(what, commands + extra, node.next_strong())
        if extra:
            self._check_durable(self._ok(what, replies[-1]), d)
            replies = replies[:-1]
        return replies

    # -- reads -------------------------------------------------------------------------

    @staticmethod
    def _item(fields: Any, pttl: Any) -> StoredItem | None:
        """An item from the replies of ``read_commands`` (errors already raised)."""
        data, version = fields
        if version is None or pttl == -2:  # no item; -2: it expired or went away right after the HMGET
            return None
        return StoredItem(data or b"", version.decode(), time.time() + pttl / 1000 if pttl > 0 else None)

    async def get(self, key: str, strong: bool = False) -> StoredItem | None:
        if self.cluster:
            ((fields, pttl),) = await self._batch("get", [(key, read_commands(key))])
            return self._item(self._ok("get", fields), self._ok("get", pttl))
        lane = self._main.next_lane()
        command = pack_read(key)
        try:  # the hot path: one write, no batch bookkeeping, no coroutine when connected
            sent = lane.send_now(command, pair=True)
            fields, pttl = await (sent if sent is not None else lane.one(command, pair=True))
        except RedisFailure as e:
            raise self._error("get", e) from None
        return self._item(self._ok("get", fields), self._ok("get", pttl))

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        if not keys:
            return []
        results = await self._batch("bulk get", [(k, read_commands(k)) for k in keys])
        return [self._item(self._ok("bulk get", f), self._ok("bulk get", p)) for f, p in results]

    async def scan(self, prefix: str) -> list[tuple[str, StoredItem]]:
        # Keys are matched with a glob: escape its special characters in the prefix.
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        found: dict[str, StoredItem] = {}
        for node in _masters(await self._slot_map(refresh=True)) if self.cluster else [self._main]:
            lane = node.next_lane()
            cursor = b"0"
            while True:
                reply = self._ok(
                    "query scan", (await self._run("query scan", [(b"SCAN", cursor, b"MATCH", pattern, b"COUNT", 1000)], lane))[0]
                )
                cursor, keys = reply
                if keys:
                    results = await self._batch("query scan", [(k, read_commands(k)) for k in keys])
                    for k, (f, p) in zip(keys, results, strict=True):
                        if isinstance(f, ReplyError):
                            continue  # not a hash (a key some other program wrote): not state
                        item = self._item(f, self._ok("query scan", p))
                        if item is not None:
                            found[k.decode("utf-8", "replace")] = item
                if cursor == b"0":
                    break
        return list(found.items())

    # -- writes ------------------------------------------------------------------------

    def _set_call(self, op: SetOp) -> tuple[Any, ...]:
        return _SET_SCRIPT.call(
            (op.key, sequence_key(op.key, self.cluster)),
            (op.value, op.etag or "", b"1" if op.first_write else b"0", "" if op.ttl is None else op.ttl),
        )

    async def _durability_now(self, node: _Node) -> _Durability:
        d = node.durability
        if d is None or time.monotonic() - d.read_at > _DURABILITY_TTL:
            info = _info(self._ok("INFO", (await self._run("INFO", [(b"INFO", b"everything")], node.next_lane()))[0]))
            version = tuple(int(p) for p in info.get("redis_version", "0.0").split(".")[:2] if p.isdigit())
            d = _Durability(
                aof=info.get("aof_enabled") == "1",
                waitaof=version >= (7, 2),
                replicas=int(info.get("connected_slaves", "0") or 0),
                read_at=time.monotonic(),
            )
            if d.aof and not d.waitaof and node.durability is None:
                log.warning(
                    "Redis store %r at %s: Redis %s has no WAITAOF (7.2+), so a strong write is acknowledged "
                    "before its AOF fsync; with appendfsync everysec an OS crash may lose up to a second of writes",
                    self.name,
                    node.address,
                    info.get("redis_version", "?"),
                )
            node.durability = d
        return d

    def _check_durable(self, reply: Any, d: _Durability) -> None:
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

    async def _writes(self, what: str, work: list[tuple[str, list[tuple[Any, ...]]]], strong: bool) -> list[Any]:
        """One script call per key; their replies (error replies raised)."""
        return [self._ok(what, r) for (r,) in await self._batch(what, work, strong)]

    async def set(self, op: SetOp, strong: bool = False) -> None:
        (reply,) = await self._writes("save", [(op.key, [self._set_call(op)])], strong)
        if reply == -1:
            raise EtagMismatch([op.key])

    async def set_many(self, ops: Sequence[SetOp], strong: bool = False) -> list[str]:
        replies = await self._writes("save", [(op.key, [self._set_call(op)]) for op in ops], strong)
        return [op.key for op, r in zip(ops, replies, strict=True) if r == -1]

    async def delete(self, op: DeleteOp, strong: bool = False) -> None:
        (reply,) = await self._writes("delete", [(op.key, [_DELETE_SCRIPT.call((op.key,), (op.etag or "",))])], strong)
        if reply == -1:
            raise EtagMismatch([op.key])

    async def delete_many(self, ops: Sequence[DeleteOp], strong: bool = False) -> list[str]:
        replies = await self._writes(
            "delete", [(op.key, [_DELETE_SCRIPT.call((op.key,), (op.etag or "",))]) for op in ops], strong
        )
        return [op.key for op, r in zip(ops, replies, strict=True) if r == -1]

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
        if self.cluster and len({key_slot(k) for k in keys}) > 1:
            raise StoreRefused(
                f"Redis store {self.name!r} is a Redis Cluster, where a transaction's keys must share one hash slot; "
                f"these span {len({key_slot(k) for k in keys})} slots. Put the same hash tag in them, e.g. "
                f"'{{order-17}}total' and '{{order-17}}items' (Redis hashes only the part in braces)"
            )
        (failed,) = await self._writes(
            "transaction", [(keys[0], [_TX_SCRIPT.call([*keys, sequence_key(keys[0], self.cluster)], args)])], strong
        )
        if failed:
            raise EtagMismatch([k.decode() if isinstance(k, bytes) else k for k in failed])
