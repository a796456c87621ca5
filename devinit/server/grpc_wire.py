"""gRPC over HTTP/2 on the server's own event loop: the wire under ``grpc_api``.

Why not grpc.aio: measured with h2load at 1,000 calls/s (bench/), a bare grpc.aio server
answering a constant GetState has a p50 of ~0.58 ms on uvloop (0.79 ms on the default loop)
before any store work: each call crosses from grpc's C-core threads to the event loop and
back. The ``h2`` state machine on the loop did better (0.38 ms bare) but spent ~150 us of
Python per call in its own bookkeeping (a Redis GetState: 0.44 ms p50 at 1,000/s on one
connection, of which ~0.3 ms was h2). Here HTTP/2 is ``h2_connection`` (frames, HPACK
decoding by the ``hpack`` library, flow control, every limit: a state machine without I/O)
and this module is the gRPC layer over it and the asyncio shell around it; answers are
encoded without the dynamic table or Huffman (allowed, and cheap).

What it serves is what Dapr's SDKs call: unary RPCs (``application/grpc``, protobuf payload,
identity, gzip or deflate message encoding), request metadata, ``grpc-timeout`` deadlines,
status and message in the trailers (a trailers-only answer for errors),
``grpc-status-details-bin``. A call to a streaming or unknown method is answered
(UNIMPLEMENTED, or UNAUTHENTICATED without the token) as soon as its headers arrive; a request
that is not gRPC (another content type) gets HTTP 415. Limits (``Limits``, h2_connection):
4 MiB per request message, compressed or not (RESOURCE_EXHAUSTED), ``MAX_STREAMS`` calls per
connection (REFUSED_STREAM past it), 64 KiB of request headers (that call fails with
RESOURCE_EXHAUSTED / 431), 32 MiB of unfinished requests per connection and 32 MiB of answers
waiting for its flow-control window (RESOURCE_EXHAUSTED; 5 minutes without a byte out: GOAWAY),
2,000 streams reset in 10 s and 1,000 PING / SETTINGS / PRIORITY / WINDOW_UPDATE / empty frames in a row
without a new call (both GOAWAY ENHANCE_YOUR_CALM), a preface within 10 s and a call at least
every 5 minutes; at most ``listener_cap.connection_cap()`` connections (past it GOAWAY
ENHANCE_YOUR_CALM at once, logged). Handlers run without a Task (``drive.Driven``). Graceful stop: GOAWAY at once (no new calls),
the calls in flight finish (bounded), then the final GOAWAY and close.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import re
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote

from devinit.server.drive import Driven
from devinit.server.h2_connection import ENHANCE_YOUR_CALM, MAX_STREAM_ID, H2Connection, Limits, Stream, literal
from devinit.server.listener_cap import ListenerCap

log = logging.getLogger("devinit.grpc")

MAX_MESSAGE = 4 * 1024 * 1024  # grpc's default receive limit, and the HTTP front end's
MAX_STREAMS = 256
MAX_HEADER_LIST = 64 * 1024
#: the limits of one connection (h2_connection.Limits): a request body is one message and its prefix
LIMITS = Limits(max_streams=MAX_STREAMS, max_header_list=MAX_HEADER_LIST, max_body=MAX_MESSAGE + 5)

#: gRPC status codes by name (grpc/doc/statuscodes.md)
STATUS_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 2, 3, 4
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 8, 12, 13, 14, 16

_MAX_DETAIL = 2048  # characters of grpc-message (percent-encoding may triple them)
_TIMEOUT = re.compile(rb"(\d{1,8})([HMSmun])")
_TIMEOUT_UNIT = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
#: message encodings served (grpc's compression): zlib's wbits for each
_ENCODINGS = {b"gzip": 31, b"deflate": 15}
_ACCEPT_ENCODING = (b"grpc-accept-encoding", b"identity,deflate,gzip")

# :status 200 (static index 8) and content-type (static name 31) with its value, literally
_CONTENT_TYPE = b"\x0f\x10" + bytes((16,)) + b"application/grpc"
_RESPONSE_HEAD = b"\x88" + _CONTENT_TYPE
_OK_TRAILER = literal(b"grpc-status", b"0")


def _status_head(status: int) -> bytes:
    """:status (static name 8) other than 200, literally, and content-type."""
    return b"\x08\x03" + b"%d" % status + _CONTENT_TYPE


@dataclass(slots=True)
class Call:
    """One unary call as the handler sees it."""

    method: str  # "/package.Service/Method"
    metadata: dict[str, bytes]  # lower-case names; ``-bin`` values base64-decoded
    message: bytes = b""  # the serialized request


@dataclass(slots=True)
class Reply:
    """A handler's answer: OK with ``message``, or an error status (a trailers-only answer)."""

    status: int = OK
    message: bytes = b""  # the serialized response (OK only)
    detail: str = ""  # grpc-message
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)  # e.g. grpc-status-details-bin


