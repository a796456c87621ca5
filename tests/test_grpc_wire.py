"""devinit's own HTTP/2 under gRPC (server/grpc_wire.py), frame by frame.

The client is the ``h2`` library (python-hyper), an HTTP/2 implementation independent of the
server's, over a plain socket, so each test controls what the SDKs never do on their own:
windows, CONTINUATION, resets, deadlines, oversized and compressed messages, bad prefaces,
too many streams. The SDK tests (test_grpc_sdk.py, test_js_sdk.py) cover the API itself.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from dapr.proto import api_v1

from support import DevinitServer, RedisServer, write_component

GET = "/dapr.proto.runtime.v1.Dapr/GetState"
SAVE = "/dapr.proto.runtime.v1.Dapr/SaveState"


def grpc_message(message: Any, compressed: bool = False) -> bytes:
    body = message.SerializeToString()
    return bytes([1 if compressed else 0]) + len(body).to_bytes(4, "big") + body


class Client:
    """One HTTP/2 connection driven by hand."""

    def __init__(self, port: int, window: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()
        self.events: list[Any] = []
        self.closed = False

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def headers(self, path: str, end_stream: bool = False, extra: list[tuple[str, str]] | None = None) -> int:
        sid = self.conn.get_next_available_stream_id()
        head = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "127.0.0.1"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *(extra or []),
        ]
        self.conn.send_headers(sid, head, end_stream=end_stream)
        self.flush()
        return sid

    def call(self, path: str, body: bytes, extra: list[tuple[str, str]] | None = None) -> int:
        sid = self.headers(path, extra=extra)
        while True:  # as much as the server's windows and frame size allow, then wait for more
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                if self.ended(sid):  # answered (and reset) before the whole body went out
                    return sid
                self.read(1.0)
                continue
            chunk, body = body[:room], body[room:]
            self.conn.send_data(sid, chunk, end_stream=not body)
            self.flush()
            if not body:
                return sid

    def read(self, timeout: float = 10.0, ack: bool = True) -> None:
        """Read once (up to ``timeout``), collecting events."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return
        if not data:
            self.closed = True
            return
        for ev in self.conn.receive_data(data):
            self.events.append(ev)
            if ack and isinstance(ev, h2.events.DataReceived):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        self.flush()

    def until(self, done: Any, timeout: float = 10.0, ack: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while not done() and not self.closed and time.monotonic() < deadline:
            self.read(max(0.01, deadline - time.monotonic()), ack)
        assert done(), f"not done after {timeout}s: {self.events}"

    def ended(self, sid: int) -> bool:
        return any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid for e in self.events)

    def result(self, sid: int) -> tuple[dict[bytes, bytes], bytes]:
        """(headers and trailers merged, data) of a finished stream."""
        self.until(lambda: self.ended(sid))
        meta: dict[bytes, bytes] = {}
        data = b""
        for e in self.events:
            if getattr(e, "stream_id", None) != sid:
                continue
            if isinstance(e, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                meta.update(dict(e.headers))
            elif isinstance(e, h2.events.DataReceived):
                data += e.data
        return meta, data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevinitServer]:
    folder = tmp_path_factory.mktemp("wire") / "components"
    write_component(folder, "statestore", "state.in-memory")
    srv = DevinitServer(folder)
    yield srv
    srv.stop()


def save(client: Client, key: str, value: bytes) -> None:
    item = api_v1.SaveStateRequest(store_name="statestore", states=[{"key": key, "value": value}])
    meta, _ = client.result(client.call(SAVE, grpc_message(item)))
    assert meta[b"grpc-status"] == b"0", meta


def get(client: Client, key: str, extra: list[tuple[str, str]] | None = None) -> tuple[dict[bytes, bytes], bytes]:
    return client.result(client.call(GET, grpc_message(api_v1.GetStateRequest(store_name="statestore", key=key)), extra))


