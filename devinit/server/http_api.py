"""The HTTP front end: Dapr's state API routes as one handler for ``http_wire.H1Server``.

No framework: routing is a few byte comparisons on the raw path (so a ``%2F`` in a key stays
part of the key), bodies are parsed with orjson, and every answer is one ``Response`` tuple.
Every rule that is not about the wire is the runtime's.

URLs are read as daprd reads them: the path is cleaned first (Go's ``path.Clean``: ``//``,
``.``, ``..`` and a trailing ``/``), then each path parameter is query-unescaped (``%XX``, and
``+`` is a space). Errors are daprd's JSON body, ``details`` included (``api_error_response``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from devinit.errors import ApiError, malformed
from devinit.server.http_wire import Request, Response
from devinit.server.inspector_api import InspectorApp
from devinit.server.json_values import dumps_value, embed_value, loads, rfc3339
from devinit.server.runtime import (
    BulkItem,
    DeleteRequest,
    Runtime,
    RuntimeMetadata,
    SaveRequest,
    TxOperation,
    check_token,
    warn_once,
)
from devinit.server.urls import query_params, unescape

log = logging.getLogger("devinit.http")

_JSON_CT = (b"Content-Type", b"application/json")
_JSON = [_JSON_CT]
_NO_CONTENT: Response = (204, [], b"")
_STATE = b"/v1.0/state/"
_QUERY = b"/v1.0-alpha1/state/"
_METADATA = b"/v1.0/metadata"
_WRITE = ("POST", "PUT")
_TYPE = "type.googleapis.com/google.rpc."
_DEVINIT = (b"/devinit/", b"/ui")  # devinit's own route and page (inspector_api; it checks the token)


# the errorCode of the HTTP server's own refusals (http_wire), by status
_WIRE_CODES = {
    400: "ERR_MALFORMED_REQUEST",
    413: "ERR_BODY_TOO_LARGE",
    431: "ERR_HEADERS_TOO_LARGE",
    503: "ERR_TOO_MANY_CONNECTIONS",
}


def error_response(status: int, message: str, code: str | None = None) -> Response:
    """The contract's JSON error body (also used by the HTTP server for its own refusals)."""
    if code is None:
        code = _WIRE_CODES.get(status, "ERR_INTERNAL")
    return status, _JSON, orjson.dumps({"errorCode": code, "message": message})