Handler = Callable[[Call], Coroutine[Any, Any, Reply]]
#: decides at the headers whether a method is served as a unary call; else its early answer
Route = Callable[[Call], "Reply | None"]


def error(status: int, detail: str, trailers: list[tuple[bytes, bytes]] | None = None) -> Reply:
    return Reply(status, b"", detail, trailers or [])


def binary_trailer(name: str, value: bytes) -> tuple[bytes, bytes]:
    """A ``-bin`` metadata entry: base64 without padding, as gRPC sends it."""
    return name.encode(), base64.b64encode(value).rstrip(b"=")


def _timeout(value: bytes) -> float | None:
    m = _TIMEOUT.fullmatch(value.strip())
    return int(m.group(1)) * _TIMEOUT_UNIT[m.group(2)] if m else None


def _trailers(reply: Reply) -> bytes:
    out = [literal(b"grpc-status", b"%d" % reply.status)]
    detail = reply.detail
    if len(detail) > _MAX_DETAIL:  # clients refuse metadata over 8-16 KiB: the call would fail unread
        detail = detail[:_MAX_DETAIL] + "... (truncated)"
    if detail:
        out.append(literal(b"grpc-message", quote(detail, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode("ascii")))
    out += [literal(name, value) for name, value in reply.trailers]
    return b"".join(out)


def _decompress(message: bytes, wbits: int) -> bytes | Reply:
    """A compressed message, inflated to MAX_MESSAGE at most (a small bomb stays small)."""
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(message, MAX_MESSAGE + 1)
    except zlib.error as e:
        return error(INTERNAL, f"the compressed message cannot be decompressed: {e}")
    if len(out) > MAX_MESSAGE:
        return error(RESOURCE_EXHAUSTED, f"the request message is over {MAX_MESSAGE // (1024 * 1024)} MiB once decompressed")
    if not inflater.eof:
        return error(INTERNAL, "the compressed message is truncated")
    return out


class _Protocol(asyncio.Protocol):
    """One client connection: the asyncio shell around ``H2Connection``, and the gRPC app it calls."""

    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.conn = H2Connection(self, server.limits, self.loop.time)
        self.paused = False
        self.closing = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream server hands out Transports
        server = self.server
        if not server.cap.admit(self):
            message, at_once = server.cap.refuse(f"{server.host}:{server.port}", self.transport)
            self.conn.fail(ENHANCE_YOUR_CALM, message)  # after our SETTINGS
            self._flush()
            if at_once:
                self.transport.close()  # refused in a burst: no lingering for each
            else:
                self._close_soon()  # so that the client reads the GOAWAY rather than a reset
            return
        self._flush()  # our SETTINGS

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.cap.release(self)
        self.transport = None
        self.conn.connection_lost()

    def pause_writing(self) -> None:  # the client reads slowly: stop reading its calls too
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.receive(data)
        self._flush()
        if conn.closing is not None and not self.closing:
            log.debug("HTTP/2 connection error from a client: %s", conn.closing[1])
            self._close_soon()

    def _flush(self) -> None:
        out = self.conn.out
        if out:
            if self.transport is not None:
                self.transport.write(b"".join(out))
            out.clear()

    def _close_soon(self) -> None:
        """End our side and close in a moment.

        Closing at once with the client's frames still unread would make the kernel answer
        with a reset, which can destroy the GOAWAY (and its reason) before the client reads it;
        so the rest of what it sends is read and dropped for a moment first."""
        self.closing = True
        transport = self.transport
        if transport is not None:
            if transport.can_write_eof():
                transport.write_eof()
            self.loop.call_later(1.0, transport.close)

    def tick(self, now: float) -> None:
        """Close a connection that sent no preface, or made no call for too long."""
        why = self.conn.tick(now)
        if why is not None:
            log.debug("closing an HTTP/2 connection: %s", why)
            self._flush()
            self._close_soon()

    def goaway(self, last_stream: int) -> None:
        if self.transport is not None:
            self.conn.goaway(last_stream)
            self._flush()

    # -- the gRPC app (h2_connection.App) -----------------------------------------------

    def parse(self, headers: list[tuple[bytes, bytes]]) -> tuple[str, bytes, dict[str, bytes]]:
        """(path, content-type, metadata) of a request's headers (remembered per block)."""
        path = b""
        content_type = b""
        metadata: dict[str, bytes] = {}
        for name, value in headers:
            if name[:1] == b":":
                if name == b":path":
                    path = value
                continue
            if name == b"content-type":
                content_type = value
            key = name.decode("latin-1")
            if key.endswith("-bin"):
                try:
                    value = base64.b64decode(value + b"=" * (-len(value) % 4))
                except ValueError:
                    pass
            metadata[key] = value
        return path.decode("utf-8", "replace"), content_type, metadata

    def request(self, stream: Stream, head: tuple[str, bytes, dict[str, bytes]]) -> None:
        """A call's headers: answered at once (not gRPC, an encoding not served, the route's
        refusal), or its deadline set and its message awaited."""
        path, content_type, metadata = head
        stream.user = call = Call(path, dict(metadata))
        if not (content_type == b"application/grpc" or content_type.startswith((b"application/grpc+", b"application/grpc;"))):
            # PROTOCOL-HTTP2: 415, so that no HTTP client takes the answer for a success
            detail = f"content-type {content_type.decode('latin-1')!r} is not application/grpc (gRPC-Web is not served)"
            self.conn.headers(stream, _status_head(415) + _trailers(error(UNKNOWN, detail)), True)
            return
        encoding = metadata.get("grpc-encoding")
        early: Reply | None
        if encoding is not None and encoding != b"identity" and encoding not in _ENCODINGS:
            early = error(
                UNIMPLEMENTED,
                f"message encoding {encoding.decode('latin-1')!r} is not supported: use identity, gzip or deflate",
                [_ACCEPT_ENCODING],
            )
        else:
            early = self.server.route(call)
        if early is not None:
            self._answer(stream, early)
            return
        timeout = metadata.get("grpc-timeout")  # counts from the headers, as the client's does
        seconds = _timeout(timeout) if timeout is not None else None
        if seconds is not None:
            stream.timer = self.loop.call_later(seconds, self._deadline, stream)
        if stream.ended:
            self.ended(stream)

    def too_large(self, stream: Stream, what: str) -> None:
        """RESOURCE_EXHAUSTED (with HTTP 431 for headers), saying which limit."""
        limits = self.server.limits
        if what == "headers":  # 431 too: no HTTP client takes it for a success
            detail = f"the request metadata is over {limits.max_header_list // 1024} KiB: send less metadata"
            self.conn.headers(stream, _status_head(431) + _trailers(error(RESOURCE_EXHAUSTED, detail)), True)
        elif what == "body":
            detail = f"the request message is over {MAX_MESSAGE // (1024 * 1024)} MiB: split it into smaller calls"
            self._answer(stream, error(RESOURCE_EXHAUSTED, detail))
        elif what == "answers":
            detail = (
                f"over {limits.max_unsent >> 20} MiB of answers on this connection wait for the client to read them "
                "(its flow-control window): read them first"
            )
            self._answer(stream, error(RESOURCE_EXHAUSTED, detail))
        else:
            detail = (
                f"over {limits.max_buffered >> 20} MiB of unfinished requests on this connection: finish (or cancel) some first"
            )
            self._answer(stream, error(RESOURCE_EXHAUSTED, detail))

    def ended(self, stream: Stream) -> None:
        """The whole request: one length-prefixed message (inflated if compressed), run."""
        body = self.conn.take_body(stream)
        if len(body) < 5 or body[0] > 1 or int.from_bytes(body[1:5], "big") != len(body) - 5:
            self._answer(stream, error(INTERNAL, "a unary call needs exactly one length-prefixed message"))
            return
        call: Call = stream.user
        message = body[5:]
        if body[0] == 1:
            encoding = call.metadata.get("grpc-encoding")
            wbits = _ENCODINGS.get(encoding) if encoding is not None else None
            if wbits is None:
                self._answer(stream, error(INTERNAL, "a compressed message without grpc-encoding (gzip or deflate)"))
                return
            inflated = _decompress(message, wbits)
            if isinstance(inflated, Reply):
                self._answer(stream, inflated)
                return
            message = inflated
        call.message = message
        self.server.in_flight += 1
        self.conn.start_work(stream)
        stream.work = driven = Driven(self.server.handler(call), functools.partial(self._handled, stream), self.loop)
        driven.step()

    def cancelled(self, stream: Stream) -> None:
        """The call is gone: cancel its handler's wait and its deadline."""
        driven = stream.work
        if driven is not None:
            stream.work = None  # nothing of the stream stays reachable from itself
            driven.cancel()
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None

    # -- answers ------------------------------------------------------------------------

    def _handled(self, stream: Stream, reply: Reply | None, exc: BaseException | None) -> None:
        self.server.in_flight -= 1
        stream.work = None  # the stream -> Driven -> this callback -> stream cycle, broken
        self.conn.work_done(stream)
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        if stream.answered or self.conn.streams.get(stream.id) is not stream:
            return  # reset by the client, or past its deadline: already answered
        if exc is not None:
            if isinstance(exc, asyncio.CancelledError):
                reply = error(CANCELLED, "the call was cancelled")
            else:
                log.error("error while handling %s", stream.user.method, exc_info=exc)
                reply = error(INTERNAL, "internal error in devinit; the server log has the details")
        assert reply is not None
        self._answer(stream, reply)
        self._flush()

    def _deadline(self, stream: Stream) -> None:
        stream.timer = None
        if stream.answered or self.conn.streams.get(stream.id) is not stream:
            return
        self._answer(stream, error(DEADLINE_EXCEEDED, "the call's deadline (grpc-timeout) passed"))
        if stream.work is not None:
            stream.work.cancel()
        self._flush()

    def _answer(self, stream: Stream, reply: Reply) -> None:
        if reply.status != OK:  # trailers-only
            self.conn.headers(stream, _RESPONSE_HEAD + _trailers(reply), True)
            return
        message = b"\0" + len(reply.message).to_bytes(4, "big") + reply.message
        self.conn.respond(stream, _RESPONSE_HEAD, message, _OK_TRAILER if not reply.trailers else _trailers(reply))


class GrpcServer:
    """Serve unary gRPC calls with ``handler`` on ``host:port`` (``start`` binds)."""

    def __init__(
        self, handler: Handler, route: Route, host: str, port: int, limits: Limits = LIMITS, max_connections: int | None = None
    ) -> None:
        self.handler = handler
        self.cap: ListenerCap[_Protocol] = ListenerCap(log, "gRPC", "close idle clients (or share channels)", max_connections)
        self.route = route
        self.host = host
        self.port = port
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.connections = self.cap.connections  # served, open
        self.in_flight = 0
        self.stopping = False
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and listen; raises OSError (e.g. the port is in use). Port 0: the OS chooses a
        free one, and ``port`` becomes it (the first socket's, should the host name several)."""
        self._server = await self.loop.create_server(lambda: _Protocol(self), self.host, self.port, backlog=2048)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = self.loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Preface and idle timeouts, checked a few times per shortest timeout."""
        interval = min(1.0, self.limits.preface_timeout / 4, self.limits.idle_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            for conn in list(self.connections):
                conn.tick(now)

    def begin_stop(self) -> None:
        """Stop listening and tell every client to open no more calls (GOAWAY with the highest
        stream id: the calls already on their way are still served). Safe to call twice."""
        if self.stopping:
            return
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.goaway(MAX_STREAM_ID)

    def busy(self) -> bool:
        """Calls running, or answers still waiting for a client's flow-control window."""
        return bool(self.in_flight) or any(c.conn.waiting() for c in self.connections)

    async def stop(self, grace: float = 2.0) -> None:
        """``begin_stop``, let the calls in flight finish (for ``grace`` seconds at most), then
        the final GOAWAY (the last stream served) and close."""
        self.begin_stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        deadline = self.loop.time() + grace
        while self.busy() and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.goaway(conn.conn.last_id)
            if conn.transport is not None:
                conn.transport.close()
        if self._server is not None:
            await self._server.wait_closed()
