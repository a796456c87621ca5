"""A devinit state server for a test: ``StateServer``, and what the pytest plugin builds on.

A test that exercises code written for Dapr's state API gets the real API (HTTP and gRPC, the
official SDKs unchanged) from a server of its own, the way Testcontainers gives a test a real
database::

    from devinit.testing import StateServer

    with StateServer() as server:                 # in-memory; "sqlite", a redis:// URL, a folder
        os.environ.update(server.env())           # DAPR_HTTP_PORT, DAPR_GRPC_PORT, ... as devinit run sets them
        ...
        server.reset()                            # every store emptied, the server kept

The server is the one ``devinit run`` runs beside an app (devinit/sidecar.py), always spawned
as ``python -m devinit.sidecar``: a test process may run threads of its own (pytest-xdist's
workers do), and a forked copy of it would keep the user's open files and sockets. It binds
port 0 and reports the ports the OS chose, so servers started at the same moment (xdist
workers) never race for one. It is tied to this process by its lifeline pipe: it stops when
``stop()`` says so, and by itself when this process ends in any way, SIGKILL included.

``start()`` returns once both front ends listen and every store answered a ping; a component
that does not load or a store that does not answer (nothing listens at a Redis URL) stops the
server and raises ``StateServerError`` saying what, and what to do: a suite whose store is
missing gets one clear error instead of a failed state call in every test.

``reset()`` empties every store through the devinit route's clear (docs/state-api.md, "The
devinit route"): keys of every app id, any store kind, one request per store when it holds
fewer than 1,000 keys, on a connection kept open for the next reset.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from devinit.errors import StateServerError

if TYPE_CHECKING:
    from devinit.sidecar import Sidecar

HOST = "127.0.0.1"
STORE_KINDS = ("in-memory", "sqlite")  # besides a redis:// (rediss://) URL or a component folder
STORE_NAME = "statestore"  # the component the server gets for a kind or a Redis URL (Dapr's samples' name)
START_TIMEOUT = 30.0  # seconds for the server to listen and its stores to answer a first ping
STOP_TIMEOUT = 15.0  # seconds for it to drain and close its stores before it is killed
CALL_TIMEOUT = 30.0  # seconds for one call of the devinit route (the stores' own deadlines are shorter)
LOG_LINES = 200  # the server's last log lines kept, for an error message and ``log``


class StateServer:
    """A devinit state server on free ports for a test; a context manager (or ``start``/``stop``).

    ``store``: ``"in-memory"`` (default), ``"sqlite"`` (a file in ``tmp_dir``), a Redis URL
    (``redis://[:password@]host[:port][/db]``, ``rediss://`` for TLS: its keys of Dapr's layout
    are what ``reset`` empties, so give the tests a database of their own), or a folder of Dapr
    component files (``pathlib.Path``, or a string naming a folder). ``app_id``: keys are stored
    as ``<app-id>||<key>``, as under ``devinit run -a``; without one, as given. ``api_token``:
    the server requires it (``dapr-api-token``), and ``env()`` passes it on. ``tmp_dir``: where
    the component file and the SQLite file go (a temporary folder of its own, removed by
    ``stop``, when not given).
    """

    def __init__(
        self,
        store: str | os.PathLike[str] = "in-memory",
        *,
        app_id: str | None = None,
        api_token: str | None = None,
        tmp_dir: str | os.PathLike[str] | None = None,
        log_level: str = "info",
    ) -> None:
        self.store = store
        self.app_id = app_id or None
        self.api_token = api_token or None
        self.log_level = log_level
        self._tmp_given = Path(tmp_dir) if tmp_dir is not None else None
        self._tmp: Path | None = None
        self._sidecar: Sidecar | None = None
        self._ports: tuple[int, int] | None = None
        self._stores: list[str] = []
        self._log: deque[str] = deque(maxlen=LOG_LINES)
        self._threads: list[threading.Thread] = []
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # one control call at a time on the kept connection

    # -- what a test reads ------------------------------------------------------------------

    @property
    def http_port(self) -> int:
        """The HTTP API's port."""
        return self._bound()[0]

    @property
    def grpc_port(self) -> int:
        """The gRPC API's port."""
        return self._bound()[1]

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:<port>``: what ``DAPR_HTTP_ENDPOINT`` holds."""
        return f"http://{HOST}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        """``127.0.0.1:<port>``: what ``DAPR_GRPC_ENDPOINT`` holds."""
        return f"{HOST}:{self.grpc_port}"

    @property
    def inspector_url(self) -> str:
        """The inspector page, to look at the stores while a test is paused (a breakpoint)."""
        return f"{self.http_url}/ui/"

    @property
    def pid(self) -> int:
        """The server process's id."""
        if self._sidecar is None:
            raise StateServerError("the state server is not running: call start() (or use it in a with block) first")
        return self._sidecar.pid

    @property
    def stores(self) -> list[str]:
        """The names of the state stores it serves (``statestore`` unless a component folder says otherwise)."""
        self._bound()
        return list(self._stores)

    @property
    def log(self) -> list[str]:
        """The server's last log lines."""
        return list(self._log)

    @property
    def running(self) -> bool:
        """Started and not stopped (it may still have died: calls then fail)."""
        return self._sidecar is not None

    def env(self) -> dict[str, str]:
        """The variables ``devinit run`` gives an app for this server: ``DAPR_HTTP_PORT``,
        ``DAPR_GRPC_PORT``, ``DAPR_HTTP_ENDPOINT``, ``DAPR_GRPC_ENDPOINT``, and ``APP_ID`` /
        ``DAPR_API_TOKEN`` when set."""
        from devinit.run import sidecar_vars

        http, grpc = self._bound()
        return sidecar_vars(self.app_id, http, grpc, None, self.api_token)

    def describe_store(self) -> str:
        """The store as a person reads it, without a password: ``in-memory``, ``redis://:***@host:6379/0``."""
        return _describe(self.store)

    # -- start, reset, stop -------------------------------------------------------------------

    def start(self) -> StateServer:
        """Start the server; returns once it listens and every store answered a ping.

        StateServerError (nothing left running) when it cannot: a bad store argument or
        component, a store that does not answer, a server that did not start.
        """
        if self._sidecar is not None:
            raise StateServerError("this state server is running already: stop() it before starting it again")
        from devinit import sidecar

        folder = self._components()
        spec = sidecar.SidecarSpec(
            app_id=self.app_id or "",
            resources=[str(folder)],
            http_port=0,  # chosen as it binds, and reported: no race with other servers starting
            grpc_port=0,
            cwd=os.getcwd(),  # relative paths in a component folder mean what they mean to the test
            log_level=self.log_level,
            api_token=self.api_token,
        )
        self._log.clear()
        try:
            self._sidecar = sidecar.start(spec, spawn=True, env=_server_env())
        except OSError as e:
            self.stop()  # the folder made for the component file goes too
            raise StateServerError(f"cannot start the state server ({sys.executable}): {e.strerror or e}") from None
        try:
            self._ports = self._wait_listening()
            self._stores = self._wait_stores()
        except BaseException:
            self.stop()
            raise
        return self

    def reset(self) -> None:
        """Empty every store (keys of every app id), keeping the server: between tests."""
        for name in self.stores:
            cursor: str | None = None
            while True:
                page = self._call("POST", f"/devinit/v1/stores/{quote(name, safe='')}/clear", {"prefix": "", "cursor": cursor})
                cursor = page.get("cursor")
                if not cursor:
                    break

    def stop(self) -> None:
        """Stop the server (it drains and closes its stores; killed if it takes over 15 s), and
        remove the temporary folder it was given none of. Safe to call twice."""
        sc, self._sidecar = self._sidecar, None
        self._ports = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if sc is not None:
            sc.stop()  # "stop", then the lifeline's end-of-file
            if not _wait(sc, STOP_TIMEOUT):
                sc.kill()
                _wait(sc, STOP_TIMEOUT)
            for t in self._threads:
                t.join(timeout=2.0)  # the log's last lines; a child holding the pipe must not block us
            self._threads = []
        if self._tmp is not None and self._tmp_given is None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None

    def __enter__(self) -> StateServer:
        return self.start() if self._sidecar is None else self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"http {self._ports[0]}, grpc {self._ports[1]}" if self._ports else "not running"
        return f"<StateServer {self.describe_store()} ({where})>"

    # -- inside ---------------------------------------------------------------------------------

    def _bound(self) -> tuple[int, int]:
        if self._ports is None:
            raise StateServerError("the state server is not running: call start() (or use it in a with block) first")
        return self._ports

    def _components(self) -> Path:
        """The component folder: the one given, or one written for a store kind or a Redis URL."""
        store = self.store
        if isinstance(store, os.PathLike) or (
            isinstance(store, str) and store not in STORE_KINDS and not store.startswith(("redis://", "rediss://"))
        ):
            folder = Path(store).expanduser()
            if not folder.is_dir():
                raise StateServerError(
                    f"store {str(store)!r} is not one of {', '.join(STORE_KINDS)}, a redis:// URL or a folder of component "
                    "files. Give one of those (--devinit-store for the pytest fixtures)"
                )
            return folder
        redis = redis_metadata(str(store)) if store not in STORE_KINDS else {}  # a bad URL: before any folder is made
        self._tmp = self._tmp_given or Path(tempfile.mkdtemp(prefix="devinit-test-"))
        if store == "in-memory":
            component = _component("state.in-memory", {})
        elif store == "sqlite":
            component = _component("state.sqlite", {"connectionString": str(self._tmp / "state.db")})
        else:
            component = _component("state.redis", redis)
        from devinit.atomic import write_atomic

        folder = self._tmp / "components"
        # owner-only: a Redis URL's password is in it
        write_atomic(folder / f"{STORE_NAME}.yaml", json.dumps(component, ensure_ascii=False).encode("utf-8"), 0o600)
        return folder

    def _wait_listening(self) -> tuple[int, int]:
        """The ports from the server's status line (``ready <http> <grpc>``); its log is read meanwhile."""
        sc = self._sidecar
        assert sc is not None
        status: list[bytes] = []
        ready = threading.Event()

        def read_status() -> None:
            try:
                status.append(sc.status.readline(256))
            except (OSError, ValueError):
                status.append(b"")
            ready.set()

        from devinit.run import pipe_lines

        # the log read to its end (a full pipe would stop the server), its last lines kept
        for target, args in ((read_status, ()), (self._log.extend, (pipe_lines(sc.log),))):
            t = threading.Thread(target=target, args=args, name="devinit-test-server", daemon=True)
            t.start()
            self._threads.append(t)
        if not ready.wait(START_TIMEOUT):
            raise self._error(f"did not listen within {START_TIMEOUT:g}s")
        words = status[0].split()
        if len(words) != 3 or words[0] != b"ready" or not (words[1].isdigit() and words[2].isdigit()):
            ended = f"exited with code {sc.returncode}" if _wait(sc, 5.0) else "closed its status pipe"
            raise self._error(f"{ended} before it listened")
        return int(words[1]), int(words[2])

    def _wait_stores(self) -> list[str]:
        """Every store loaded and answering its first ping, or an error naming what is wrong."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            doc = self._call("GET", "/devinit/v1/stores")
            failed = doc.get("failed") or []
            stores = doc.get("stores") or []
            if failed:
                why = "; ".join(f"{f.get('name')}: {f.get('error')}" for f in failed)
                raise self._error(f"could not load its store ({why})", "Fix the component")
            if not stores:
                raise self._error(
                    "found no state store component", "Give a folder that holds one (its log says what was skipped)"
                )
            health = {s["name"]: s.get("health") or {} for s in stores}
            down = {name: h for name, h in health.items() if h.get("status") == "down"}
            if down:
                why = "; ".join(f"{name}: {h.get('error') or 'down'}" for name, h in down.items())
                raise self._error(f"cannot reach its store ({why})", "Start the store, or give another one")
            if all(h.get("status") == "up" for h in health.values()):
                return sorted(health)
            if time.monotonic() > deadline:
                raise self._error(f"has stores that did not answer a ping within {START_TIMEOUT:g}s")
            time.sleep(0.005)  # the first round of pings runs as the server starts: it lands within milliseconds

    def _error(self, what: str, todo: str = "") -> StateServerError:
        """An error for a server that failed to start: what, what to do, its last log lines."""
        sc = self._sidecar
        if sc is not None and sc.returncode is None:
            sc.kill()
            _wait(sc, 5.0)
        for t in self._threads:
            t.join(timeout=2.0)
        lines = list(self._log)
        # its warnings and errors say why; else (a crash: a traceback) its last lines
        problems = [line for line in lines if " WARNING " in line or " ERROR " in line]
        shown = "\n".join((problems or lines)[-20:])
        message = f"the devinit state server for store {self.describe_store()} {what}."
        message += f" {todo}." if todo else " Its log says why."
        return StateServerError(message + (f" Its log:\n{shown}" if shown else ""))

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One call of the devinit route on the kept connection (opened again once, should the
        server have closed it: an idle connection is closed after 30 s)."""
        http_port = self._bound()[0]
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if self.api_token:
            headers["dapr-api-token"] = self.api_token
        with self._lock:
            for attempt in (1, 2):
                fresh = self._conn is None
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(HOST, http_port, timeout=CALL_TIMEOUT)
                try:
                    self._conn.request(method, path, data, headers)
                    response = self._conn.getresponse()
                    raw = response.read()
                    break
                except (http.client.HTTPException, OSError) as e:
                    self._conn.close()
                    self._conn = None
                    if fresh or attempt == 2:
                        raise StateServerError(
                            f"the devinit state server (pid {self.pid}, port {http_port}) does not answer {method} {path}: {e}. "
                            "Its last log lines:\n" + "\n".join(list(self._log)[-20:])
                        ) from None
        if response.status != 200:
            raise StateServerError(
                f"the devinit state server answered {method} {path} with {response.status}: "
                f"{raw[:500].decode('utf-8', 'replace')}"
            )
        doc = json.loads(raw)
        assert isinstance(doc, dict)
        return doc


