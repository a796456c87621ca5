"""The HTTP/1.1 server under the state API, over raw sockets: framing, limits, order, errors."""

from __future__ import annotations

import asyncio
import logging
import select
import shutil
import socket
import subprocess
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import pytest

from devinit.server.http_api import error_response
from devinit.server.http_wire import MAX_BODY, H1Server, Request, Response
from support import DevinitServer, need, write_component

CALLS: list[bytes] = []  # paths that reached the handler
T = TypeVar("T")
SERVER: dict[str, H1Server] = {}  # the module's server (the port fixture's), to look inside


async def echo(req: Request) -> Response:
    CALLS.append(req.path)
    if req.path == b"/boom":
        raise RuntimeError("handler bug")
    if req.path == b"/slow":
        await asyncio.sleep(0.2)
    if req.path == b"/yield":  # a bare yield: the handler goes on in the next loop turn
        await asyncio.sleep(0)
    if req.path == b"/future":  # waits on a future completed by a later callback
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, fut.set_result, None)
        await fut
    if req.path == b"/big":
        return 200, [], b"b" * 65536
    if req.path == b"/huge":
        return 200, [], b"h" * (4 * 1024 * 1024)
    body = b"%s %s?%s len=%d" % (req.method.encode(), req.path, req.query, len(req.body))
    return 200, [(b"Content-Type", b"text/plain")], body


@contextmanager
def h1_server(**options: Any) -> Iterator[H1Server]:
    """An H1Server with the echo handler on a loop in a thread, on a free port."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, H1Server] = {}

    async def main() -> None:
        server = H1Server(echo, "127.0.0.1", 0, error_response=error_response, **options)
        await server.start()
        holder["server"] = server
        started.set()
        await server.serve()

    t = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    t.start()
    assert started.wait(10)
    try:
        yield holder["server"]
    finally:
        loop.call_soon_threadsafe(holder["server"].stop)
        t.join(10)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """The module's server (idle timeout 1 s), also in SERVER to look inside."""
    with h1_server(idle_timeout=1.0) as server:
        SERVER["server"] = server
        yield server.port


def talk(port: int, data: bytes, *, until_close: bool = False, responses: int = 1) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return got
            got += chunk
            if not until_close and got.count(b"HTTP/1.1 ") >= responses and _complete(got, responses):
                return got


def _complete(data: bytes, n: int) -> bool:
    """Whether ``data`` holds ``n`` whole responses (Content-Length framed)."""
    pos = 0
    for _ in range(n):
        head_end = data.find(b"\r\n\r\n", pos)
        if head_end < 0:
            return False
        head = data[pos:head_end].lower()
        length = 0
        for line in head.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        pos = head_end + 4 + length
        if len(data) < pos:
            return False
    return True


def test_keep_alive_and_pipelining_in_order(port):
    reqs = b"".join(
        b"GET /slow?n=1 HTTP/1.1\r\nHost: x\r\n\r\n" if i == 0 else b"GET /fast?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
        for i in range(5)
    )
    got = talk(port, reqs, responses=5)
    bodies = [part.split(b"\r\n\r\n", 1)[1][:30] for part in got.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert [b.split(b" ")[1] for b in bodies] == [b"/slow?n=1", b"/fast?n=1", b"/fast?n=2", b"/fast?n=3", b"/fast?n=4"]
    assert b"Connection: close" not in got


def test_post_body_content_length_and_chunked(port):
    got = talk(port, b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    assert got.endswith(b"POST /p? len=5")
    chunked = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    assert talk(port, chunked).endswith(b"POST /c? len=7")


def test_expect_100_continue(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"PUT /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"abc")
        assert s.recv(1000).endswith(b"PUT /e? len=3")


def test_declared_too_large_body_is_refused_without_reading_it(port):
    got = talk(port, b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), until_close=True)
    assert got.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in got and b"ERR_BODY_TOO_LARGE" in got


def test_chunked_body_over_the_limit_is_413(port):
    chunk = b"x" * (1024 * 1024)
    data = b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    data += b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)) + b"0\r\n\r\n"
    got = talk(port, data)
    assert got.startswith(b"HTTP/1.1 413 ")


def test_http_1_0_closes_after_the_answer(port):
    got = talk(port, b"GET /old HTTP/1.0\r\n\r\n", until_close=True)
    assert got.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in got


