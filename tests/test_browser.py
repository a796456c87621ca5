"""What web pages can do with devinit's HTTP API (server/browser.py), with real clients:
httpx setting the headers a browser would, then a real headless Chromium (tests/browser.py).

A page on any site may send a "simple" cross-origin POST to localhost, and a DNS-rebinding
page reaches the server under a foreign name: both must change nothing. Pages on loopback
origins (the developer's own, devinit's) and those named in --allowed-origins get CORS as
daprd offers it; clients that send no Origin are unaffected.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from browser import Browser, Pages, browser, pages  # noqa: F401 - the fixtures
from devinit.server.browser import BrowserPolicy, is_loopback_origin
from devinit.server.http_api import error_response
from support import DevinitServer, write_component

TOKEN = "tok-" + "b10c4ed0"
SIMPLE = {"content-type": "text/plain"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevinitServer]:
    folder = tmp_path_factory.mktemp("browser") / "components"
    write_component(folder, "statestore", "state.in-memory")
    s = DevinitServer(folder, "--allowed-origins", "https://app.example.com, https://*.corp.example")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def token_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevinitServer]:
    folder = tmp_path_factory.mktemp("browser-token") / "components"
    write_component(folder, "statestore", "state.in-memory")
    s = DevinitServer(folder, env={"DAPR_API_TOKEN": TOKEN})
    yield s
    s.stop()


def _save(srv: DevinitServer, key: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        srv.url + "/v1.0/state/statestore", content=f'[{{"key": "{key}", "value": 1}}]', headers=headers, timeout=10
    )


def _stored(srv: DevinitServer, key: str) -> bool:
    return httpx.get(f"{srv.url}/v1.0/state/statestore/{key}", timeout=10).status_code == 200


# -- with httpx ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "http://localhost.evil.example", "file://", "http://127.0.0.1.nip.io"]
)
def test_a_foreign_origin_is_refused_and_changes_nothing(srv: DevinitServer, origin: str) -> None:
    r = _save(srv, "foreign", {**SIMPLE, "origin": origin})
    assert r.status_code == 403 and r.json()["errorCode"] == "ERR_ORIGIN_NOT_ALLOWED", r.text
    assert "access-control-allow-origin" not in r.headers
    assert not _stored(srv, "foreign")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:3500", "localhost.evil.example", "10.0.0.1"])
def test_a_foreign_host_is_refused_and_changes_nothing(srv: DevinitServer, host: str) -> None:
    """DNS rebinding: the page's own name points at 127.0.0.1, so its requests carry it in Host."""
    r = _save(srv, "rebound", {"host": host})
    assert r.status_code == 421 and r.json()["errorCode"] == "ERR_HOST_NOT_ALLOWED", r.text
    assert not _stored(srv, "rebound")


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:3500", "app.localhost:1", "127.0.0.1", "127.1.2.3:80", "[::1]:3500"])
def test_loopback_hosts_are_served(srv: DevinitServer, host: str) -> None:
    assert _save(srv, "loop", {"host": host}).status_code == 204


def test_clients_without_origin_are_unaffected(srv: DevinitServer) -> None:
    r = _save(srv, "sdk", {"content-type": "application/json"})
    assert r.status_code == 204 and "access-control-allow-origin" not in r.headers
    assert _stored(srv, "sdk")


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:8080",
        "http://127.0.0.1:5173",
        "https://app.localhost",
        "https://app.example.com",
        "https://a.corp.example",
    ],
)
def test_allowed_origins_get_cors(srv: DevinitServer, origin: str) -> None:
    preflight = httpx.options(
        srv.url + "/v1.0/state/statestore",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,dapr-api-token",
        },
        timeout=10,
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    assert preflight.headers["access-control-allow-methods"] == "POST"
    assert preflight.headers["access-control-allow-headers"] == "content-type,dapr-api-token"
    r = _save(srv, "cors", {"content-type": "application/json", "origin": origin})
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == origin and "Origin" in r.headers["vary"]
    got = httpx.get(srv.url + "/v1.0/state/statestore/cors", headers={"origin": origin}, timeout=10)
    assert got.headers["access-control-allow-origin"] == origin and "ETag" in got.headers["access-control-expose-headers"]


def _raw(srv: DevinitServer, request: bytes) -> bytes:
    """Send ``request`` as is; the answer, until the server closes."""
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=10) as s:
        s.sendall(request)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    return got


@pytest.mark.parametrize("origin", ["https://app.example.com", "http://localhost:8080", "https://evil.example"])
def test_the_http_servers_own_refusals_carry_cors_for_allowed_origins(srv: DevinitServer, origin: str) -> None:
    """413, 431 and 400 come from the HTTP layer before any handler: a page of an allowed origin
    reads them as the API's own errors (not an opaque network failure); others get no CORS."""
    allowed = origin != "https://evil.example"
    head = f"Host: 127.0.0.1\r\nOrigin: {origin}\r\n".encode()
    answers = {
        413: _raw(srv, b"POST /v1.0/state/statestore HTTP/1.1\r\n" + head + b"Content-Length: 99999999\r\n\r\n"),
        431: _raw(srv, b"GET /v1.0/state/statestore/k HTTP/1.1\r\n" + head + b"X-Pad: " + b"a" * 70_000 + b"\r\n\r\n"),
        400: _raw(srv, b"GET /v1.0/state/statestore/k HTTP/1.1\r\n" + head + b"Content-Length: x\r\n\r\n"),
    }
    for status, got in answers.items():
        assert got.startswith(b"HTTP/1.1 %d " % status), got[:200]
        lines = got.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
        assert (b"access-control-allow-origin: " + origin.encode() in lines) is allowed, (status, lines)
        assert (b"vary: origin" in lines) is allowed, (status, lines)


