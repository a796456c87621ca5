"""HTTP/2 for a server as a state machine without I/O: bytes in, callbacks and bytes out.

Built the way python-hyper's h2 and h11 are: ``H2Connection.receive(data)`` parses frames
and calls the ``App`` above it (``grpc_wire``) for what concerns a request (its headers, its
body, its end, its cancellation); the app answers through ``headers`` / ``respond`` /
``reset``; ``data_to_send()`` hands the bytes to whoever owns the socket; ``tick(now)`` says
when the connection has been silent too long. No socket, no event loop, and the clock is
given (read only when a stream is reset), so every rule below is tested frame by frame
(tests/test_h2_connection.py).

What it does is what RFC 9113 asks of a server that takes requests and never pushes: SETTINGS
(acknowledged), PING, flow control both ways, CONTINUATION, padding, RST_STREAM, GOAWAY, the
header checks of 8.1-8.3 (a malformed request is a stream error). HPACK decoding is the
``hpack`` library's; a block that left the dynamic table as it was is remembered and not
decoded again (clients repeat the same block for every call; decoding was a third of a
GetState's CPU).

Every limit is a field of ``Limits`` and has its answer: a stream error (RST_STREAM, or the
app's own answer) where one request is at fault, a connection error (GOAWAY, then close) where
the connection as a whole is abused. Resets count against ``max_resets`` whoever sends them
(a client can make the server reset streams as cheaply as it resets them itself: CVE-2025-8671),
and the work of a reset stream counts against ``max_streams`` until the app says it is done.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types, flags, error codes, settings (RFC 9113)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9
ENHANCE_YOUR_CALM = 0xB
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = (
    range(1, 7)
)
MAX_WINDOW = (1 << 31) - 1
MAX_STREAM_ID = (1 << 31) - 1  # a GOAWAY naming it: no stream refused yet

#: request headers of HTTP/1.1 that HTTP/2 forbids (RFC 9113 8.2.2)
_CONNECTION_HEADERS = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":path", b":authority"))


@dataclass(frozen=True, slots=True)
class Limits:
    """Every bound of one connection; the defaults are what ``devinit serve`` uses."""

    max_streams: int = 256  # open streams plus reset streams whose work still runs; REFUSED_STREAM past it
    max_header_list: int = 64 * 1024  # decoded (RFC 9113 6.5.2 sizes): past it the stream fails, the app answers
    max_header_block: int = 256 * 1024  # wire bytes of one block, frame headers included: connection error past it
    max_decoded: int = 1 << 20  # decoding stops past it (indexed fields repeated): connection error
    max_block_frames: int = 64  # HEADERS + CONTINUATION frames of one block
    max_size_updates: int = 2  # HPACK table size updates at the start of a block (RFC 7541 4.2 needs two at most)
    max_frame: int = 1 << 20  # SETTINGS_MAX_FRAME_SIZE we announce
    stream_window: int = 1 << 20  # receive window per stream we announce
    conn_window: int = 16 << 20  # and for the connection
    max_body: int = 4 * 1024 * 1024 + 5  # request body of one stream: past it the app answers (too_large)
    max_buffered: int = 32 << 20  # request bytes held across the connection's unfinished streams
    # answer bytes waiting for the client's flow-control windows: past it (with others waiting) a
    # new answer fails instead (the app's too_large "answers"); one answer alone may be larger
    max_unsent: int = 32 << 20
    max_empty_data: int = 16  # empty DATA frames without END_STREAM on one stream: reset past it
    max_resets: int = 2000  # streams reset (by either side) within reset_window: GOAWAY ENHANCE_YOUR_CALM past it
    # frames that ask for no call (PING, SETTINGS, PRIORITY, empty DATA, unknown types, WINDOW_UPDATE with nothing in flight) in a run
    # without a new stream: GOAWAY ENHANCE_YOUR_CALM past it (clients send a few between calls)
    max_idle_frames: int = 1000
    reset_window: float = 10.0
    preface_timeout: float = 10.0  # seconds from the connection to the client's preface
    idle_timeout: float = 300.0  # seconds without an open stream nor a new one: GOAWAY NO_ERROR, close
    # (and seconds answers may wait for a window without a byte going out: GOAWAY ENHANCE_YOUR_CALM)
    header_cache_bytes: int = 128 * 1024  # decoded header blocks remembered per connection (block + headers)
    header_cache_entry: int = 8 * 1024  # a block (or its headers) over this is never remembered
    max_remembered_resets: int = 1024  # streams we reset whose late frames are dropped quietly


class ProtocolFault(Exception):
    """A connection error (RFC 9113 5.4.1): GOAWAY with ``code``, then close (raised inside ``receive``)."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class StreamError(Exception):
    """A stream error (RFC 9113 5.4.2): RST_STREAM with ``code``; ``App.parse`` may raise it."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class Stream:
    """One request/response exchange. ``user``, ``work`` and ``timer`` are the app's: its view of
    the request, the work it runs for it and a timer (the connection never touches them)."""

    __slots__ = (
        "id",
        "user",
        "work",
        "timer",
        "body",
        "ended",
        "answered",
        "window",
        "pending",
        "unacked",
        "empties",
        "working",
        "orphan",
    )

    def __init__(self, stream_id: int, window: int) -> None:
        self.id = stream_id
        self.user: Any = None
        self.work: Any = None
        self.timer: Any = None
        self.body: bytes | bytearray = b""  # the request body so far: one buffer (the first frame as it came)
        self.ended = False  # the client finished sending
        self.answered = False  # our last frame is out (or queued in ``pending``)
        self.window = window  # what we may still send on it
        self.pending: tuple[bytes, int, bytes] | None = None  # (data, offset sent, trailers) waiting for window
        self.unacked = 0  # received bytes not yet given back with WINDOW_UPDATE
        self.empties = 0  # empty DATA frames without END_STREAM
        self.working = False  # the app runs work for it (``start_work`` .. ``work_done``)
        self.orphan = False  # closed while its work still runs: still counts against max_streams


class App(Protocol):
    """What the connection calls; every method runs inside ``receive`` (or ``connection_lost``)."""

    def parse(self, headers: list[tuple[bytes, bytes]]) -> Any:
        """The request head (validated HTTP/2 headers, pseudo-headers first) in the app's form;
        remembered per header block, so it must not depend on anything but the headers."""

    def request(self, stream: Stream, head: Any) -> None:
        """A new stream's request head (``stream.ended``: no body follows)."""

    def too_large(self, stream: Stream, what: str) -> None:
        """Over a limit, ``what``: "headers" (max_header_list), "body" (max_body),
        "buffered" (max_buffered, across the connection) or "answers" (max_unsent: answer with
        a header block only). Answer the stream."""

    def ended(self, stream: Stream) -> None:
        """The client's END_STREAM: the whole body is ``stream.body``."""

    def cancelled(self, stream: Stream) -> None:
        """The stream is gone (reset by either side, or the connection closed): stop its work."""


