"""The gRPC front end: the state RPCs of ``dapr.proto.runtime.v1.Dapr``, on ``grpc_wire``.

The messages come from devinit's own copy of Dapr's .proto files (``devinit.proto``); the wire (HTTP/2, framing, deadlines, status trailers) is ``grpc_wire``'s. Only the
state RPCs, GetMetadata and SetMetadata are implemented; every other RPC of the service answers
UNIMPLEMENTED, saying so. As in the HTTP front end, every rule that is not about the wire is the runtime's: this module turns
messages into plain values, calls one runtime coroutine, and turns ``ApiError`` into a
gRPC status in one place (``DaprServicer.__call__``), with the rich details daprd attaches
(``grpc-status-details-bin``: BadRequest, ResourceInfo, ErrorInfo), which the SDKs surface
(the Python SDK's ``error_code()`` is the ErrorInfo's reason).

Wire rules of this front end (docs/state-api.md):
- values are raw bytes, stored and returned byte for byte; only an item whose metadata
  says ``contentType: application/json`` is JSON-decoded first, and stored as compact JSON
  text (the form the HTTP front end stores), so both protocols read the same bytes back;
- a missing key is OK with empty data and an empty etag;
- ``ttlExpireTime`` (RFC 3339) is returned in the response metadata of items with a TTL;
- with an API token set, every RPC (implemented or not) needs ``dapr-api-token`` metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from google.protobuf import any_pb2, empty_pb2, message_factory
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from devinit import ports
from devinit.errors import ApiError, GrpcBindError, malformed
from devinit.proto import api_v1, common_v1, dapr_pb2
from devinit.server import grpc_wire
from devinit.server.grpc_wire import Call, Reply
from devinit.server.json_values import dumps_value, loads, rfc3339
from devinit.server.runtime import DeleteRequest, Runtime, SaveRequest, TxOperation, check_token
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
SERVICE = "dapr.proto.runtime.v1.Dapr"
# Texts in a status are cut to this many characters: the message travels twice (grpc-message
# and the details trailer), clients refuse trailers over 8-16 KiB, and the Python SDK refuses
# a details trailer whose message differs from grpc-message (so grpc_wire must not cut it again).
_MAX_TEXT = 1024


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "... (truncated)"


def _packed(message: Any) -> Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def error_reply(err: ApiError) -> Reply:
    """``err`` as the status a sidecar sends: code, message, and its details in daprd's order."""
    code = grpc_wire.STATUS_CODES[err.grpc_code]  # ApiError.grpc_code holds the name
    message = _cut(err.message)
    details = []
    if err.violation is not None:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=_cut(err.violation.field), description=_cut(err.violation.description)
        )
        details.append(_packed(error_details_pb2.BadRequest(field_violations=[violation])))
    if err.resource is not None:
        resource = error_details_pb2.ResourceInfo(
            resource_type=err.resource.resource_type, resource_name=_cut(err.resource.resource_name)
        )
        details.append(_packed(resource))
    # daprd's gRPC API attaches no ErrorInfo metadata to state errors (see ApiError.http_metadata)
    details.append(_packed(error_details_pb2.ErrorInfo(reason=err.reason, domain="dapr.io")))
    status = status_pb2.Status(code=code, message=message, details=details)
    return grpc_wire.error(code, message, [grpc_wire.binary_trailer("grpc-status-details-bin", status.SerializeToString())])


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
    """A common.v1.StateItem as the runtime's SaveRequest (``shared``: transaction metadata,
    which decides whether a value is JSON, and reaches no operation otherwise)."""
    metadata = dict(item.metadata)
    effective = {**(shared or {}), **metadata}
    return SaveRequest(item.key, _value(item.key, item.value, effective), _etag(item), metadata, _options(item))


def _delete_request(item: Any) -> DeleteRequest:
    """A common.v1.StateItem / DeleteStateRequest as the runtime's DeleteRequest."""
    return DeleteRequest(item.key, _etag(item), dict(item.metadata), _options(item))


