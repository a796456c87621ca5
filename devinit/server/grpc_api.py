"""The gRPC front end: the state RPCs of ``dapr.proto.runtime.v1.Dapr`` on grpc.aio.

The messages and the servicer base come from the generated stubs shipped in the ``dapr``
package (no .proto files here). Only the state RPCs and GetMetadata are implemented; every
other RPC of the service answers UNIMPLEMENTED, saying so. As in the HTTP
front end, every rule that is not about the wire is the runtime's: this module turns
messages into plain values, calls one runtime coroutine, and turns ``ApiError`` into a
gRPC status in one place (``_translate``).

Wire rules of this front end (STATE_API.md):
- values are raw bytes, stored and returned byte for byte; only an item whose metadata
  says ``contentType: application/json`` is JSON-decoded first, and stored as compact JSON
  text (the form the HTTP front end stores), so both protocols read the same bytes back;
- a missing key is OK with empty data and an empty etag;
- ``ttlExpireTime`` (RFC 3339) is returned in the response metadata of items with a TTL;
- with an API token set, every RPC (implemented or not) needs ``dapr-api-token`` metadata.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import grpc
from dapr.proto import api_v1, common_v1
from dapr.proto.runtime.v1 import dapr_pb2, dapr_pb2_grpc
from google.protobuf import any_pb2, empty_pb2
from google.rpc import error_details_pb2, status_pb2

from devinit.errors import ApiError, GrpcBindError, malformed
from devinit.server.http import dumps_value, loads, rfc3339
from devinit.server.runtime import Runtime, SaveRequest, TxOperation, check_token
from devinit.state.base import StoredItem

log = logging.getLogger("devinit.grpc")

JSON_CONTENT_TYPE = "application/json"
_CONCURRENCY = {
    common_v1.StateOptions.CONCURRENCY_FIRST_WRITE: "first-write",
    common_v1.StateOptions.CONCURRENCY_LAST_WRITE: "last-write",
}
_CONSISTENCY = {
    common_v1.StateOptions.CONSISTENCY_EVENTUAL: "eventual",
    common_v1.StateOptions.CONSISTENCY_STRONG: "strong",
}
# A Dapr sidecar attaches a google.rpc.ErrorInfo (domain dapr.io) to these two errors only;
# the SDK surfaces its reason as DaprGrpcError.error_code(). Other state errors carry none.
_ERROR_INFO_REASON = {
    "ERR_STATE_STORE_NOT_FOUND": "DAPR_STATE_NOT_FOUND",
    "ERR_STATE_STORE_NOT_CONFIGURED": "DAPR_STATE_NOT_CONFIGURED",
}

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def _status_trailer(err: ApiError, code: grpc.StatusCode, app_id: str | None) -> tuple[tuple[str, bytes], ...]:
    """The ``grpc-status-details-bin`` trailer a sidecar sends for ``err``, if any."""
    reason = _ERROR_INFO_REASON.get(err.error_code)
    if reason is None:
        return ()
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="dapr.io", metadata={"appID": app_id} if app_id else {}))
    status = status_pb2.Status(code=code.value[0], message=err.message, details=[detail])
    return (("grpc-status-details-bin", status.SerializeToString()),)


def _translate(handler: Handler) -> Handler:
    """Answer an ``ApiError`` raised by ``handler`` with its gRPC status (the one boundary)."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except ApiError as e:
            code = grpc.StatusCode[e.grpc_code]
            await context.abort(code, e.message, _status_trailer(e, code, self.runtime.app_id))

    return wrapper  # type: ignore[return-value]


def _etag(message: Any) -> str | None:
    """The etag of a StateItem / DeleteStateRequest; unset and empty both mean none."""
    return message.etag.value if message.HasField("etag") else None


def _options(message: Any) -> dict[str, str | None] | None:
    """StateOptions as the runtime's option strings; UNSPECIFIED leaves the default."""
    if not message.HasField("options"):
        return None
    return {
        "concurrency": _CONCURRENCY.get(message.options.concurrency),
        "consistency": _CONSISTENCY.get(message.options.consistency),
    }


