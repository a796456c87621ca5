"""The devinit route (``/devinit/v1/...``) and the inspector page (``/ui/``).

Dapr's API cannot list keys, and its routes refuse a key holding ``||``, so they cannot reach
another app's keys. This route is devinit's own (docs/state-api.md, "The devinit route"):
keys as stored, prefix included, of every app id, with their etag, expiry and size; raw
reads and etag-checked writes of one key; export and import pages; clear; and the live feed
(``feed.py``). ``devinit state`` and the page both use it, so one code path reaches every
store. The API token applies as on the state API; the page's static files (no data in them)
are served without it, with a strict Content-Security-Policy and no framing.

``devinit ui`` gets the page signed in without the token ever being on a command line (a
browser's argv is readable by every local user): it asks for a ticket (``POST tickets``, with
the token), opens ``/ui/#ticket=...``, and the page trades the ticket for the token once
(``POST tickets/redeem``, the one call without the token). See ``Tickets``.

Values travel as JSON when the stored bytes are exactly the compact JSON text of a value
(what Dapr's HTTP API stores), so that writing them back gives the same bytes; any other
bytes travel as base64 with ``contentType`` ``text/plain; charset=utf-8`` (valid UTF-8) or
``application/octet-stream``.

Nothing here is on the hot path: ``http_api`` hands over requests under these two prefixes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from devinit.errors import ApiError, malformed
from devinit.server.feed import MAX_WAIT, Feed
from devinit.server.http_wire import Request, Response
from devinit.server.json_values import dumps_value, loads
from devinit.server.runtime import MAX_KEY_BYTES, Runtime, check_token
from devinit.server.urls import query_params
from devinit.state.base import (
    MAX_LIST_LIMIT,
    DeleteOp,
    KeyInfo,
    KeyPage,
    SetOp,
    Store,
    StoredItem,
    plain_count,
    ttl_seconds,
)

PREFIX = b"/devinit/v1/"
UI = b"/ui"
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
BINARY_TYPE = "application/octet-stream"
DEFAULT_PAGE = 100
MAX_PAGE = MAX_LIST_LIMIT  # keys per listing, export or clear page (1000: a store's most)
MAX_IMPORT = 10_000  # items per import request (the body is held to 4 MiB by http_wire too)
MAX_CURSOR = 4096  # characters of a cursor given back to us
# Bytes of values per export page (by the listing's sizes): a page ends early past it, with a
# cursor to go on; a key whose value alone is larger makes a page of its own.
EXPORT_BUDGET = 4 * 1024 * 1024
_EXPORT_LISTINGS = 12  # listings per export page at most: 1000 halved down to 1, and two more
TICKET_SECONDS = 60.0  # a ticket's life: devinit ui opens the browser at once
MAX_TICKETS = 16  # outstanding tickets kept; a new one pushes out the oldest
MAX_USED_TICKETS = 256  # used tickets remembered within their life; past it no new ticket is given
MAX_TICKET_CHARS = 128  # a ticket given back to us (ours are 43)

_API_HEADERS = [(b"Content-Type", b"application/json"), (b"Cache-Control", b"no-store"), (b"X-Content-Type-Options", b"nosniff")]
_NO_CONTENT: Response = (204, [(b"Cache-Control", b"no-store")], b"")
# The page: scripts, styles and requests from this origin only; no inline script, no framing.
_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = [
    (b"Content-Security-Policy", _CSP),
    (b"X-Frame-Options", b"DENY"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
    (b"Cross-Origin-Resource-Policy", b"same-origin"),
    (b"Cache-Control", b"no-cache"),
]
_UI_FILES = {
    b"/ui/": ("index.html", b"text/html; charset=utf-8"),
    b"/ui/app.js": ("app.js", b"text/javascript; charset=utf-8"),
    b"/ui/style.css": ("style.css", b"text/css; charset=utf-8"),
    b"/ui/icon.svg": ("icon.svg", b"image/svg+xml"),
}


# -- values and keys in the route's JSON form ------------------------------------------------


def value_out(raw: bytes) -> tuple[Any, str]:
    """(value, contentType) for an answer: JSON as itself when writing it back gives the same
    bytes, else base64 with the content type."""
    try:
        if orjson.dumps(orjson.loads(raw)) == raw:
            return orjson.Fragment(raw), JSON_TYPE
    except (orjson.JSONDecodeError, TypeError):
        pass
    try:
        raw.decode("utf-8")
        kind = TEXT_TYPE
    except UnicodeDecodeError:
        kind = BINARY_TYPE
    return base64.b64encode(raw).decode("ascii"), kind


def value_in(value: Any, content_type: Any, where: str) -> bytes:
    """The bytes to store from a request's ``value`` and ``contentType`` (default JSON)."""
    if content_type is None or content_type == JSON_TYPE:
        return dumps_value(value)
    if not isinstance(content_type, str):
        raise malformed(f"{where}: contentType must be a string such as {JSON_TYPE!r} or {BINARY_TYPE!r}")
    if not isinstance(value, str):
        raise malformed(f"{where}: with contentType {content_type!r} the value must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise malformed(f"{where}: the value is not valid base64 (contentType {content_type!r} says it is)") from None


def full_key(key: Any, where: str = "key") -> str:
    """A key as stored, prefix and all (``||`` allowed here); the state API's other limits hold."""
    if not isinstance(key, str) or not key:
        raise malformed(f"{where} is missing or empty: give the key as stored, e.g. 'myapp||order-1'")
    if "\x00" in key:
        raise malformed(f"{where} {key[:40]!r} contains a NUL character (\\u0000), which keys may not hold")
    if len(key) > MAX_KEY_BYTES // 4 and len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise malformed(f"{where} {key[:40]!r}... is too long: keys take at most {MAX_KEY_BYTES} bytes of UTF-8")
    return key


def parse_ttl(ttl: Any, where: str) -> int | None:
    """``ttl``: whole seconds > 0; null, absent, 0 or -1 for no expiry (the state API's one TTL
    rule; a component's default ``ttlInSeconds`` does not apply here: what is given is what is stored)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise malformed(f"{where}: ttl {ttl!r} is not valid: give whole seconds > 0, or null for no expiry")
    try:
        return ttl_seconds(str(ttl))
    except ValueError as e:
        raise malformed(f"{where}: ttl {e}") from None


def app_id_of(key: str) -> str | None:
    """The app id part of a stored key (before ``||``), or None."""
    app, sep, _ = key.partition("||")
    return app if sep else None


def ttl_left(expire_at: float | None, now: float) -> int | None:
    """Whole seconds left (rounded up, so an item never outlives its expiry by less than a second)."""
    return None if expire_at is None else max(1, math.ceil(expire_at - now))


def _key_json(k: KeyInfo) -> dict[str, Any]:
    return {"key": k.key, "appId": app_id_of(k.key), "size": k.size, "etag": k.etag, "expireAt": k.expire_at}


def _item_json(key: str, item: StoredItem, req: Request) -> dict[str, Any]:
    """One key's answer; ``?as=base64`` gives the value as base64 whatever it holds (the page
    reads the stored bytes exactly that way: a browser's JSON.parse rounds big integers)."""
    value, kind = value_out(item.value)
    if kind == JSON_TYPE and query_params(req.query).get("as") == "base64":
        value = base64.b64encode(item.value).decode("ascii")
    return {
        "key": key,
        "appId": app_id_of(key),
        "etag": item.etag,
        "size": len(item.value),
        "expireAt": item.expire_at,
        "contentType": kind,
        "value": value,
        "now": time.time(),
    }


# -- tickets: the token for the page, without the token on a command line -------------------


class Tickets:
    """Single-use, short-lived tickets that the page trades for the API token.

    Why: ``devinit ui`` used to open ``/ui/#token=<token>``; the URL is an argument of the
    browser's process (xdg-open, open, the browser itself), which ``ps`` shows to every local
    user. A ticket in that place is worth little: it is random (256 bits), works once, and
    only for ``TICKET_SECONDS``; whoever redeems it first gets the token, and the page that
    comes second says so (``ERR_TICKET_USED``: the token must be taken as known, restart the
    server with a new one). Only a caller that holds the token gets tickets, so they give
    nothing new to anyone but the page. At most ``MAX_TICKETS`` outstanding are kept (a new
    one pushes out the oldest). Used tickets are remembered until they would have expired, to
    tell "used" from "unknown", and are never pushed out by new ones (else whoever took a
    ticket could hide it by using up more): past ``MAX_USED_TICKETS`` within a ticket's life,
    no new ticket is given (429) until they expire. The comparison is constant-time over every
    ticket kept.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.kept: list[_Ticket] = []  # outstanding, oldest first
        self.used: list[_Ticket] = []  # used, until they would have expired

    def _drop_expired(self) -> None:
        now = self.clock()
        self.kept = [t for t in self.kept if t.expires > now]
        self.used = [t for t in self.used if t.expires > now]

    def issue(self) -> str:
        """A new ticket, valid for ``TICKET_SECONDS``, once."""
        self._drop_expired()
        if len(self.used) >= MAX_USED_TICKETS:
            raise ApiError(
                "ERR_TOO_MANY_TICKETS",
                f"{len(self.used)} tickets were used within the last {TICKET_SECONDS:g} s, the most devinit remembers: "
                "wait a minute and run devinit ui again",
                429,
                "RESOURCE_EXHAUSTED",
            )
        ticket = secrets.token_urlsafe(32)
        self.kept.append(_Ticket(ticket.encode("ascii"), self.clock() + TICKET_SECONDS))
        del self.kept[:-MAX_TICKETS]
        return ticket

    def redeem(self, ticket: Any) -> None:
        """Use ``ticket`` up; ApiError unless it was issued, has not expired and was not used."""
        if not isinstance(ticket, str) or not ticket or len(ticket) > MAX_TICKET_CHARS:
            raise malformed(
                f'the body must be {{"ticket": "..."}}, the ticket from devinit ui (at most {MAX_TICKET_CHARS} characters)'
            )
        self._drop_expired()
        given = ticket.encode("utf-8", "surrogatepass")
        found = None
        for t in (*self.kept, *self.used):  # every ticket compared, each in constant time: no early exit
            if hmac.compare_digest(given, t.value):
                found = t
        if found is None:
            raise ApiError(
                "ERR_TICKET_INVALID",
                f"this ticket is unknown or expired (a ticket works once, within {TICKET_SECONDS:g} s of devinit ui): "
                "run devinit ui again, or enter the API token",
                403,
                "PERMISSION_DENIED",
            )
        if found.used:
            raise ApiError(
                "ERR_TICKET_USED",
                "this ticket was used already: someone else redeemed it and so knows the API token. Restart the "
                "server with a new DAPR_API_TOKEN, then run devinit ui again",
                403,
                "PERMISSION_DENIED",
            )
        found.used = True
        self.kept.remove(found)
        self.used.append(found)


@dataclass(slots=True)
class _Ticket:
    value: bytes
    expires: float  # on Tickets.clock
    used: bool = False


# -- the route ------------------------------------------------------------------------------


def _json(body: Any, status: int = 200) -> Response:
    return status, _API_HEADERS, orjson.dumps(body)


async def _answer(response: Response) -> Response:
    return response


def _not_found(req: Request) -> ApiError:
    return ApiError(
        "ERR_NOT_FOUND",
        f"no route {req.method} {req.path.decode('latin-1')}: the devinit route is documented in docs/state-api.md",
        404,
        "NOT_FOUND",
    )


def _segment(raw: bytes, what: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise malformed(f"the {what} in the URL is not valid UTF-8 once percent-decoded") from None


def _limit(params: Mapping[str, str], default: int) -> int:
    raw = params.get("limit")
    if raw is None or raw == "":
        return default
    limit = plain_count(raw)
    if limit is None or not 1 <= limit <= MAX_PAGE:
        raise malformed(f"limit {raw!r} is not valid: give a whole number from 1 to {MAX_PAGE}")
    return limit


def _cursor(raw: Any) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > MAX_CURSOR:
        raise malformed("cursor is not valid: pass back the cursor of the previous page as it was")
    return raw


def _prefix(raw: Any) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str) or "\x00" in raw or len(raw.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise malformed(f"prefix is not valid: give the start of a key (at most {MAX_KEY_BYTES} bytes)")
    return raw


def _json_body(req: Request) -> Any:
    """A write's JSON body. Only application/json is taken: a web page from elsewhere cannot send
    that without the browser asking first (CORS preflight), so no form post can change state."""
    kind = req.headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if kind != b"application/json":
        raise ApiError(
            "ERR_CONTENT_TYPE",
            "the devinit route takes writes as JSON only: send the header 'Content-Type: application/json'",
            415,
            "INVALID_ARGUMENT",
        )
    return loads(req.body)


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise malformed(f"the body must be a JSON object like {what}")
    return body


class InspectorApp:
    """The devinit route and the page over one runtime; ``feed`` records state API calls."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.feed = Feed({name: entry.prefix for name, entry in runtime.entries.items()})
        self._files: dict[bytes, Response] = {}
        self.tickets = Tickets()

    def route(self, req: Request) -> Awaitable[Response]:
        """The handler coroutine for a request under /devinit/ or /ui (the caller matched the prefix)."""
        path, method = req.path, req.method
        if path == UI or path.startswith(b"/ui/"):
            if method != "GET":  # http_wire hands a HEAD over as the GET it stands for
                raise ApiError("ERR_METHOD_NOT_ALLOWED", f"{method} is not allowed on the inspector page", 405, "UNIMPLEMENTED")
            return _answer(self._static(req))
        if not path.startswith(PREFIX):
            raise _not_found(req)
        rest = path[len(PREFIX) :]
        if rest == b"tickets/redeem" and method == "POST":
            # The one call without the token: the ticket stands for it. The browser rules
            # (browser.py: loopback or allowed origins only) have screened it like any other.
            return _answer(self._redeem(req))
        if self.runtime.api_token is not None:
            check_token(self.runtime.api_token, req.headers.get(b"dapr-api-token"))
        if rest == b"tickets" and method == "POST":
            if self.runtime.api_token is None:  # nothing to trade for: open the page as it is
                return _answer(_json({"ticket": None, "expiresIn": None}))
            return _answer(_json({"ticket": self.tickets.issue(), "expiresIn": TICKET_SECONDS}))
        if rest == b"stores" and method == "GET":
            return _answer(_json(self.stores()))
        if rest == b"events" and method == "GET":
            return self._events(req)
        if rest.startswith(b"stores/"):
            raw_store, _, tail = rest[7:].partition(b"/")
            store = _segment(raw_store, "store name")
            if tail == b"keys" and method == "GET":
                return self._list(store, req)
            if tail.startswith(b"keys/") and len(tail) > 5:
                key = full_key(_segment(tail[5:], "key"))
                if method == "GET":
                    return self._get(store, key, req)
                if method == "PUT":
                    return self._put(store, key, req)
                if method == "DELETE":
                    return self._delete(store, key, req)
            if tail == b"export" and method == "GET":
                return self._export(store, req)
            if tail == b"import" and method == "POST":
                return self._import(store, req)
            if tail == b"clear" and method == "POST":
                return self._clear(store, req)
        raise _not_found(req)

    # -- the page -----------------------------------------------------------------------

    def _static(self, req: Request) -> Response:
        if req.path == UI:  # relative URLs in the page need the slash
            return 308, [(b"Location", b"/ui/"), (b"Cache-Control", b"no-cache")], b""
        found = self._files.get(req.path)
        if found is None:
            entry = _UI_FILES.get(req.path)
            if entry is None:
                raise _not_found(req)
            body = (resources.files("devinit") / "ui" / entry[0]).read_bytes()
            found = self._files[req.path] = (200, [(b"Content-Type", entry[1]), *_PAGE_HEADERS], body)
        return found

    # -- handlers -----------------------------------------------------------------------

    def _redeem(self, req: Request) -> Response:
        body = _object(_json_body(req), '{"ticket": "..."}')
        self.tickets.redeem(body.get("ticket"))
        return _json({"token": self.runtime.api_token})

    def stores(self) -> dict[str, Any]:
        """Every loaded store with its type, key prefix and health; the stores that failed to load."""
        rt = self.runtime
        out = []
        for name, entry in sorted(rt.entries.items()):
            health = rt.monitor.health[name].as_json()
            out.append(
                {
                    "name": name,
                    "type": entry.spec.type,
                    "prefix": entry.prefix,
                    "appId": app_id_of(entry.prefix),
                    "capabilities": list(entry.store.features),
                    "health": health,
                }
            )
        failed = [{"name": n, "error": why} for n, why in sorted(rt.failed.items())]
        return {"appId": rt.app_id, "stores": out, "failed": failed, "now": time.time()}

    async def _list(self, store: str, req: Request) -> Response:
        params = query_params(req.query)
        prefix, cursor, limit = _prefix(params.get("prefix")), _cursor(params.get("cursor")), _limit(params, DEFAULT_PAGE)
        page: KeyPage = await self.runtime.store_call(store, "ERR_STATE_LIST_KEYS", lambda s: s.list_keys(prefix, cursor, limit))
        return _json({"keys": [_key_json(k) for k in page.keys], "cursor": page.cursor, "now": time.time()})

    async def _get(self, store: str, key: str, req: Request) -> Response:
        item = await self.runtime.store_call(store, "ERR_STATE_GET", lambda s: s.get(key), key)
        if item is None:
            raise ApiError(
                "ERR_KEY_NOT_FOUND",
                f"key {key!r} is not in store {store!r} (deleted, expired or never written)",
                404,
                "NOT_FOUND",
            )
        return _json(_item_json(key, item, req))

    async def _put(self, store: str, key: str, req: Request) -> Response:
        body = _object(_json_body(req), '{"value": {...}, "etag": "...", "ttl": 60}')
        value = value_in(body.get("value"), body.get("contentType"), "the body")
        etag = body.get("etag")
        if etag is not None and not isinstance(etag, str):
            raise malformed("etag must be a string (the etag read with the value)")
        first_write = body.get("firstWrite", False)
        if not isinstance(first_write, bool):
            raise malformed("firstWrite must be true or false")
        op = SetOp(key, value, etag or None, first_write, parse_ttl(body.get("ttl"), "the body"))
        await self.runtime.store_call(store, "ERR_STATE_SAVE", lambda s: s.set(op), key)
        # The new etag: read back (a write made meanwhile by someone else shows as what it is).
        item = await self.runtime.store_call(store, "ERR_STATE_GET", lambda s: s.get(key), key)
        return _NO_CONTENT if item is None else _json(_item_json(key, item, req))

    async def _delete(self, store: str, key: str, req: Request) -> Response:
        etag = query_params(req.query).get("etag") or req.headers.get(b"if-match", b"").decode("latin-1").strip('"') or None
        op = DeleteOp(key, etag)
        await self.runtime.store_call(store, "ERR_STATE_DELETE", lambda s: s.delete(op), key)
        return _NO_CONTENT

    async def _export(self, store: str, req: Request) -> Response:
        params = query_params(req.query)
        prefix, cursor, limit = _prefix(params.get("prefix")), _cursor(params.get("cursor")), _limit(params, MAX_PAGE)
        page = await self._export_page(store, prefix, cursor, limit)
        keys = [k.key for k in page.keys]
        items = await self.runtime.store_call(store, "ERR_STATE_BULK_GET", lambda s: s.bulk_get(keys))
        now = time.time()
        out = []
        for key, item in zip(keys, items, strict=True):
            if item is None or (item.expire_at is not None and item.expire_at <= now):
                continue  # deleted or expired since it was listed
            value, kind = value_out(item.value)
            line: dict[str, Any] = {"key": key, "value": value, "contentType": kind}
            if item.expire_at is not None:
                line["ttl"] = ttl_left(item.expire_at, now)
            out.append(line)
        return _json({"items": out, "cursor": page.cursor})

    async def _export_page(self, store: str, prefix: str, cursor: str | None, limit: int) -> KeyPage:
        """The keys of one export page, their values (by the listing's sizes) within
        ``EXPORT_BUDGET`` bytes, or one key alone whatever its size.

        A page over the budget is listed again from the same cursor with a smaller limit, so
        that its cursor continues right after the keys served: a SQL or in-memory listing
        gives exactly the keys that fit at once; a Redis page may hold a few more than its
        limit (a SCAN step cannot be split), so there the limit is halved until it fits.
        """

        def listing(n: int) -> Callable[[Store], Awaitable[KeyPage]]:
            return lambda s: s.list_keys(prefix, cursor, n)

        for attempt in range(_EXPORT_LISTINGS):
            page = await self.runtime.store_call(store, "ERR_STATE_LIST_KEYS", listing(limit))
            fit, size = 0, 0
            for info in page.keys:
                size += info.size
                if size > EXPORT_BUDGET and fit:
                    break
                fit += 1
            if fit == len(page.keys) or limit == 1:
                break
            limit = min(fit, limit - 1 if attempt == 0 else limit // 2)
        return page

    async def _import(self, store: str, req: Request) -> Response:
        body = _object(_json_body(req), '{"items": [{"key": "...", "value": ..., "contentType": "...", "ttl": 60}]}')
        items = body.get("items")
        if not isinstance(items, list):
            raise malformed('items must be an array of {"key", "value", "contentType"?, "ttl"?}')
        if len(items) > MAX_IMPORT:
            raise malformed(f"{len(items)} items in one import request: send at most {MAX_IMPORT} per request")
        self.runtime.entry(store)  # an unknown store is reported before a bad item
        ops = []
        for i, raw in enumerate(items):  # all checked before anything is written
            where = f"items[{i}]"
            if not isinstance(raw, dict):
                raise malformed(f"{where} must be an object with a key and a value")
            key = full_key(raw.get("key"), f"{where}.key")
            ops.append(
                SetOp(
                    key, value_in(raw.get("value"), raw.get("contentType"), where), None, False, parse_ttl(raw.get("ttl"), where)
                )
            )
        if ops:
            await self.runtime.store_call(store, "ERR_STATE_SAVE", lambda s: s.set_many(ops))
        return _json({"written": len(ops)})

    async def _clear(self, store: str, req: Request) -> Response:
        body = _object(_json_body(req), '{"prefix": "", "cursor": null}')
        prefix, cursor = _prefix(body.get("prefix")), _cursor(body.get("cursor"))
        page = await self.runtime.store_call(store, "ERR_STATE_LIST_KEYS", lambda s: s.list_keys(prefix, cursor, MAX_PAGE))
        ops = [DeleteOp(k.key) for k in page.keys]
        if ops:
            await self.runtime.store_call(store, "ERR_STATE_BULK_DELETE", lambda s: s.delete_many(ops))
        return _json({"deleted": len(ops), "cursor": page.cursor})

    async def _events(self, req: Request) -> Response:
        params = query_params(req.query)
        after_raw, wait_raw = params.get("after", ""), params.get("wait", "0")
        after = plain_count(after_raw) if after_raw else None
        if after_raw and after is None:
            raise malformed(f"after {after_raw!r} is not valid: pass back 'next' from the previous answer")
        try:
            wait = float(wait_raw or 0)
        except ValueError:
            raise malformed(f"wait {wait_raw!r} is not valid: give seconds, at most {MAX_WAIT:g}") from None
        if not 0 <= wait <= MAX_WAIT:
            raise malformed(f"wait {wait_raw!r} is not valid: give seconds from 0 to {MAX_WAIT:g}")
        events, next_seq = await self.feed.poll(after, wait)
        return _json({"events": [e.as_json() for e in events], "next": next_seq, "now": time.time()})