def _item_metadata(item: StoredItem) -> dict[str, str]:
    return {"ttlExpireTime": rfc3339(item.expire_at)} if item.expire_at is not None else {}


IMPLEMENTED = frozenset(
    {
        "GetState",
        "GetBulkState",
        "SaveState",
        "DeleteState",
        "DeleteBulkState",
        "ExecuteStateTransaction",
        "QueryStateAlpha1",
        "GetMetadata",
        "SetMetadata",
    }
)


class DaprServicer:
    """The state RPCs, GetMetadata and SetMetadata of ``dapr.proto.runtime.v1.Dapr`` over one runtime.

    ``route`` runs when a call's headers arrive (token, then method); ``__call__`` runs an
    implemented method on the whole request message.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.known = set(dapr_pb2.DESCRIPTOR.services_by_name["Dapr"].methods_by_name)
        self.methods: dict[str, tuple[Any, Callable[[Any], Awaitable[Any]]]] = {}
        for method in dapr_pb2.DESCRIPTOR.services_by_name["Dapr"].methods:
            if method.name in IMPLEMENTED:
                request_class = message_factory.GetMessageClass(method.input_type)
                self.methods[f"/{SERVICE}/{method.name}"] = (request_class, getattr(self, method.name))

    def route(self, call: Call) -> Reply | None:
        """None for a call to serve; else its answer: every RPC, implemented or not, needs the token."""
        if self.runtime.api_token is not None:
            try:
                check_token(self.runtime.api_token, call.metadata.get("dapr-api-token"))
            except ApiError as e:
                return grpc_wire.error(grpc_wire.UNAUTHENTICATED, e.message)
        if call.method in self.methods:
            return None
        service, _, name = call.method[1:].rpartition("/")
        if service == SERVICE and name in self.known:
            message = f"devinit serves Dapr's state management API only (state RPCs and metadata); {name} is not implemented"
        else:
            message = f"unknown method {call.method}: devinit serves {SERVICE} (its state RPCs and metadata)"
        return grpc_wire.error(grpc_wire.UNIMPLEMENTED, message)

    async def __call__(self, call: Call) -> Reply:
        """Run one implemented RPC; an ``ApiError`` becomes its gRPC status (the one boundary)."""
        request_class, method = self.methods[call.method]
        try:
            request = request_class.FromString(call.message)
        except DecodeError as e:
            return grpc_wire.error(
                grpc_wire.INVALID_ARGUMENT, f"the request is not a valid {request_class.DESCRIPTOR.full_name}: {e}"
            )
        try:
            response = await method(request)
        except ApiError as e:
            return error_reply(e)
        return Reply(message=response.SerializeToString())

    async def GetState(self, request: Any) -> Any:  # noqa: N802 - the RPC's name in dapr.proto
        """One key; a missing key is OK with empty data and etag."""
        consistency = _CONSISTENCY.get(request.consistency)
        item = await self.runtime.get(request.store_name, request.key, consistency)
        if item is None:
            return api_v1.GetStateResponse()
        return api_v1.GetStateResponse(data=item.value, etag=item.etag, metadata=_item_metadata(item))

    async def GetBulkState(self, request: Any) -> Any:  # noqa: N802 - the RPC's name in dapr.proto
        """Many keys, each once, in the order asked; a missing key is an item with its key alone,
        one the store failed to read has ``error`` (parallelism: accepted, not needed)."""
        items = await self.runtime.bulk_get(request.store_name, list(request.keys))
        out = []
        for b in items:
            if b.item is None:
                out.append(api_v1.BulkStateItem(key=b.key, error=b.error or ""))
            else:
                item = b.item
                out.append(api_v1.BulkStateItem(key=b.key, data=item.value, etag=item.etag, metadata=_item_metadata(item)))
        return api_v1.GetBulkStateResponse(items=out)

    async def SaveState(self, request: Any) -> Any:  # noqa: N802 - the RPC's name in dapr.proto
        """Save items independently (ABORTED naming the keys whose etag check failed)."""
        self.runtime.entry(request.store_name)  # an unknown store is reported before a bad item
        items = [_save_request(item) for item in request.states]
        await self.runtime.save(request.store_name, items)
        return empty_pb2.Empty()

    async def DeleteState(self, request: Any) -> Any:  # noqa: N802 - the RPC's name in dapr.proto
        """Delete one key; with an etag only if it matches."""
        await self.runtime.delete(request.store_name, _delete_request(request))
        return empty_pb2.Empty()

    async def DeleteBulkState(self, request: Any) -> Any:  # noqa: N802 - the RPC's name in dapr.proto
        """Delete keys independently (ABORTED naming the keys whose etag check failed)."""
        await self.runtime.delete_many(request.store_name, [_delete_request(s) for s in request.states])
        return empty_pb2.Empty()

    async def ExecuteStateTransaction(self, request: Any) -> Any:  # noqa: N802 - the RPC's name in dapr.proto
        """Apply upserts and deletes in order, all or nothing."""
        self.runtime.entry(request.storeName)
        shared = dict(request.metadata)
        ops = []
        for op in request.operations:
            if op.operationType == "delete":
                ops.append(TxOperation(op.operationType, _delete_request(op.request)))
            else:  # an upsert, or an operation the runtime refuses
                ops.append(TxOperation(op.operationType, _save_request(op.request, shared)))
        await self.runtime.transact(request.storeName, ops, shared)
        return empty_pb2.Empty()

    async def QueryStateAlpha1(self, request: Any) -> Any:  # noqa: N802 - the RPC's name in dapr.proto
        """The query language of docs/state-api.md; ``query`` is the JSON document as text."""
        self.runtime.entry(request.store_name)  # an unknown store is reported before a bad query
        results, token = await self.runtime.query(request.store_name, loads(request.query.encode()))
        items = [api_v1.QueryStateItem(key=k, data=v, etag=e) for k, v, e in results]
        return api_v1.QueryStateResponse(results=items, token=token or "")

    async def GetMetadata(self, request: Any) -> Any:  # noqa: N802 - the RPC's name in dapr.proto
        """The same facts as GET /v1.0/metadata."""
        meta = self.runtime.metadata()
        components = [
            api_v1.RegisteredComponents(name=c.name, type=c.type, version=c.version, capabilities=c.capabilities)
            for c in meta.components
        ]
        return api_v1.GetMetadataResponse(
            id=meta.app_id,
            runtime_version=meta.runtime_version,
            registered_components=components,
            extended_metadata=meta.extended,  # what clients set, and devinit.health.<store>: up / down: <error>
        )

    async def SetMetadata(self, request: Any) -> Any:  # noqa: N802 - the RPC's name in dapr.proto
        """Keep a key under ``extended`` (as PUT /v1.0/metadata/{key})."""
        self.runtime.set_metadata(request.key, request.value)
        return empty_pb2.Empty()


async def start_grpc_server(runtime: Runtime, host: str, port: int) -> grpc_wire.GrpcServer:
    """Start serving ``runtime`` over gRPC on ``host:port``; raise GrpcBindError if it cannot listen."""
    servicer = DaprServicer(runtime)
    server = grpc_wire.GrpcServer(servicer, servicer.route, host, port)
    try:
        await server.start()
    except OSError as e:
        if ports.classify(e) is ports.PortState.RESERVED:  # WinError 10013 / EACCES: not "in use"
            raise GrpcBindError(
                f"the gRPC server could not listen on {host}:{port}: {ports.refusal(port, '--grpc-port')}"
            ) from None
        raise GrpcBindError(
            f"the gRPC server could not listen on {host}:{port} (is port {port} in use? try --grpc-port): {e.strerror or e}"
        ) from None
    return server