def _value(key: str, raw: bytes, metadata: Mapping[str, str]) -> bytes:
    """The bytes to store: as given, or compact JSON text when the item says it is JSON."""
    if metadata.get("contentType") != JSON_CONTENT_TYPE:
        return raw
    try:
        return dumps_value(loads(raw))
    except ApiError:
        raise malformed(
            f"the value of key {key!r} is not valid JSON, but its metadata says contentType "
            f"{JSON_CONTENT_TYPE}: send JSON, or drop that metadata to store the bytes as they are"
        ) from None


def _save_request(item: Any, shared: Mapping[str, str] | None = None) -> SaveRequest:
    """A common.v1.StateItem as the runtime's SaveRequest (``shared``: transaction metadata)."""
    metadata = dict(item.metadata)
    effective = {**(shared or {}), **metadata}
    return SaveRequest(item.key, _value(item.key, item.value, effective), _etag(item), metadata, _options(item))


def _item_metadata(item: StoredItem) -> dict[str, str]:
    return {"ttlExpireTime": rfc3339(item.expire_at)} if item.expire_at is not None else {}


IMPLEMENTED = frozenset(
    {"GetState", "GetBulkState", "SaveState", "DeleteState", "DeleteBulkState",
     "ExecuteStateTransaction", "QueryStateAlpha1", "GetMetadata"}
)


def _unimplemented(name: str) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]:
    """A handler for an RPC devinit does not serve (any streaming kind: it only aborts)."""

    async def handler(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"devinit serves Dapr's state management API only (state RPCs and GetMetadata); {name} is not implemented",
        )

    return handler


