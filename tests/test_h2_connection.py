"""HTTP/2 frame by frame: server/h2_connection.py as a state machine, no socket, no loop.

Each test feeds frames written by hand (hpack's encoder for header blocks) and reads the
frames the connection answers with, and what it told the app. The same rules are checked
once more over a socket in test_grpc_wire.py, against a running `devinit serve`.
"""

from __future__ import annotations

import struct
from typing import Any

import hpack
import pytest
from test_grpc_wire import _frames as frames

from devinit.server import h2_connection as h2
from devinit.server.h2_connection import H2Connection, Limits, Stream

REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/svc/M"),
    (":authority", "x"),
    ("content-type", "application/grpc"),
]
PREFACE = h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0)


class App:
    """Records what the connection tells it; answers like the gRPC layer does, in the simplest way."""

    def __init__(self, limits: Limits | None = None, now: float = 0.0, work: bool = False) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.work = work  # ``ended`` starts work that stays running until finish()
        self.now = now
        self.conn = H2Connection(self, limits or Limits(), lambda: self.now)
        self.parsed = 0

    def parse(self, headers: list[tuple[bytes, bytes]]) -> Any:
        self.parsed += 1
        return dict(headers)

    def request(self, stream: Stream, head: Any) -> None:
        self.events.append(("request", stream.id, head))
        if stream.ended:
            self.ended(stream)

    def too_large(self, stream: Stream, what: str) -> None:
        self.events.append(("too_large", stream.id, what))
        self.conn.headers(stream, h2.literal(b":status", b"431" if what == "headers" else b"413"), True)

    def ended(self, stream: Stream) -> None:
        self.events.append(("ended", stream.id, self.conn.take_body(stream)))
        if self.work:
            self.conn.start_work(stream)

    def cancelled(self, stream: Stream) -> None:
        self.events.append(("cancelled", stream.id))

    def finish(self, stream: Stream) -> None:
        self.conn.work_done(stream)

    # -- driving ------------------------------------------------------------------------

    def feed(self, data: bytes, now: float | None = None) -> list[tuple[int, int, int, bytes]]:
        """Feed ``data`` (at time ``now``, if given); the frames the connection sent back."""
        if now is not None:
            self.now = now
        self.conn.receive(data)
        return frames(self.conn.data_to_send())

    def start(self) -> list[tuple[int, int, int, bytes]]:
        return self.feed(PREFACE)


def goaway(out: list[tuple[int, int, int, bytes]]) -> int | None:
    """The error code of the GOAWAY in ``out``, if any."""
    codes = [int.from_bytes(p[4:8], "big") for t, _, _, p in out if t == h2.GOAWAY]
    return codes[0] if codes else None


def resets(out: list[tuple[int, int, int, bytes]]) -> list[tuple[int, int]]:
    return [(s, int.from_bytes(p, "big")) for t, _, s, p in out if t == h2.RST_STREAM]


def headers_frame(sid: int, block: bytes, end_stream: bool = False, flags: int = 0) -> bytes:
    return h2.frame(h2.HEADERS, h2.END_HEADERS | (h2.END_STREAM if end_stream else 0) | flags, sid, block)


def size_update(n: int) -> bytes:
    return h2.hpack_int(n, 5, 0x20)


# -- 1. header blocks: size updates, and a cap on every block ---------------------------------


def test_two_size_updates_open_a_block_and_a_third_is_a_connection_error() -> None:
    app = App()
    app.start()
    enc = hpack.Encoder()
    out = app.feed(headers_frame(1, size_update(0) + size_update(4096) + enc.encode(REQUEST), end_stream=True))
    assert goaway(out) is None and app.events[0][:2] == ("request", 1)
    out = app.feed(headers_frame(3, size_update(0) + size_update(100) + size_update(4096) + enc.encode(REQUEST)))
    assert goaway(out) == h2.COMPRESSION_ERROR and app.conn.closing is not None


def test_size_updates_are_counted_only_until_one_too_many() -> None:
    """A block of ~100k size updates (within the block cap) is refused after the third, not
    walked to its end first."""
    block = size_update(0) * 60_000 + size_update(100_000) * 20_000
    assert h2._size_updates(block, 2) == 3
    assert h2._size_updates(size_update(0) + size_update(100_000) + b"\x82", 2) == 2


