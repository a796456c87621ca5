"""``state.redis``: Redis, in Dapr's own data layout.

Each key is a hash with fields ``data`` (the stored bytes) and ``version`` (an integer that
is also the etag), exactly as Dapr's Redis store keeps it, so a Dapr sidecar and devinit can
share one Redis. Every check-and-write is one Lua script, atomic in the server, so several
devinit processes never lose an update; a read is plain commands (``read_commands``). TTLs are
Redis expiries on the hash. devinit keeps no key of its own in the database.

Where commands go (one server, Sentinel, Cluster) and the connections are redis_nodes.py's:
one connection shared by all reads and eventual writes, whose commands go out together once
per event-loop turn; strong writes on lanes of their own, as the ``WAITAOF`` (Redis >= 7.2
with AOF on) or ``WAIT`` (replicas connected) sent right after them holds that connection until
Redis confirms durability. Without either, Redis' own AOF policy is all there is.

Failures (refused, timed out, an error reply) are raised as ``StoreError`` within the
configured timeouts (``dialTimeout``, ``readTimeout``); a lost connection is made again on the
next call, so the store recovers by itself when Redis comes back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

from devinit.errors import StoreRefused
from devinit.state.base import KeyInfo, KeyPage, Op, SetOp, Store, StoredItem, check_limit, plain_count
from devinit.state.redis_nodes import Cluster, Node, Nodes, SingleNode, key_slot, sentinel_resolver
from devinit.state.resp import Lane, RedisFailure, ReplyError, Script

if TYPE_CHECKING:
    from devinit.components import ComponentSpec

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


def _info_commands(key: bytes) -> list[tuple[Any, ...]]:
    """What a listing reads of one key (replies: its version, its PTTL, the size of its data)."""
    return [(b"HGET", key, b"version"), (b"PTTL", key), (b"HSTRLEN", key, b"data")]


# Versions: the largest of the key's current version + 1 and Redis' clock in microseconds
# (TIME), so an etag is never handed out twice for a key, not even after a delete: Dapr's
# HINCRBY restarts a re-created key at 1, and a client still holding "1" from before the delete
# could then overwrite the new item; here the re-created key's version is the clock, above any
# version the key had (unless the server's clock is set back). No key of devinit's own is
# needed, in a Cluster neither. Dapr reads and bumps these versions as usual (HINCRBY). Below
# 2**53 until the year 2255, so Lua's numbers and a JavaScript client keep them exact; written
# with %.0f, as Lua's own number formatting would round them. TIME before a write needs effects
# replication, the default since Redis 5 (replicate_commands turns it on before that).
_NEXT_VERSION = """
if redis.replicate_commands then redis.replicate_commands() end
local function next_version(cur)
  local t = redis.call("TIME")
  local v = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local c = tonumber(cur)
  if c and c >= v then v = c + 1 end
  return v
end
"""

# KEYS: the item. ARGV: data, etag ("" = none), first-write ("1"/"0"), ttl seconds ("" = none).
# Returns the new version, or -1 when the etag / first-write check fails.
_SET = (
    _NEXT_VERSION
    + """
local cur = redis.call("HGET", KEYS[1], "version")
if ARGV[2] ~= "" then
  if not cur or cur ~= ARGV[2] then return -1 end
elseif ARGV[3] == "1" and cur then
  return -1
end
local v = next_version(cur)
redis.call("HSET", KEYS[1], "data", ARGV[1], "version", string.format("%.0f", v))
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

# KEYS: one per operation. ARGV: 5 per operation: kind ("s"/"d"), etag, first-write, ttl, data.
# Checks every operation in order (seeing the effect of the earlier ones), then applies all,
# or none. Returns the keys whose check failed (empty: applied).
_TRANSACT = (
    _NEXT_VERSION
    + """
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
    local v = next_version(redis.call("HGET", k, "version"))
    redis.call("HSET", k, "data", ARGV[b + 5], "version", string.format("%.0f", v))
    if ARGV[b + 4] ~= "" then redis.call("EXPIRE", k, ARGV[b + 4]) else redis.call("PERSIST", k) end
  else
    redis.call("DEL", k)
  end
end
return {}
"""
)

_SET_SCRIPT, _DELETE_SCRIPT, _TX_SCRIPT = (Script(x) for x in (_SET, _DELETE, _TRANSACT))
SCRIPTS = (_SET_SCRIPT, _DELETE_SCRIPT, _TX_SCRIPT)
_GLOB = re.compile(r"([*?\[\]\\])")
_SCAN_ROUNDS = 32  # SCAN calls one list_keys makes at most (a sparse prefix takes several calls)


def glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern (SCAN MATCH, KEYS)."""
    return _GLOB.sub(r"\\\1", text)


class RedisStore(Store):
    """A state store in Redis: one server (standalone, or the master behind Sentinel), or a
    Redis Cluster (``cluster_seeds``: some of its nodes; the rest is found with CLUSTER SLOTS).

    A transaction's keys must share one slot in a cluster (Redis runs a script on one node
    only): a {hash tag} in the keys does that, and a transaction that spans slots is refused
    with that advice, before anything is written.
    """

    component_types = ("state.redis",)
    bounded = True  # dialTimeout bounds connecting, readTimeout every reply (resp.Lane)
    cursor_tag = "r"

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
        super().__init__(name)  # no cleanup: Redis expires keys itself
        self.address = f"{host}:{port}"
        self.cluster = bool(cluster_seeds)
        resolver = None
        if sentinel_master:
            resolver = sentinel_resolver(host, port, sentinel_master, dial_timeout, read_timeout)
            self.address = f"sentinel {host}:{port} master {sentinel_master}"
        if self.cluster:
            self.address = "cluster " + ",".join(f"{h}:{p}" for h, p in cluster_seeds)

        def lane(host: str, port: int) -> Lane:
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

        label = f"Redis store {name!r} at {self.address}"
        self._nodes: Nodes
        self._main: Node | None = None  # the one server (not in a cluster): the GET hot path uses its lane
        if self.cluster:
            self._nodes = Cluster(label, lane, read_timeout, cluster_seeds)
        else:
            single = SingleNode(label, lane, read_timeout, host, port)
            self._nodes, self._main = single, single.main

    @classmethod
    def from_spec(cls, spec: ComponentSpec) -> Self:
        host_port = spec.required("redisHost", "give host:port, e.g. 127.0.0.1:6379")
        redis_type = spec.metadata.get("redisType", "node") or "node"
        if redis_type not in ("node", "cluster"):
            raise spec.error("redisType", f"{redis_type!r} is not node or cluster")
        cluster = redis_type == "cluster"
        if "," in host_port and not cluster:
            raise spec.error("redisHost", f"{host_port!r} lists several hosts: one host:port, or redisType: cluster")
        seeds: list[tuple[str, int]] = []
        for address in [a.strip() for a in host_port.split(",")] if cluster else [host_port]:
            host, sep, port_text = address.rpartition(":")
            if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
                example = "127.0.0.1:7000,127.0.0.1:7001" if cluster else "127.0.0.1:6379"
                raise spec.error("redisHost", f"{address!r} is not host:port, e.g. {example}")
            seeds.append((host.strip("[]"), int(port_text)))
        failover = spec.flag("failover")
        master = spec.metadata.get("sentinelMasterName", "")
        if failover and not master:
            raise spec.error("sentinelMasterName", "missing; failover: true needs the Sentinel master's name")
        if cluster and failover:
            raise spec.error("failover", "Sentinel failover is for redisType node; a Redis Cluster fails over by itself")
        db = spec.integer("redisDB", 0)
        if cluster and db != 0:
            raise spec.error("redisDB", "a Redis Cluster has only database 0; remove redisDB")
        return cls(
            spec.name,
            *seeds[0],
            password=spec.metadata.get("redisPassword") or None,
            username=spec.metadata.get("redisUsername") or None,
            db=db,
            tls=spec.flag("enableTLS"),
            dial_timeout=spec.timeout("dialTimeout", 2.0),
            read_timeout=spec.timeout("readTimeout", 3.0),
            sentinel_master=master if failover else None,
            cluster_seeds=seeds if cluster else (),
        )

    def _ok(self, what: str, reply: Any) -> Any:
        if isinstance(reply, ReplyError):
            raise self._nodes.error(what, reply)
        return reply

    async def release(self) -> None:
        await self._nodes.close()

    async def ping(self) -> None:
        for node in await self._nodes.masters(refresh=True):
            self._ok("PING", (await self._nodes.run("PING", node, [(b"PING",)]))[0])

    # -- reads -------------------------------------------------------------------------

    @staticmethod
    def _item(fields: Any, pttl: Any) -> StoredItem | None:
        """An item from the replies of ``read_commands`` (errors already raised)."""
        data, version = fields
        if version is None or pttl == -2:  # no item; -2: it expired or went away right after the HMGET
            return None
        return StoredItem(data or b"", version.decode(), time.time() + pttl / 1000 if pttl > 0 else None)

    async def get(self, key: str, strong: bool = False) -> StoredItem | None:
        if self._main is None:
            ((fields, pttl),) = await self._nodes.run_keyed("get", [(key, read_commands(key))])
            return self._item(self._ok("get", fields), self._ok("get", pttl))
        lane = self._main.next_lane()
        command = pack_read(key)
        try:  # the hot path: one write, no batch bookkeeping, no coroutine when connected
            sent = lane.send_now(command, pair=True)
            fields, pttl = await (sent if sent is not None else lane.one(command, pair=True))
        except RedisFailure as e:
            raise self._nodes.error("get", e) from None
        return self._item(self._ok("get", fields), self._ok("get", pttl))

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        if not keys:
            return []
        results = await self._nodes.run_keyed("bulk get", [(k, read_commands(k)) for k in keys])
        return [self._item(self._ok("bulk get", f), self._ok("bulk get", p)) for f, p in results]

    async def list_keys(self, prefix: str = "", cursor: str | None = None, limit: int = 100) -> KeyPage:
        """SCAN with MATCH on the escaped prefix, over each master in turn (the cursor holds
        which, and where in it); each round's keys read with ``_info_commands``.

        As SCAN: a page may hold a few keys more than ``limit`` (a SCAN step cannot be split),
        and a key may show twice in one walk if Redis shrinks its table meanwhile.
        """
        limit = check_limit(limit)
        masters = await self._nodes.masters()
        index, scan = (0, b"0") if cursor is None else self._scan_position(cursor, masters)
        pattern = glob_escape(prefix) + "*"
        found: dict[str, KeyInfo] = {}
        for _ in range(_SCAN_ROUNDS):
            step = (b"SCAN", scan, b"MATCH", pattern, b"COUNT", limit - len(found))
            (reply,) = await self._nodes.run("list keys", masters[index], [step])
            scan, keys = self._ok("list keys", reply)
            for info in await self._key_infos(keys):
                found[info.key] = info
            if scan == b"0":
                index += 1
                if index == len(masters):
                    return KeyPage(list(found.values()), None)
            if len(found) >= limit:
                break
        return KeyPage(list(found.values()), self.make_cursor(f"{index} {masters[index].address} {scan.decode()}"))

    def _scan_position(self, cursor: str, masters: list[Node]) -> tuple[int, bytes]:
        index_text, address, scan_text = (self.read_cursor(cursor).split(" ") + ["", "", ""])[:3]
        index, scan = plain_count(index_text), plain_count(scan_text)
        # SCAN's cursor is an unsigned 64-bit number: Redis answers another with an error reply,
        # which would mark the store down
        if index is None or scan is None or scan >= 1 << 64 or not address:
            raise self.bad_cursor(cursor, "it is not a cursor this store gave out")
        if index >= len(masters) or masters[index].address != address:
            raise self.bad_cursor(cursor, f"the Redis masters changed since it was given (no master {address} at place {index})")
        return index, scan_text.encode()

    async def _key_infos(self, keys: list[bytes]) -> list[KeyInfo]:
        """What a listing shows of each key: live hashes with a version only (another program's
        keys, or keys gone since SCAN saw them, are left out)."""
        if not keys:
            return []
        now = time.time()
        infos = []
        for key, (version, pttl, size) in zip(
            keys, await self._nodes.run_keyed("list keys", [(k, _info_commands(k)) for k in keys]), strict=True
        ):
            if version is None or isinstance(version, ReplyError):  # not a hash, or a hash without a version
                continue
            pttl = self._ok("list keys", pttl)
            if pttl == -2:  # expired or deleted since SCAN saw it
                continue
            expires = now + pttl / 1000 if pttl > 0 else None
            infos.append(KeyInfo(key.decode("utf-8", "replace"), version.decode(), expires, self._ok("list keys", size)))
        return infos

    # -- writes ------------------------------------------------------------------------

    @staticmethod
    def _call(op: Op) -> tuple[Any, ...]:
        """The script call that checks and applies ``op``."""
        if isinstance(op, SetOp):
            ttl = "" if op.ttl is None else op.ttl
            return _SET_SCRIPT.call((op.key,), (op.value, op.etag or "", b"1" if op.first_write else b"0", ttl))
        return _DELETE_SCRIPT.call((op.key,), (op.etag or "",))

    async def apply(self, op: Op, strong: bool = False) -> bool:
        what = "save" if isinstance(op, SetOp) else "delete"
        ((reply,),) = await self._nodes.run_keyed(what, [(op.key, [self._call(op)])], strong)
        return bool(self._ok(what, reply) != -1)

    async def apply_each(self, ops: Sequence[Op], strong: bool = False) -> list[str]:
        what = "save" if ops and isinstance(ops[0], SetOp) else "delete"
        replies = await self._nodes.run_keyed(what, [(op.key, [self._call(op)]) for op in ops], strong)
        return [op.key for op, (reply,) in zip(ops, replies, strict=True) if self._ok(what, reply) == -1]

    async def apply_atomically(self, ops: Sequence[Op], strong: bool = False) -> list[str]:
        keys = [op.key for op in ops]
        if self.cluster and len(slots := {key_slot(k) for k in keys}) > 1:
            raise StoreRefused(
                f"Redis store {self.name!r} is a Redis Cluster, where a transaction's keys must share one hash slot; "
                f"these span {len(slots)} slots. Put the same hash tag in them, e.g. "
                f"'{{order-17}}total' and '{{order-17}}items' (Redis hashes only the part in braces)"
            )
        args: list[Any] = []
        for op in ops:
            if isinstance(op, SetOp):
                args += ["s", op.etag or "", "1" if op.first_write else "0", "" if op.ttl is None else op.ttl, op.value]
            else:
                args += ["d", op.etag or "", "0", "", ""]
        ((failed,),) = await self._nodes.run_keyed("transaction", [(keys[0], [_TX_SCRIPT.call(keys, args)])], strong)
        return [k.decode() if isinstance(k, bytes) else k for k in self._ok("transaction", failed)]
