"""The live feed: recent state API calls (HTTP and gRPC), for the inspector and its long-poll.

Recording is off until a client polls the feed (``GET /devinit/v1/events``) and goes off
again ``WATCH_SECONDS`` after the last poll, so that nobody pays for it unwatched: the front
ends are wrapped (``watch_http`` / ``watch_grpc``, in ``serve.py``) by a call that checks one
attribute and hands the request straight to the real handler. Watched, each state call costs
a clock read on each side and one event in a bounded ring; what the call was about (store,
keys) is read from the request there and then, only while someone watches.

Polls wait for new events without a Task (the handlers run under ``drive.Driven``): a future
resolved by the next event, or by ``loop.call_later`` when the wait is over.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from google.protobuf.message import DecodeError

from devinit.proto import api_v1
from devinit.server.grpc_wire import STATUS_CODES, Call, Reply
from devinit.server.http_wire import Request, Response

RING = 2000  # events kept
WATCH_SECONDS = 60.0  # recording stays on this long after the last poll
MAX_WAIT = 30.0  # longest a poll waits for an event
MAX_WAITERS = 64  # polls waiting at once; more are answered at once, empty
COALESCE = 0.05  # a waiting poll is answered this long after the first new event: events come in batches
MAX_KEY_CHARS = 200  # a key is shown cut to this length

_GRPC_STATUS = {code: name for name, code in STATUS_CODES.items()}
_HTTP_STATE = b"/v1.0/state/"
_HTTP_QUERY = b"/v1.0-alpha1/state/"


@dataclass(slots=True)
class Event:
    """One state API call as the feed shows it."""

    seq: int
    time: float  # epoch seconds when it arrived
    protocol: str  # "http" | "grpc"
    store: str
    app_id: str | None  # the key prefix's app id (the part before "||"), None without one
    operation: str  # get, save, delete, bulk-get, bulk-delete, transaction, query
    key: str | None  # the first key of the call (cut to MAX_KEY_CHARS)
    keys: int  # how many keys the call named
    status: str  # "204", "409", "OK", "ABORTED", ...
    ok: bool
    ms: float  # latency from the whole request to the answer

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "protocol": self.protocol,
            "store": self.store,
            "appId": self.app_id,
            "operation": self.operation,
            "key": self.key,
            "keys": self.keys,
            "status": self.status,
            "ok": self.ok,
            "ms": round(self.ms, 3),
        }


class Feed:
    """A ring of recent calls, recorded only while watched; ``poll`` waits for new ones.

    ``prefixes`` maps a store name to the key prefix the runtime adds (for the app id column).
    """

    def __init__(self, prefixes: dict[str, str], size: int = RING, watch_seconds: float = WATCH_SECONDS) -> None:
        self.prefixes = prefixes
        self.events: deque[Event] = deque(maxlen=size)
        self.seq = 0
        self.watched = False
        self.watch_seconds = watch_seconds
        self._until = 0.0
        self._off: asyncio.TimerHandle | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._wake: asyncio.TimerHandle | None = None

    # -- watching -----------------------------------------------------------------------

    def watch(self) -> None:
        """A client polled: record for the next ``watch_seconds``."""
        loop = asyncio.get_running_loop()
        self._until = loop.time() + self.watch_seconds
        self.watched = True
        if self._off is None:
            self._off = loop.call_at(self._until, self._maybe_off)

    def _maybe_off(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() >= self._until:
            self.watched = False
            self._off = None
        else:  # polled since: look again when the new time is up
            self._off = loop.call_at(self._until, self._maybe_off)

    # -- recording ----------------------------------------------------------------------

    def record(self, protocol: str, store: str, operation: str, keys: list[str], status: str, ok: bool, started: float) -> None:
        """Add one call (``started``: its ``time.perf_counter()`` at arrival)."""
        ms = (time.perf_counter() - started) * 1000
        self.seq += 1
        prefix = self.prefixes.get(store, "")
        app_id = prefix[:-2] if prefix.endswith("||") else None
        first = keys[0][:MAX_KEY_CHARS] if keys else None
        self.events.append(
            Event(self.seq, time.time() - ms / 1000, protocol, store, app_id, operation, first, len(keys), status, ok, ms)
        )
        if self._waiters and self._wake is None:
            self._wake = asyncio.get_running_loop().call_later(COALESCE, self._wake_all)

    def _wake_all(self) -> None:
        self._wake = None
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            _resolve(w)

    def since(self, after: int) -> list[Event]:
        """The events kept whose sequence number is above ``after``, oldest first."""
        if not self.events or self.events[-1].seq <= after:
            return []
        first = self.events[0].seq
        start = max(0, after + 1 - first)
        return [self.events[i] for i in range(start, len(self.events))]

    async def poll(self, after: int | None, wait: float) -> tuple[list[Event], int]:
        """Events after ``after`` (None: none, just the current position), waiting up to
        ``wait`` seconds for the first one; returns them and the sequence number to poll after."""
        self.watch()
        if after is None or after > self.seq:  # a first poll, or a server restarted since
            return [], self.seq
        found = self.since(after)
        if found or wait <= 0 or len(self._waiters) >= MAX_WAITERS:
            return found, self.seq
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(min(wait, MAX_WAIT), _resolve, waiter)
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return self.since(after), self.seq

    # -- the front ends, wrapped ----------------------------------------------------------

    def watch_http(
        self, app: Callable[[Request], Coroutine[Any, Any, Response]]
    ) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """``app`` as an ``http_wire`` handler that records state calls while watched."""

        def handler(req: Request) -> Coroutine[Any, Any, Response]:
            if not self.watched:
                return app(req)
            return self._http(app(req), req)

        return handler

    async def _http(self, answer: Awaitable[Response], req: Request) -> Response:
        started = time.perf_counter()
        status = 500  # the handler raised: http_wire answers 500
        try:
            response = await answer
            status = response[0]
            return response
        finally:
            what = _http_call(req)
            if what is not None:
                self.record("http", what[0], what[1], what[2], str(status), status < 400, started)

    def watch_grpc(self, handler: Callable[[Call], Coroutine[Any, Any, Reply]]) -> Callable[[Call], Coroutine[Any, Any, Reply]]:
        """``handler`` as a ``grpc_wire`` handler that records state calls while watched."""

        def wrapped(call: Call) -> Coroutine[Any, Any, Reply]:
            if not self.watched:
                return handler(call)
            return self._grpc(handler(call), call)

        return wrapped

    async def _grpc(self, answer: Awaitable[Reply], call: Call) -> Reply:
        started = time.perf_counter()
        code = STATUS_CODES["UNKNOWN"]
        try:
            reply = await answer
            code = reply.status
            return reply
        finally:
            what = _grpc_call(call)
            if what is not None:
                self.record("grpc", what[0], what[1], what[2], _GRPC_STATUS.get(code, str(code)), code == 0, started)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# -- what a call was about ---------------------------------------------------------------


def _decode(raw: bytes) -> str:
    return unquote_to_bytes(raw).decode("utf-8", "replace")


def _body_keys(body: bytes, pick: Callable[[Any], list[Any]]) -> list[str]:
    try:
        found = pick(orjson.loads(body))
    except (orjson.JSONDecodeError, TypeError, AttributeError, KeyError):
        return []
    return [k for k in found if isinstance(k, str)]


def _save_keys(doc: Any) -> list[Any]:
    if isinstance(doc, str):  # the Dapr how-to's string-wrapped array
        doc = orjson.loads(doc)
    return [item.get("key") for item in doc if isinstance(item, dict)] if isinstance(doc, list) else []


def _tx_keys(doc: Any) -> list[Any]:
    ops = doc.get("operations") if isinstance(doc, dict) else None
    return [(op.get("request") or {}).get("key") for op in ops or [] if isinstance(op, dict)]


def _bulk_keys(doc: Any) -> list[Any]:
    keys = doc.get("keys") if isinstance(doc, dict) else None
    return list(keys) if isinstance(keys, list) else []


def _http_call(req: Request) -> tuple[str, str, list[str]] | None:
    """(store, operation, keys) of a state API request, or None for any other route."""
    path, method = req.path, req.method
    if path.startswith(_HTTP_STATE):
        store, _, rest = path[len(_HTTP_STATE) :].partition(b"/")
        name = _decode(store)
        if not rest:
            return name, "save", _body_keys(req.body, _save_keys)
        if rest == b"bulk":
            return name, "bulk-get", _body_keys(req.body, _bulk_keys)
        if rest == b"transaction":
            return name, "transaction", _body_keys(req.body, _tx_keys)
        return name, "delete" if method == "DELETE" else "get", [_decode(rest)]
    if path.startswith(_HTTP_QUERY) and path.endswith(b"/query"):
        return _decode(path[len(_HTTP_QUERY) : -6]), "query", []
    return None


def _grpc_call(call: Call) -> tuple[str, str, list[str]] | None:
    """(store, operation, keys) of a state RPC, or None for any other method."""
    name = call.method.rpartition("/")[2]
    spec = _GRPC_METHODS.get(name)
    if spec is None:
        return None
    message_class, operation, read = spec
    try:
        request = getattr(api_v1, message_class).FromString(call.message)
    except DecodeError:
        return None
    store, keys = read(request)
    return store, operation, keys


_GRPC_METHODS: dict[str, tuple[str, str, Callable[[Any], tuple[str, list[str]]]]] = {
    "GetState": ("GetStateRequest", "get", lambda r: (r.store_name, [r.key])),
    "SaveState": ("SaveStateRequest", "save", lambda r: (r.store_name, [s.key for s in r.states])),
    "DeleteState": ("DeleteStateRequest", "delete", lambda r: (r.store_name, [r.key])),
    "GetBulkState": ("GetBulkStateRequest", "bulk-get", lambda r: (r.store_name, list(r.keys))),
    "DeleteBulkState": ("DeleteBulkStateRequest", "bulk-delete", lambda r: (r.store_name, [s.key for s in r.states])),
    "ExecuteStateTransaction": (
        "ExecuteStateTransactionRequest",
        "transaction",
        lambda r: (r.storeName, [op.request.key for op in r.operations]),
    ),
    "QueryStateAlpha1": ("QueryStateRequest", "query", lambda r: (r.store_name, [])),
}
