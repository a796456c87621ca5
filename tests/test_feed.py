"""The live feed's recorder (devinit/server/feed.py) on a real event loop: on only while watched,
a bounded ring, bounded waits. What it records from real HTTP and gRPC calls is tested against
a running server in test_inspector_api.py."""

from __future__ import annotations

import asyncio
import time

from devinit.server.feed import MAX_WAITERS, Feed
from devinit.server.grpc_wire import Call, Reply
from devinit.server.http_wire import Request, Response


def _request(path: bytes, method: str = "GET", body: bytes = b"") -> Request:
    return Request(method, path, b"", {}, body)


async def _app(req: Request) -> Response:
    return (204 if req.method != "GET" else 200), [], b""


async def _grpc(call: Call) -> Reply:
    return Reply(status=10, detail="etag mismatch")


def test_records_only_while_watched_and_stops_after_the_watch_time():
    async def main() -> None:
        feed = Feed({"statestore": "alpha||"}, watch_seconds=0.3)
        handler = feed.watch_http(_app)
        unwatched = handler(_request(b"/v1.0/state/statestore/k"))
        assert unwatched.cr_code is _app.__code__  # the app's own coroutine: nothing in between
        await unwatched
        assert feed.seq == 0
        events, position = await feed.poll(None, 0)  # a client starts watching
        assert (events, position) == ([], 0) and feed.watched
        watched = handler(_request(b"/v1.0/state/statestore", "POST", b'[{"key":"a","value":1},{"key":"b","value":2}]'))
        assert watched.cr_code is not _app.__code__
        await watched
        await feed.watch_grpc(_grpc)(Call("/dapr.proto.runtime.v1.Dapr/GetState", {}, b""))
        await handler(_request(b"/v1.0/metadata"))  # not a state call
        events, position = await feed.poll(0, 0)
        assert [(e.protocol, e.operation, e.key, e.keys, e.status, e.ok, e.app_id) for e in events] == [
            ("http", "save", "a", 2, "204", True, "alpha"),
            ("grpc", "get", "", 1, "ABORTED", False, None),
        ]
        assert position == 2
        deadline = time.monotonic() + 10
        while feed.watched and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not feed.watched  # nobody polled for watch_seconds: off again
        again = handler(_request(b"/v1.0/state/statestore/k"))
        assert again.cr_code is _app.__code__
        await again

    asyncio.run(main())


def test_the_ring_is_bounded_and_polls_wait_for_the_next_event():
    async def main() -> None:
        feed = Feed({}, size=5)
        await feed.poll(None, 0)
        for i in range(12):
            feed.record("http", "s", "get", [f"k{i}"], "200", True, time.perf_counter())
        kept, position = await feed.poll(0, 0)
        assert [e.key for e in kept] == ["k7", "k8", "k9", "k10", "k11"] and position == 12
        assert (await feed.poll(position, 0))[0] == []
        # a waiting poll is answered by the next event; one from before a restart gets the position
        waiting = asyncio.ensure_future(feed.poll(position, 20))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        feed.record("grpc", "s", "save", ["new"], "OK", True, time.perf_counter())
        events, position = await asyncio.wait_for(waiting, 10)
        assert [e.key for e in events] == ["new"] and position == 13
        assert await feed.poll(999, 5) == ([], 13)
        # a wait ends by itself
        assert await asyncio.wait_for(feed.poll(position, 0.1), 10) == ([], 13)

    asyncio.run(main())


def test_waiting_polls_are_bounded():
    async def main() -> None:
        feed = Feed({})
        await feed.poll(None, 0)
        waiting = [asyncio.ensure_future(feed.poll(0, 20)) for _ in range(MAX_WAITERS)]
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in waiting)
        assert await asyncio.wait_for(feed.poll(0, 20), 1) == ([], 0)  # one too many: answered at once
        for w in waiting:
            w.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert not feed._waiters  # a poll that went away leaves nothing behind

    asyncio.run(main())