def test_malformed_request_is_400_and_closed(port):
    got = talk(port, b"GARBAGE\r\n\r\n", until_close=True)
    assert got.startswith(b"HTTP/1.1 400 ") and b"ERR_MALFORMED_REQUEST" in got


def test_huge_headers_are_431(port):
    got = talk(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", until_close=True)
    assert got.startswith(b"HTTP/1.1 431 ")


def test_a_long_pipeline_of_immediate_answers_is_answered_in_order(port):
    """Handlers that answer without waiting finish inside the read callback (http_wire._Call): 3000
    of them queued behind one that waits must all be answered, in order, without growing the
    stack (each one answered at once must not start the next from inside itself)."""
    n = 3000
    data = b"GET /future HTTP/1.1\r\nHost: x\r\n\r\n" + b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n))
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(data)
        got = b""
        while got.count(b"HTTP/1.1 200 OK") <= n or not got.endswith(b"GET /p%d? len=0" % (n - 1)):
            chunk = s.recv(1 << 20)
            assert chunk, "the server closed the connection"
            got += chunk
    bodies = [part.rsplit(b"\r\n\r\n", 1)[1] for part in got.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert bodies == [b"GET /future? len=0"] + [b"GET /p%d? len=0" % i for i in range(n)]


def test_handlers_that_wait_in_different_ways_answer_in_order(port):
    paths = [b"/yield", b"/a", b"/future", b"/boom", b"/b", b"/yield", b"/future"]
    data = b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p for p in paths)
    got = talk(port, data, responses=len(paths))
    statuses = [int(part[:3]) for part in got.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [200, 200, 200, 500, 200, 200, 200]
    for p in (b"/yield", b"/a", b"/future", b"/b"):
        assert b"GET %s? len=0" % p in got
    assert got.index(b"GET /a?") < got.index(b"GET /future?") < got.index(b"ERR_INTERNAL") < got.index(b"GET /b?")


def test_handler_error_is_500_and_connection_goes_on(port):
    got = talk(port, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n", responses=2)
    assert got.startswith(b"HTTP/1.1 500 ") and b"ERR_INTERNAL" in got and got.endswith(b"GET /after? len=0")


def test_head_has_length_but_no_body(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while not got.endswith(b"GET /g? len=0"):
            got += s.recv(1000)
    first, second = got.split(b"HTTP/1.1 200 OK\r\n")[1:]
    # the handler saw a GET ("GET /h? len=0": 13 bytes), the client got its length only
    assert b"Content-Length: 13" in first and first.endswith(b"\r\n\r\n")


def test_idle_connections_are_closed(port):
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(1000)
        assert s.recv(1000) == b""  # closed by the server after its idle timeout (1 s here)


def test_a_refused_request_is_not_run(port):
    """431 for huge headers: the request (httptools goes on parsing it) must not reach the handler."""
    CALLS.clear()
    got = talk(
        port,
        b"POST /refused HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 70000 + b"\r\nContent-Length: 3\r\n\r\nabc",
        until_close=True,
    )
    assert got.startswith(b"HTTP/1.1 431 ")
    assert talk(port, b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"GET /after? len=0")
    assert CALLS == [b"/after"]


def test_a_client_that_does_not_read_is_not_buffered_without_limit(port):
    """Pipelined requests from a client that never reads its answers: the server stops reading
    them once its own write buffer is full, so the client cannot push everything it has."""
    request = b"GET /big HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 1000 + b"\r\n\r\n"
    total = 20_000 * len(request)  # 20 MB asking for 1.3 GB of answers: more than any buffers hold
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(3)
        try:
            while sent < total:  # bounded by total and by the 3 s timeout of a stalled send
                sent += s.send(request)
        except (TimeoutError, BlockingIOError, ConnectionError):  # or dropped: unread past the idle timeout
            pass
    assert sent < total


def _on_server_loop(fn: Callable[[], T]) -> T:
    """Run ``fn()`` on the module server's loop (its thread) and return what it returns."""
    server = SERVER["server"]

    async def call() -> T:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), server.loop).result(10)


def _connection_state() -> list[tuple[int, bool, int]]:
    """Per open connection: (requests queued, writes blocked, bytes in its write buffer)."""
    return _on_server_loop(
        lambda: [
            (len(c.queue), c.write_blocked, c.transport.get_write_buffer_size() if c.transport else 0)
            for c in SERVER["server"].connections
        ]
    )


def test_answers_to_requests_read_at_once_wait_while_the_client_does_not_read(port):
    """Thousands of small pipelined requests for 64 KiB answers, in one send, never read: the
    server stops answering once its write buffer is full, so what it holds is bounded by bytes
    (it wrote every answer of a read, ~130 MiB here, whatever the client read), and drops the
    connection once the client has not read for the idle timeout."""
    n = 2000
    data = b"".join(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" for _ in range(n))
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(data)
        state: list[tuple[int, bool, int]] = []
        for _ in range(200):  # until the server has read the requests (bounded: ~10 s)
            state = _connection_state()
            if any(queued or buffered > 8 * 1024 * 1024 for queued, _, buffered in state):
                break
            threading.Event().wait(0.05)
        assert len(state) == 1 and state[0][2] <= 1024 * 1024 and state[0][1], state
        for _ in range(400):  # the idle timeout is 1 s here; bounded: ~20 s
            if not _connection_state():
                break
            threading.Event().wait(0.05)
        assert _connection_state() == [], "a connection whose client never reads was kept"


def test_a_client_reading_a_large_answer_slowly_is_not_taken_for_idle(port):
    """A client that reads a 4 MiB answer slowly, for longer than the idle timeout (1 s here),
    but all the time: the answer shrinking in the write buffer counts as activity, so the
    client gets all of it (the connection was dropped midway: only a client that reads none of
    its answers is)."""
    size = 4 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        # The server's kernel buffer kept small too, so that the answer waits in its write
        # buffer (as on a slow network) rather than in loopback's few MiB of kernel memory.
        me = s.getsockname()
        for _ in range(200):  # until the server has accepted it (bounded: ~10 s)
            mine = [
                c for c in list(SERVER["server"].connections)
                if c.transport is not None and c.transport.get_extra_info("peername") == me
            ]  # fmt: skip
            if mine:
                break
            time.sleep(0.05)
        assert mine, "the server did not accept the connection"
        mine[0].transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        s.sendall(b"GET /huge HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        started = time.monotonic()
        while time.monotonic() - started < 60:  # bounded; ~4 s at this pace
            chunk = s.recv(16384)
            if not chunk:
                break
            got += chunk
            head, sep, body = got.partition(b"\r\n\r\n")
            if sep and len(body) >= size:
                break
            time.sleep(0.02)
    assert got.startswith(b"HTTP/1.1 200 ")
    assert got.split(b"\r\n\r\n", 1)[1] == b"h" * size, f"cut off after {len(got)} bytes"


def test_a_bad_pipelined_request_is_answered_after_the_ones_before_it(port):
    got = talk(port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n", until_close=True)
    first, second = got.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 ") and first.endswith(b"GET /slow? len=0")
    assert second.startswith(b"400 ") and b"Connection: close" in second


# -- issue 13: hostile and clumsy clients ------------------------------------------------------


def _never_ending(port: int, start: bytes) -> tuple[int, bytes]:
    """Send ``start``, then a field value that never ends (up to 8 MiB, as long as the server
    reads): (bytes of it sent, the answer's first bytes, or b"" if none came)."""
    sent = 0
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(start)
        piece = b"a" * 16384
        s.setblocking(False)
        while sent < 8 * 1024 * 1024 and not got:
            try:
                sent += s.send(piece)
            except (BlockingIOError, ConnectionError):
                pass
            try:
                got = s.recv(65536)
            except BlockingIOError:
                select.select([s], [], [], 0.01)
    return sent, got


def test_a_header_that_never_ends_is_refused_as_it_arrives(port):
    """httptools hands a header over only once it ends: the head is bounded as its bytes
    arrive, so a header value that never ends gets 431 after ~64 KiB, not after all of it."""
    sent, got = _never_ending(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ")
    assert got.startswith(b"HTTP/1.1 431 "), (sent, got[:100])
    assert sent < 2 * 1024 * 1024


def test_one_byte_chunks_are_held_in_one_buffer(port):
    """A chunked body of 1-byte chunks: one buffer on the server, not a list of pieces
    (300k chunks held ~12 MB as a list)."""
    n = 300_000
    data = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * n + b"0\r\n\r\n"
    tracemalloc.start()
    try:
        got = talk(port, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.endswith(b"POST /c? len=%d" % n)
    assert peak < 4 * 1024 * 1024, peak


def test_an_h2c_upgrade_is_ignored_and_the_request_served(port):
    """What `curl --http2` sends over http://: served as HTTP/1.1, body included, and the
    request after it answered in step (RFC 9110 7.8: a server may ignore Upgrade)."""
    upgrade = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
    data = (
        b"POST /a HTTP/1.1\r\nHost: x\r\n" + upgrade + b"Content-Length: 5\r\n\r\nhello" + b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    got = talk(port, data, responses=2)
    assert got.count(b"HTTP/1.1 200 OK") == 2 and b"101" not in got.split(b"\r\n")[0]
    assert b"POST /a? len=5" in got and got.endswith(b"GET /b? len=0")
    chunked = b"POST /c HTTP/1.1\r\nHost: x\r\n" + upgrade + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert talk(port, chunked).endswith(b"POST /c? len=3")


def test_host_header_rules(port):
    assert talk(port, b"GET /a HTTP/1.1\r\n\r\n", until_close=True).startswith(b"HTTP/1.1 400 ")
    two = talk(port, b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", until_close=True)
    assert two.startswith(b"HTTP/1.1 400 ") and b"two Host" in two
    assert talk(port, b"GET /old HTTP/1.0\r\n\r\n", until_close=True).startswith(b"HTTP/1.1 200 ")  # 1.0: none needed
    assert CALLS[-1] == b"/old"


def test_a_413_reaches_the_client_that_is_still_sending(port):
    """urllib sends the whole body before it reads: the answer must survive (half-close and
    read what is still coming) instead of a reset for the unread body."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/big", data=b"x" * (MAX_BODY + 1024 * 1024), method="POST")
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(req, timeout=20)
    assert excinfo.value.code == 413 and b"ERR_BODY_TOO_LARGE" in excinfo.value.read()


def test_http_1_0_keep_alive_is_echoed(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for path in (b"/one", b"/two"):
            s.sendall(b"GET %s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % path)
            got = b""
            while not got.endswith(b"GET %s? len=0" % path):
                chunk = s.recv(1000)
                assert chunk, "closed: the keep-alive was not kept"
                got += chunk
            assert b"Connection: keep-alive\r\n" in got


def test_head_works_wherever_get_does(tmp_path):
    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.in-memory")
    srv = DevinitServer(folder)
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            assert c.post("/v1.0/state/statestore", json=[{"key": "h", "value": {"a": 1}}]).status_code == 204
            for path in ("/v1.0/state/statestore/h", "/v1.0/healthz", "/v1.0/healthz/outbound", "/ui/"):
                got, head = c.get(path), c.head(path)
                assert head.status_code == got.status_code, path
                assert head.content == b"" and head.headers.get("content-length") == got.headers.get("content-length")
            head = c.head("/v1.0/metadata")  # its health stamps change from one read to the next
            assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 100
            assert c.head("/v1.0/state/statestore/h").headers["etag"] == c.get("/v1.0/state/statestore/h").headers["etag"]
    finally:
        srv.stop()


def test_curl_http2_over_cleartext(tmp_path):
    """`curl --http2` (an h2c upgrade) on a POST and on two URLs in one connection."""
    need(shutil.which("curl") is not None, "curl is not installed")
    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.in-memory")
    srv = DevinitServer(folder)
    base = srv.url + "/v1.0/state/statestore"
    try:
        post = subprocess.run(
            ["curl", "-sS", "--http2", "-o", "/dev/null", "-w", "%{http_code}", "-d", '[{"key":"c","value":"v"}]', base],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert post.stdout == "204", post
        two = subprocess.run(
            ["curl", "-sS", "--http2", "-w", " %{http_code}\n", base + "/c", base + "/missing"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert two.stdout.splitlines() == ['"v" 200', " 204"], two
    finally:
        srv.stop()


def test_requests_pipelined_after_an_answer_that_ends_the_connection_are_not_run(port, caplog):
    """After an answer that ends the connection (Connection: close, a refused request) the
    server half-closes: what the client pipelined behind it is neither run nor answered.
    (A request behind a refused one was run, and writing its answer, or the 400 for bytes
    after a Connection: close, after the half-close raised: "Fatal error: protocol.
    data_received() call failed" logged, and the connection reset.)"""
    CALLS.clear()
    got = talk(
        port,
        b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"
        b"PUT /continue HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
        until_close=True,
    )
    assert got.count(b"Content-Length: ") == 1 and b"Connection: close" in got and got.endswith(b"GET /last? len=0")
    refused = talk(port, b"GET /no-host HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n", until_close=True)
    assert refused.count(b"Content-Length: ") == 1 and refused.startswith(b"HTTP/1.1 400 ")
    assert CALLS == [b"/last"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_many_h2c_upgrades_in_one_chunk_are_all_served(port):
    """Each request that asks for an upgrade is given to the parser again without it: for a
    few thousand of them in one read, in a loop (it recursed once per request: past the
    recursion limit the connection died, and each level held a copy of the rest)."""
    n = 3000
    upgrade = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
    data = b"".join(b"GET /u%d HTTP/1.1\r\nHost: x\r\n%s\r\n" % (i, upgrade) for i in range(n))
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(data)
        got = b""
        while not got.endswith(b"GET /u%d? len=0" % (n - 1)):
            chunk = s.recv(1 << 20)
            assert chunk, f"the server closed the connection after {got.count(b'HTTP/1.1 200 OK')} answers"
            got += chunk
    bodies = [part.rsplit(b"\r\n\r\n", 1)[1] for part in got.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert bodies == [b"GET /u%d? len=0" % i for i in range(n)]


def test_an_h2c_upgrade_keeps_the_host_rules(port):
    """The head given again without the upgrade has one Host: two (or none) are still a 400."""
    upgrade = b"Connection: Upgrade\r\nUpgrade: h2c\r\n"
    CALLS.clear()
    two = talk(port, b"GET /two HTTP/1.1\r\nHost: x\r\nHost: y\r\n" + upgrade + b"\r\n", until_close=True)
    assert two.startswith(b"HTTP/1.1 400 ") and b"two Host" in two
    none = talk(port, b"GET /none HTTP/1.1\r\n" + upgrade + b"\r\n", until_close=True)
    assert none.startswith(b"HTTP/1.1 400 ") and b"no Host" in none
    assert CALLS == []


def test_a_trailer_that_never_ends_is_refused_as_it_arrives(port):
    """httptools holds each field of a chunked body's trailer section until it ends (by
    concatenation, as a head's): bounded as the head is, so a trailer that never ends gets
    431 after ~64 KiB instead of being held (and copied again per read) without end."""
    sent, got = _never_ending(port, b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: ")
    assert got.startswith(b"HTTP/1.1 431 "), (sent, got[:100])
    assert sent < 2 * 1024 * 1024
    chunked = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = b"".join(b"%x\r\n%s\r\n" % (n, b"x" * n) for n in (70_000, 1, 200_000))
    assert talk(port, chunked + chunks + b"0\r\nX-Done: yes\r\n\r\n").endswith(b"POST /c? len=270001")  # data is not a trailer


def test_connections_past_the_cap_are_answered_503_and_closed(caplog):
    """A listener serves at most ``max_connections`` at once: the next is told why, in its
    answer and once in the log; once one closes, a new one is served."""
    with h1_server(max_connections=2) as server, caplog.at_level(logging.WARNING, logger="devinit.http"):
        p = server.port
        first = socket.create_connection(("127.0.0.1", p), timeout=10)
        second = socket.create_connection(("127.0.0.1", p), timeout=10)
        for s in (first, second):  # both served, so both are counted
            s.sendall(b"GET /in HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(1000).endswith(b"GET /in? len=0")
        for _ in range(2):
            refused = talk(p, b"GET /over HTTP/1.1\r\nHost: x\r\n\r\n", until_close=True)
            assert refused.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in refused
            assert b"ERR_TOO_MANY_CONNECTIONS" in refused and b"2 HTTP connections are open" in refused
        first.close()
        for _ in range(200):  # until the server has seen it close (bounded: ~10 s)
            if len(server.connections) < 2:
                break
            threading.Event().wait(0.05)
        assert talk(p, b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"GET /again? len=0")
        second.close()
    refusals = [r.getMessage() for r in caplog.records if "refusing a connection" in r.getMessage()]
    assert len(refusals) == 1 and "the most devinit serves at once" in refusals[0], refusals
