"""The HTTP front end: Dapr's state API routes as one handler for ``http_wire.H1Server``.

No framework: routing is a few byte comparisons on the raw path (so a ``%2F`` in a key stays
part of the key), bodies are parsed with orjson, and every answer is one ``Response`` tuple.
Every rule that is not about the wire is the runtime's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import orjson

from devinit.errors import ApiError, malformed
from devinit.server.http_wire import Request, Response
from devinit.server.json_values import dumps_value, embed_value, loads, rfc3339
from devinit.server.runtime import Runtime, SaveRequest, TxOperation, check_token
from devinit.state.base import StoredItem

log = logging.getLogger("devinit.http")

_JSON_CT = (b"Content-Type", b"application/json")
_JSON = [_JSON_CT]
_NO_CONTENT: Response = (204, [], b"")
_STATE = b"/v1.0/state/"
_QUERY = b"/v1.0-alpha1/state/"
_WRITE = ("POST", "PUT")


def error_response(status: int, message: str, code: str | None = None) -> Response:
    """The contract's JSON error body (also used by the HTTP server for its own refusals)."""
    if code is None:
        code = {400: "ERR_MALFORMED_REQUEST", 413: "ERR_BODY_TOO_LARGE", 431: "ERR_HEADERS_TOO_LARGE"}.get(status, "ERR_INTERNAL")
    return status, _JSON, orjson.dumps({"errorCode": code, "message": message})


def _json(body: Any) -> Response:
    return 200, _JSON, orjson.dumps(body)


async def _answer(response: Response) -> Response:
    return response


def _not_found(req: Request) -> ApiError:
    return ApiError("ERR_NOT_FOUND", f"no route {req.method} {req.path.decode('latin-1')}", 404, "NOT_FOUND")


def _not_allowed(req: Request) -> ApiError:
    return ApiError(
        "ERR_METHOD_NOT_ALLOWED", f"{req.method} is not allowed on {req.path.decode('latin-1')}", 405, "UNIMPLEMENTED"
    )


