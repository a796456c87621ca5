"""What web pages may do with the HTTP API: the Host check, the Origin check, and CORS.

Loopback is not a wall against browsers: any page the developer opens may send requests to
localhost (a cross-origin ``POST`` with ``Content-Type: text/plain`` needs no preflight), and a
DNS-rebinding page reaches the server under its own host name. So, before any handler runs
(``http_wire``'s ``screen`` hook):

- ``Host`` must be a loopback name or address (``localhost``, ``*.localhost``, 127.0.0.0/8,
  ``[::1]``, any port) or the ``--host`` the server was given; when that is a wildcard
  (``0.0.0.0``, ``::``), any IP address too, since a rebinding page always uses a name.
  Otherwise 421 Misdirected Request: this server does not answer for that name. A request
  without Host (HTTP/1.0) is not a browser's and passes.
- ``Origin``, when present, must be a loopback origin (http or https, a loopback host, any
  port: the developer's own pages, devinit's) or one of ``--allowed-origins`` (Dapr's flag:
  comma-separated origins, ``*`` for any, one ``*`` inside an origin as a wildcard, as Dapr's
  CORS middleware reads it). Otherwise 403 and the handler never runs: nothing changes.
  ``Origin: null`` (sandboxed frames, ``file:`` pages) is refused too.
- CORS for the allowed origins, as daprd offers it: a preflight (``OPTIONS`` with
  ``Access-Control-Request-Method``) is answered 204, before the API token is checked (a
  browser never sends the token in a preflight), echoing the requested method and headers
  (``dapr-api-token``, ``content-type``...); other answers carry ``Access-Control-Allow-Origin``,
  the HTTP layer's own refusals too (400, 413, 431: ``cors``), so a page reads their error.

Clients that send no Origin (the SDKs, curl) are unaffected. Where devinit differs from daprd
is in docs/state-api.md ("Browsers").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from devinit.server.http_wire import Request, Response

_METHODS = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE"))  # daprd's CORS list
_WILDCARD_HOSTS = frozenset(("", "0.0.0.0", "::", "[::]"))
_MEMO = 256  # verdicts remembered per kind (Host values, origins): clients repeat the same few
_EXPOSED = (b"Access-Control-Expose-Headers", b"ETag, metadata.ttlExpireTime")

ErrorResponse = Callable[[int, str, str], Response]


def _split_authority(value: str) -> str:
    """The host of ``host[:port]`` (``[v6]:port`` included), lower-case, without brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_loopback_host(host: str) -> bool:
    """``localhost``, a ``.localhost`` name (RFC 6761: browsers resolve them to loopback
    themselves, never through DNS), or a loopback address."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback_origin(origin: str) -> bool:
    """An ``http``/``https`` origin whose host is loopback (any port)."""
    scheme, sep, authority = origin.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not authority or "/" in authority:
        return False
    return is_loopback_host(_split_authority(authority))


class BrowserPolicy:
    """The Host and Origin checks and CORS for one server (see the module docstring)."""

    def __init__(self, bound_host: str, allowed_origins: Iterable[str], error_response: ErrorResponse) -> None:
        self.bound_host = _split_authority(bound_host)
        self.any_ip = self.bound_host in _WILDCARD_HOSTS
        self.error_response = error_response
        self.all_origins = False
        self.origins: set[str] = set()
        self.patterns: list[tuple[str, str]] = []
        for origin in allowed_origins:
            origin = origin.strip().lower().rstrip("/")
            if not origin:
                continue
            if origin == "*":
                self.all_origins = True
            elif "*" in origin:
                prefix, _, suffix = origin.partition("*")
                self.patterns.append((prefix, suffix))
            else:
                self.origins.add(origin)
        self.hosts: dict[bytes, bool] = {}
        self.allowed: dict[bytes, bool] = {}

    def host_ok(self, value: bytes) -> bool:
        """Whether a request with ``Host: value`` is meant for this server."""
        known = self.hosts.get(value)
        if known is not None:
            return known
        host = _split_authority(value.decode("latin-1"))
        ok = is_loopback_host(host) or host == self.bound_host or (self.any_ip and _is_ip(host))
        if len(self.hosts) < _MEMO:
            self.hosts[value] = ok
        return ok

    def origin_ok(self, value: bytes) -> bool:
        """Whether a page of origin ``value`` may use the API."""
        known = self.allowed.get(value)
        if known is not None:
            return known
        origin = value.decode("latin-1").strip().lower()
        ok = (
            is_loopback_origin(origin)
            or self.all_origins
            or origin in self.origins
            or any(len(origin) >= len(p) + len(s) and origin.startswith(p) and origin.endswith(s) for p, s in self.patterns)
        ) and origin != "null"
        if len(self.allowed) < _MEMO:
            self.allowed[value] = ok
        return ok

    def _allow(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        return [(b"Access-Control-Allow-Origin", b"*" if self.all_origins else origin), (b"Vary", b"Origin")]

    def cors(self, headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]] | None:
        """``http_wire``'s hook for the answers it gives itself (400, 413, 431: no handler, no
        ``screen``): the CORS headers when the request (its headers as far as they were read)
        comes from an allowed origin for this server's Host, so that its page reads the error;
        None otherwise."""
        origin = headers.get(b"origin")
        if origin is None or not self.origin_ok(origin):
            return None
        host = headers.get(b"host")
        if host is not None and not self.host_ok(host):
            return None
        return self._allow(origin)

    def screen(self, req: Request) -> Response | list[tuple[bytes, bytes]] | None:
        """``http_wire``'s hook: None to serve as is, a Response to answer instead, or the CORS
        headers to add to the handler's answer."""
        headers = req.headers
        host = headers.get(b"host")
        origin = headers.get(b"origin")
        if origin is None and (host is None or self.hosts.get(host) is True):
            return None  # an SDK or curl, on a Host seen before: the hot path
        if host is not None and not self.host_ok(host):
            return self.error_response(
                421,
                f"this server does not answer for Host {host.decode('latin-1')!r}: use localhost or 127.0.0.1 "
                "(or start devinit serve with --host naming it)",
                "ERR_HOST_NOT_ALLOWED",
            )
        if origin is None:
            return None
        if not self.origin_ok(origin):
            return self.error_response(
                403,
                f"requests from pages of origin {origin.decode('latin-1')!r} are refused: only loopback pages may use "
                "devinit's API (start devinit serve with --allowed-origins naming it to allow it)",
                "ERR_ORIGIN_NOT_ALLOWED",
            )
        cors = self._allow(origin)
        requested = headers.get(b"access-control-request-method")
        if req.method == "OPTIONS" and requested is not None:
            if requested.strip().upper() not in _METHODS:
                return self.error_response(
                    403, f"method {requested.decode('latin-1')!r} is not allowed", "ERR_METHOD_NOT_ALLOWED"
                )
            cors.append((b"Access-Control-Allow-Methods", requested.strip().upper()))
            wanted = headers.get(b"access-control-request-headers")
            if wanted:
                cors.append((b"Access-Control-Allow-Headers", wanted))
            cors.append((b"Vary", b"Access-Control-Request-Method, Access-Control-Request-Headers"))
            return 204, cors, b""
        cors.append(_EXPOSED)
        return cors
