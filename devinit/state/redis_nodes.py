"""Where the Redis store's commands go, and each Redis server's connections.

- ``Node``: one Redis server: a lane (state/resp.py) for reads and eventual writes, and lanes
  for strong writes, each write followed on its lane by WAITAOF or WAIT, checked here. After a
  SCRIPT FLUSH the scripts are loaded again and only the commands Redis refused are sent
  again (those it ran must not run twice).
- ``SingleNode``: every key on one server: standalone, or the master Sentinel names (the
  node's lanes ask Sentinel on every connect, ``sentinel_resolver``).
- ``Cluster``: a Redis Cluster, as a cluster client keeps it (redis-py's NodesManager): the
  master of each hash slot, from CLUSTER SLOTS, read again when a node fails or a slot has
  no owner; each key's commands go to its slot's master, one write per node, in parallel. A
  node's MOVED, ASK and TRYAGAIN answers are parsed once into typed errors (``redirection``)
  and followed.

Connection failures (``RedisFailure``) become ``StoreError`` here, once, naming the store.
"""

from __future__ import annotations

import abc
import asyncio
import binascii
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from devinit.errors import StoreError
from devinit.state.resp import Lane, RedisFailure, ReplyError

log = logging.getLogger("devinit.state.redis")

# Connections for reads and eventual writes. Measured (bench/, wrk -c32 GET and save): once
# handlers ran without a Task, 1 beat 2 by ~7% in rps and ~5% in CPU per request (one write and
# one read per loop turn instead of two); before, 2 had beaten 1.
LANES = 1
# Strong writes: WAITAOF/WAIT holds a connection until Redis confirms (up to a second with
# appendfsync everysec), so they spread over lanes of their own instead of queueing on one.
STRONG_LANES = 4
_DURABILITY_TTL = 10.0  # seconds to trust a reading of AOF / replica settings
_REDIRECTS = 5  # MOVED / ASK / TRYAGAIN answers followed for one key before giving up
HASH_SLOTS = 16384

#: one key's commands: the key (for routing) and the commands, run in order
KeyCommands = tuple[str | bytes, list[tuple[Any, ...]]]
#: makes the lane (connection) to one server, given its host and port
LaneFactory = Callable[[str, int], Lane]


def key_slot(key: str | bytes) -> int:
    """The Redis Cluster hash slot of a key: CRC16 (XMODEM) of it, or of its {hash tag}."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % HASH_SLOTS


# -- redirections ----------------------------------------------------------------------


class Redirection(Exception):
    """A cluster node's answer that a key's commands must go elsewhere (or wait)."""


class Moved(Redirection):
    """MOVED: the slot's master is now ``host:port``; the slot map says so from now on."""

    def __init__(self, slot: int, host: str, port: int) -> None:
        super().__init__(f"MOVED {slot} {host}:{port}")
        self.slot = slot
        self.host = host  # "": the node that answered (an unknown endpoint)
        self.port = port


class Ask(Redirection):
    """ASK: the slot is moving to ``host:port``; this once, send there, each command after ASKING."""

    def __init__(self, slot: int, host: str, port: int) -> None:
        super().__init__(f"ASK {slot} {host}:{port}")
        self.slot = slot
        self.host = host
        self.port = port


class TryAgain(Redirection):
    """TRYAGAIN: a multi-key command while its slot moves; wait a moment, then again."""


def redirection(reply: Any) -> Redirection | None:
    """The redirection a reply is, or None (any other reply, error replies included)."""
    if not isinstance(reply, ReplyError):
        return None
    text = str(reply)
    kind, _, rest = text.partition(" ")
    if kind == "TRYAGAIN":
        return TryAgain(text)
    if kind not in ("MOVED", "ASK"):
        return None
    slot, _, address = rest.partition(" ")
    host, _, port = address.rpartition(":")
    if not slot.isdigit() or not port.isdigit():
        return None
    return (Moved if kind == "MOVED" else Ask)(int(slot), host, int(port))


# -- one server ------------------------------------------------------------------------


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


def _noscript(reply: Any) -> bool:
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