class HttpApp:
    """The request handler serving one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.token = runtime.api_token
        # serve.py's graceful stop, for Dapr's POST /v1.0/shutdown (None: the route is absent)
        self.on_shutdown: Callable[[], None] | None = None

    async def __call__(self, req: Request) -> Response:
        try:
            return await self._route(req)
        except ApiError as e:
            return error_response(e.http_status, e.message, e.error_code)

    def _route(self, req: Request) -> Awaitable[Response]:
        """The handler coroutine for ``req`` (not awaited here: one coroutine less per request)."""
        path, method = req.path, req.method
        if path.startswith(b"/v1.0/healthz"):
            if path in (b"/v1.0/healthz", b"/v1.0/healthz/outbound") and method in ("GET", "HEAD"):
                return _answer(_NO_CONTENT)
            raise _not_found(req)
        if self.token is not None:
            check_token(self.token, req.headers.get(b"dapr-api-token"))
        if path.startswith(_STATE):
            store, sep, rest = path[12:].partition(b"/")
            name = _segment(store, "store name")
            if not name:
                raise malformed("the store name is missing from the URL: /v1.0/state/<store>")
            if not rest:
                if method in _WRITE:
                    return self._save(name, req)
            elif method == "GET":
                return self._get(name, _segment(rest, "key"), req)
            elif method == "DELETE":
                return self._delete(name, _segment(rest, "key"), req)
            elif method in _WRITE and rest == b"bulk":
                return self._bulk(name, req)
            elif method in _WRITE and rest == b"transaction":
                return self._transaction(name, req)
            raise _not_allowed(req)
        if path.startswith(_QUERY) and path.endswith(b"/query"):
            if method not in _WRITE:
                raise _not_allowed(req)
            return self._query(_segment(path[len(_QUERY) : -6], "store name"), req)
        if path == b"/v1.0/metadata" and method == "GET":
            return _answer(_json(self.runtime.metadata()))
        if path == b"/v1.0/shutdown" and self.on_shutdown is not None:
            if method != "POST":
                raise _not_allowed(req)
            # As daprd: 204, then a graceful stop (begun on the next loop turn, after this answer).
            asyncio.get_running_loop().call_soon(self.on_shutdown)
            return _answer(_NO_CONTENT)
        raise _not_found(req)

    # -- handlers ----------------------------------------------------------------------

    async def _get(self, store: str, key: str, req: Request) -> Response:
        params = _params(req)
        consistency = params.get("consistency") or _header(req, b"consistency")
        item = await self.runtime.get(store, key, consistency)
        if item is None:
            return _NO_CONTENT
        headers = [_JSON_CT, (b"ETag", item.etag.encode())]
        if item.expire_at is not None:
            headers.append((b"metadata.ttlExpireTime", rfc3339(item.expire_at).encode()))
        return 200, headers, item.value

    async def _save(self, store: str, req: Request) -> Response:
        body = loads(req.body)
        if isinstance(body, str):  # the Dapr how-to posts a JSON string holding the array
            body = loads(body.encode())
        if not isinstance(body, list):
            raise malformed("the save body must be a JSON array of {key, value, etag?, metadata?, options?}")
        params = _params(req)
        query_meta = {k[9:]: v for k, v in params.items() if k.startswith("metadata.")}
        items = []
        for i, raw in enumerate(body):
            if not isinstance(raw, dict):
                raise malformed(f"item {i} of the save body must be an object with a key and a value")
            items.append(_request(raw, query_meta, f"item {i}"))
        await self.runtime.save(store, items, _option_defaults(req, params))
        return _NO_CONTENT

    async def _delete(self, store: str, key: str, req: Request) -> Response:
        params = _params(req)
        etag = _header(req, b"if-match")
        if etag and len(etag) >= 2 and etag[0] == etag[-1] == '"':
            etag = etag[1:-1]
        meta = {k[9:]: v for k, v in params.items() if k.startswith("metadata.")}
        await self.runtime.delete(store, SaveRequest(key, b"", etag, meta, _option_defaults(req, params)))
        return _NO_CONTENT

    async def _bulk(self, store: str, req: Request) -> Response:
        body = loads(req.body)
        if not isinstance(body, dict) or "keys" not in body:
            raise malformed('the bulk body must be an object like {"keys": ["a", "b"]}')
        parallelism = body.get("parallelism")
        if parallelism is not None and (not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 0):
            raise malformed("parallelism must be a non-negative integer")
        items = await self.runtime.bulk_get(store, body["keys"])
        return _json([{"key": key} if item is None else _bulk_item(key, item) for key, item in items])

    async def _transaction(self, store: str, req: Request) -> Response:
        body = loads(req.body)
        if not isinstance(body, dict):
            raise malformed('the transaction body must be an object like {"operations": [...]}')
        operations = body.get("operations")
        if operations is None:  # absent or null: nothing to do
            operations = []
        if not isinstance(operations, list):
            raise malformed("operations must be an array of {operation, request}")
        ops = []
        for i, raw in enumerate(operations):
            if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
                raise malformed(f"operations[{i}] must be an object with 'operation' and a 'request' object")
            ops.append(TxOperation(raw.get("operation"), _request(raw["request"], {}, f"operations[{i}].request")))
        params = _params(req)
        metadata = body.get("metadata")
        query_meta = {k[9:]: v for k, v in params.items() if k.startswith("metadata.")}
        if query_meta:  # metadata.<name> query parameters override the body's, as on save
            if metadata is not None and not isinstance(metadata, dict):
                raise malformed("metadata must be an object of string values")
            metadata = {**(metadata or {}), **query_meta}
        await self.runtime.transact(store, ops, metadata, _option_defaults(req, params))
        return _NO_CONTENT

    async def _query(self, store: str, req: Request) -> Response:
        self.runtime.entry(store)  # an unknown store is reported before a bad body
        results, token = await self.runtime.query(store, loads(req.body))
        if not results:
            return _NO_CONTENT
        out: dict[str, Any] = {"results": [{"key": k, "data": embed_value(v), "etag": e} for k, v, e in results]}
        if token is not None:
            out["token"] = token
        return _json(out)


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


def _option_defaults(req: Request, params: dict[str, str]) -> dict[str, str | None]:
    """Request-level consistency / concurrency: the query string first, then headers."""
    return {
        "consistency": params.get("consistency") or _header(req, b"consistency"),
        "concurrency": params.get("concurrency") or _header(req, b"concurrency"),
    }


def _segment(raw: bytes, what: str) -> str:
    try:
        if b"%" not in raw:
            return raw.decode("utf-8")
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise malformed(f"the {what} in the URL is not valid UTF-8 once percent-decoded") from None


def _params(req: Request) -> dict[str, str]:
    if not req.query:
        return {}
    return dict(parse_qsl(req.query.decode("latin-1"), keep_blank_values=True))


def _header(req: Request, name: bytes) -> str | None:
    value = req.headers.get(name)
    return value.decode("latin-1") if value is not None else None