def frame(kind: int, flags: int, stream_id: int, payload: bytes | memoryview = b"") -> bytes:
    """One frame: the 9-byte header and ``payload``."""
    n = len(payload)
    return bytes((n >> 16 & 0xFF, n >> 8 & 0xFF, n & 0xFF, kind, flags)) + stream_id.to_bytes(4, "big") + payload


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 5.1) with ``first`` in the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2): what
    answers are made of (no dynamic table to keep in step with the client's, and cheap)."""
    return b"\0" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def _unpad(payload: bytes) -> bytes:
    if not payload:
        raise ProtocolFault(FRAME_SIZE_ERROR, "a padded frame without its pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ProtocolFault(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - pad]


def _size_updates(block: bytes, most: int) -> int:
    """How many HPACK dynamic table size updates open ``block`` (they may only come first),
    counted up to ``most`` + 1: past ``most`` the block is refused, the rest needs no walk."""
    count = pos = 0
    end = len(block)
    while pos < end and block[pos] & 0xE0 == 0x20 and count <= most:
        count += 1
        pos += 1
        if block[pos - 1] & 0x1F == 0x1F:  # a multi-byte integer: continuation bytes have the top bit
            while pos < end and block[pos] & 0x80:
                pos += 1
            pos += 1
    return count


def _check_field(name: bytes, value: bytes) -> None:
    """RFC 9113 8.2 for a regular field of a request's headers or trailers."""
    if name != name.lower():
        raise StreamError(PROTOCOL_ERROR, f"header name {name!r} is not lower-case")
    if name in _CONNECTION_HEADERS:
        raise StreamError(PROTOCOL_ERROR, f"connection-specific header {name!r} in HTTP/2")
    if name == b"te" and value != b"trailers":
        raise StreamError(PROTOCOL_ERROR, "TE other than 'trailers'")


def check_trailers(headers: list[tuple[bytes, bytes]]) -> None:
    """RFC 9113 8.1 for a request's trailers: regular fields only; raise ``StreamError`` if not."""
    for name, value in headers:
        if name[:1] == b":":
            raise StreamError(PROTOCOL_ERROR, f"pseudo-header {name!r} in trailers")
        _check_field(name, value)


def check_request_headers(headers: list[tuple[bytes, bytes]]) -> None:
    """RFC 9113 8.1.1, 8.2 and 8.3.1 for a request: raise ``StreamError`` (malformed) if broken.

    Lower-case names, pseudo-headers first, each once, only the request ones, :method,
    :scheme and :path present (no CONNECT here), no connection-specific header, TE only
    "trailers"."""
    seen: set[bytes] = set()
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                raise StreamError(PROTOCOL_ERROR, f"pseudo-header {name!r} after a regular header")
            if name not in _REQUEST_PSEUDO:
                raise StreamError(PROTOCOL_ERROR, f"unknown pseudo-header {name!r}")
            if name in seen:
                raise StreamError(PROTOCOL_ERROR, f"pseudo-header {name!r} twice")
            seen.add(name)
            if not value and name != b":authority":
                raise StreamError(PROTOCOL_ERROR, f"empty {name!r}")
            continue
        regular = True
        _check_field(name, value)
    missing = [n.decode() for n in (b":method", b":scheme", b":path") if n not in seen]
    if missing:
        raise StreamError(PROTOCOL_ERROR, f"missing {', '.join(missing)}")


class H2Connection:
    """The server side of one HTTP/2 connection (see the module docstring)."""

    def __init__(self, app: App, limits: Limits, clock: Callable[[], float]) -> None:
        self.app = app
        self.limits = limits
        self.clock = clock
        self.buf = bytearray()
        self.preface = False
        self.started = clock()
        self.last_stream_at = self.started  # idleness counts from here (moved by tick)
        self.opened = 0  # streams opened so far
        self.opened_seen = 0  # as tick last saw it
        self.idle_frames = 0  # frames that asked for no call (_no_call), since idle_mark
        self.idle_mark = 0  # ``opened`` when that count began
        self.decoder = hpack.Decoder()
        # the decoder's own limit would stop mid-block (the table then differs from the
        # client's): let it decode up to max_decoded, and judge max_header_list after
        self.decoder.max_header_list_size = limits.max_decoded
        self.header_cache: dict[bytes, Any] = {}
        self.cache_bytes = 0
        self.streams: dict[int, Stream] = {}
        self.orphans = 0  # streams closed while their work still runs
        self.last_id = 0
        self.out: list[bytes] = []
        self.send_window = 65535  # the connection's, for our DATA
        self.peer_initial_window = 65535
        self.peer_max_frame = 16384
        self.unacked = 0  # connection-level received bytes not yet given back
        self.block: tuple[int, int, list[bytes]] | None = None  # HEADERS awaiting CONTINUATION: (stream, flags, parts)
        self.block_size = 0
        self.buffered = 0  # request bytes held for streams not yet complete
        self.unsent = 0  # answer bytes waiting for a window (max_unsent)
        self.sent = 0  # answer bytes sent so far, and as tick last saw it, since when
        self.sent_seen = 0
        self.sending_at = self.started
        self.resets: deque[float] = deque()  # when streams were reset (rapid-reset guard)
        self.reset_ids: dict[int, None] = {}  # streams we reset lately (ordered: oldest first)
        self.stream_blocked: dict[int, Stream] = {}  # answers waiting for their stream's window
        self.conn_blocked: dict[int, Stream] = {}  # answers waiting for the connection's window (in order)
        self.closing: tuple[int, str] | None = None  # after a connection error: (code, why)
        settings = b"".join(
            struct.pack(">HI", k, v)
            for k, v in (
                (S_MAX_CONCURRENT_STREAMS, limits.max_streams),
                (S_INITIAL_WINDOW_SIZE, limits.stream_window),
                (S_MAX_FRAME_SIZE, limits.max_frame),
                (S_MAX_HEADER_LIST_SIZE, limits.max_header_list),
                (S_ENABLE_PUSH, 0),
            )
        )
        self.out.append(frame(SETTINGS, 0, 0, settings))
        if limits.conn_window > 65535:
            self.out.append(frame(WINDOW_UPDATE, 0, 0, (limits.conn_window - 65535).to_bytes(4, "big")))

    # -- the owner's side ---------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """What to write to the socket now (and forget)."""
        data = b"".join(self.out)
        self.out.clear()
        return data

    def receive(self, data: bytes) -> None:
        """Feed bytes read from the socket; a connection error ends in ``closing`` and a GOAWAY."""
        if self.closing is not None:
            return  # after a connection error: read and dropped until the owner closes
        buf = self.buf
        buf += data
        try:
            if not self.preface:
                if len(buf) < len(PREFACE):
                    if not PREFACE.startswith(bytes(buf)):
                        raise ProtocolFault(PROTOCOL_ERROR, "not an HTTP/2 connection preface (gRPC needs HTTP/2)")
                    return
                if buf[: len(PREFACE)] != PREFACE:
                    raise ProtocolFault(PROTOCOL_ERROR, "not an HTTP/2 connection preface (gRPC needs HTTP/2)")
                del buf[: len(PREFACE)]
                self.preface = True
            pos = 0
            end = len(buf)
            max_frame = self.limits.max_frame
            while end - pos >= 9 and self.closing is None:
                length = buf[pos] << 16 | buf[pos + 1] << 8 | buf[pos + 2]
                if length > max_frame:
                    raise ProtocolFault(FRAME_SIZE_ERROR, f"a frame of {length} bytes is over the {max_frame} we allow")
                if end - pos < 9 + length:
                    break
                kind, flags = buf[pos + 3], buf[pos + 4]
                stream_id = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                payload = bytes(buf[pos + 9 : pos + 9 + length])
                pos += 9 + length
                self._frame_in(kind, flags, stream_id, payload)
            del buf[:pos]
        except ProtocolFault as e:
            self.fail(e.code, str(e))
        except hpack.HPACKError as e:
            self.fail(COMPRESSION_ERROR, f"bad header block: {e}")

    def tick(self, now: float) -> str | None:
        """Why the connection should be closed now (a GOAWAY is queued), or None."""
        if self.closing is not None:
            return None
        limits = self.limits
        if not self.preface:
            if now - self.started > limits.preface_timeout:
                self.closing = (PROTOCOL_ERROR, "no connection preface")
                return f"no HTTP/2 connection preface within {limits.preface_timeout:g} s"
            return None
        if not self.unsent or self.sent != self.sent_seen:
            self.sending_at = now  # nothing waits for a window, or bytes went out since the last tick
            self.sent_seen = self.sent
        elif now - self.sending_at > limits.idle_timeout:
            why = f"answers waited {limits.idle_timeout:g} s for the client's flow-control window"
            self.fail(ENHANCE_YOUR_CALM, why)
            return why
        if self.streams or self.orphans or self.opened != self.opened_seen:
            self.last_stream_at = now  # busy since the last tick: idleness counts from now
            self.opened_seen = self.opened
        elif now - self.last_stream_at > limits.idle_timeout:
            self.goaway(self.last_id)
            self.closing = (NO_ERROR, "idle")
            return f"no call for {limits.idle_timeout:g} s"
        return None

    def connection_lost(self) -> None:
        """The socket is gone: every stream is cancelled, and nothing is held for them."""
        streams = list(self.streams.values())
        self.streams.clear()
        self.stream_blocked.clear()
        self.conn_blocked.clear()
        for stream in streams:
            self._drop(stream)
        self.unsent = 0
        self.header_cache.clear()
        self.buf = bytearray()  # a frame half received

    def fail(self, code: int, why: str) -> None:
        """A connection error: GOAWAY with its code; every stream is cancelled."""
        self.closing = (code, why)
        self.out.append(frame(GOAWAY, 0, 0, self.last_id.to_bytes(4, "big") + code.to_bytes(4, "big") + why.encode()[:200]))
        self.connection_lost()

    def goaway(self, last_stream: int) -> None:
        """A graceful GOAWAY: streams up to ``last_stream`` are still served."""
        self.out.append(frame(GOAWAY, 0, 0, last_stream.to_bytes(4, "big") + NO_ERROR.to_bytes(4, "big")))

    def waiting(self) -> bool:
        """Answers waiting for the client's flow-control window."""
        return bool(self.stream_blocked or self.conn_blocked)

    # -- the app's side -----------------------------------------------------------------

    def start_work(self, stream: Stream) -> None:
        """The app starts work for ``stream``: it counts against max_streams until ``work_done``."""
        stream.working = True

    def work_done(self, stream: Stream) -> None:
        """The app's work for ``stream`` ended (answered, failed or cancelled)."""
        stream.working = False
        if stream.orphan:
            stream.orphan = False
            self.orphans -= 1

    def take_body(self, stream: Stream) -> bytes:
        """The request body, handed over (no longer counted against max_buffered)."""
        body = stream.body
        if not body:
            return b""
        self.buffered -= len(body)
        stream.body = b""
        return body if type(body) is bytes else bytes(body)

    def headers(self, stream: Stream, block: bytes, end_stream: bool) -> None:
        """Send a header block (split into CONTINUATION as the peer's frame size needs)."""
        flags = END_STREAM if end_stream else 0
        limit = self.peer_max_frame
        sid = stream.id
        if len(block) <= limit:
            self.out.append(frame(HEADERS, flags | END_HEADERS, sid, block))
        else:
            self.out.append(frame(HEADERS, flags, sid, block[:limit]))
            for i in range(limit, len(block), limit):
                last = i + limit >= len(block)
                self.out.append(frame(CONTINUATION, END_HEADERS if last else 0, sid, block[i : i + limit]))
        if end_stream:
            stream.answered = True
            if stream.body:
                self._release(stream)
            self._finished(stream)

    def respond(self, stream: Stream, head: bytes, data: bytes, trailers: bytes) -> None:
        """Send the answer: ``head``, ``data`` as far as the windows allow (the rest when they
        open), then ``trailers`` ending the stream. Past ``max_unsent`` bytes waiting for
        windows on this connection, the app's ``too_large(stream, "answers")`` instead."""
        if self.unsent and self.unsent + len(data) > self.limits.max_unsent:
            self.app.too_large(stream, "answers")
            return
        stream.answered = True
        if stream.body:
            self._release(stream)
        self.headers(stream, head, False)
        stream.pending = (data, 0, trailers)
        self.unsent += len(data)
        self._send(stream)

    def reset(self, stream: Stream, code: int) -> None:
        """RST_STREAM with ``code`` (counted by the rapid-reset guard unless NO_ERROR)."""
        self.streams.pop(stream.id, None)
        stream.answered = True
        self.out.append(frame(RST_STREAM, 0, stream.id, code.to_bytes(4, "big")))
        self._was_reset(stream.id)
        self._drop(stream)
        if code != NO_ERROR:
            self._count_reset()

    # -- frames in ----------------------------------------------------------------------

    def _frame_in(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.block is not None and (kind != CONTINUATION or stream_id != self.block[0]):
            raise ProtocolFault(PROTOCOL_ERROR, "a header block was interrupted by another frame")
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            if stream_id == 0:
                raise ProtocolFault(PROTOCOL_ERROR, "HEADERS on stream 0")
            if flags & PADDED:
                payload = _unpad(payload)
            if flags & PRIORITY_FLAG:
                if len(payload) < 5:
                    raise ProtocolFault(FRAME_SIZE_ERROR, "HEADERS with the PRIORITY flag and under 5 bytes")
                payload = payload[5:]
            self.block_size = 9 + len(payload)
            if self.block_size > self.limits.max_header_block:
                raise ProtocolFault(PROTOCOL_ERROR, f"a header block over {self.limits.max_header_block} bytes")
            if flags & END_HEADERS:
                self._headers(stream_id, flags, payload)
            else:
                self.block = (stream_id, flags, [payload])
        elif kind == CONTINUATION:
            if self.block is None:
                raise ProtocolFault(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
            parts = self.block[2]
            parts.append(payload)
            self.block_size += 9 + len(payload)  # frame headers count: empty frames are not free
            if self.block_size > self.limits.max_header_block or len(parts) > self.limits.max_block_frames:
                raise ProtocolFault(PROTOCOL_ERROR, "the request headers are too large (or split into too many frames)")
            if flags & END_HEADERS:
                sid, first_flags, _ = self.block
                self.block = None
                self._headers(sid, first_flags, b"".join(parts))
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == PING:
            if stream_id:
                raise ProtocolFault(PROTOCOL_ERROR, "PING on a stream")
            self._no_call()
            if len(payload) != 8:
                raise ProtocolFault(FRAME_SIZE_ERROR, "PING payload is not 8 bytes")
            if not flags & ACK:
                self.out.append(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            self._rst_stream(stream_id, payload)
        elif kind == PRIORITY:
            if stream_id == 0:
                raise ProtocolFault(PROTOCOL_ERROR, "PRIORITY on stream 0")
            self._no_call()
            if len(payload) != 5:  # a stream error (RFC 9113 6.3)
                stream = self.streams.get(stream_id)
                if stream is not None:
                    self.reset(stream, FRAME_SIZE_ERROR)
                else:
                    self.out.append(frame(RST_STREAM, 0, stream_id, FRAME_SIZE_ERROR.to_bytes(4, "big")))
                    self._count_reset()
        elif kind == GOAWAY:
            if stream_id:
                raise ProtocolFault(PROTOCOL_ERROR, "GOAWAY on a stream")
            self._no_call()  # the client opens no more streams; the ones in flight are still answered
        elif kind == PUSH_PROMISE:
            raise ProtocolFault(PROTOCOL_ERROR, "a client may not send PUSH_PROMISE")
        else:  # unknown frame types are ignored, as RFC 9113 asks; counted
            self._no_call()

    def _idle(self, stream_id: int) -> bool:
        """A stream the client never opened (RFC 9113 5.1: idle)."""
        return stream_id > self.last_id or stream_id % 2 == 0

    def _rst_stream(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ProtocolFault(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ProtocolFault(FRAME_SIZE_ERROR, "RST_STREAM payload is not 4 bytes")
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            if self._idle(stream_id):
                raise ProtocolFault(PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
            return
        self._drop(stream)
        if not stream.answered:
            self._count_reset()

    def _count_reset(self) -> None:
        now = self.clock()
        resets = self.resets
        resets.append(now)
        horizon = now - self.limits.reset_window
        while resets[0] < horizon:
            resets.popleft()
        if len(resets) > self.limits.max_resets:  # may run outside receive (an app's reset): no raise
            self.fail(ENHANCE_YOUR_CALM, "too many streams reset")

    def _no_call(self) -> None:
        """Count a frame that asks for no call (a PING, SETTINGS...): a client may send a few
        between calls, not floods of them (each costs us a frame's work, some an answer). Past
        ``max_idle_frames`` the count starts again if a stream was opened meanwhile, else the
        connection ends. Only these frames count: the request path does no work for it."""
        self.idle_frames += 1
        if self.idle_frames > self.limits.max_idle_frames:
            if self.opened == self.idle_mark:
                raise ProtocolFault(
                    ENHANCE_YOUR_CALM,
                    f"over {self.limits.max_idle_frames} PING, SETTINGS, PRIORITY, WINDOW_UPDATE or empty frames without a call",
                )
            self.idle_mark = self.opened
            self.idle_frames = 1

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ProtocolFault(PROTOCOL_ERROR, "SETTINGS on a stream")
        self._no_call()
        if flags & ACK:
            if payload:
                raise ProtocolFault(FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload")
            return
        if len(payload) % 6:
            raise ProtocolFault(FRAME_SIZE_ERROR, "SETTINGS payload is not a multiple of 6 bytes")
        window = peak = -1  # the frame's last and largest SETTINGS_INITIAL_WINDOW_SIZE (-1: none)
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == S_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolFault(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
                window, peak = value, max(peak, value)
            elif key == S_MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise ProtocolFault(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.peer_max_frame = value
            elif key == S_ENABLE_PUSH and value > 1:
                raise ProtocolFault(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH must be 0 or 1")
        if window >= 0:
            self._initial_window(window, peak)
        self.out.append(frame(SETTINGS, ACK, 0))

    def _initial_window(self, value: int, peak: int) -> None:
        """A new SETTINGS_INITIAL_WINDOW_SIZE moves every stream's window by the change (RFC
        9113 6.9.2): one walk per SETTINGS frame, however often the frame sets it (a walk per
        value let one frame of ~170k values walk the open streams as often), to the frame's
        last ``value``; ``peak``, its largest, must not have pushed a window over 2^31-1."""
        delta, rise = value - self.peer_initial_window, peak - self.peer_initial_window
        if not delta and rise <= 0:
            return
        self.peer_initial_window = value
        for stream in self.streams.values():
            if stream.window + rise > MAX_WINDOW:
                raise ProtocolFault(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE pushed a stream window over 2^31-1")
            stream.window += delta
        if delta > 0 and self.stream_blocked:
            self._wake_streams()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolFault(FRAME_SIZE_ERROR, "WINDOW_UPDATE payload is not 4 bytes")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise ProtocolFault(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            if not self.streams:
                self._no_call()  # nothing in flight to send: it asks for nothing (a client's flood)
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise ProtocolFault(FLOW_CONTROL_ERROR, "the connection window grew over 2^31-1")
            if self.conn_blocked:
                self._wake_connection()
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if self._idle(stream_id):
                raise ProtocolFault(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return  # closed: allowed for a while (RFC 9113 6.9)
        if increment == 0:
            self.reset(stream, PROTOCOL_ERROR)
            return
        stream.window += increment
        if stream.window > MAX_WINDOW:
            self.reset(stream, FLOW_CONTROL_ERROR)
            return
        if self.stream_blocked.pop(stream_id, None) is not None:
            self._send(stream)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ProtocolFault(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)  # padding counts against flow control too
        self.unacked += size
        if self.unacked >= self.limits.conn_window // 2:
            self.out.append(frame(WINDOW_UPDATE, 0, 0, self.unacked.to_bytes(4, "big")))
            self.unacked = 0
        if flags & PADDED:
            payload = _unpad(payload)
        stream = self.streams.get(stream_id)
        if stream is None:
            if self._idle(stream_id):
                raise ProtocolFault(PROTOCOL_ERROR, "DATA on an idle stream")
            if stream_id not in self.reset_ids:  # a closed stream (not one we reset): a stream error
                self.out.append(frame(RST_STREAM, 0, stream_id, STREAM_CLOSED.to_bytes(4, "big")))
                self._was_reset(stream_id)
                self._count_reset()
            return
        if stream.ended:  # DATA after the client's own END_STREAM
            self.reset(stream, STREAM_CLOSED)
            return
        if not payload and not flags & END_STREAM:
            self._no_call()
            stream.empties += 1
            if stream.empties > self.limits.max_empty_data:
                self.reset(stream, ENHANCE_YOUR_CALM)
            return
        stream.unacked += size
        if stream.unacked >= self.limits.stream_window // 2 and not flags & END_STREAM:
            self.out.append(frame(WINDOW_UPDATE, 0, stream_id, stream.unacked.to_bytes(4, "big")))
            stream.unacked = 0
        if not stream.answered and payload:
            n = len(payload)
            if len(stream.body) + n > self.limits.max_body:
                self.app.too_large(stream, "body")
            elif self.buffered + n > self.limits.max_buffered:
                self.app.too_large(stream, "buffered")
            else:
                body = stream.body
                if not body:
                    stream.body = payload  # the common case: the whole body in one frame, no copy
                elif type(body) is bytes:
                    stream.body = bytearray(body) + payload
                else:
                    body += payload
                self.buffered += n
        if flags & END_STREAM:
            self._ended(stream)

    def _release(self, stream: Stream) -> None:
        """Drop the request bytes held for ``stream`` (answered, started, reset or gone)."""
        self.buffered -= len(stream.body)
        stream.body = b""

    def _headers(self, stream_id: int, flags: int, block: bytes) -> None:
        if (
            block
            and block[0] & 0xE0 == 0x20
            and _size_updates(block, self.limits.max_size_updates) > self.limits.max_size_updates
        ):
            raise ProtocolFault(COMPRESSION_ERROR, "more than two HPACK table size updates in one header block")
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._trailers(stream, flags, block)
            return
        if stream_id % 2 == 0:
            raise ProtocolFault(PROTOCOL_ERROR, f"stream {stream_id} is not a client stream (even id)")
        if stream_id <= self.last_id:
            if stream_id in self.reset_ids:
                self._decode_fields(block)  # trailers sent before the client saw our reset: the table moves on
                return
            raise ProtocolFault(PROTOCOL_ERROR, f"HEADERS opening stream {stream_id}, at or below the last one opened")
        try:
            head = self._decode(block)
        except StreamError as e:
            head = e
        self.last_id = stream_id
        self.opened += 1
        stream = Stream(stream_id, self.peer_initial_window)
        stream.ended = bool(flags & END_STREAM)
        self.streams[stream_id] = stream
        if len(self.streams) + self.orphans > self.limits.max_streams:
            self.reset(stream, REFUSED_STREAM)
            return
        if isinstance(head, StreamError):
            self.reset(stream, head.code)
        elif head is _TOO_LARGE:
            self.app.too_large(stream, "headers")
        else:
            self.app.request(stream, head)

    def _trailers(self, stream: Stream, flags: int, block: bytes) -> None:
        """A request's trailers (HEADERS on an open stream, after its DATA): they must end the
        stream; their fields are checked (RFC 9113 8.1) and dropped, gRPC needs none of them."""
        if not flags & END_STREAM:
            raise ProtocolFault(PROTOCOL_ERROR, "a second HEADERS without END_STREAM")
        try:
            check_trailers(self._decode_fields(block)[0])
        except StreamError as e:
            self.reset(stream, e.code)
            return
        self._ended(stream)

    def _decode(self, block: bytes) -> Any:
        """The app's form of a request's header block (``_TOO_LARGE`` over max_header_list).

        A block that left the dynamic table as it was is remembered and not decoded again
        while the table stays unchanged; one that changed the table (an insertion, an
        eviction, a size update) is not, and empties the memory."""
        cached = self.header_cache.get(block)
        if cached is not None:
            return cached
        headers, size, changed = self._decode_fields(block)
        if size > self.limits.max_header_list:
            return _TOO_LARGE
        check_request_headers(headers)
        head = self.app.parse(headers)
        if not changed and len(block) + size <= self.limits.header_cache_entry:
            cost = len(block) + size
            if self.cache_bytes + cost <= self.limits.header_cache_bytes:
                self.header_cache[block] = head
                self.cache_bytes += cost
        return head

    def _decode_fields(self, block: bytes) -> tuple[list[tuple[bytes, bytes]], int, bool]:
        """Decode ``block`` (every block is: the dynamic table must stay the client's):
        (fields, their RFC 9113 size, whether the table changed); a change empties the
        memory of decoded blocks."""
        table = self.decoder.header_table.dynamic_entries
        before = (len(table), table[0] if table else None)
        # a block that starts with a table size update is never remembered: replaying it
        # from memory would skip the update even when it evicts nothing
        resizes = bool(block) and block[0] & 0xE0 == 0x20
        headers = cast(list[tuple[bytes, bytes]], self.decoder.decode(block, raw=True))
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 32
        changed = resizes or len(table) != before[0] or (table[0] if table else None) is not before[1]
        if changed and self.header_cache:
            self.header_cache.clear()
            self.cache_bytes = 0
        return headers, size, changed

    def _ended(self, stream: Stream) -> None:
        stream.ended = True
        if stream.answered or stream.working:
            if stream.answered and stream.pending is None:
                self.streams.pop(stream.id, None)
            return
        self.app.ended(stream)

    def _drop(self, stream: Stream) -> None:
        """Forget ``stream`` (already out of ``streams``): its bytes, its answer, its work."""
        self._release(stream)
        if stream.pending is not None:
            self.unsent -= len(stream.pending[0]) - stream.pending[1]
            stream.pending = None
            self.stream_blocked.pop(stream.id, None)
            self.conn_blocked.pop(stream.id, None)
        if stream.working and not stream.orphan:
            stream.orphan = True
            self.orphans += 1
        self.app.cancelled(stream)

    # -- frames out ---------------------------------------------------------------------

    def _send(self, stream: Stream) -> None:
        """Send ``stream.pending`` as far as the windows allow; the trailers once all data is out.

        The offset moves, the data is never copied whole again (slicing the rest per frame was
        quadratic in its size). A stream out of window waits in ``stream_blocked`` or
        ``conn_blocked``: a WINDOW_UPDATE wakes those it concerns, never walks every stream."""
        assert stream.pending is not None  # called only with an answer waiting
        data, offset, trailers = stream.pending
        end = len(data)
        if offset < end:
            view = memoryview(data)
            max_frame = self.peer_max_frame
            start = offset
            while offset < end:
                room = min(stream.window, self.send_window, max_frame)
                if room <= 0:
                    stream.pending = (data, offset, trailers)
                    if stream.window <= 0:
                        self.stream_blocked[stream.id] = stream
                    else:
                        self.conn_blocked[stream.id] = stream
                    self.unsent -= offset - start
                    self.sent += offset - start
                    return
                chunk = view[offset : offset + room]
                self.out.append(frame(DATA, 0, stream.id, chunk))
                n = len(chunk)
                stream.window -= n
                self.send_window -= n
                offset += n
            self.unsent -= end - start
            self.sent += end - start
        stream.pending = None
        self.headers(stream, trailers, True)

    def _wake_connection(self) -> None:
        """The connection's window opened: send what it allows, oldest answer first."""
        blocked = self.conn_blocked
        while blocked and self.send_window > 0:
            self._send(blocked.pop(next(iter(blocked))))

    def _wake_streams(self) -> None:
        """Stream windows grew (SETTINGS): send on those that now have room."""
        for sid in [sid for sid, s in self.stream_blocked.items() if s.window > 0]:
            self._send(self.stream_blocked.pop(sid))

    def _finished(self, stream: Stream) -> None:
        if stream.ended:
            self.streams.pop(stream.id, None)
        elif self.streams.pop(stream.id, None) is not None:
            # the client is still sending (e.g. a streaming call): tell it to stop
            self.out.append(frame(RST_STREAM, 0, stream.id, NO_ERROR.to_bytes(4, "big")))
            self._was_reset(stream.id)

    def _was_reset(self, stream_id: int) -> None:
        """Remember a stream we reset: frames the client sent before it saw the reset are
        dropped quietly (RFC 9113 5.4.2); on any other closed stream they are an error."""
        self.reset_ids[stream_id] = None
        if len(self.reset_ids) > self.limits.max_remembered_resets:
            del self.reset_ids[next(iter(self.reset_ids))]


_TOO_LARGE: Any = object()  # _decode's answer for a header list over max_header_list