def test_settings_and_ping_are_acknowledged(server: DevinitServer) -> None:
    c = Client(server.grpc_port)
    c.conn.ping(b"12345678")
    c.flush()
    c.until(lambda: any(isinstance(e, h2.events.PingAckReceived) and e.ping_data == b"12345678" for e in c.events))
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in c.events)
    remote = c.conn.remote_settings
    assert remote.max_concurrent_streams == 256 and remote.initial_window_size == 1 << 20
    c.close()


def test_a_response_larger_than_the_window_waits_for_window_updates(server: DevinitServer) -> None:
    value = os.urandom(200_000)
    c = Client(server.grpc_port, window=1000)
    save(c, "big", value)
    sid = c.call(GET, grpc_message(api_v1.GetStateRequest(store_name="statestore", key="big")))
    # Without WINDOW_UPDATE from us, the server sends at most the stream's 1,000 bytes.
    c.until(lambda: any(isinstance(e, h2.events.DataReceived) for e in c.events), ack=False)
    for _ in range(5):
        c.read(0.1, ack=False)
    got = sum(len(e.data) for e in c.events if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)
    assert 0 < got <= 1000 and not c.ended(sid)
    for e in c.events:
        if isinstance(e, h2.events.DataReceived):
            c.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
    c.flush()
    meta, data = c.result(sid)
    assert meta[b"grpc-status"] == b"0"
    assert api_v1.GetStateResponse.FromString(data[5:]).data == value
    c.close()


def test_a_call_whose_request_ends_with_trailers_is_answered(server: DevinitServer) -> None:
    """Some gRPC clients end a request with a trailers HEADERS frame after its DATA."""
    c = Client(server.grpc_port)
    save(c, "trailered", b"v")
    sid = c.headers(GET)
    c.conn.send_data(sid, grpc_message(api_v1.GetStateRequest(store_name="statestore", key="trailered")))
    c.conn.send_headers(sid, [("x-request-trailer", "1")], end_stream=True)
    c.flush()
    meta, data = c.result(sid)
    assert meta[b"grpc-status"] == b"0", meta
    assert api_v1.GetStateResponse.FromString(data[5:]).data == b"v"
    c.close()


def test_a_header_block_split_over_continuation_frames(server: DevinitServer) -> None:
    """HEADERS + CONTINUATION, written by hand (h2 never splits under our 1 MiB frame size)."""
    c = Client(server.grpc_port)
    c.until(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.events))
    save(c, "cont", b"v")
    block = hpack.Encoder().encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", GET),
            (":authority", "x"),
            ("content-type", "application/grpc"),
            ("x-pad", "p" * 3000),
        ]
    )
    sid = 101
    parts = [block[i : i + 1000] for i in range(0, len(block), 1000)]
    frames = [_frame(1, 0, sid, parts[0])] + [
        _frame(9, 0x4 if i == len(parts) - 1 else 0, sid, p) for i, p in enumerate(parts[1:], 1)
    ]
    body = grpc_message(api_v1.GetStateRequest(store_name="statestore", key="cont"))
    raw = socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10)
    raw.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b"") + b"".join(frames) + _frame(0, 0x1, sid, body))
    got = _read_until(raw, b"grpc-status")
    assert b"application/grpc" in got and b"\x01v" in got  # GetStateResponse.data = "v"
    raw.close()
    c.close()


def test_a_bad_preface_is_goaway_and_closed(server: DevinitServer) -> None:
    raw = socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10)
    raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = _read_until(raw, None)
    frames = _frames(got)
    goaway = [p for t, _, _, p in frames if t == 7]
    assert goaway and int.from_bytes(goaway[0][4:8], "big") == 1  # PROTOCOL_ERROR
    raw.close()


