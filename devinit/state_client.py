"""``devinit state`` and ``devinit ui``: find the running state server and use its devinit route.

The server is found in this order: ``--http-port`` when given; else the server ``devinit init``
started for this home (its pid file); else ``DAPR_HTTP_PORT``; else 3500. ``DAPR_API_TOKEN``
is sent as the API token when set. Every call goes through the devinit route
(docs/state-api.md, "The devinit route"), so these commands reach every store and every app
id's keys the same way. Nothing here prints: ``cli.py`` renders, ``state_render.py`` formats.

Export files are JSON Lines, one object per key: ``{"key", "value", "contentType", "ttl"?}``
(JSON values as JSON, other bytes as base64; ``ttl`` the whole seconds left). Import sends
them back in batches; writing an item twice leaves the same state, so an import may be run
again after it stopped half way.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

from devinit import daemon, paths
from devinit.errors import ApiError, DaemonError, DevinitError, UsageError

DEFAULT_PORT = 3500
DEFAULT_STORE = "statestore"
PAGE = 1000  # keys per listing / export / clear request (the route's most)
IMPORT_ITEMS = 1000  # items per import request
IMPORT_BYTES = 2 * 1024 * 1024  # body bytes per import request (the server takes 4 MiB)
IN_FLIGHT = 2  # import requests sent before the first is answered
API = "/devinit/v1/"


@dataclass
class Server:
    """A state server to talk to, and how it was found (for messages)."""

    port: int
    how: str  # how it was found
    token: str | None = None
    guessed: bool = False  # a port we fell back on: a message about it names the apps' servers too

    @property
    def found_by(self) -> str:
        """How it was found, for a message about a server that does not answer (the run records
        are read only then, not on every command)."""
        return self.how + _run_servers() if self.guessed else self.how

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str:
        """The inspector page (127.0.0.1, as every URL devinit prints: localhost may try ::1 first)."""
        return f"http://127.0.0.1:{self.port}/ui/"


def find_server(home: Path | None = None, http_port: int | None = None) -> Server:
    """The server these commands talk to (see the module docstring for the order)."""
    token = os.environ.get("DAPR_API_TOKEN") or None
    if http_port:
        return Server(http_port, "--http-port", token)
    found = daemon.find(paths.home_key(paths.home(home)))
    if found.running and found.record is not None:
        return Server(found.record.http_port, f"the server 'devinit init' started (pid {found.record.pid})", token)
    env = os.environ.get("DAPR_HTTP_PORT")
    if env:
        if not env.isdigit() or not 0 < int(env) < 65536:
            raise UsageError(f"DAPR_HTTP_PORT={env!r} is not a port number. Fix it, or pass --http-port")
        return Server(int(env), "DAPR_HTTP_PORT", token, guessed=True)
    return Server(
        DEFAULT_PORT, f"the default port {DEFAULT_PORT} (no server started by 'devinit init' for this home)", token, guessed=True
    )


def _run_servers(most: int = 5) -> str:
    """The servers of apps under ``devinit run``, for a message about a server not found: each
    app has one of its own (its in-memory or SQLite store is not init's), on a port it chose."""
    from devinit.runs import running_apps

    apps = running_apps()
    if not apps:
        return ""
    shown = ", ".join(f"--http-port {a.http_port} for app {a.app_id!r}" for a in apps[:most])
    return f"; apps under 'devinit run' have servers of their own: {shown}" + (" ..." if len(apps) > most else "")


@dataclass
class KeyRow:
    """One key as listed."""

    key: str
    app_id: str | None
    size: int
    etag: str
    expire_at: float | None
    now: float  # the server's clock when listed (for the time left)

    def as_json(self) -> dict[str, Any]:
        ttl = None if self.expire_at is None else max(0, round(self.expire_at - self.now))
        return {
            "key": self.key,
            "appId": self.app_id,
            "size": self.size,
            "etag": self.etag,
            "expireAt": self.expire_at,
            "ttl": ttl,
        }


class StateClient:
    """The devinit route of one server, as Python calls; errors come out as ``DevinitError``."""

    def __init__(self, server: Server, timeout: float = 60.0) -> None:
        self.server = server
        headers = {"dapr-api-token": server.token} if server.token else {}
        # Plain HTTP to a loopback port: no TLS to verify (and not loading the CA bundle saves
        # ~0.2 s of every command), and no proxy from the environment between us and it.
        self.http = httpx.Client(base_url=server.url, headers=headers, timeout=timeout, verify=False, trust_env=False)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> StateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one place HTTP turns into results or errors -----------------------------------

    def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: bytes | None = None) -> Any:
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            r = self.http.request(method, API + path, params=params, content=body, headers=headers)
        except httpx.TimeoutException:
            raise DaemonError(
                f"the state server at {self.server.url} did not answer in time ({self.server.found_by}). "
                "Check it with 'devinit status'"
            ) from None
        except httpx.HTTPError as e:
            raise DaemonError(
                f"no devinit state server answers at {self.server.url} ({self.server.found_by}): {e}. "
                "Start one with 'devinit init' (or 'devinit serve'), or pass --http-port"
            ) from None
        if r.status_code == 204:
            return None
        try:
            doc = orjson.loads(r.content)
        except orjson.JSONDecodeError:
            doc = None
        if r.status_code >= 400:
            if isinstance(doc, dict) and "message" in doc:
                message = str(doc["message"])
                if r.status_code == 404 and doc.get("errorCode") == "ERR_NOT_FOUND":
                    message += f". Is the server at {self.server.url} devinit, and as recent as this command?"
                raise ApiError(str(doc.get("errorCode", "")), message, r.status_code, "")
            raise ApiError("", f"the server at {self.server.url} answered {r.status_code}: {r.text[:200]}", r.status_code, "")
        return doc

    @staticmethod
    def _store_path(store: str, tail: str) -> str:
        return f"stores/{_quote(store)}/{tail}"

    # -- stores -----------------------------------------------------------------------------

    def stores(self) -> dict[str, Any]:
        """GET /devinit/v1/stores."""
        doc: dict[str, Any] = self._call("GET", "stores")
        return doc

    def ticket(self) -> str | None:
        """POST /devinit/v1/tickets: a single-use ticket the page trades for the API token
        (None when the server takes no token); ``devinit ui`` puts it in the page's URL instead
        of the token, which would be on the browser's command line for every local user to see."""
        doc: dict[str, Any] = self._call("POST", "tickets")
        ticket = doc.get("ticket") if isinstance(doc, dict) else None
        return ticket if isinstance(ticket, str) else None

    def resolve_store(self, store: str | None) -> str:
        """``store`` when given; else the only state store the server has; else ``statestore``."""
        if store:
            return store
        names = [s["name"] for s in self.stores().get("stores", [])]
        return names[0] if len(names) == 1 else DEFAULT_STORE

    # -- keys -------------------------------------------------------------------------------

    def keys(self, store: str, prefix: str = "", limit: int | None = None) -> Iterator[KeyRow]:
        """Every live key under ``prefix`` (at most ``limit``), page by page: memory stays flat."""
        cursor: str | None = None
        left = limit
        while left is None or left > 0:
            size = PAGE if left is None else min(PAGE, left)
            params: dict[str, Any] = {"prefix": prefix, "limit": size}
            if cursor:
                params["cursor"] = cursor
            page = self._call("GET", self._store_path(store, "keys"), params=params)
            keys = page["keys"] if left is None else page["keys"][:left]  # a Redis page may hold a few more
            for k in keys:
                yield KeyRow(k["key"], k["appId"], k["size"], k["etag"], k["expireAt"], page["now"])
            if left is not None:
                left -= len(keys)
            cursor = page["cursor"]
            if not cursor:
                return

    def get(self, store: str, key: str) -> dict[str, Any]:
        """One key: ``{key, appId, etag, size, expireAt, contentType, value, now}``."""
        doc: dict[str, Any] = self._call("GET", self._store_path(store, "keys/" + _quote(key)))
        return doc

    def set(self, store: str, key: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Write one key (``body``: value, contentType?, etag?, firstWrite?, ttl?); the key as read back."""
        doc: dict[str, Any] | None = self._call("PUT", self._store_path(store, "keys/" + _quote(key)), body=_dumps(body))
        return doc

    def delete(self, store: str, key: str, etag: str | None = None) -> None:
        """Delete one key; with ``etag`` only if it still matches."""
        self._call("DELETE", self._store_path(store, "keys/" + _quote(key)), params={"etag": etag} if etag else None)

    def clear(self, store: str, prefix: str = "", on_page: Callable[[int], None] | None = None) -> int:
        """Delete every key under ``prefix``; returns how many were deleted."""
        total = 0
        cursor: str | None = None
        while True:
            doc = self._call("POST", self._store_path(store, "clear"), body=_dumps({"prefix": prefix, "cursor": cursor}))
            deleted: int = doc["deleted"]
            total += deleted
            if on_page is not None:
                on_page(deleted)
            cursor = doc["cursor"]
            if not cursor:
                return total

    # -- export and import ------------------------------------------------------------------

    def export(self, store: str, out: IO[bytes], prefix: str = "", on_page: Callable[[int], None] | None = None) -> int:
        """Write every live key under ``prefix`` to ``out`` as JSON Lines; returns the count."""
        count = 0
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"prefix": prefix, "limit": PAGE}
            if cursor:
                params["cursor"] = cursor
            page = self._call("GET", self._store_path(store, "export"), params=params)
            # orjson both ways: a JSON value (compact text, as the server sent it) is written out unchanged
            for item in page["items"]:
                out.write(orjson.dumps(item) + b"\n")
            count += len(page["items"])
            if on_page is not None:
                on_page(len(page["items"]))
            cursor = page["cursor"]
            if not cursor:
                return count

    def import_lines(self, store: str, lines: Iterable[bytes], source: str, on_bytes: Callable[[int], None] | None = None) -> int:
        """Write the JSON Lines of an export (blank lines skipped); returns the items written.

        A line that is not a JSON object stops the import with its line number; the batches
        before it are written (importing again is safe)."""
        with _Import(self, store, source, on_bytes) as batches:
            for number, line in enumerate(lines, 1):
                text = line.strip()
                if not text:
                    batches.skipped(len(line))
                    continue
                try:
                    item = orjson.loads(text)
                except orjson.JSONDecodeError as e:
                    raise UsageError(
                        f"{source} line {number} is not JSON ({e}). {batches.written()}Fix the line and import again"
                    ) from None
                if not isinstance(item, dict):
                    raise UsageError(
                        f'{source} line {number} is not an object like {{"key": ..., "value": ...}}. {batches.written()}'
                        "Fix the line and import again"
                    )
                batches.add(number, text, item.get("key"), len(line))
            return batches.finish()

    def import_batch(self, store: str, batch: list[bytes], numbers: list[int], source: str) -> int:
        """POST one batch of export lines; a bad item's error names its line (``numbers``)."""
        body = b'{"items":[' + b",".join(batch) + b"]}"
        try:
            doc = self._call("POST", self._store_path(store, "import"), body=body)
        except ApiError as e:
            if e.http_status == 400 and e.message.startswith("items["):
                index = int(e.message[6 : e.message.index("]")])
                e.message = f"{source} line {numbers[index]}: {e.message[e.message.index(']') + 1 :].lstrip(':. ')}"
                e.args = (e.message,)
            raise
        written: int = doc["written"]
        return written


class _Import:
    """An import's batches, two requests in flight: while the store writes one, the server reads
    the next (measured on 20,000 1 KB items: 10-20% faster than one at a time). A batch holding a key of a batch still
    in flight waits for it, so that a key written twice ends as the file's later line says."""

    def __init__(self, client: StateClient, store: str, source: str, on_bytes: Callable[[int], None] | None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.client, self.store, self.source, self.on_bytes = client, store, source, on_bytes
        self.pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="devinit-import")
        self.in_flight: deque[tuple[Future[int], set[Any], int]] = deque()
        self.done = 0  # items the server confirmed
        self._new_batch()
        self.waiting_bytes = 0  # file bytes read since the last batch went out (for the progress bar)

    def _new_batch(self) -> None:
        self.batch: list[bytes] = []
        self.numbers: list[int] = []
        self.keys: set[Any] = set()
        self.size = 0

    def __enter__(self) -> _Import:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def skipped(self, nbytes: int) -> None:
        self.waiting_bytes += nbytes

    def add(self, number: int, text: bytes, key: Any, nbytes: int) -> None:
        if self.batch and (len(self.batch) >= IMPORT_ITEMS or self.size + len(text) > IMPORT_BYTES):
            self._send()
        self.batch.append(text)
        self.numbers.append(number)
        self.keys.add(key if isinstance(key, str) else None)
        self.size += len(text) + 1
        self.waiting_bytes += nbytes

    def _send(self) -> None:
        while self.in_flight and (len(self.in_flight) >= IN_FLIGHT or any(self.keys & keys for _, keys, _ in self.in_flight)):
            self._collect()
        future = self.pool.submit(self.client.import_batch, self.store, self.batch, self.numbers, self.source)
        self.in_flight.append((future, self.keys, self.waiting_bytes))
        self.waiting_bytes = 0
        self._new_batch()

    def _collect(self) -> None:
        future, _, nbytes = self.in_flight.popleft()
        try:
            self.done += future.result()
        except ApiError as e:
            self._drain_quietly()
            what = "Fix the line and import again" if e.http_status == 400 else "Import again once that is fixed"
            e.message += f". {_written(self.done)}{what}"
            e.args = (e.message,)
            raise
        if self.on_bytes is not None:
            self.on_bytes(nbytes)

    def _drain_quietly(self) -> None:
        """Wait for the other batches in flight (counting what they wrote), after one failed."""
        while self.in_flight:
            future, _, _ = self.in_flight.popleft()
            try:
                self.done += future.result()
            except DevinitError:
                pass

    def written(self) -> str:
        """What was imported so far, for a message (waits for the batches in flight)."""
        self._drain_quietly()
        return _written(self.done)

    def finish(self) -> int:
        """Send the last batch and wait for all; the items written."""
        if self.batch:
            self._send()
        while self.in_flight:
            self._collect()
        if self.on_bytes is not None and self.waiting_bytes:
            self.on_bytes(self.waiting_bytes)
        return self.done


def _written(done: int) -> str:
    return f"{done} items before it were imported (importing again is safe). " if done else "Nothing was imported. "


def _quote(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")


def _dumps(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def value_body(text: str) -> dict[str, Any]:
    """The value of ``devinit state set``: JSON when ``text`` is JSON, else the text as a JSON string."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"value": text}
    return {"value": orjson.Fragment(text.strip().encode())}


def app_prefix(prefix: str | None, app_id: str | None) -> str:
    """The key prefix of ``--prefix`` or ``--app-id`` (which cannot go together)."""
    if prefix and app_id:
        raise UsageError("--prefix and --app-id cannot go together. Pass one of them")
    if app_id is not None:
        if not app_id or "||" in app_id:
            raise UsageError(f"--app-id {app_id!r} is not an app id. Give the part before '||' of its keys")
        return f"{app_id}||"
    return prefix or ""


def export_file(path: Path) -> tuple[IO[bytes], Callable[[bool], None]]:
    """A file to export into, owner-only (it holds the data), that appears only once complete.

    Returns the open file and ``finish(ok)``: rename into place when ok, else remove.
    UsageError when it cannot be created (no such folder, no permission)."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        # A partial file left by an export that was killed goes first: opened as it is, it
        # would keep its mode (perhaps readable by others), and the export would get it.
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise UsageError(
            f"cannot write {path}: {e.strerror or e}. Give --output a path in a folder that exists and you can write to"
        ) from None
    f = os.fdopen(fd, "wb")

    def finish(ok: bool) -> None:
        f.close()
        if ok:
            os.replace(tmp, path)
        else:
            tmp.unlink(missing_ok=True)

    return f, finish