class DaprServicer(dapr_pb2_grpc.DaprServicer):
    """The state RPCs and GetMetadata of ``dapr.proto.runtime.v1.Dapr`` over one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # The generated base answers the rest with "Unexpected NotImplementedError: Method not
        # implemented!"; say instead what devinit is, keeping the UNIMPLEMENTED code.
        for method in dapr_pb2.DESCRIPTOR.services_by_name["Dapr"].methods:
            if method.name not in IMPLEMENTED:
                setattr(self, method.name, _unimplemented(method.name))

    @_translate
    async def GetState(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802 - generated name
        """One key; a missing key is OK with empty data and etag."""
        consistency = _CONSISTENCY.get(request.consistency)
        item = await self.runtime.get(request.store_name, request.key, consistency)
        if item is None:
            return api_v1.GetStateResponse()
        return api_v1.GetStateResponse(data=item.value, etag=item.etag, metadata=_item_metadata(item))

    @_translate
    async def GetBulkState(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        """Many keys, in the order asked; a missing key is an item with its key alone."""
        self.runtime.entry(request.store_name)  # an unknown store is reported before bad arguments
        if request.parallelism < 0:
            raise malformed("parallelism must be a non-negative integer")
        items = await self.runtime.bulk_get(request.store_name, list(request.keys))
        out = []
        for key, item in items:
            if item is None:
                out.append(api_v1.BulkStateItem(key=key))
            else:
                out.append(api_v1.BulkStateItem(key=key, data=item.value, etag=item.etag, metadata=_item_metadata(item)))
        return api_v1.GetBulkStateResponse(items=out)

    @_translate
    async def SaveState(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        """Save items independently (ABORTED naming the keys whose etag check failed)."""
        self.runtime.entry(request.store_name)  # an unknown store is reported before a bad item
        items = [_save_request(item) for item in request.states]
        await self.runtime.save(request.store_name, items)
        return empty_pb2.Empty()

    @_translate
    async def DeleteState(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        """Delete one key; with an etag only if it matches."""
        req = SaveRequest(request.key, b"", _etag(request), dict(request.metadata), _options(request))
        await self.runtime.delete(request.store_name, req)
        return empty_pb2.Empty()

    @_translate
    async def DeleteBulkState(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        """Delete keys independently (ABORTED naming the keys whose etag check failed)."""
        reqs = [SaveRequest(s.key, b"", _etag(s), dict(s.metadata), _options(s)) for s in request.states]
        await self.runtime.delete_many(request.store_name, reqs)
        return empty_pb2.Empty()

    @_translate
    async def ExecuteStateTransaction(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        """Apply upserts and deletes in order, all or nothing."""
        self.runtime.entry(request.storeName)
        shared = dict(request.metadata)
        ops = []
        for op in request.operations:
            if op.operationType == "upsert":
                req = _save_request(op.request, shared)
            else:  # a delete carries no value; an unknown operation is the runtime's error
                req = SaveRequest(op.request.key, b"", _etag(op.request), dict(op.request.metadata), _options(op.request))
            ops.append(TxOperation(op.operationType, req))
        await self.runtime.transact(request.storeName, ops, shared)
        return empty_pb2.Empty()

    @_translate
    async def QueryStateAlpha1(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        """The query language of STATE_API.md; ``query`` is the JSON document as text."""
        self.runtime.entry(request.store_name)  # an unknown store is reported before a bad query
        results, token = await self.runtime.query(request.store_name, loads(request.query.encode()))
        items = [api_v1.QueryStateItem(key=k, data=v, etag=e) for k, v, e in results]
        return api_v1.QueryStateResponse(results=items, token=token or "")

    @_translate
    async def GetMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        """The same facts as GET /v1.0/metadata."""
        meta = self.runtime.metadata()
        components = [
            api_v1.RegisteredComponents(name=c["name"], type=c["type"], version=c["version"], capabilities=c["capabilities"])
            for c in meta["components"]
        ]
        return api_v1.GetMetadataResponse(
            id=meta["id"],
            runtime_version=meta["runtimeVersion"],
            enabled_features=meta["enabledFeatures"],
            registered_components=components,
            extended_metadata=meta["extended"],  # devinit.health.<store>: up / down: <error>
        )


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuse every RPC, implemented or not, without the right ``dapr-api-token`` metadata."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        given = _metadata_value(details.invocation_metadata or (), "dapr-api-token")
        try:
            check_token(self.token, given)
        except ApiError as e:
            return _deny(handler, e.message)
        return handler


def _metadata_value(metadata: Iterable[Any], name: str) -> str | bytes | None:
    for entry in metadata:
        key, value = (entry.key, entry.value) if hasattr(entry, "key") else entry
        if key == name:
            return value
    return None


def _deny(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED."""

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler is None:  # a method no servicer knows: still refused before UNIMPLEMENTED
        return grpc.unary_unary_rpc_method_handler(deny)
    # Keep the (de)serializers and streaming kind so that the call is read as the client sent it.
    if handler.request_streaming and handler.response_streaming:
        make = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        make = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        make = grpc.unary_stream_rpc_method_handler
    else:
        make = grpc.unary_unary_rpc_method_handler
    return make(deny, handler.request_deserializer, handler.response_serializer)


def _address(host: str, port: int) -> str:
    """``host:port`` for grpc, with brackets around an IPv6 literal."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def start_grpc_server(runtime: Runtime, host: str, port: int) -> grpc.aio.Server:
    """Start serving ``runtime`` over gRPC on ``host:port``; raise GrpcBindError if it cannot listen."""
    interceptors = [TokenInterceptor(runtime.api_token)] if runtime.api_token else []
    server = grpc.aio.server(
        interceptors=interceptors,
        # gRPC turns SO_REUSEPORT on by default, which would let a second devinit bind the
        # same port silently and share its traffic; a port in use must be an error instead.
        options=[("grpc.so_reuseport", 0)],
    )
    dapr_pb2_grpc.add_DaprServicer_to_server(DaprServicer(runtime), server)
    address = _address(host, port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:  # grpcio >= 1.5x raises instead of returning 0
        log.debug("binding %s: %s", address, e)
        bound = 0
    if not bound:
        await server.stop(None)
        raise GrpcBindError(
            f"the gRPC server could not listen on {address} (is port {port} in use? try --grpc-port)"
        )
    await server.start()
    return server