def test_oversized_and_compressed_messages_are_refused_and_the_connection_goes_on(server: DevinitServer) -> None:
    c = Client(server.grpc_port)
    big = api_v1.SaveStateRequest(store_name="statestore", states=[{"key": "huge", "value": b"x" * (4 * 1024 * 1024 + 10)}])
    meta, _ = c.result(c.call(SAVE, grpc_message(big)))
    assert meta[b"grpc-status"] == b"8" and b"MiB" in meta[b"grpc-message"]  # RESOURCE_EXHAUSTED
    meta, _ = c.result(c.call(GET, grpc_message(api_v1.GetStateRequest(store_name="statestore", key="k"), compressed=True)))
    assert meta[b"grpc-status"] == b"13"  # INTERNAL: the compressed flag without grpc-encoding
    meta, _ = c.result(c.call(GET, b"\0\0\0\0\x09abc"))  # a length prefix that lies
    assert meta[b"grpc-status"] == b"13"
    save(c, "after", b"ok")
    assert get(c, "after")[0][b"grpc-status"] == b"0"
    c.close()


def test_a_streaming_call_is_answered_at_its_headers_and_reset(server: DevinitServer) -> None:
    c = Client(server.grpc_port)
    sid = c.headers("/dapr.proto.runtime.v1.Dapr/SubscribeTopicEventsAlpha1")  # client stream left open
    c.until(lambda: c.ended(sid))
    meta, _ = c.result(sid)
    assert meta[b"grpc-status"] == b"12" and b"not implemented" in meta[b"grpc-message"]
    assert any(isinstance(e, h2.events.StreamReset) and e.stream_id == sid and e.error_code == 0 for e in c.events)
    save(c, "s", b"1")  # the connection goes on
    c.close()


def test_too_many_open_streams_are_refused(server: DevinitServer) -> None:
    c = Client(server.grpc_port)
    c.until(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.events))
    c.conn.remote_settings.max_concurrent_streams = 1000  # h2 would stop us at the server's 256 itself
    c.conn.remote_settings.acknowledge()
    sids = [c.headers(GET) for _ in range(257)]  # none ends: all stay open
    c.until(lambda: c.ended(sids[-1]))
    reset = [e for e in c.events if isinstance(e, h2.events.StreamReset)]
    assert [(e.stream_id, e.error_code) for e in reset] == [(sids[-1], 7)]  # REFUSED_STREAM
    c.close()


def test_grpc_timeout_and_client_reset_with_a_frozen_store(tmp_path: Path) -> None:
    rs = RedisServer(tmp_path / "redis")
    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.redis", {"redisHost": rs.host, "readTimeout": "30s"})
    srv = DevinitServer(folder)
    c = Client(srv.grpc_port)
    try:
        save(c, "k", b"v")
        os.kill(rs.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            meta, _ = get(c, "k", [("grpc-timeout", "300m")])
            assert meta[b"grpc-status"] == b"4", meta  # DEADLINE_EXCEEDED, from the server itself
            assert time.monotonic() - t0 < 5
            sid = c.call(GET, grpc_message(api_v1.GetStateRequest(store_name="statestore", key="k")))
            time.sleep(0.2)
            c.conn.reset_stream(sid)  # the client gives up
            c.flush()
            # DATA after the client's END_STREAM, on a call still waiting for the store
            raw = _connect(srv.grpc_port)
            body = grpc_message(api_v1.GetStateRequest(store_name="statestore", key="k"))
            raw.sendall(_frame(1, 0x4, 1, _request_block(hpack.Encoder())) + _frame(0, 0x1, 1, body) + _frame(0, 0, 1, b"more"))
            reset = (4).to_bytes(3, "big") + bytes((3, 0)) + (1).to_bytes(4, "big") + (5).to_bytes(4, "big")
            assert reset in _read_until(raw, reset, timeout=5)  # RST_STREAM(STREAM_CLOSED)
            raw.close()
        finally:
            os.kill(rs.proc.pid, signal.SIGCONT)
        meta, data = get(c, "k")  # same connection, store back
        assert meta[b"grpc-status"] == b"0" and api_v1.GetStateResponse.FromString(data[5:]).data == b"v"
        assert "Traceback" not in srv.log()
    finally:
        c.close()
        srv.stop()
        rs.stop()


# -- raw frames -------------------------------------------------------------------------


def _frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload


def _frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out = []
    while len(data) >= 9:
        n = int.from_bytes(data[:3], "big")
        out.append((data[3], data[4], int.from_bytes(data[5:9], "big"), data[9 : 9 + n]))
        data = data[9 + n :]
    return out


def _read_until(sock: socket.socket, marker: bytes | None, timeout: float = 10.0) -> bytes:
    """Read until ``marker`` appears (None: until the server closes)."""
    sock.settimeout(timeout)
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
        if marker is not None and marker in got:
            break
    return got


# -- hostile or unusual clients (found in review) --------------------------------------------


def _connect(port: int) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b""))
    return raw