# --- helpers --------------------------------------------------------------------------------


def redis_metadata(url: str) -> dict[str, str]:
    """A ``state.redis`` component's metadata for ``redis://[user:password@]host[:port][/db]``
    (``rediss://``: TLS). StateServerError, without the password, for a URL it cannot read."""
    shown = _describe(url)
    # Never the parser's own words: they may quote a part of the password.
    hint = "Give e.g. redis://:password@127.0.0.1:6379/0 (in the password, @ as %40, / as %2F, : as %3A)"
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError:
        raise StateServerError(f"the Redis URL {shown} cannot be read (is its port a number?). {hint}") from None
    if not parts.hostname:
        raise StateServerError(f"the Redis URL {shown} names no host. {hint}")
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise StateServerError(f"the Redis URL {shown} does not end in a database number (/0, /1, ...). {hint}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    meta = {"redisHost": f"{host}:{port}", "redisDB": db}
    if parts.password:
        meta["redisPassword"] = unquote(parts.password)
    if parts.username:
        meta["redisUsername"] = unquote(parts.username)
    if parts.scheme == "rediss":
        meta["enableTLS"] = "true"
    return meta


def _describe(store: str | os.PathLike[str]) -> str:
    """``store`` for a message: a URL's password replaced by ``***``."""
    text = os.fspath(store)
    if not text.startswith(("redis://", "rediss://")):
        return text if text in STORE_KINDS else repr(text)
    scheme, _, rest = text.partition("://")
    creds, at, where = rest.rpartition("@")
    if not at:
        return text
    user = creds.partition(":")[0]
    return f"{scheme}://{user}:***@{where}"


def _component(kind: str, metadata: dict[str, str]) -> dict[str, Any]:
    """A Dapr component document (written as JSON, which YAML reads as it is)."""
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": STORE_NAME},
        "spec": {"type": kind, "version": "v1", "metadata": [{"name": k, "value": v} for k, v in metadata.items()]},
    }


def _server_env() -> dict[str, str]:
    """The server's environment: ours, with the folder this devinit was imported from first on
    its path when that is not where the interpreter looks anyway (a checkout, an editable
    install), so that the server runs the same devinit as the test."""
    import site

    import devinit

    env = dict(os.environ)
    here = str(Path(devinit.__file__).resolve().parent.parent)
    installed = {str(Path(p).resolve()) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if here not in installed:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    return env


def _wait(sc: Sidecar, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the server to end; True when it has."""
    t = threading.Thread(target=sc.wait, daemon=True)
    t.start()
    t.join(timeout)
    return sc.returncode is not None
