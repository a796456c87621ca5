"""A small multiplexed Redis client on hiredis, for the Redis store's hot path.

Why not redis-py's pool: measured from one process (bench/experiments/redis_clients.py), the
pooled client tops out at about 8k script calls/s, while a few shared connections reach
50-60k: Redis answers each connection in order, so concurrent callers can share it, and the
commands issued in one event-loop turn go out in one write.

- ``Lane``: one connection shared by every caller; replies are matched to callers in order.
  Commands are buffered and written once per loop turn. A lane connects lazily (AUTH, SELECT,
  then the store's scripts are loaded), and a lost connection fails its callers at once and is
  made again on the next call.
- Timeouts: a sweeper aborts a connection whose oldest unanswered command is older than
  ``read_timeout`` (a frozen server), so a caller waits at most about that long, never forever.
- Errors come out as ``RedisFailure`` (connection, timeout) or ``ReplyError`` values in the
  replies (a reply error is data here: a script's caller decides what it means).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import hiredis

ReplyError = hiredis.ReplyError
_NONE = object()
_SWEEP = 0.1  # seconds between checks for overdue replies


class RedisFailure(Exception):
    """The connection failed, timed out or was refused; the message says which."""


class Script:
    """A Lua script called by its SHA1, loaded on each connection when it is made."""

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest().encode()

    def call(self, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
        return (b"EVALSHA", self.sha, len(keys), *keys, *args)


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reader = hiredis.Reader()
        self.waiters: deque[tuple[asyncio.Future[Any] | None, float]] = deque()  # None: first reply of a pair
        self.transport: asyncio.Transport | None = None
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.lost: BaseException | None = None
        self.progress = loop.time()  # when the last reply arrived
        self.first: Any = _NONE  # the first reply of a pair, until the second arrives

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream connection is a Transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters = self.waiters
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as e:
                self.abort(RedisFailure(f"protocol error: {e}"))
                return
            if reply is False:
                return
            if not waiters:
                self.abort(RedisFailure("an unexpected reply arrived"))
                return
            fut, _ = waiters.popleft()
            self.progress = self.loop.time()
            if fut is None:  # the first reply of a pair (send_one(pair=True))
                self.first = reply
                continue
            if self.first is not _NONE:
                reply, self.first = (self.first, reply), _NONE
            if not fut.done():
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail_all(self.lost or RedisFailure(f"connection lost ({exc or 'closed by the server'})"))
        self.transport = None

    def fail_all(self, exc: BaseException) -> None:
        self.lost = self.lost or exc
        self.first = _NONE
        while self.waiters:
            fut, _ = self.waiters.popleft()
            if fut is not None and not fut.done():
                fut.set_exception(exc)

    def abort(self, exc: BaseException) -> None:
        self.lost = self.lost or exc
        if self.transport is not None:
            self.transport.abort()
        self.fail_all(exc)

    @property
    def usable(self) -> bool:
        return self.transport is not None and self.lost is None and not self.transport.is_closing()

    def send(self, commands: Sequence[Sequence[Any]]) -> list[asyncio.Future[Any]]:
        """Queue commands (written at the end of this loop turn); one future per reply."""
        now = self.loop.time()
        futures = []
        for command in commands:
            self.out.append(hiredis.pack_command(tuple(command)))
            fut = self.loop.create_future()
            self.waiters.append((fut, now))
            futures.append(fut)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        return futures

    def send_one(self, command: tuple[Any, ...] | bytes, pair: bool = False) -> asyncio.Future[Any]:
        """One command (a tuple, or already packed in RESP); its reply's future. ``pair``: the
        packed bytes hold two commands, and the future gets both replies as a tuple."""
        fut = self.loop.create_future()
        self.out.append(command if isinstance(command, bytes) else hiredis.pack_command(command))
        now = self.loop.time()
        if pair:
            self.waiters.append((None, now))
        self.waiters.append((fut, now))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.transport is not None and self.out:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def overdue(self, now: float, timeout: float) -> bool:
        """No reply for ``timeout`` seconds while one is awaited (measured from the later of the
        oldest command's send and the last reply, so a slow but answering server, e.g. WAITAOF
        queued behind WAITAOF, is not mistaken for a frozen one)."""
        return bool(self.waiters) and now - max(self.waiters[0][1], self.progress) > timeout


class Lane:
    """One shared connection to one Redis server (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        password: str | None,
        username: str | None,
        db: int,
        tls: bool,
        dial_timeout: float,
        read_timeout: float,
        scripts: Sequence[Script],
        resolver: Callable[[], Awaitable[tuple[str, int]]] | None = None,
    ) -> None:
        self.resolver = resolver  # e.g. ask Sentinel for the current master on every connect
        self.host = host
        self.port = port
        self.password = password
        self.username = username
        self.db = db
        self.tls = tls
        self.dial_timeout = dial_timeout
        self.read_timeout = read_timeout
        self.scripts = scripts
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._connect_task: asyncio.Task[_Connection] | None = None

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        if self._connecting is None:
            loop = asyncio.get_running_loop()
            self._connecting = loop.create_future()
            self._connect_task = loop.create_task(self._connect())  # kept: the loop holds tasks weakly
            self._connect_task.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, task: asyncio.Task[_Connection]) -> None:
        fut, self._connecting = self._connecting, None
        assert fut is not None
        if task.cancelled():
            fut.set_exception(RedisFailure("connecting was cancelled"))
        elif (exc := task.exception()) is not None:
            fut.set_exception(exc)
        else:
            self._conn = task.result()
            fut.set_result(self._conn)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if self.tls else None
        if self.resolver is not None:
            self.host, self.port = await self.resolver()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop),
                    self.host,
                    self.port,
                    ssl=context,
                    server_hostname=self.host if context else None,
                ),
                self.dial_timeout,
            )
        except (TimeoutError, OSError) as e:
            reason = "timed out" if isinstance(e, asyncio.TimeoutError) else (e.strerror or str(e))
            raise RedisFailure(f"cannot connect: {reason}") from None
        hello: list[tuple[Any, ...]] = []
        if self.password:
            hello.append((b"AUTH", self.username, self.password) if self.username else (b"AUTH", self.password))
        if self.db:
            hello.append((b"SELECT", self.db))
        hello += [(b"SCRIPT", b"LOAD", s.source) for s in self.scripts]
        if hello:
            try:  # the sweeper does not watch a connection yet: bound the handshake here
                replies = await asyncio.wait_for(self._wait(conn, conn.send(hello)), self.read_timeout)
            except TimeoutError:
                conn.abort(RedisFailure(f"no answer to the handshake within {self.read_timeout:g}s"))
                raise RedisFailure(f"no answer to the handshake within {self.read_timeout:g}s") from None
            for reply in replies:
                if isinstance(reply, ReplyError):
                    conn.abort(RedisFailure(str(reply)))
                    raise RedisFailure(str(reply))
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())
        return conn

    async def _sweep(self) -> None:
        # One sweeper for the life of the lane (until close()): it never leaves a connection
        # unwatched, whatever the timing of reconnects.
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_SWEEP)
            conn = self._conn
            if conn is not None and conn.usable and conn.overdue(loop.time(), self.read_timeout):
                conn.abort(RedisFailure(f"no answer within {self.read_timeout:g}s"))

    @staticmethod
    async def _wait(conn: _Connection, futures: list[asyncio.Future[Any]]) -> list[Any]:
        # A caller that gives up (cancelled) leaves its futures cancelled: their replies are
        # still paired in order and dropped, so the connection stays in step.
        if len(futures) == 1:
            return [await futures[0]]
        return list(await asyncio.gather(*futures))

    async def run(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send commands on this lane's connection, in order; their replies (errors as ReplyError)."""
        conn = self._conn
        if conn is None or not conn.usable:
            conn = await self._connection()
        return await self._wait(conn, conn.send(commands))

    def send_now(self, command: tuple[Any, ...] | bytes, pair: bool = False) -> asyncio.Future[Any] | None:
        """Send one command (``pair``: two) on the connection if it is up (the future of its
        reply), else None."""
        conn = self._conn
        if conn is not None and conn.transport is not None and conn.lost is None:
            return conn.send_one(command, pair)
        return None

    async def one(self, command: tuple[Any, ...] | bytes, pair: bool = False) -> Any:
        """Send one command (``pair``: two, packed together); its reply (a pair's: both, as a
        tuple). The hot path: no lists, one future."""
        conn = self._conn
        if conn is None or not conn.usable:
            conn = await self._connection()
        return await conn.send_one(command, pair)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._conn = None