def _request_block(encoder: hpack.Encoder, path: str = GET, extra: list[tuple[str, str]] | None = None) -> bytes:
    return encoder.encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "x"),
            ("content-type", "application/grpc"),
            *(extra or []),
        ]
    )


def test_a_flood_of_empty_continuation_frames_is_a_connection_error(server: DevinitServer) -> None:
    raw = _connect(server.grpc_port)
    block = _request_block(hpack.Encoder())
    raw.sendall(_frame(1, 0, 1, block) + _frame(9, 0, 1, b"") * 5000)
    t0 = time.monotonic()
    frames = _frames(_read_until(raw, None))
    goaway = [p for t, _, _, p in frames if t == 7]
    assert goaway and int.from_bytes(goaway[0][4:8], "big") == 1, frames  # PROTOCOL_ERROR, connection closed
    assert time.monotonic() - t0 < 5
    raw.close()
    c = Client(server.grpc_port)  # the server goes on
    save(c, "after-flood", b"1")
    c.close()


def test_a_header_table_size_update_is_never_skipped(server: DevinitServer) -> None:
    """Blocks that resize the HPACK table must be decoded every time (not served from the memo
    of unchanged blocks), or the server's table drifts from the client's."""
    c = Client(server.grpc_port)
    save(c, "resize", b"r")
    c.close()
    raw = _connect(server.grpc_port)
    enc = hpack.Encoder()
    body = grpc_message(api_v1.GetStateRequest(store_name="statestore", key="resize"))
    plain = _request_block(enc)

    def size_update(n: int) -> bytes:
        out = bytearray([0x20 | min(n, 31)]) if n < 31 else bytearray([0x3F])
        if n >= 31:
            rest = n - 31
            while rest >= 128:
                out.append(rest & 0x7F | 0x80)
                rest >>= 7
            out.append(rest)
        return bytes(out)

    blocks = [size_update(4096) + plain, size_update(100) + plain, size_update(4096) + plain]
    # then a header added to the (4096-byte) table and referred to by index in the next call
    big = b"\x40" + bytes([5]) + b"x-big" + bytes([0x7F, 200 - 127]) + b"v" * 200
    blocks += [plain + big, plain + b"\xbe"]
    sid = 1
    for block in blocks:
        raw.sendall(_frame(1, 0x4, sid, block) + _frame(0, 0x1, sid, body))
        got = _read_until(raw, b"grpc-status")
        frames = _frames(got)
        assert not [p for t, _, _, p in frames if t == 7], f"GOAWAY on stream {sid}: {frames}"
        assert any(t == 0 and s == sid for t, _, s, _ in frames), frames  # DATA: the item came back
        sid += 2
    raw.close()


def test_the_deadline_counts_from_the_headers(server: DevinitServer) -> None:
    """A call whose message never arrives still ends at its grpc-timeout."""
    raw = _connect(server.grpc_port)
    raw.sendall(_frame(1, 0x4, 1, _request_block(hpack.Encoder(), extra=[("grpc-timeout", "300m")])))
    t0 = time.monotonic()
    got = _read_until(raw, b"grpc-status")
    assert b"grpc-status\x01\x34" in got  # DEADLINE_EXCEEDED (4)
    assert time.monotonic() - t0 < 5
    raw.close()