def test_a_headers_frame_over_the_block_cap_is_refused_before_decoding() -> None:
    """A HEADERS frame alone (no CONTINUATION) is capped too: ~1 MiB of size updates once
    stalled the whole server."""
    limits = Limits()
    app = App(limits)
    app.start()
    block = size_update(4096) * (limits.max_header_block // 3 + 1)
    out = app.feed(headers_frame(1, block))
    assert goaway(out) == h2.PROTOCOL_ERROR and app.parsed == 0
    assert app.conn.decoder.header_table_size == 4096  # nothing of it was decoded


def test_continuation_counts_against_the_same_cap() -> None:
    app = App(Limits(max_header_block=3000))
    app.start()
    block = hpack.Encoder().encode([*REQUEST, ("x-pad", "p" * 5000)])  # ~3.8 KB once Huffman-coded
    out = app.feed(h2.frame(h2.HEADERS, 0, 1, block[:2000]) + h2.frame(h2.CONTINUATION, h2.END_HEADERS, 1, block[2000:]))
    assert goaway(out) == h2.PROTOCOL_ERROR


# -- 2. resets, whoever sends them -------------------------------------------------------------


def test_server_resets_provoked_by_the_client_are_counted() -> None:
    """HEADERS + WINDOW_UPDATE(0): each earns a RST_STREAM(PROTOCOL_ERROR) from the server
    ("MadeYouReset", CVE-2025-8671); past max_resets in the window the connection ends."""
    app = App(Limits(max_resets=10))
    app.start()
    enc = hpack.Encoder()
    bad = b"".join(
        headers_frame(sid, enc.encode(REQUEST)) + h2.frame(h2.WINDOW_UPDATE, 0, sid, bytes(4)) for sid in range(1, 21, 2)
    )
    out = app.feed(bad)
    assert resets(out) == [(sid, h2.PROTOCOL_ERROR) for sid in range(1, 21, 2)] and goaway(out) is None
    out = app.feed(headers_frame(21, enc.encode(REQUEST)) + h2.frame(h2.WINDOW_UPDATE, 0, 21, bytes(4)))
    assert goaway(out) == h2.ENHANCE_YOUR_CALM


@pytest.mark.parametrize(
    "flood",
    [
        h2.frame(h2.PING, 0, 0, bytes(8)),
        h2.frame(h2.SETTINGS, 0, 0),  # no values
        h2.frame(h2.SETTINGS, 0, 0, struct.pack(">HI", h2.S_ENABLE_PUSH, 0)),
        h2.frame(h2.PRIORITY, 0, 1, bytes(5)),
        h2.frame(0x42, 0, 0, b"x"),  # an unknown type
        h2.frame(h2.GOAWAY, 0, 0, bytes(8)),
        h2.frame(h2.WINDOW_UPDATE, 0, 0, (1).to_bytes(4, "big")),  # with no call in flight to send for
    ],
    ids=["ping", "empty-settings", "settings", "priority", "unknown", "goaway", "window-update"],
)
def test_a_flood_of_frames_that_ask_for_no_call_ends_the_connection(flood: bytes) -> None:
    limits = Limits()
    app = App(limits)
    app.start()  # its SETTINGS counts as one
    out = app.feed(flood * (limits.max_idle_frames - 1))
    assert goaway(out) is None
    out = app.feed(flood)
    assert goaway(out) == h2.ENHANCE_YOUR_CALM and app.conn.closing is not None


def test_a_flood_of_empty_data_frames_over_many_calls_ends_the_connection() -> None:
    """Each call's empty DATA frames stay under its own limit (max_empty_data): together they
    are a flood of frames without a new call."""
    limits = Limits()
    app = App(limits)
    app.start()
    enc = hpack.Encoder()
    calls = 2 * limits.max_idle_frames // limits.max_empty_data + 1
    app.feed(b"".join(headers_frame(2 * i + 1, enc.encode(REQUEST)) for i in range(calls)))
    out = app.feed(b"".join(h2.frame(h2.DATA, 0, 2 * i + 1, b"") * limits.max_empty_data for i in range(calls)))
    assert resets(out) == [] and goaway(out) == h2.ENHANCE_YOUR_CALM


def test_frames_that_ask_for_no_call_between_calls_are_fine() -> None:
    limits = Limits()
    app = App(limits)
    app.start()
    enc = hpack.Encoder()
    ping = h2.frame(h2.PING, 0, 0, bytes(8))
    for i in range(10):
        out = app.feed(ping * (limits.max_idle_frames // 2) + headers_frame(2 * i + 1, enc.encode(REQUEST), end_stream=True))
        assert goaway(out) is None, i
    assert [e[:2] for e in app.events if e[0] == "request"] == [("request", 2 * i + 1) for i in range(10)]


def test_resets_older_than_the_window_are_forgotten() -> None:
    app = App(Limits(max_resets=3, reset_window=10.0))
    app.start()
    enc = hpack.Encoder()
    for i, sid in enumerate(range(1, 17, 2)):  # 8 client resets, 5 s apart: never 4 within 10 s
        out = app.feed(headers_frame(sid, enc.encode(REQUEST)) + h2.frame(h2.RST_STREAM, 0, sid, bytes(4)), now=i * 5.0)
        assert goaway(out) is None
    out = app.feed(
        b"".join(headers_frame(s, enc.encode(REQUEST)) + h2.frame(h2.RST_STREAM, 0, s, bytes(4)) for s in (17, 19, 21)), 36
    )
    assert goaway(out) == h2.ENHANCE_YOUR_CALM


def test_the_work_of_a_reset_stream_counts_until_it_ends() -> None:
    """A stream reset while its work runs is gone for the client, but its work still counts
    against max_streams: resetting cannot start unbounded work."""
    app = App(Limits(max_streams=2), work=True)
    app.start()
    enc = hpack.Encoder()
    body = h2.frame(h2.DATA, h2.END_STREAM, 1, b"x")
    app.feed(headers_frame(1, enc.encode(REQUEST)) + body + h2.frame(h2.RST_STREAM, 0, 1, (8).to_bytes(4, "big")))
    first = [e for e in app.events if e[0] == "ended"]
    assert first and ("cancelled", 1) in app.events and app.conn.orphans == 1
    app.feed(headers_frame(3, enc.encode(REQUEST)))  # one open stream + one orphan: full
    out = app.feed(headers_frame(5, enc.encode(REQUEST)))
    assert resets(out) == [(5, h2.REFUSED_STREAM)]
    app.finish(_STREAMS[1])  # its work ended
    assert app.conn.orphans == 0
    out = app.feed(headers_frame(7, enc.encode(REQUEST)))
    assert resets(out) == [] and ("request", 7) in [e[:2] for e in app.events]


_STREAMS: dict[int, Stream] = {}


@pytest.fixture(autouse=True)
def _remember_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every Stream the connection makes, by id (the app sees them; tests look them up)."""
    _STREAMS.clear()
    original = Stream.__init__

    def init(self: Stream, stream_id: int, window: int) -> None:
        original(self, stream_id, window)
        _STREAMS[stream_id] = self

    monkeypatch.setattr(Stream, "__init__", init)


# -- 3. answers waiting for window ---------------------------------------------------------------


def _blocked_answers(app: App, n: int) -> list[Stream]:
    """``n`` streams answered with 100 bytes each while the client's stream windows are 0."""
    app.feed(PREFACE[: len(h2.PREFACE)] + h2.frame(h2.SETTINGS, 0, 0, (4).to_bytes(2, "big") + bytes(4)))
    enc = hpack.Encoder()
    streams = []
    for sid in range(1, 2 * n, 2):
        app.feed(headers_frame(sid, enc.encode(REQUEST), end_stream=True))
        stream = _STREAMS[sid]
        app.conn.respond(stream, h2.literal(b":status", b"200"), b"d" * 100, h2.literal(b"grpc-status", b"0"))
        streams.append(stream)
    app.conn.data_to_send()
    return streams


def test_a_connection_window_update_does_not_walk_streams_blocked_on_their_own_window(monkeypatch: pytest.MonkeyPatch) -> None:
    app = App()
    streams = _blocked_answers(app, 256)
    assert len(app.conn.stream_blocked) == 256 and not app.conn.conn_blocked
    sends: list[int] = []
    original = H2Connection._send
    monkeypatch.setattr(H2Connection, "_send", lambda self, s: (sends.append(s.id), original(self, s))[1])
    out = app.feed(h2.frame(h2.WINDOW_UPDATE, 0, 0, (1).to_bytes(4, "big")) * 1000)
    assert sends == [] and [f for f in out if f[0] == h2.DATA] == []
    out = app.feed(h2.frame(h2.WINDOW_UPDATE, 0, streams[7].id, (100).to_bytes(4, "big")))
    assert sends == [streams[7].id]
    assert [(t, s, len(p)) for t, _, s, p in out if t in (h2.DATA, h2.HEADERS)] == [
        (h2.DATA, streams[7].id, 100),
        (h2.HEADERS, streams[7].id, len(h2.literal(b"grpc-status", b"0"))),
    ]
    assert len(app.conn.stream_blocked) == 255


def test_answers_blocked_on_the_connection_window_go_out_in_order() -> None:
    app = App()
    app.start()
    enc = hpack.Encoder()
    app.feed(b"".join(headers_frame(sid, enc.encode(REQUEST), end_stream=True) for sid in (1, 3, 5)))
    for sid in (1, 3, 5):
        app.conn.respond(_STREAMS[sid], h2.literal(b":status", b"200"), b"d" * 30000, b"")
    out = frames(app.conn.data_to_send())
    assert [(s, len(p)) for t, _, s, p in out if t == h2.DATA] == [(1, 16384), (1, 13616), (3, 16384), (3, 13616), (5, 5535)]
    assert list(app.conn.conn_blocked) == [5]
    out = app.feed(h2.frame(h2.WINDOW_UPDATE, 0, 0, (30000).to_bytes(4, "big")))
    assert [(s, len(p)) for t, _, s, p in out if t == h2.DATA] == [(5, 16384), (5, 8081)]
    assert not app.conn.conn_blocked and not app.conn.streams


def test_a_larger_initial_window_wakes_the_blocked_streams() -> None:
    app = App()
    _blocked_answers(app, 3)
    out = app.feed(h2.frame(h2.SETTINGS, 0, 0, (4).to_bytes(2, "big") + (1000).to_bytes(4, "big")))
    assert sorted(s for t, _, s, _ in out if t == h2.DATA) == [1, 3, 5] and not app.conn.stream_blocked


def test_a_settings_frame_moves_each_stream_window_once_however_often_it_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """One SETTINGS frame may set INITIAL_WINDOW_SIZE ~170k times (1 MiB of 6-byte values):
    every open stream's window moves once per frame, to the last value (a walk per value, with
    256 streams open, kept the loop busy for seconds per frame). A value on the way that would
    push a window over 2^31-1 is still a connection error."""
    moves: list[int] = []

    class Counted(Stream):  # counts every change of a stream's window
        __slots__ = ("_window",)

        @property  # over Stream's slot: every write of a window goes through the setter
        def window(self) -> int:
            return self._window

        @window.setter
        def window(self, value: int) -> None:
            moves.append(value)
            self._window = value

    monkeypatch.setattr(h2, "Stream", Counted)
    app = App()
    app.start()
    enc = hpack.Encoder()
    app.feed(b"".join(headers_frame(sid, enc.encode(REQUEST)) for sid in range(1, 512, 2)))  # 256 streams, open
    assert len(app.conn.streams) == 256
    moves.clear()
    values = [70_000, 90_000] * 500 + [80_000]
    out = app.feed(h2.frame(h2.SETTINGS, 0, 0, b"".join((4).to_bytes(2, "big") + v.to_bytes(4, "big") for v in values)))
    assert goaway(out) is None and [t for t, f, _, _ in out if t == h2.SETTINGS and f & h2.ACK]
    assert len(moves) == 256 and {s.window for s in app.conn.streams.values()} == {80_000}
    app.feed(h2.frame(h2.WINDOW_UPDATE, 0, 1, (1000).to_bytes(4, "big")))  # stream 1: 81,000
    over = [h2.MAX_WINDOW - 500, 80_000]  # stream 1 (81,000) would pass 2^31-1 on the way, not at the end
    out = app.feed(h2.frame(h2.SETTINGS, 0, 0, b"".join((4).to_bytes(2, "big") + v.to_bytes(4, "big") for v in over)))
    assert goaway(out) == h2.FLOW_CONTROL_ERROR


def test_answers_waiting_for_window_are_bounded_in_bytes() -> None:
    """A client that opens calls and no window: the answers it leaves waiting are held up to
    max_unsent (one answer alone may be larger); the next call fails instead of being held."""
    limits = Limits(max_unsent=3000)
    app = App(limits)
    app.feed(PREFACE[: len(h2.PREFACE)] + h2.frame(h2.SETTINGS, 0, 0, (4).to_bytes(2, "big") + bytes(4)))
    enc = hpack.Encoder()
    for sid in (1, 3, 5, 7):
        app.feed(headers_frame(sid, enc.encode(REQUEST), end_stream=True))
    head, trailers = h2.literal(b":status", b"200"), h2.literal(b"grpc-status", b"0")
    app.conn.respond(_STREAMS[1], head, b"a" * 5000, trailers)  # alone: held, whatever its size
    assert app.conn.unsent == 5000 and app.conn.stream_blocked
    app.feed(h2.frame(h2.WINDOW_UPDATE, 0, 1, (5000).to_bytes(4, "big")))  # it goes out
    assert app.conn.unsent == 0 and not app.conn.stream_blocked
    app.conn.respond(_STREAMS[3], head, b"b" * 2000, trailers)
    app.conn.respond(_STREAMS[5], head, b"c" * 1000, trailers)  # up to the bound: held
    assert app.conn.unsent == 3000 and not [e for e in app.events if e[0] == "too_large"]
    app.conn.respond(_STREAMS[7], head, b"d" * 10, trailers)  # past it, with others waiting
    assert app.events[-1] == ("too_large", 7, "answers") and app.conn.unsent == 3000
    app.feed(h2.frame(h2.RST_STREAM, 0, 5, h2.CANCEL.to_bytes(4, "big")))  # a reset one holds nothing
    assert app.conn.unsent == 2000


def test_answers_that_wait_for_a_window_too_long_end_the_connection() -> None:
    limits = Limits()
    app = App(limits, now=0.0)
    streams = _blocked_answers(app, 2)
    assert app.conn.tick(1.0) is None
    app.feed(h2.frame(h2.WINDOW_UPDATE, 0, streams[0].id, (10).to_bytes(4, "big")), now=limits.idle_timeout - 1)
    assert app.conn.tick(limits.idle_timeout - 1) is None  # bytes went out: the wait counts from now
    assert app.conn.tick(2 * limits.idle_timeout - 2) is None
    why = app.conn.tick(2 * limits.idle_timeout)
    assert why is not None and "flow-control window" in why
    assert goaway(frames(app.conn.data_to_send())) == h2.ENHANCE_YOUR_CALM and app.conn.unsent == 0


# -- 4. request bodies ---------------------------------------------------------------------------


def test_a_body_in_tiny_frames_is_one_buffer() -> None:
    app = App()
    app.start()
    app.feed(headers_frame(1, hpack.Encoder().encode(REQUEST)))
    app.feed(h2.frame(h2.DATA, 0, 1, b"ab") * 5000)
    body = _STREAMS[1].body
    assert type(body) is bytearray and len(body) == 10000 and app.conn.buffered == 10000
    app.feed(h2.frame(h2.DATA, h2.END_STREAM, 1, b"!"))
    assert app.events[-1] == ("ended", 1, b"ab" * 5000 + b"!") and app.conn.buffered == 0


def test_empty_data_frames_without_end_stream_are_limited() -> None:
    limits = Limits()
    app = App(limits)
    app.start()
    enc = hpack.Encoder()
    app.feed(headers_frame(1, enc.encode(REQUEST)))
    out = app.feed(h2.frame(h2.DATA, 0, 1, b"") * limits.max_empty_data)
    assert resets(out) == []
    out = app.feed(h2.frame(h2.DATA, 0, 1, b""))
    assert resets(out) == [(1, h2.ENHANCE_YOUR_CALM)] and ("cancelled", 1) in app.events
    app.feed(headers_frame(3, enc.encode(REQUEST)) + h2.frame(h2.DATA, h2.END_STREAM, 3, b""))
    assert app.events[-1] == ("ended", 3, b"")  # an empty DATA that ends the stream is fine


def test_a_body_over_its_limit_is_answered_by_the_app_and_not_held() -> None:
    app = App(Limits(max_body=100))
    app.start()
    app.feed(headers_frame(1, hpack.Encoder().encode(REQUEST)))
    out = app.feed(h2.frame(h2.DATA, 0, 1, b"x" * 60) + h2.frame(h2.DATA, 0, 1, b"x" * 60))
    assert ("too_large", 1, "body") in app.events and app.conn.buffered == 0
    assert resets(out) == [(1, h2.NO_ERROR)]  # answered while the client still sends: stop
    out = app.feed(h2.frame(h2.DATA, h2.END_STREAM, 1, b"late"))  # sent before it saw the reset
    assert resets(out) == [] and goaway(out) is None


def test_request_trailers_end_the_stream() -> None:
    """HEADERS after DATA with END_STREAM: the request's trailers (some gRPC clients send
    them), checked as trailers (no pseudo-header) and dropped, not parsed as a request head."""
    app = App()
    app.start()
    enc = hpack.Encoder()
    app.feed(headers_frame(1, enc.encode(REQUEST)) + h2.frame(h2.DATA, 0, 1, b"body"))
    out = app.feed(headers_frame(1, enc.encode([("x-trailer", "1"), ("grpc-status", "0")]), end_stream=True))
    assert resets(out) == [] and goaway(out) is None
    assert app.events[-1] == ("ended", 1, b"body") and app.parsed == 1
    app.feed(headers_frame(3, enc.encode(REQUEST)))  # the table stays in step: the next call decodes
    out = app.feed(headers_frame(3, enc.encode([(":path", "/late")]), end_stream=True))  # a pseudo-header
    assert resets(out) == [(3, h2.PROTOCOL_ERROR)] and goaway(out) is None
    out = app.feed(headers_frame(5, enc.encode(REQUEST)) + headers_frame(5, enc.encode([("x-t", "1")])))
    assert goaway(out) == h2.PROTOCOL_ERROR  # trailers must end the stream


# -- 5. timeouts and the header cache --------------------------------------------------------------


def test_no_preface_in_time_closes() -> None:
    app = App(Limits(preface_timeout=10.0), now=100.0)
    app.feed(h2.PREFACE[:5], now=101.0)
    assert app.conn.tick(109.0) is None
    assert "preface" in (app.conn.tick(110.5) or "")


def test_an_idle_connection_is_closed_with_goaway_no_error() -> None:
    app = App(Limits(idle_timeout=60.0))
    app.start()
    enc = hpack.Encoder()
    app.feed(headers_frame(1, enc.encode(REQUEST)), now=10.0)  # open, unfinished: not idle
    assert app.conn.tick(100.0) is None
    app.feed(h2.frame(h2.DATA, h2.END_STREAM, 1, b"x"), now=100.0)
    app.conn.headers(_STREAMS[1], h2.literal(b":status", b"200"), True)
    assert app.conn.tick(159.0) is None
    why = app.conn.tick(160.5)  # over 60 s since a tick last saw a stream open (at 100)
    assert why is not None and goaway(frames(app.conn.data_to_send())) == h2.NO_ERROR


def test_the_header_cache_is_bounded_in_bytes() -> None:
    limits = Limits(header_cache_bytes=4096, header_cache_entry=1024)
    app = App(limits)
    app.start()
    enc = hpack.Encoder()
    enc.header_table_size = 0  # no dynamic table: every block leaves it unchanged, so is cacheable
    app.feed(headers_frame(1, size_update(0) + enc.encode(REQUEST), end_stream=True))
    app.conn.decoder.header_table_size = 0
    for i, sid in enumerate(range(3, 403, 2)):
        app.feed(headers_frame(sid, enc.encode([*REQUEST, ("x-n", str(i) * 20)]), end_stream=True))
    assert 0 < app.conn.cache_bytes <= 4096 and 0 < len(app.conn.header_cache) < 200
    app.feed(headers_frame(403, enc.encode([*REQUEST, ("x-big", "b" * 2000)]), end_stream=True))
    assert not any(b"x-big" in bytes(k) for k in app.conn.header_cache)
    app.conn.connection_lost()
    assert not app.conn.header_cache


# -- 6. a header list over the limit fails its stream only ----------------------------------------


def test_an_oversized_header_list_fails_its_stream_and_the_table_stays_in_step() -> None:
    limits = Limits()
    app = App(limits)
    app.start()
    enc = hpack.Encoder()
    big = enc.encode([*REQUEST, ("x-indexed", "kept"), ("x-big", "v" * (limits.max_header_list + 10))])
    out = app.feed(headers_frame(1, big, end_stream=True))
    assert ("too_large", 1, "headers") in app.events and goaway(out) is None
    out = app.feed(headers_frame(3, enc.encode([*REQUEST, ("x-indexed", "kept")]), end_stream=True))
    assert goaway(out) is None
    assert app.events[-2][:2] == ("request", 3) and app.events[-2][2][b"x-indexed"] == b"kept"


def test_a_block_that_inflates_past_max_decoded_is_a_connection_error() -> None:
    app = App(Limits(max_decoded=100_000))
    app.start()
    enc = hpack.Encoder()
    first = enc.encode([*REQUEST, ("x-v", "v" * 3000)])
    app.feed(headers_frame(1, first, end_stream=True))
    out = app.feed(headers_frame(3, enc.encode(REQUEST) + b"\xbe" * 100))  # the 3 KB entry, 100 times
    assert goaway(out) == h2.COMPRESSION_ERROR


# -- 7. the smaller protocol points ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [(":scheme", "http"), (":path", "/svc/M"), (":authority", "x")],  # no :method
        [*REQUEST, ("X-Upper", "1")],
        [*REQUEST, ("connection", "keep-alive")],
        [*REQUEST[:2], (":path", "/a"), (":path", "/b")],
        [("content-type", "application/grpc"), *REQUEST],  # a pseudo-header after a regular one
        [*REQUEST, (":status", "200")],
        [*REQUEST, ("te", "gzip")],
    ],
    ids=["no-method", "uppercase", "connection", "two-paths", "pseudo-late", "response-pseudo", "te"],
)
def test_a_malformed_request_is_a_stream_error(headers: list[tuple[str, str]]) -> None:
    app = App()
    app.start()
    enc = hpack.Encoder()
    out = app.feed(headers_frame(1, enc.encode(headers), end_stream=True))
    assert resets(out) == [(1, h2.PROTOCOL_ERROR)] and goaway(out) is None
    out = app.feed(headers_frame(3, enc.encode(REQUEST), end_stream=True))
    assert goaway(out) is None and ("request", 3) in [e[:2] for e in app.events]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (h2.frame(h2.WINDOW_UPDATE, 0, 9, (1).to_bytes(4, "big")), h2.PROTOCOL_ERROR),  # idle stream
        (h2.frame(h2.RST_STREAM, 0, 9, bytes(4)), h2.PROTOCOL_ERROR),  # idle stream
        (h2.frame(h2.SETTINGS, h2.ACK, 0, bytes(6)), h2.FRAME_SIZE_ERROR),
        (h2.frame(h2.RST_STREAM, 0, 1, bytes(3)), h2.FRAME_SIZE_ERROR),
        (h2.frame(h2.PRIORITY, 0, 0, bytes(5)), h2.PROTOCOL_ERROR),
        (h2.frame(h2.HEADERS, h2.END_HEADERS | h2.PRIORITY_FLAG, 3, bytes(4)), h2.FRAME_SIZE_ERROR),
        (h2.frame(h2.PING, 0, 0, bytes(7)), h2.FRAME_SIZE_ERROR),
    ],
    ids=[
        "window-update-idle",
        "rst-idle",
        "settings-ack-payload",
        "short-rst",
        "priority-stream-0",
        "priority-flag-short",
        "short-ping",
    ],
)
def test_connection_errors(frame: bytes, code: int) -> None:
    app = App()
    app.start()
    app.feed(headers_frame(1, hpack.Encoder().encode(REQUEST)))
    assert goaway(app.feed(frame)) == code


def test_a_reused_stream_id_is_a_protocol_error() -> None:
    app = App()
    app.start()
    enc = hpack.Encoder()
    app.feed(headers_frame(3, enc.encode(REQUEST), end_stream=True))
    assert goaway(app.feed(headers_frame(1, enc.encode(REQUEST), end_stream=True))) == h2.PROTOCOL_ERROR


def test_a_priority_frame_of_the_wrong_length_is_a_stream_error() -> None:
    app = App()
    app.start()
    app.feed(headers_frame(1, hpack.Encoder().encode(REQUEST)))
    out = app.feed(h2.frame(h2.PRIORITY, 0, 1, bytes(4)))
    assert resets(out) == [(1, h2.FRAME_SIZE_ERROR)] and goaway(out) is None


def test_connection_lost_cancels_every_stream_and_holds_nothing() -> None:
    app = App()
    streams = _blocked_answers(app, 3)
    app.conn.connection_lost()
    assert [e for e in app.events if e[0] == "cancelled"] == [("cancelled", s.id) for s in streams]
    assert all(s.pending is None for s in streams) and not app.conn.stream_blocked and not app.conn.streams
