"""The HTTP/1.1 server under the state API, over raw sockets: framing, limits, order, errors."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from devinit.server.http_api import error_response
from devinit.server.http_wire import MAX_BODY, H1Server, Request, Response
from support import free_port

CALLS: list[bytes] = []  # paths that reached the handler


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
    body = b"%s %s?%s len=%d" % (req.method.encode(), req.path, req.query, len(req.body))
    return 200, [(b"Content-Type", b"text/plain")], body


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """An H1Server with the echo handler on a loop in a thread."""
    p = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, H1Server] = {}

    async def main() -> None:
        server = H1Server(echo, "127.0.0.1", p, error_response=error_response, idle_timeout=1.0)
        await server.start()
        holder["server"] = server
        started.set()
        await server.serve()

    t = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    t.start()
    assert started.wait(10)
    yield p
    loop.call_soon_threadsafe(holder["server"].stop)
    t.join(10)


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
        except (TimeoutError, BlockingIOError):
            pass
    assert sent < total


def test_a_bad_pipelined_request_is_answered_after_the_ones_before_it(port):
    got = talk(port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n", until_close=True)
    first, second = got.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 ") and first.endswith(b"GET /slow? len=0")
    assert second.startswith(b"400 ") and b"Connection: close" in second