class Node:
    """One Redis server: its lanes, and what was last read of its durability settings."""

    def __init__(self, host: str, port: int, lane: LaneFactory, label: str, read_timeout: float) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.label = label  # "Redis store 'x' at ...", for the errors raised here
        self.read_timeout = read_timeout
        self.lanes = [lane(host, port) for _ in range(LANES)]
        self.next_lane = itertools.cycle(self.lanes).__next__
        self.strong_lanes = [lane(host, port) for _ in range(STRONG_LANES)]
        self.next_strong = itertools.cycle(self.strong_lanes).__next__
        self.durability: _Durability | None = None

    async def run(self, commands: Sequence[Sequence[Any]], strong: bool = False) -> list[Any]:
        """Send commands in order on one connection; their replies (error replies as values).

        A strong write is followed on its lane by WAITAOF / WAIT, whose answer is checked here
        (``StoreError`` when Redis does not confirm in time) and not returned. A connection
        that fails raises ``RedisFailure``.
        """
        if strong:
            return await self._run_strong(commands)
        lane = self.next_lane()
        replies = await lane.run(commands)
        if any(map(_noscript, replies)):
            await self._send_refused_again(lane, commands, replies)
        return replies

    async def _run_strong(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        d = await self._durability_now()
        wait_ms = int(self.read_timeout * 1000 * 0.8)
        extra: list[tuple[Any, ...]] = []
        if d.aof and d.waitaof:
            extra.append((b"WAITAOF", 1, d.replicas, wait_ms))
        elif d.replicas:
            extra.append((b"WAIT", d.replicas, wait_ms))
        lane = self.next_strong()
        sent = [*commands, *extra]
        replies = await lane.run(sent)
        if any(map(_noscript, replies)):
            await self._send_refused_again(lane, sent, replies)
        if extra:
            self._check_durable(replies.pop(), d)
        return replies

    @staticmethod
    async def _send_refused_again(lane: Lane, commands: Sequence[Sequence[Any]], replies: list[Any]) -> None:
        """After a SCRIPT FLUSH: load the scripts again and send again only the commands Redis
        refused with NOSCRIPT, plus a closing WAIT / WAITAOF so that it covers them; their new
        replies take the refusals' places in ``replies``."""
        again = [i for i, reply in enumerate(replies) if _noscript(reply)]
        last = len(commands) - 1
        if commands[last][0] in (b"WAIT", b"WAITAOF") and again[-1] != last:
            again.append(last)
        await lane.run([(b"SCRIPT", b"LOAD", s.source) for s in lane.scripts])
        for i, reply in zip(again, await lane.run([commands[i] for i in again]), strict=True):
            replies[i] = reply

    async def _durability_now(self) -> _Durability:
        d = self.durability
        if d is None or time.monotonic() - d.read_at > _DURABILITY_TTL:
            (reply,) = await self.next_lane().run([(b"INFO", b"everything")])
            if isinstance(reply, ReplyError):
                raise StoreError(f"{self.label}: INFO failed: {reply}")
            info = _info(reply)
            version = tuple(int(p) for p in info.get("redis_version", "0.0").split(".")[:2] if p.isdigit())
            d = _Durability(
                aof=info.get("aof_enabled") == "1",
                waitaof=version >= (7, 2),
                replicas=int(info.get("connected_slaves", "0") or 0),
                read_at=time.monotonic(),
            )
            if d.aof and not d.waitaof and self.durability is None:
                log.warning(
                    "%s (node %s): Redis %s has no WAITAOF (7.2+), so a strong write is acknowledged "
                    "before its AOF fsync; with appendfsync everysec an OS crash may lose up to a second of writes",
                    self.label,
                    self.address,
                    info.get("redis_version", "?"),
                )
            self.durability = d
        return d

    def _check_durable(self, reply: Any, d: _Durability) -> None:
        if isinstance(reply, ReplyError):
            raise StoreError(f"{self.label}: the write was applied but its durability wait failed: {reply}")
        if d.aof and d.waitaof:
            local, replicas = reply
            if local < 1 or replicas < d.replicas:
                raise StoreError(
                    f"{self.label}: the write was applied but not confirmed durable in time "
                    f"(fsynced locally: {bool(local)}, replicas: {replicas}/{d.replicas})"
                )
        elif reply < d.replicas:
            raise StoreError(f"{self.label}: the write was applied but reached only {reply} of {d.replicas} replicas in time")

    async def close(self) -> None:
        for lane in (*self.lanes, *self.strong_lanes):
            await lane.close()


def sentinel_resolver(
    host: str, port: int, master: str, dial_timeout: float, read_timeout: float
) -> Callable[[], Awaitable[tuple[str, int]]]:
    """For a lane's every connect: ask the Sentinel at host:port where master ``master`` is."""

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


# -- the routing -----------------------------------------------------------------------


class Nodes(abc.ABC):
    """Where each key's commands go (see the module docstring)."""

    def __init__(self, label: str, lane: LaneFactory, read_timeout: float) -> None:
        self.label = label
        self._lane = lane
        self._read_timeout = read_timeout

    def _new_node(self, host: str, port: int) -> Node:
        return Node(host, port, self._lane, self.label, self._read_timeout)

    def error(self, what: str, detail: object) -> StoreError:
        """The error for ``what`` failing with ``detail``, naming the store."""
        return StoreError(f"{self.label}: {what} failed: {detail}")

    @abc.abstractmethod
    async def masters(self, refresh: bool = False) -> list[Node]:
        """Every node that holds keys (masters), ordered by address; ``refresh``: ask again."""

    @abc.abstractmethod
    async def run(self, what: str, node: Node, commands: Sequence[Sequence[Any]], strong: bool = False) -> list[Any]:
        """``Node.run`` on ``node``, its connection failures raised as ``StoreError``."""

    @abc.abstractmethod
    async def run_keyed(self, what: str, work: Sequence[KeyCommands], strong: bool = False) -> list[list[Any]]:
        """Run each key's commands where the key lives; each key's replies, in order."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every connection."""


class SingleNode(Nodes):
    """Every key on one server (standalone, or the master behind Sentinel)."""

    def __init__(self, label: str, lane: LaneFactory, read_timeout: float, host: str, port: int) -> None:
        super().__init__(label, lane, read_timeout)
        self.main = self._new_node(host, port)

    async def masters(self, refresh: bool = False) -> list[Node]:
        return [self.main]

    async def run(self, what: str, node: Node, commands: Sequence[Sequence[Any]], strong: bool = False) -> list[Any]:
        try:
            return await node.run(commands, strong)
        except RedisFailure as e:
            raise self.error(what, e) from None

    async def run_keyed(self, what: str, work: Sequence[KeyCommands], strong: bool = False) -> list[list[Any]]:
        try:
            if len(work) == 1:  # one key (a single save): its commands go out as they are
                return [await self.main.run(work[0][1], strong)]
            if not work:
                return []
            replies = iter(await self.main.run([c for _, commands in work for c in commands], strong))
        except RedisFailure as e:
            raise self.error(what, e) from None
        return [[next(replies) for _ in commands] for _, commands in work]

    async def close(self) -> None:
        await self.main.close()


@dataclass(slots=True)
class _Job:
    """One key's commands on their way through a cluster, redirected as the nodes answer."""

    key: str | bytes
    commands: list[tuple[Any, ...]]
    ask: Node | None = None  # after ASK: send to this node once, each command after an ASKING
    replies: list[Any] | None = None

    def wire(self) -> list[tuple[Any, ...]]:
        """The commands to send (with an ASKING before each after an ASK)."""
        if self.ask is None:
            return self.commands
        return [c for command in self.commands for c in ((b"ASKING",), command)]

    def take(self, replies: Iterator[Any]) -> list[Any]:
        """This job's replies from a node's replies in order (the ASKINGs' own dropped)."""
        if self.ask is None:
            return [next(replies) for _ in self.commands]
        return [(next(replies), next(replies))[1] for _ in self.commands]


class Cluster(Nodes):
    """A Redis Cluster (``seeds``: some of its nodes; the rest is found with CLUSTER SLOTS)."""

    def __init__(self, label: str, lane: LaneFactory, read_timeout: float, seeds: Sequence[tuple[str, int]]) -> None:
        super().__init__(label, lane, read_timeout)
        self._nodes: dict[str, Node] = {}  # every node seen (seeds, masters) by host:port
        for host, port in seeds:
            self.node_at(host, port)
        self._slots: list[Node | None] | None = None  # the master of each slot
        self._refreshing: asyncio.Task[list[Node | None]] | None = None

    def node_at(self, host: str, port: int) -> Node:
        """The node at host:port (made on first sight)."""
        address = f"{host}:{port}"
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = self._new_node(host, port)
        return node

    async def masters(self, refresh: bool = False) -> list[Node]:
        distinct = {id(n): n for n in await self._slot_map(refresh) if n is not None}
        return sorted(distinct.values(), key=lambda n: n.address)

    async def run(self, what: str, node: Node, commands: Sequence[Sequence[Any]], strong: bool = False) -> list[Any]:
        try:
            return await node.run(commands, strong)
        except RedisFailure as e:
            self._slots = None  # a node went away: maybe a failover; ask the cluster again
            raise self.error(what, f"{e} (node {node.address})") from None

    async def node_for(self, key: str | bytes) -> Node:
        """The master of ``key``'s slot."""
        slot = key_slot(key)
        node = (await self._slot_map())[slot]
        if node is None:
            self._slots = None  # read it again next time: the slot may have an owner by then
            raise self.error("routing", f"hash slot {slot} has no master (CLUSTER SLOTS): is the cluster state ok?")
        return node

    async def _slot_map(self, refresh: bool = False) -> list[Node | None]:
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

    def _refreshed(self, task: asyncio.Task[list[Node | None]]) -> None:
        self._refreshing = None
        if not task.cancelled():
            task.exception()  # retrieved: the callers waiting on it raise it themselves

    async def _read_slots(self) -> list[Node | None]:
        """Ask the nodes in turn (the seeds first, then every master seen since) until one
        gives a map that covers slots."""
        failures: list[str] = []
        for node in list(self._nodes.values()):
            try:
                (reply,) = await self.run("CLUSTER SLOTS", node, [(b"CLUSTER", b"SLOTS")])
            except StoreError as e:
                failures.append(str(e))
                continue
            if isinstance(reply, ReplyError):
                raise self.error(
                    "CLUSTER SLOTS",
                    f"{reply} (node {node.address}; is it a cluster node? "
                    "redisType: cluster needs Redis Cluster, use redisType: node otherwise)",
                )
            slots: list[Node | None] = [None] * HASH_SLOTS
            for entry in reply:
                first, last, (host, port, *_) = entry[0], entry[1], entry[2]
                if host == b"?":  # the master's address is unknown (RESP: cluster-preferred-endpoint-type)
                    continue
                # no host (NULL or ""): the node that answered, on that port
                master = self.node_at(host.decode() if host else node.host, int(port))
                slots[first : last + 1] = [master] * (last - first + 1)
            if not any(slots):  # a node that is not (or no longer) part of the cluster
                failures.append(f"{node.address} knows no slot owners")
                continue
            self._slots = slots
            return slots
        raise StoreError(f"{self.label}: no cluster node gave the slot map: " + "; ".join(failures))

    async def run_keyed(self, what: str, work: Sequence[KeyCommands], strong: bool = False) -> list[list[Any]]:
        """Each key's commands to the master of its slot (one write per node, the nodes in
        parallel); MOVED updates the slot map and sends again, ASK sends once to the node the
        slot is moving to, TRYAGAIN waits 0.05 s, doubling, up to ``_REDIRECTS`` times."""
        if not work:
            return []
        jobs = [_Job(key, commands) for key, commands in work]
        pending = jobs
        for attempt in range(_REDIRECTS + 1):
            by_node: dict[Node, list[_Job]] = {}
            for job in pending:
                by_node.setdefault(job.ask or await self.node_for(job.key), []).append(job)
            runs = [self.run(what, node, [c for job in group for c in job.wire()], strong) for node, group in by_node.items()]
            results = await asyncio.gather(*runs) if len(runs) > 1 else [await runs[0]]
            pending = []
            wait = False
            for (node, group), replies in zip(by_node.items(), results, strict=True):
                answers = iter(replies)
                for job in group:
                    mine = job.take(answers)
                    job.ask = None
                    redirected = next((r for r in map(redirection, mine) if r is not None), None)
                    if redirected is None:
                        job.replies = mine
                        continue
                    pending.append(job)
                    if isinstance(redirected, TryAgain):
                        wait = True
                    elif isinstance(redirected, Ask):
                        job.ask = self.node_at(redirected.host or node.host, redirected.port)
                    elif isinstance(redirected, Moved) and self._slots is not None:
                        self._slots[redirected.slot] = self.node_at(redirected.host or node.host, redirected.port)
            if not pending:
                return [job.replies or [] for job in jobs]
            if wait and attempt < _REDIRECTS:
                await asyncio.sleep(0.05 * 2**attempt)
        raise self.error(what, f"the cluster still redirects after {_REDIRECTS} tries (slots moving?)")

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for node in self._nodes.values():
            await node.close()
