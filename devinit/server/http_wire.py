"""A small HTTP/1.1 server on httptools: the front door of the state API.

Why not an ASGI server: measured on the state API's hot path (bench/), uvicorn spends most of a
small GET in its own per-response work (two socket writes, chunked framing, middleware); a
protocol that parses with httptools and writes each response once with Content-Length serves
the same handler at two to three times the rate. What it supports is what a state API client
needs, and no more:

- HTTP/1.0 and 1.1, keep-alive (echoed to an HTTP/1.0 client that asks), pipelined requests
  (answered in order, one at a time per connection), ``Content-Length`` and chunked request
  bodies, ``Expect: 100-continue``, HEAD wherever GET is served (the handler sees a GET);
- limits: request bodies (413, without reading a declared-too-large body), URL and header
  size (431, counted as the bytes arrive: a header that never ends is refused too), idle
  keep-alive connections closed after ``idle_timeout``; open connections (past
  ``max_connections`` a new one is answered 503 and closed); answers waiting for a client that does
  not read them (answering and reading pause at the write buffer's high-water mark, and the
  connection is dropped once it has not read for ``idle_timeout``);
- ``Upgrade`` (``h2c``: what ``curl --http2`` sends) is ignored and the request served as
  HTTP/1.1 (RFC 9110 7.8); malformed requests, a missing or repeated Host (RFC 9112 3.2) and
  CONNECT are answered 400 and closed; a handler that raises answers 500 (the traceback is
  logged) and the connection goes on;
- an answer that ends the connection is followed by a half-close, and what the client still
  sends is read and dropped for a moment (bounded), so that it reads the answer instead of a
  reset (a 413 for a body it is still sending);
- ``screen``, when given, sees each request before the handler (``browser.BrowserPolicy``):
  it may answer instead, or name headers to add to the answer; ``cors`` names headers to
  add to the server's own refusals (400, 413, 431), from the headers read so far;
- graceful stop: stop listening, let requests in flight finish (bounded), close the rest.

The handler is ``async def handler(request: Request) -> Response`` with the whole body read.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

import httptools

from devinit.server.drive import Driven
from devinit.server.listener_cap import ListenerCap

log = logging.getLogger("devinit.http")

MAX_BODY = 4 * 1024 * 1024
MAX_HEAD = 64 * 1024  # URL plus headers
MAX_PIPELINED = 32  # complete requests waiting per connection before reading pauses
LINGER = 2.0  # seconds an ending connection keeps reading (and dropping) what the client sends
_LINGER_BYTES = 64 << 20  # and how much of it at most

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_NO_BODY_STATUS = frozenset({204, 304})


@dataclass(slots=True)
class Request:
    """One HTTP request with its whole body."""

    method: str
    path: bytes  # raw, still percent-encoded, without the query
    query: bytes
    headers: dict[bytes, bytes]  # lower-case names; a repeated header keeps its last value
    body: bytes


#: (status, headers, body); Content-Length and Connection are added by the server
Response = tuple[int, list[tuple[bytes, bytes]], bytes]
Handler = Callable[[Request], Coroutine[Any, Any, Response]]
#: before the handler: None to serve, a Response to answer instead, or headers to add to the answer
Screen = Callable[[Request], "Response | list[tuple[bytes, bytes]] | None"]
#: for the server's own refusals (400, 413, 431): headers to add, from the request's headers as read
Cors = Callable[[dict[bytes, bytes]], "list[tuple[bytes, bytes]] | None"]
#: keep-alive as queued with a request: close, keep (HTTP/1.1), keep and say so (HTTP/1.0)
_CLOSE, _KEEP, _KEEP_ECHO = 0, 1, 2


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Status"))


_STATUS_LINES = {code: _status_line(code) for code in _REASONS}


class _Protocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: H1Server) -> None:
        self.server = server
        self.handler = server.handler
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[tuple[Request | Response, int, bool]] = deque()  # (item, keep-alive, HEAD)
        self.busy = False
        self.pumping = False  # inside _pump(): requests that finish there do not re-enter it
        self.paused = False  # reading paused: too many requests queued, or the client reads slowly
        self.write_blocked = False  # the transport's write buffer is over its high-water mark
        self.unsent_at_sweep = 0  # the write buffer's size at the last idle sweep (shrinking: the client reads)
        self.failed = False  # the connection is ending (an answer that closes it is out or queued): ignore the rest
        self.lingering = 0  # > 0: half-closed, dropping what still arrives (counts it)
        self.last_active = 0.0
        self.in_head = False  # the head of a request (or a chunked body's trailer section) is arriving
        self.head_fresh = False  # and it began in the chunk being parsed
        self.head_fed = 0  # bytes of the chunks that arrived wholly inside that head
        self.upgrading = False  # a request httptools will treat as an upgrade: served as HTTP/1.1
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.head_size = 0
        self.body: bytes | bytearray = b""  # one buffer (the first piece as it came)
        self.refusal: Response | None = None  # an answer decided before the body arrived
        self.refusal_closes = False  # and the connection ends after it

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream server hands out Transports
        self.last_active = self.loop.time()
        server = self.server
        if not server.cap.admit(self):
            message, at_once = server.cap.refuse(f"{server.host}:{server.port}", self.transport)
            self._write(server.error_response(503, message), _CLOSE, False, None)
            if at_once:
                self.transport.close()  # refused in a burst: no lingering for each
            else:
                self._close()  # lingering, so that the client reads the 503 rather than a reset
            return

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.cap.release(self)
        self.transport = None
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        if self.lingering:
            self.lingering += len(data)
            if self.lingering > _LINGER_BYTES and self.transport is not None:
                self.transport.close()
            return
        if self.in_head and self.head_fed > MAX_HEAD:
            # httptools hands a header over only once it ends: bound the head as it arrives
            self._fail(431, b"the request URL and headers (or trailers) are too large")
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            if self.upgrading:
                self._serve_without_upgrade(data, e.args[0])
            else:
                self._fail(400, b"CONNECT is not supported")
        except httptools.HttpParserError as e:
            self._fail(400, b"malformed HTTP request: " + str(e).encode("ascii", "replace"))
        if self.in_head:
            if self.head_fresh:  # the head began in this chunk: count from the next one
                self.head_fresh = False
            else:
                self.head_fed += len(data)

    def eof_received(self) -> bool | None:
        if self.lingering and self.transport is not None:
            self.transport.close()  # the client read the answer and closed: done lingering
        return None

    def _serve_without_upgrade(self, data: bytes, offset: int) -> None:
        """Serve a request that asked for an upgrade (``h2c``) as the HTTP/1.1 request it also
        is: httptools stopped at its head (``data[offset]`` is the first byte after it) as if a
        new protocol followed, so its head is given again without the upgrade headers, followed
        by the bytes after it (its body, then any request after it).

        A loop over a view of ``data``, not recursion over copies: one chunk may hold thousands
        of such requests (recursing once per request ran into the recursion limit and held a
        copy of the rest of the chunk per request)."""
        rest = memoryview(data)
        parser = self.parser
        while True:
            self.upgrading = False
            if self.refusal_closes:  # no Host, or two: the head given again must not hide it
                self._close_with(cast(Response, self.refusal))
                return
            try:
                parser.feed_data(self._head_without_upgrade())
                parser.feed_data(rest[offset:])
                return
            except httptools.HttpParserUpgrade as e:
                if not self.upgrading:
                    self._fail(400, b"CONNECT is not supported")
                    return
                offset += e.args[0]  # the next such request, in the part of ``data`` just fed
            except httptools.HttpParserError as e:
                self._fail(400, b"malformed HTTP request: " + str(e).encode("ascii", "replace"))
                return

    def _head_without_upgrade(self) -> bytes:
        """The head of the request just parsed, without ``Upgrade``, ``HTTP2-Settings`` and
        their ``Connection`` tokens."""
        method = self.parser.get_method()
        version = self.parser.get_http_version().encode("ascii")
        head = [method + b" " + self.url + b" HTTP/" + version + b"\r\n"]
        for name, value in self.headers.items():
            if name in (b"upgrade", b"http2-settings"):
                continue
            if name == b"connection":
                value = b",".join(t for t in value.split(b",") if t.strip().lower() not in (b"upgrade", b"http2-settings"))
                if not value:
                    continue
            head.append(name + b": " + value + b"\r\n")
        head.append(b"\r\n")
        return b"".join(head)

    def pause_writing(self) -> None:
        # The client reads slowly: stop reading its requests, and stop answering those already
        # read (_pump), so that what waits in the write buffer stays near its high-water mark
        # plus one answer, however many requests one read held.
        self.write_blocked = True
        if self.transport is not None and not self.paused:
            self.transport.pause_reading()
            self.paused = True

    def resume_writing(self) -> None:
        self.write_blocked = False
        self.last_active = self.loop.time()  # the client reads: not idle
        if self.queue and not self.busy:
            # in a later callback: uvloop may call this from inside transport.write, and _handled
            # (which writes) must finish, closing the connection if its answer ends it, first
            self.loop.call_soon(self._pump)
        else:
            self._resume()

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset()
        self.in_head = self.head_fresh = True
        self.head_fed = 0

    def on_url(self, url: bytes) -> None:
        if self.failed:
            return
        self.url += url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD:
            self._fail(431, b"the request URL and headers are too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.failed:
            return
        self.head_size += len(name) + len(value)
        if self.head_size > MAX_HEAD:
            self._fail(431, b"the request URL and headers are too large")
            return
        key = name.lower()
        if key == b"host" and key in self.headers:
            self._refuse(self.server.error_response(400, "the request has two Host headers (RFC 9112 3.2)"))
        self.headers[key] = value

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.failed:
            return
        headers = self.headers
        if b"host" not in headers and self.parser.get_http_version() != "1.0":
            self._refuse(self.server.error_response(400, "the request has no Host header (HTTP/1.1 needs one, RFC 9112 3.2)"))
        if b"upgrade" in headers and self.parser.should_upgrade():
            self.upgrading = True  # its head is given again without the upgrade: nothing to do now
            return
        length = headers.get(b"content-length")
        idle = not self.busy and not self.queue  # nothing else to answer first
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            self.refusal = self.server.too_large()
            if idle:
                self._close_with(self.refusal)  # answer now and never read the body
                return
        if idle and headers.get(b"expect", b"").lower() == b"100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _refuse(self, response: Response) -> None:
        """Answer this request with ``response`` (once it is read), then close."""
        if self.refusal is None:
            self.refusal = response
            self.refusal_closes = True

    def on_chunk_header(self) -> None:
        # A chunk begins. If it is the last one (size 0), the trailer section follows, whose
        # fields httptools holds until each ends, as it does a head's: bounded as a head is,
        # as its bytes arrive (a chunk with data clears this in on_body).
        self.in_head = self.head_fresh = True
        self.head_fed = 0

    def on_body(self, body: bytes) -> None:
        if self.in_head:  # data: this chunk is not the last, no trailer section yet
            self.in_head = False
        if self.refusal is not None or self.failed:
            return
        held = self.body
        if len(held) + len(body) > MAX_BODY:
            self.refusal = self.server.too_large()
            self.body = b""
        elif not held:
            self.body = body  # the common case: the whole body in one piece, no copy
        elif type(held) is bytes:
            self.body = bytearray(held) + body  # many pieces (1-byte chunks...): one buffer, not a list
        else:
            held += body

    def on_message_complete(self) -> None:
        if self.failed or self.upgrading:  # failed: httptools goes on parsing after we refused
            return
        keep_alive = _KEEP if self.parser.should_keep_alive() else _CLOSE
        if keep_alive and b"connection" in self.headers and self.parser.get_http_version() == "1.0":
            keep_alive = _KEEP_ECHO
        head = False
        if self.refusal is not None:
            item: Request | Response = self._with_cors(self.refusal)
            if self.refusal_closes:
                keep_alive = _CLOSE
        else:
            path, _, query = self.url.partition(b"?")
            body = self.body
            method = self.parser.get_method()
            if method == b"HEAD":  # served as the GET it stands for, answered without the body
                method = b"GET"
                head = True
            item = Request(method.decode("ascii"), path, query, self.headers, body if type(body) is bytes else bytes(body))
        self.queue.append((item, keep_alive, head))
        if not self.busy:
            self._pump()
        elif len(self.queue) >= MAX_PIPELINED and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True

    # -- answering ----------------------------------------------------------------------

    def _pump(self) -> None:
        """Answer the queued requests in order, one at a time.

        Handlers run without a Task (``drive.Driven``). A loop, not recursion: a handler that
        answers at once (the in-memory store) finishes inside ``step()``, and a long pipeline
        answered that way must not grow the stack. It stops while the write buffer is over its
        high-water mark (``pause_writing``) and goes on from ``resume_writing``.
        """
        if self.pumping:
            return  # a request finished inside the loop below: it goes on from there
        self.pumping = True
        screen = self.server.screen
        try:
            while self.queue and not self.busy and not self.write_blocked:  # blocked: resume_writing goes on
                item, keep_alive, head = self.queue.popleft()
                if isinstance(item, Request):
                    extra = None
                    if screen is not None:
                        verdict = screen(item)
                        if verdict is not None:
                            if type(verdict) is tuple:  # answered instead of the handler
                                self._write(verdict, keep_alive, head, None)
                                if not keep_alive:
                                    self._close()
                                continue
                            extra = cast(list[tuple[bytes, bytes]], verdict)
                    self.busy = True
                    self.server.in_flight += 1
                    done = functools.partial(self._handled, item, keep_alive, head, extra)
                    Driven(self.handler(item), done, self.loop).step()
                else:
                    self._write(item, keep_alive, False, None)
                    if not keep_alive:
                        self._close()
        finally:
            self.pumping = False
        if not self.busy and not self.queue:
            self._resume()

    def _handled(
        self,
        request: Request,
        keep_alive: int,
        head: bool,
        extra: list[tuple[bytes, bytes]] | None,
        response: Response | None,
        error: BaseException | None,
    ) -> None:
        """A handler's answer (or its error): write it, then go on with the next queued request."""
        if error is not None:  # a bug: answer 500, keep serving
            log.error("error while handling %s %s", request.method, request.path.decode("latin-1"), exc_info=error)
            response = self.server.internal_error()
        assert response is not None  # Driven gives a result or an error
        self.server.in_flight -= 1
        self.busy = False
        if self.server.stopping:
            keep_alive = _CLOSE
        self._write(response, keep_alive, head, extra)
        if not keep_alive:
            self._close()
        else:
            self._pump()

    def _close(self) -> None:
        """End the connection after the answers written: half-close, then linger (bounded)
        reading and dropping what the client still sends, so that it reads our answer
        instead of a reset for the bytes we left unread."""
        self.queue.clear()
        # Requests pipelined after this answer are never served (parsing goes on in this
        # chunk): nothing may be written after the half-close, and nothing run unanswered.
        self.failed = True
        transport = self.transport
        if transport is None or transport.is_closing() or self.lingering:
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.lingering = 1
        if self.paused:
            self.paused = False
            transport.resume_reading()
        self.loop.call_later(LINGER, transport.close)

    def _resume(self) -> None:
        if self.paused and not self.write_blocked and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _write(self, response: Response, keep_alive: int, head: bool, extra: list[tuple[bytes, bytes]] | None) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        status, headers, body = response
        parts = [_STATUS_LINES.get(status) or _status_line(status)]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if extra:
            for name, value in extra:
                parts += (name, b": ", value, b"\r\n")
        if status not in _NO_BODY_STATUS:
            parts.append(b"Content-Length: %d\r\n" % len(body))
        if not keep_alive:
            parts.append(b"Connection: close\r\n")
        elif keep_alive == _KEEP_ECHO:
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if body and not head and status not in _NO_BODY_STATUS:
            parts.append(body)
        self.transport.write(b"".join(parts))
        self.last_active = self.loop.time()

    def _fail(self, status: int, message: bytes) -> None:
        """Answer a request that cannot be read, then close the connection."""
        self._close_with(self.server.error_response(status, message.decode("utf-8", "replace")))

    def _close_with(self, response: Response) -> None:
        """Answer with ``response`` after the requests already read, then close (read no more)."""
        self.failed = True
        if self.transport is None or self.transport.is_closing() or self.lingering:
            return  # already ended (half-closed): one answer that ends it is enough
        response = self._with_cors(response)
        if self.busy or self.queue:  # pipelined requests before this one are answered first
            self.queue.append((response, _CLOSE, False))
            if not self.paused:
                self.transport.pause_reading()
                self.paused = True
            return
        self._write(response, _CLOSE, False, None)
        self._close()

    def _with_cors(self, response: Response) -> Response:
        """A refusal of the request being read, with the CORS headers its origin may have
        (``H1Server.cors``): a page reads the error instead of an opaque failure."""
        cors = self.server.cors
        if cors is None or b"origin" not in self.headers:
            return response
        extra = cors(self.headers)
        if not extra:
            return response
        status, headers, body = response
        return status, [*headers, *extra], body

    def close_if_idle(self, now: float, idle_timeout: float) -> None:
        transport = self.transport
        if transport is None or self.busy:
            return
        unsent = transport.get_write_buffer_size()
        if unsent < self.unsent_at_sweep:
            self.last_active = now  # the client reads, if slowly: resume_writing may be far off
        self.unsent_at_sweep = unsent
        if now - self.last_active <= idle_timeout:
            return
        if self.write_blocked or unsent:
            # Answers wait and the client has not read for the whole timeout: close() would wait
            # for the buffer to drain, which never comes; drop it (and the requests queued).
            log.debug("closing an HTTP connection whose client has not read its answers for %gs", idle_timeout)
            self.queue.clear()
            transport.abort()
        elif not self.queue:
            transport.close()