def test_a_preflight_from_a_foreign_origin_is_refused(srv: DevinitServer) -> None:
    r = httpx.options(
        srv.url + "/v1.0/state/statestore",
        headers={"origin": "https://other.example", "access-control-request-method": "POST"},
        timeout=10,
    )
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


def test_a_preflight_needs_no_token_and_errors_carry_cors(token_srv: DevinitServer) -> None:
    """A browser never sends the token in a preflight (as daprd, CORS comes before the token);
    the 401 of a request without it is readable by the page."""
    origin = "http://localhost:8080"
    url = token_srv.url + "/v1.0/state/statestore"
    pre = httpx.options(url, headers={"origin": origin, "access-control-request-method": "POST"}, timeout=10)
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == origin
    r = httpx.post(url, json=[{"key": "t", "value": 1}], headers={"origin": origin}, timeout=10)
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == origin
    r = httpx.post(url, json=[{"key": "t", "value": 1}], headers={"origin": origin, "dapr-api-token": TOKEN}, timeout=10)
    assert r.status_code == 204


def test_the_host_rule_follows_the_bound_host() -> None:
    assert is_loopback_origin("http://[::1]:3500") and not is_loopback_origin("http://localhost/x")
    named = BrowserPolicy("devbox.lan", (), error_response)
    assert named.host_ok(b"devbox.lan:3500") and named.host_ok(b"localhost") and not named.host_ok(b"evil.example")
    wildcard = BrowserPolicy("0.0.0.0", (), error_response)  # any address may be used; a name still may not
    assert wildcard.host_ok(b"192.168.1.20:3500") and wildcard.host_ok(b"[fe80::1]") and not wildcard.host_ok(b"evil.example")
    everyone = BrowserPolicy("127.0.0.1", ("*",), error_response)
    assert everyone.origin_ok(b"https://any.example") and not everyone.origin_ok(b"null")


# -- with Chromium ---------------------------------------------------------------------------------


def _page(pages: Pages, name: str) -> str:
    return pages.add(name, "<!doctype html><html><body><p>test page</p></body></html>")


def test_a_page_on_another_site_cannot_write(srv: DevinitServer, browser: Browser, pages: Pages) -> None:
    """A page of http://evil.example (served from another local port) sends the simple
    cross-origin POST that needs no preflight, and a form-like one: nothing is stored."""
    url = _page(pages, "attack.html").replace("127.0.0.1", "evil.example")
    browser.open(url)
    result = browser.run_async(
        """(async () => {
        const target = arguments[0] + "/v1.0/state/statestore";
        const sent = [];
        for (const key of ["pwned-fetch", "pwned-again"]) {
          try {
            await fetch(target, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                                 body: JSON.stringify([{key, value: 1}])});
            sent.push("sent");
          } catch (e) { sent.push(String(e)); }
        }
        done(sent);
        })();""",
        srv.url,
    )
    assert result == ["sent", "sent"]  # the browser did send them (opaque answers)
    assert not _stored(srv, "pwned-fetch") and not _stored(srv, "pwned-again")


def test_a_rebinding_name_is_refused_in_the_browser(srv: DevinitServer, browser: Browser) -> None:
    httpx.post(srv.url + "/v1.0/state/statestore", json=[{"key": "secret", "value": "s3"}], timeout=10)
    browser.open(f"http://rebind.example:{srv.http_port}/v1.0/state/statestore/secret")
    text = browser.text()
    assert "ERR_HOST_NOT_ALLOWED" in text and "s3" not in text


def test_a_local_page_on_another_port_uses_cors(token_srv: DevinitServer, browser: Browser, pages: Pages) -> None:
    """The developer's own page (http://localhost:<other port>) with the token header: a
    preflight, then the write and a read, the ETag readable."""
    browser.open(_page(pages, "app.html").replace("127.0.0.1", "localhost"))
    result = browser.run_async(
        """(async () => {
        const base = arguments[0] + "/v1.0/state/statestore";
        const headers = {"Content-Type": "application/json", "dapr-api-token": arguments[1]};
        const saved = await fetch(base, {method: "POST", headers, body: JSON.stringify([{key: "page", value: {n: 1}}])});
        const got = await fetch(base + "/page", {headers});
        done([saved.status, got.status, await got.text(), got.headers.get("ETag") !== null]);
        })().catch(e => done(String(e)));""",
        token_srv.url.replace("127.0.0.1", "localhost"),
        TOKEN,
    )
    assert result == [204, 200, '{"n":1}', True], result


def test_a_page_served_by_devinit_itself_keeps_working(srv: DevinitServer, browser: Browser) -> None:
    """A document of devinit's own origin (as the web inspector at http://localhost:3500/ui/
    will be): same-origin requests, Origin included on the POST, are served."""
    browser.open(f"http://localhost:{srv.http_port}/v1.0/metadata")
    result = browser.run_async(
        """(async () => {
        const saved = await fetch("/v1.0/state/statestore", {method: "POST", body: JSON.stringify([{key: "ui", value: 7}])});
        const got = await fetch("/v1.0/state/statestore/ui");
        done([saved.status, await got.text()]);
        })().catch(e => done(String(e)));"""
    )
    assert result == [204, "7"], result