def api_error_response(e: ApiError) -> Response:
    """An ``ApiError`` as daprd's JSON error: errorCode, message, and ``details`` in dapr/kit's shape.

    The details come in the order daprd builds them (BadRequest, ResourceInfo, ErrorInfo),
    each a map with sorted keys, as Go encodes one.
    """
    details: list[dict[str, Any]] = []
    if e.violation is not None:
        violation = {"field": e.violation.field, "description": e.violation.description}
        details.append({"@type": _TYPE + "BadRequest", "field_violations": [violation]})
    if e.resource is not None:
        details.append(
            {
                "@type": _TYPE + "ResourceInfo",
                "description": "",
                "owner": "",
                "resource_name": e.resource.resource_name,
                "resource_type": e.resource.resource_type,
            }
        )
    details.append({"@type": _TYPE + "ErrorInfo", "domain": "dapr.io", "metadata": e.http_metadata, "reason": e.reason})
    body = {"errorCode": e.error_code, "message": e.message, "details": details}
    return e.http_status, _JSON, orjson.dumps(body)


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
        self.inspector = InspectorApp(runtime)

    async def __call__(self, req: Request) -> Response:
        try:
            return await self._route(req)
        except ApiError as e:
            return api_error_response(e)

    def _route(self, req: Request) -> Awaitable[Response]:
        """The handler coroutine for ``req`` (not awaited here: one coroutine less per request)."""
        path, method = req.path, req.method
        if b"//" in path or b"/." in path or path[-1:] == b"/":  # only such paths change when cleaned
            path = clean_path(path)
        if path.startswith(b"/v1.0/healthz"):
            if path in (b"/v1.0/healthz", b"/v1.0/healthz/outbound") and method == "GET":  # HEAD comes as GET
                return _answer(_NO_CONTENT)
            raise _not_found(req)
        if path.startswith(_DEVINIT):
            return self.inspector.route(req)
        if self.token is not None:
            check_token(self.token, req.headers.get(b"dapr-api-token"))
        if path.startswith(_STATE):
            store, sep, rest = path[12:].partition(b"/")
            name = unescape(store, "the store name in the URL")
            if not name:
                raise malformed("the store name is missing from the URL: /v1.0/state/<store>")
            if not rest:
                if method in _WRITE:
                    return self._save(name, req)
            elif method == "GET":
                return self._get(name, _key(rest), req)
            elif method == "DELETE":
                return self._delete(name, _key(rest), req)
            elif method in _WRITE and rest == b"bulk":
                return self._bulk(name, req)
            elif method in _WRITE and rest == b"transaction":
                return self._transaction(name, req)
            raise _not_allowed(req)
        if path.startswith(_QUERY) and path.endswith(b"/query"):
            if method not in _WRITE:
                raise _not_allowed(req)
            return self._query(unescape(path[len(_QUERY) : -6], "the store name in the URL"), req)
        if path == _METADATA and method == "GET":
            return _answer(_json(metadata_json(self.runtime.metadata())))
        if path.startswith(b"/v1.0/metadata/") and b"/" not in path[15:]:
            if method != "PUT":
                raise _not_allowed(req)
            self.runtime.set_metadata(unescape(path[15:], "the metadata key in the URL"), req.body.decode("utf-8", "replace"))
            return _answer(_NO_CONTENT)
        if path == b"/v1.0/shutdown" and self.on_shutdown is not None:
            if method != "POST":
                raise _not_allowed(req)
            # As daprd: 204, then a graceful stop (begun on the next loop turn, after this answer).
            asyncio.get_running_loop().call_soon(self.on_shutdown)
            return _answer(_NO_CONTENT)
        raise _not_found(req)

    # -- handlers ----------------------------------------------------------------------

    async def _get(self, store: str, key: str, req: Request) -> Response:
        params = query_params(req.query)
        item = await self.runtime.get(store, key, _option(req, params, "consistency", b"consistency"))
        if item is None:
            return _NO_CONTENT
        headers = [_JSON_CT, (b"ETag", item.etag.encode())]
        if item.expire_at is not None:
            headers.append((b"metadata.ttlExpireTime", rfc3339(item.expire_at).encode()))
        return 200, headers, item.value

    async def _save(self, store: str, req: Request) -> Response:
        body = loads(req.body)
        if isinstance(body, str):  # the Dapr how-to posts a JSON string holding the array
            warn_once(
                "string-body",
                "a save body was a JSON string holding the array: devinit decodes it once more, but daprd answers "
                "400 ERR_MALFORMED_REQUEST; post the array itself (e.g. requests' json=[...], not json=json.dumps(...))",
            )
            body = loads(body.encode())
        if not isinstance(body, list):
            raise malformed("the save body must be a JSON array of {key, value, etag?, metadata?, options?}")
        params = query_params(req.query)
        query_meta = _query_metadata(params)
        items = []
        for i, raw in enumerate(body):
            if not isinstance(raw, dict):
                raise malformed(f"item {i} of the save body must be an object with a key and a value")
            items.append(_request(raw, query_meta, f"item {i}"))
        await self.runtime.save(store, items, _option_defaults(req, params))
        return _NO_CONTENT

    async def _delete(self, store: str, key: str, req: Request) -> Response:
        params = query_params(req.query)
        etag = _header(req, b"if-match")
        if etag and len(etag) >= 2 and etag[0] == etag[-1] == '"':
            warn_once(
                "quoted-if-match",
                "a delete sent If-Match with a quoted etag (%s): devinit takes the etag inside the quotes, but daprd "
                "takes the quotes as part of it (409); send the etag as GET returned it",
                etag,
            )
            etag = etag[1:-1]
        meta = _query_metadata(params)
        await self.runtime.delete(store, DeleteRequest(key, etag, meta, _option_defaults(req, params)))
        return _NO_CONTENT

    async def _bulk(self, store: str, req: Request) -> Response:
        body = loads(req.body)
        if not isinstance(body, dict):
            raise malformed('the bulk body must be an object like {"keys": ["a", "b"]}')
        # daprd reads the keys itself, one by one: parallelism is accepted (<= 0: no limit) and not needed
        parallelism = body.get("parallelism")
        if parallelism is not None and (not isinstance(parallelism, int) or isinstance(parallelism, bool)):
            raise malformed("parallelism must be an integer (0 or less: no limit)")
        keys = body.get("keys")
        items = await self.runtime.bulk_get(store, [] if keys is None else keys)  # no keys: [] (as daprd)
        return _json([_bulk_item(b) for b in items])

    async def _transaction(self, store: str, req: Request) -> Response:
        body = loads(req.body)
        if not isinstance(body, dict):
            raise malformed('the transaction body must be an object like {"operations": [...]}')
        operations = body.get("operations")
        if operations is None:  # absent or null: nothing to do
            operations = []
        if not isinstance(operations, list):
            raise malformed("operations must be an array of {operation, request}")
        params = query_params(req.query)
        # metadata.<name> query parameters reach each operation (as daprd); the body's `metadata`
        # is the transaction's own and does not
        query_meta = _query_metadata(params)
        ops = []
        for i, raw in enumerate(operations):
            if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
                raise malformed(f"operations[{i}] must be an object with 'operation' and a 'request' object")
            operation, request, where = raw.get("operation"), raw["request"], f"operations[{i}].request"
            if operation == "delete":
                meta = _merged(request.get("metadata"), query_meta, where)
                ops.append(
                    TxOperation(operation, DeleteRequest(request.get("key"), request.get("etag"), meta, request.get("options")))
                )
            else:  # an upsert, or an operation the runtime refuses
                ops.append(TxOperation(operation, _request(request, query_meta, where)))
        await self.runtime.transact(store, ops, body.get("metadata"), _option_defaults(req, params))
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


