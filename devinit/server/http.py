"""The HTTP front end: Dapr's state API routes as one plain ASGI callable.

No framework: routing is a few byte comparisons on ``raw_path`` (so a ``%2F`` in a key stays
part of the key), bodies are parsed with orjson, and answers are written directly. Every rule
that is not about the wire is the runtime's.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import orjson

from devinit.errors import ApiError, malformed
from devinit.server.runtime import Runtime, SaveRequest, TxOperation, check_token
from devinit.state.base import StoredItem

log = logging.getLogger("devinit.http")

MAX_BODY = 4 * 1024 * 1024
_JSON = [(b"content-type", b"application/json")]
_BIG_INT = re.compile(rb"\d{19}")  # orjson reads integers beyond 64 bits as floats

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _Disconnected(Exception):
    """The client went away before its body arrived."""


def loads(body: bytes) -> Any:
    """Parse a JSON request body; a clear 400 when it is not JSON."""
    if not body:
        raise malformed("the request body is empty: send a JSON document")
    try:
        if _BIG_INT.search(body) is None:
            return orjson.loads(body)
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constant)  # exact big integers
        # json accepts what orjson refuses: lone surrogates ("\ud800") cannot be stored as UTF-8
        # by any store (a str key or value reached redis-py / sqlite3 / psycopg and failed with
        # a 500), so refuse them here as orjson would. Encoding once finds them anywhere.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        return value
    except (orjson.JSONDecodeError, ValueError, RecursionError) as e:
        raise malformed(f"the request body is not valid JSON: {e}") from None


def _no_constant(name: str) -> Any:
    """NaN / Infinity are not JSON (orjson refuses them); the exact-integer path refuses them too."""
    raise ValueError(f"{name} is not a JSON value")


def dumps_value(value: Any) -> bytes:
    """The stored form of a JSON value: its compact JSON text."""
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits (kept exact), or nesting deeper than orjson's 255
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        except RecursionError:  # was an uncaught 500: orjson.loads takes 1024 levels, json.dumps fewer
            raise malformed("the value is nested too deeply: keep JSON values under a few hundred levels") from None


def rfc3339(epoch: float) -> str:
    """``ttlExpireTime`` as Dapr writes it: RFC 3339, UTC, whole seconds."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def embed_value(value: bytes) -> Any:
    """A stored value for a JSON answer: itself when it is JSON, else its text (or base64)."""
    try:
        orjson.loads(value)
        return orjson.Fragment(value)
    except orjson.JSONDecodeError:
        pass
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode()


def error_body(err: ApiError) -> bytes:
    return orjson.dumps({"errorCode": err.error_code, "message": err.message})