def test_grpc_web_is_refused(server: DevinitServer) -> None:
    c = Client(server.grpc_port)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(
        sid,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", GET),
            (":authority", "x"),
            ("content-type", "application/grpc-web+proto"),
        ],
        end_stream=True,
    )
    c.flush()
    meta, _ = c.result(sid)
    assert meta[b"grpc-status"] == b"2" and b"gRPC-Web" in meta[b"grpc-message"]
    c.close()


def test_a_long_error_message_is_cut_to_fit_client_metadata_limits(server: DevinitServer) -> None:
    c = Client(server.grpc_port)
    unknown = api_v1.GetStateRequest(store_name="s" * 3000, key="k")  # refused, quoting the store name in full
    meta, _ = c.result(c.call(GET, grpc_message(unknown)))
    assert meta[b"grpc-status"] == b"3"
    assert len(meta[b"grpc-message"]) < 8000 and meta[b"grpc-message"].endswith(b"(truncated)")
    c.close()


def test_graceful_stop_says_goaway_first_and_finishes_the_calls_in_flight() -> None:
    import asyncio
    import threading

    from devinit.server.grpc_wire import GrpcServer, Reply
    from support import free_port

    port = free_port()
    loop = asyncio.new_event_loop()
    holder: dict[str, Any] = {}
    started = threading.Event()

    async def slow(call: Any) -> Reply:
        await asyncio.sleep(0.5)
        return Reply(message=b"done")

    async def main() -> None:
        srv = GrpcServer(slow, lambda call: None, "127.0.0.1", port)
        await srv.start()
        holder["stop"] = stop = asyncio.Event()
        started.set()
        await stop.wait()
        await srv.stop(grace=5)

    t = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    t.start()
    assert started.wait(10)
    raw = _connect(port)
    raw.sendall(_frame(1, 0x4, 1, _request_block(hpack.Encoder())) + _frame(0, 0x1, 1, b"\0\0\0\0\0"))
    time.sleep(0.1)
    loop.call_soon_threadsafe(holder["stop"].set)
    frames = [(t_, s, p) for t_, _, s, p in _frames(_read_until(raw, None)) if t_ in (0, 1, 7)]
    t.join(10)
    raw.close()
    kinds = [k for k, _, _ in frames]
    assert kinds == [7, 1, 0, 1, 7], frames  # GOAWAY, answer (HEADERS, DATA, trailers), final GOAWAY
    assert int.from_bytes(frames[0][2][:4], "big") == 2**31 - 1  # first: no new calls, these go on
    assert int.from_bytes(frames[-1][2][:4], "big") == 1  # last: stream 1 was the last one served
    assert frames[2][2] == b"\0\0\0\0\x04done"