def metadata_json(meta: RuntimeMetadata) -> dict[str, Any]:
    """The body of GET /v1.0/metadata."""
    components = [
        {
            "name": c.name,
            "type": c.type,
            "version": c.version,
            "capabilities": list(c.capabilities),
            "health": c.health.as_json(),  # [devinit] extra field: clients ignore what they do not know
        }
        for c in meta.components
    ]
    return {
        "id": meta.app_id,
        "runtimeVersion": meta.runtime_version,
        "enabledFeatures": [],
        "actors": [],
        "components": components,
        "extended": meta.extended,
    }


def _bulk_item(b: BulkItem) -> dict[str, Any]:
    if b.item is None:
        return {"key": b.key} if b.error is None else {"key": b.key, "error": b.error}
    out: dict[str, Any] = {"key": b.key, "data": embed_value(b.item.value), "etag": b.item.etag}
    if b.item.expire_at is not None:
        out["metadata"] = {"ttlExpireTime": rfc3339(b.item.expire_at)}
    return out


def _merged(metadata: Any, extra_meta: dict[str, str], where: str) -> Any:
    """An item's metadata with the request's ``metadata.<name>`` query parameters over it."""
    if not extra_meta:
        return metadata
    if metadata is not None and not isinstance(metadata, dict):
        raise malformed(f"{where}: metadata must be an object of string values")
    return {**(metadata or {}), **extra_meta}


def _request(raw: dict[str, Any], extra_meta: dict[str, str], where: str) -> SaveRequest:
    metadata = _merged(raw.get("metadata"), extra_meta, where)
    return SaveRequest(raw.get("key"), dumps_value(raw.get("value")), raw.get("etag"), metadata, raw.get("options"))


def _query_metadata(params: Mapping[str, str]) -> dict[str, str]:
    """The ``metadata.<name>`` query parameters, by name (as daprd: they reach each item)."""
    return {k[9:]: v for k, v in params.items() if k.startswith("metadata.")}


def _option_defaults(req: Request, params: Mapping[str, str]) -> dict[str, str | None]:
    """Request-level consistency / concurrency: the query string first, then headers."""
    return {
        "consistency": _option(req, params, "consistency", b"consistency"),
        "concurrency": _option(req, params, "concurrency", b"concurrency"),
    }


def _option(req: Request, params: Mapping[str, str], name: str, header: bytes) -> str | None:
    """A request-level option from the query string, else (a leniency: daprd ignores it) a header."""
    value = params.get(name)
    if value:
        return value
    raw = req.headers.get(header)
    if raw is None:
        return None
    text = raw.decode("latin-1")
    warn_once(
        f"{name}-header",
        "a request sent %s as a header (%s: %s): devinit applies it, but daprd ignores headers; pass it in the "
        "query string (?%s=%s) or in the item's options",
        name,
        name,
        text,
        name,
        text,
    )
    return text


def clean_path(path: bytes) -> bytes:
    """``path`` as Go's ``path.Clean`` leaves a rooted path: no empty or ``.`` segment, ``..``
    applied, no trailing slash. daprd routes on the cleaned path."""
    if path[:1] != b"/":
        return path  # not a path we serve, whatever it is
    out: list[bytes] = []
    for part in path.split(b"/"):
        if part == b"..":
            if out:
                out.pop()
        elif part and part != b".":
            out.append(part)
    return b"/" + b"/".join(out)


def _key(raw: bytes) -> str:
    """The key of GET / DELETE /v1.0/state/<store>/<key>."""
    if b"/" in raw:  # daprd routes /a/b nowhere (404): a slash in a key must be %2F
        warn_once(
            "slash-in-key",
            "a URL key held an unencoded '/' (%s): devinit takes it as part of the key, but daprd answers 404; "
            "percent-encode it as %%2F",
            raw.decode("latin-1"),
        )
    return unescape(raw, "the key in the URL")


def _header(req: Request, name: bytes) -> str | None:
    value = req.headers.get(name)
    return value.decode("latin-1") if value is not None else None
