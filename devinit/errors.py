"""Every error devinit raises on purpose.

The CLI catches ``DevinitError`` alone and prints ``Error: <message>``; anything else is a bug
and keeps its traceback. The state API maps ``ApiError`` to its wire form (HTTP status and
JSON body, or a gRPC status).

DevinitError                 base: something the user can act on; the message says what to do
├── UsageError               a bad option value or combination given to the CLI
├── ComponentError           a component file that cannot be loaded (path, field, reason)
├── DockerError              the Docker engine is unreachable or refused a request
│   └── ImagePullError       an image is not present and could not be pulled
├── ReadinessTimeout         a container or server did not become ready in time (with its logs)
├── DaemonError              the background server could not be started, found or stopped
├── FileWriteError           a file devinit owns could not be replaced (another program holds it)
├── GrpcBindError            the gRPC server could not listen on its address (port in use)
├── StateServerError         a test's state server (devinit.testing) could not start, reset or stop
├── StoreError               a store failed or is unreachable (raised by stores, never HTTP-aware)
│   ├── EtagMismatch         a conditional write or delete found another etag (or no item)
│   └── StoreRefused         the store cannot do the request as given (the caller must change it)
│       └── BadCursor        a key-listing cursor this store did not give out (or no longer can follow)
├── QueryError               a state query document that cannot be run (raised by state/query.py)
└── ApiError                 a state API call failed: carries errorCode and HTTP/gRPC status

``ApiError`` also carries the rich details daprd attaches to the same error (google.rpc
ErrorInfo, ResourceInfo, BadRequest), so that each front end can render them in daprd's shape.
"""

from __future__ import annotations

from dataclasses import dataclass


class DevinitError(Exception):
    """Base of every error devinit raises on purpose; the message is for the user."""


class UsageError(DevinitError):
    """A CLI option has a bad value, or options that cannot go together were given."""


class ComponentError(DevinitError):
    """A component file could not be loaded; names the file, the field and the reason.

    ``component`` is the component's name when the file got as far as naming it (None for a
    file that is not valid YAML, say), so that calls to that store can say why it is missing.
    """

    def __init__(self, path: str, field: str, reason: str, component: str | None = None) -> None:
        self.path = path
        self.field = field
        self.reason = reason
        self.component = component
        super().__init__(f"{path}: {field}: {reason}")


class DockerError(DevinitError):
    """The Docker engine could not be reached, or it refused a request."""


class ImagePullError(DockerError):
    """An image was not present locally and pulling it failed; ``reason`` is the registry's word."""

    def __init__(self, message: str, reason: str = "") -> None:
        self.reason = reason
        super().__init__(message)


class ReadinessTimeout(DevinitError):
    """Something devinit started did not become ready before its deadline."""


class DaemonError(DevinitError):
    """The background state server could not be started, found or stopped."""


class FileWriteError(DevinitError):
    """A file devinit owns could not be replaced, e.g. another program holds it open (Windows)."""


class GrpcBindError(DevinitError):
    """The gRPC server could not listen on the address asked for (port in use, bad host)."""


class StateServerError(DevinitError):
    """A test's state server (``devinit.testing.StateServer``) could not start, be emptied or
    stop; the message says what, with the server's last log lines where they help."""


class StoreError(DevinitError):
    """A store failed: unreachable, timed out, or an error from the database itself.

    Raised by stores with a message naming what failed; the runtime turns it into an
    ``ApiError`` with the error code of the operation (HTTP 500, gRPC INTERNAL).
    """


class EtagMismatch(StoreError):
    """A write or delete carried an etag (or first-write) that the stored item does not match.

    ``keys`` are the keys (as the store sees them) whose check failed.
    """

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        super().__init__("etag mismatch for key(s) " + ", ".join(keys))


class StoreRefused(StoreError):
    """The store is up but cannot do this request as it was given, e.g. a Redis Cluster
    transaction over keys in different hash slots. The message says what to change; the
    runtime answers it as a bad request (HTTP 400, gRPC INVALID_ARGUMENT), the store stays up.
    """


class BadCursor(StoreRefused):
    """A key listing was given a cursor the store cannot continue from: not one it gave out, or
    one from before the store changed shape (a Redis Cluster whose masters changed). The message
    says to start the listing again without a cursor."""


class QueryError(DevinitError):
    """A state query document is malformed; the message says what is wrong and how to write it.

    Raised by ``state/query.py``, which knows nothing of HTTP; the runtime answers it as
    ``ERR_MALFORMED_REQUEST`` (HTTP 400, gRPC INVALID_ARGUMENT) with the same message.
    """


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """The resource an error is about (google.rpc.ResourceInfo): daprd names the state store."""

    resource_type: str
    resource_name: str


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """The one field a request got wrong (a google.rpc.BadRequest with one field violation)."""

    field: str
    description: str


class ApiError(DevinitError):
    """A state API call failed; carries Dapr's errorCode, the HTTP and gRPC status, and the details.

    ``grpc_code`` is the name of a ``grpc.StatusCode`` member, so that this module does not
    import grpc. The details are those daprd attaches to the same error: an ErrorInfo (domain
    dapr.io) with ``reason`` (daprd's reason where it has one, else the errorCode), and where
    daprd adds them a ResourceInfo and a BadRequest. ``http_metadata`` is the ErrorInfo metadata
    daprd sends over HTTP only (its gRPC API looks stores up without the app id).
    """

    def __init__(
        self,
        error_code: str,
        message: str,
        http_status: int,
        grpc_code: str,
        *,
        reason: str | None = None,
        resource: ResourceInfo | None = None,
        violation: FieldViolation | None = None,
        http_metadata: dict[str, str] | None = None,
    ) -> None:
        self.error_code = error_code
        self.message = message
        self.http_status = http_status
        self.grpc_code = grpc_code
        self.reason = reason or error_code
        self.resource = resource
        self.violation = violation
        self.http_metadata = http_metadata
        super().__init__(message)


def malformed(message: str) -> ApiError:
    """A request that cannot be understood: 400 / INVALID_ARGUMENT."""
    return ApiError("ERR_MALFORMED_REQUEST", message, 400, "INVALID_ARGUMENT")