def test_frames_on_a_closed_stream_are_errors_unless_we_reset_it(server: DevinitServer) -> None:
    body = grpc_message(api_v1.GetStateRequest(store_name="statestore", key="closed"))
    enc = hpack.Encoder()
    call = _frame(1, 0x4, 1, _request_block(enc)) + _frame(0, 0x1, 1, body)
    # DATA on a stream both sides ended: RST_STREAM(STREAM_CLOSED), the connection goes on
    raw = _connect(server.grpc_port)
    raw.sendall(call)
    _read_until(raw, b"grpc-status")
    raw.sendall(_frame(0, 0, 1, b"late"))
    reset = (4).to_bytes(3, "big") + bytes((3, 0)) + (1).to_bytes(4, "big") + (5).to_bytes(4, "big")
    assert reset in _read_until(raw, reset, timeout=5)
    raw.close()
    # HEADERS reopening it: a connection error (PROTOCOL_ERROR: a stream id not above the last
    # one opened, RFC 9113 5.1.1), not a call left hanging
    raw = _connect(server.grpc_port)
    raw.sendall(call)
    _read_until(raw, b"grpc-status")
    raw.sendall(_frame(1, 0x4 | 0x1, 1, _request_block(enc)))
    goaway = [p for t, _, _, p in _frames(_read_until(raw, None)) if t == 7]
    assert goaway and int.from_bytes(goaway[0][4:8], "big") == 1, goaway
    raw.close()
    # a stream we reset (answered at its headers while the client still sent): its DATA is dropped
    raw = _connect(server.grpc_port)
    enc = hpack.Encoder()
    raw.sendall(_frame(1, 0x4, 1, _request_block(enc, "/dapr.proto.runtime.v1.Dapr/SubscribeTopicEventsAlpha1")))
    first = _frames(_read_until(raw, reset[:9] + (0).to_bytes(4, "big")))  # answered, then RST_STREAM(NO_ERROR)
    assert any(t == 3 and s == 1 and p == bytes(4) for t, _, s, p in first), first
    raw.sendall(_frame(0, 0, 1, b"more") + _frame(1, 0x4, 3, _request_block(enc)) + _frame(0, 0x1, 3, body))
    got = _frames(_read_until(raw, b"grpc-status\x01\x30"))  # stream 3 answered OK
    assert any(t == 0 and s == 3 for t, _, s, _ in got), got
    assert not [p for t, _, s, p in got if t == 7 or (t == 3 and s == 1)], got  # no GOAWAY, no second reset
    raw.close()


# -- issue 13: resource control, one socket-level test per point (details: test_h2_connection.py) --


def _goaway_code(data: bytes) -> int | None:
    codes = [int.from_bytes(p[4:8], "big") for t, _, _, p in _frames(data) if t == 7]
    return codes[0] if codes else None


def test_hpack_size_updates_and_oversized_header_frames_end_the_connection(server: DevinitServer) -> None:
    """RFC 7541 4.2 allows two size updates at the start of a block; a HEADERS frame full of
    them once stalled every client of the server. Three are a COMPRESSION_ERROR, and a
    HEADERS frame over the block cap ends the connection before it is decoded."""
    raw = _connect(server.grpc_port)
    raw.sendall(_frame(1, 0x4 | 0x1, 1, b"\x20\x3f\xe1\x1f\x20" + _request_block(hpack.Encoder())))
    assert _goaway_code(_read_until(raw, None)) == 9  # COMPRESSION_ERROR
    raw.close()
    raw = _connect(server.grpc_port)
    raw.sendall(_frame(1, 0x4 | 0x1, 1, b"\x3f\xe1\x1f" * 100_000))  # 300 KB of size updates
    assert _goaway_code(_read_until(raw, None)) == 1  # PROTOCOL_ERROR: over the cap
    raw.close()
    c = Client(server.grpc_port)
    save(c, "after-updates", b"1")  # the server goes on
    c.close()


def test_resets_the_server_is_made_to_send_are_counted(server: DevinitServer) -> None:
    """HEADERS then WINDOW_UPDATE(0) on its stream: the server resets it (PROTOCOL_ERROR).
    Those resets count like the client's own: past 2,000 in 10 s, GOAWAY ENHANCE_YOUR_CALM."""
    raw = _connect(server.grpc_port)
    enc = hpack.Encoder()
    burst = b"".join(_frame(1, 0x4, sid, _request_block(enc)) + _frame(8, 0, sid, bytes(4)) for sid in range(1, 2 * 2001 + 1, 2))
    raw.sendall(burst)
    got = _read_until(raw, None, timeout=20)
    assert _goaway_code(got) == 0xB, _frames(got)[-3:]  # ENHANCE_YOUR_CALM
    raw.close()