class HttpApp:
    """The ASGI application serving one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.token = runtime.api_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is handled by the server itself
        try:
            await self._route(scope, receive, send)
        except ApiError as e:
            await _send(send, e.http_status, error_body(e), _JSON)
        except _Disconnected:
            return
        except Exception:  # noqa: BLE001 - a bug: still answer JSON (STATE_API "Errors"), log where
            log.exception("unexpected error answering %s %s", scope.get("method"), scope.get("path"))
            err = ApiError("ERR_INTERNAL", "unexpected error in devinit (a bug): see the server log", 500, "INTERNAL")
            await _send(send, 500, error_body(err), _JSON)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: bytes = scope["raw_path"] or scope["path"].encode()
        method: str = scope["method"]
        if path.startswith(b"/v1.0/healthz"):
            if path in (b"/v1.0/healthz", b"/v1.0/healthz/outbound") and method in ("GET", "HEAD"):
                await _send(send, 204)
                return
            raise ApiError("ERR_NOT_FOUND", f"no route {method} {path.decode('latin-1')}", 404, "NOT_FOUND")
        headers = dict(scope["headers"])
        if self.token is not None:
            check_token(self.token, headers.get(b"dapr-api-token"))
        if path.startswith(b"/v1.0/state/"):
            store, sep, rest = path[12:].partition(b"/")
            name = _segment(store, "store name")
            if not name:
                raise malformed("the store name is missing from the URL: /v1.0/state/<store>")
            if not sep or not rest:
                if method in ("POST", "PUT"):
                    await self._save(name, scope, receive, send, headers)
                    return
            elif method == "GET":
                await self._get(name, _segment(rest, "key"), scope, send, headers)
                return
            elif method == "DELETE":
                await self._delete(name, _segment(rest, "key"), scope, send, headers)
                return
            elif rest == b"bulk" and method in ("POST", "PUT"):
                await self._bulk(name, scope, receive, send, headers)
                return
            elif rest == b"transaction" and method in ("POST", "PUT"):
                await self._transaction(name, scope, receive, send, headers)
                return
            raise ApiError("ERR_METHOD_NOT_ALLOWED", f"{method} is not allowed on {path.decode('latin-1')}", 405, "UNIMPLEMENTED")
        if path.startswith(b"/v1.0-alpha1/state/") and path.endswith(b"/query"):
            if method not in ("POST", "PUT"):
                raise ApiError("ERR_METHOD_NOT_ALLOWED", f"{method} is not allowed on the query route; use POST", 405, "UNIMPLEMENTED")
            await self._query(_segment(path[19:-6], "store name"), scope, receive, send, headers)
            return
        if path == b"/v1.0/metadata" and method == "GET":
            await _send(send, 200, orjson.dumps(self.runtime.metadata()), _JSON)
            return
        raise ApiError("ERR_NOT_FOUND", f"no route {method} {path.decode('latin-1')}", 404, "NOT_FOUND")

    # -- handlers ----------------------------------------------------------------------

    async def _get(self, store: str, key: str, scope: Scope, send: Send, headers: dict[bytes, bytes]) -> None:
        params = _params(scope)
        consistency = params.get("consistency") or _header(headers, b"consistency")
        item = await self.runtime.get(store, key, consistency)
        if item is None:
            await _send(send, 204)
            return
        extra = [(b"content-type", b"application/json"), (b"ETag", item.etag.encode())]
        if item.expire_at is not None:
            extra.append((b"metadata.ttlExpireTime", rfc3339(item.expire_at).encode()))
        await _send(send, 200, item.value, extra)

    async def _save(self, store: str, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes]) -> None:
        body = loads(await _body(receive, headers))
        if isinstance(body, str):  # the Dapr how-to posts a JSON string holding the array
            body = loads(body.encode())
        if not isinstance(body, list):
            raise malformed("the save body must be a JSON array of {key, value, etag?, metadata?, options?}")
        params = _params(scope)
        query_meta = {k[9:]: v for k, v in params.items() if k.startswith("metadata.")}
        items = []
        for i, raw in enumerate(body):
            if not isinstance(raw, dict):
                raise malformed(f"item {i} of the save body must be an object with a key and a value")
            items.append(_request(raw, query_meta, f"item {i}"))
        defaults = {
            "consistency": params.get("consistency") or _header(headers, b"consistency"),
            "concurrency": params.get("concurrency") or _header(headers, b"concurrency"),
        }
        await self.runtime.save(store, items, defaults)
        await _send(send, 204)

    async def _delete(self, store: str, key: str, scope: Scope, send: Send, headers: dict[bytes, bytes]) -> None:
        params = _params(scope)
        etag = _header(headers, b"if-match")
        if etag and len(etag) >= 2 and etag[0] == etag[-1] == '"':
            etag = etag[1:-1]
        options = {
            "consistency": params.get("consistency") or _header(headers, b"consistency"),
            "concurrency": params.get("concurrency") or _header(headers, b"concurrency"),
        }
        meta = {k[9:]: v for k, v in params.items() if k.startswith("metadata.")}
        await self.runtime.delete(store, SaveRequest(key, b"", etag, meta, options))
        await _send(send, 204)

    async def _bulk(self, store: str, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes]) -> None:
        body = loads(await _body(receive, headers))
        if not isinstance(body, dict) or "keys" not in body:
            raise malformed("the bulk body must be an object like {\"keys\": [\"a\", \"b\"]}")
        parallelism = body.get("parallelism")
        if parallelism is not None and (not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 0):
            raise malformed("parallelism must be a non-negative integer")
        items = await self.runtime.bulk_get(store, body["keys"])
        out = []
        for key, item in items:
            out.append({"key": key} if item is None else _bulk_item(key, item))
        await _send(send, 200, orjson.dumps(out), _JSON)

    async def _transaction(self, store: str, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes]) -> None:
        body = loads(await _body(receive, headers))
        if not isinstance(body, dict):
            raise malformed("the transaction body must be an object like {\"operations\": [...]}")
        operations = body.get("operations") or []
        if not isinstance(operations, list):
            raise malformed("operations must be an array of {operation, request}")
        ops = []
        for i, raw in enumerate(operations):
            if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
                raise malformed(f"operations[{i}] must be an object with 'operation' and a 'request' object")
            ops.append(TxOperation(raw.get("operation"), _request(raw["request"], {}, f"operations[{i}].request")))
        await self.runtime.transact(store, ops, body.get("metadata"))
        await _send(send, 204)

    async def _query(self, store: str, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes]) -> None:
        self.runtime.entry(store)  # unknown store errors first
        raise ApiError(
            "ERR_NOT_IMPLEMENTED",
            "the state query API is not implemented in this devinit version yet; read keys with GET or bulk get",
            501,
            "UNIMPLEMENTED",
        )


def _bulk_item(key: str, item: StoredItem) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "data": embed_value(item.value), "etag": item.etag}
    if item.expire_at is not None:
        out["metadata"] = {"ttlExpireTime": rfc3339(item.expire_at)}
    return out


def _request(raw: dict[str, Any], extra_meta: dict[str, str], where: str) -> SaveRequest:
    metadata = raw.get("metadata")
    if extra_meta:
        if metadata is not None and not isinstance(metadata, dict):
            raise malformed(f"{where}: metadata must be an object of string values")
        metadata = {**(metadata or {}), **extra_meta}
    return SaveRequest(raw.get("key"), dumps_value(raw.get("value")), raw.get("etag"), metadata, raw.get("options"))


def _segment(raw: bytes, what: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise malformed(f"the {what} in the URL is not valid UTF-8 once percent-decoded") from None


def _params(scope: Scope) -> dict[str, str]:
    qs: bytes = scope["query_string"]
    if not qs:
        return {}
    return dict(parse_qsl(qs.decode("latin-1"), keep_blank_values=True))


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return value.decode("latin-1") if value is not None else None


def _too_large() -> ApiError:
    return ApiError(
        "ERR_BODY_TOO_LARGE",
        f"the request body is over {MAX_BODY // (1024 * 1024)} MiB: split it into smaller requests",
        413,
        "RESOURCE_EXHAUSTED",
    )


async def _body(receive: Receive, headers: dict[bytes, bytes]) -> bytes:
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise _too_large()
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _Disconnected()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > MAX_BODY:
            raise _too_large()
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


async def _send(send: Send, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})