class H1Server:
    """Listen on ``host:port`` and answer with ``handler``; ``serve()`` runs until ``stop()``."""

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        error_response: Callable[[int, str], Response],
        idle_timeout: float = 30.0,
        backlog: int = 2048,
        screen: Screen | None = None,
        cors: Cors | None = None,
        max_connections: int | None = None,
    ) -> None:
        self.handler = handler
        self.cors = cors
        self.cap: ListenerCap[_Protocol] = ListenerCap(log, "HTTP", "close idle clients (or reuse connections)", max_connections)
        self.screen = screen
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout
        self.backlog = backlog
        self.error_response = error_response
        self.connections = self.cap.connections  # served, open
        self.in_flight = 0
        self.stopping = False
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    def too_large(self) -> Response:
        return self.error_response(
            413, f"the request body is over {MAX_BODY // (1024 * 1024)} MiB: split it into smaller requests"
        )

    def internal_error(self) -> Response:
        return self.error_response(500, "internal error in devinit; the server log has the details")

    async def start(self) -> None:
        """Bind and listen; raises OSError (e.g. the port is in use). Port 0: the OS chooses a
        free one, and ``port`` becomes it (the first socket's, should the host name several)."""
        self._server = await self.loop.create_server(lambda: _Protocol(self), self.host, self.port, backlog=self.backlog)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = self.loop.create_task(self._sweep_idle())

    async def _sweep_idle(self) -> None:
        while not self.stopping:
            await asyncio.sleep(min(5.0, self.idle_timeout))
            now = self.loop.time()
            for conn in list(self.connections):
                conn.close_if_idle(now, self.idle_timeout)

    def stop(self) -> None:
        """Ask ``serve()`` to finish (safe to call from a signal handler)."""
        self._stopped.set()

    async def serve(self, grace: float = 5.0) -> None:
        """Run until ``stop()``; then stop listening and let requests in flight finish."""
        await self._stopped.wait()
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + grace
        while self.in_flight and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        if self._server is not None:
            await self._server.wait_closed()