def test_empty_data_frames_are_limited(server: DevinitServer) -> None:
    raw = _connect(server.grpc_port)
    raw.sendall(_frame(1, 0x4, 1, _request_block(hpack.Encoder())) + _frame(0, 0, 1, b"") * 100)
    reset = (4).to_bytes(3, "big") + bytes((3, 0)) + (1).to_bytes(4, "big") + (0xB).to_bytes(4, "big")
    assert reset in _read_until(raw, reset, timeout=10)  # RST_STREAM(ENHANCE_YOUR_CALM)
    raw.close()


def test_a_connection_without_preface_is_closed(server: DevinitServer) -> None:
    raw = socket.create_connection(("127.0.0.1", server.grpc_port), timeout=30)
    raw.sendall(b"PRI * HTTP/2.0\r\n")  # half a preface, then nothing
    raw.settimeout(30)
    got = b""
    closed = False
    try:
        while True:
            chunk = raw.recv(65536)
            if not chunk:
                closed = True
                break
            got += chunk
    except TimeoutError:
        pass
    raw.close()
    assert closed, "still open after 30 s without a preface"


def test_an_oversized_header_list_fails_that_call_only(server: DevinitServer) -> None:
    c = Client(server.grpc_port)
    save(c, "hl", b"v")
    body = grpc_message(api_v1.GetStateRequest(store_name="statestore", key="hl"))
    other = c.headers(GET)  # a call in flight on the same connection
    big = c.call(GET, body, extra=[("x-big", "b" * (70 * 1024))])
    meta, _ = c.result(big)
    assert meta[b":status"] == b"431" and meta[b"grpc-status"] == b"8", meta  # RESOURCE_EXHAUSTED
    c.conn.send_data(other, body, end_stream=True)
    c.flush()
    meta, data = c.result(other)
    assert meta[b"grpc-status"] == b"0" and api_v1.GetStateResponse.FromString(data[5:]).data == b"v"
    c.close()


def test_malformed_requests_are_stream_errors_and_other_content_types_415(server: DevinitServer) -> None:
    raw = _connect(server.grpc_port)
    enc = hpack.Encoder()
    no_method = enc.encode([(":scheme", "http"), (":path", GET), (":authority", "x"), ("content-type", "application/grpc")])
    upper = _request_block(enc, extra=[("X-Upper", "1")])
    raw.sendall(_frame(1, 0x4 | 0x1, 1, no_method) + _frame(1, 0x4 | 0x1, 3, upper))
    reset3 = (4).to_bytes(3, "big") + bytes((3, 0)) + (3).to_bytes(4, "big") + (1).to_bytes(4, "big")
    got = _frames(_read_until(raw, reset3, timeout=10))
    assert [(s, p) for t, _, s, p in got if t == 3] == [(1, bytes([0, 0, 0, 1])), (3, bytes([0, 0, 0, 1]))], got
    text = enc.encode(
        [(":method", "POST"), (":scheme", "http"), (":path", GET), (":authority", "x"), ("content-type", "text/plain")]
    )
    raw.sendall(_frame(1, 0x4 | 0x1, 5, text))
    got = _read_until(raw, b"gRPC-Web")
    headers = [p for t, _, s, p in _frames(got) if t == 1 and s == 5]
    assert headers and dict(hpack.Decoder().decode(headers[0], raw=True))[b":status"] == b"415"
    raw.close()


def test_a_closed_connection_leaves_no_cycle_holding_its_answers() -> None:
    """An answer waiting for a window when the client goes: nothing of it may stay reachable
    from a reference cycle (the collector would free it only at its next full pass)."""
    import asyncio
    import gc

    from devinit.server.grpc_wire import GrpcServer, Reply
    from support import free_port

    async def big(call: Any) -> Reply:
        await asyncio.sleep(0)
        return Reply(message=b"x" * (1 << 20))

    async def scenario() -> list[Any]:
        port = free_port()
        srv = GrpcServer(big, lambda call: None, "127.0.0.1", port)
        await srv.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + _frame(4, 0, 0, b"")
            + b"".join(_frame(1, 0x4, s, _request_block(hpack.Encoder())) + _frame(0, 1, s, b"\0\0\0\0\0") for s in (1, 3, 5))
        )
        await writer.drain()
        await reader.readexactly(1000)  # answers are under way, blocked on the 64 KiB window
        writer.close()
        for _ in range(1000):  # up to 10 s: the server sees the close within a few loop turns
            await asyncio.sleep(0.01)
            if not srv.connections:
                break
        assert not srv.connections
        await srv.stop(grace=0)
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector would free is kept, to be looked at
        try:
            gc.collect()
            return [o for o in gc.garbage if type(o).__name__ in ("Stream", "_Stream")]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()

    gc.disable()
    try:
        cyclic = asyncio.run(scenario())
    finally:
        gc.enable()
    assert cyclic == []


def test_a_message_in_tiny_data_frames_is_held_in_one_buffer() -> None:
    """100,000 DATA frames of 2 bytes: the server holds the message in one buffer, not a list
    of 100,000 pieces (1M such frames cost 52 MiB for 2 MB of body)."""
    import asyncio
    import tracemalloc

    from devinit.server.grpc_wire import GrpcServer, Reply
    from support import free_port

    async def size(call: Any) -> Reply:
        return Reply(message=b"%d" % len(call.message))

    message = b"m" * 200_000
    body = b"\0" + len(message).to_bytes(4, "big") + message
    frames = b"".join(_frame(0, 0, 1, body[i : i + 2]) for i in range(0, len(body) - 1, 2)) + _frame(0, 1, 1, body[-1:])

    async def scenario() -> tuple[bytes, int]:
        port = free_port()
        srv = GrpcServer(size, lambda call: None, "127.0.0.1", port)
        await srv.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b"") + _frame(1, 0x4, 1, _request_block(hpack.Encoder()))
        )
        tracemalloc.start()
        try:
            writer.write(frames)
            await writer.drain()
            got = b""
            while b"grpc-status" not in got:
                got += await asyncio.wait_for(reader.read(65536), 20)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        writer.close()
        await srv.stop(grace=0)
        return got, peak

    got, peak = asyncio.run(scenario())
    assert b"\0\0\0\0\x06200000" in got  # the message arrived whole (its length, answered)
    assert peak < 2_500_000, peak


def test_connections_past_the_cap_get_goaway_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """A gRPC listener serves at most ``max_connections`` at once: the next one is told why in
    a GOAWAY ENHANCE_YOUR_CALM (logged once); once one closes, a new one is served."""
    import asyncio

    from devinit.server.grpc_wire import GrpcServer, Reply

    async def answer(call: Any) -> Reply:
        return Reply(message=b"")

    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b"")

    async def until_closed(reader: asyncio.StreamReader) -> bytes:
        got = b""
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            got += chunk
        return got

    async def scenario() -> None:
        srv = GrpcServer(answer, lambda call: None, "127.0.0.1", 0, max_connections=1)
        await srv.start()
        try:
            first = await asyncio.open_connection("127.0.0.1", srv.port)
            first[1].write(preface)
            assert (await first[0].readexactly(9))[3] == 4  # its SETTINGS: served
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
                writer.write(preface)
                got = await until_closed(reader)
                writer.close()
                assert _goaway_code(got) == 0xB and b"1 gRPC connections are open" in got, got
            first[1].close()
            for _ in range(1000):  # up to 10 s: the server sees the close within a few loop turns
                if not srv.connections:
                    break
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(preface + _frame(6, 0, 0, b"12345678"))
            got = b""
            while b"12345678" not in got:
                got += await asyncio.wait_for(reader.read(65536), 10)
            assert _goaway_code(got) is None
            writer.close()
        finally:
            await srv.stop(grace=0)

    with caplog.at_level(logging.WARNING, logger="devinit.grpc"):
        asyncio.run(scenario())
    refusals = [r.getMessage() for r in caplog.records if "refusing a connection" in r.getMessage()]
    assert len(refusals) == 1 and "the most devinit serves at once" in refusals[0], refusals
