"""Run the state server: load the components, serve HTTP (and gRPC) until told to stop.

``serve()`` blocks until SIGINT/SIGTERM (Ctrl-Break on Windows) or Dapr's
``POST /v1.0/shutdown``, then stops accepting requests, lets the ones in flight finish, and
closes every store. It runs on uvloop where there is one; on Windows on a selector loop,
because psycopg (the PostgreSQL store) refuses the default Proactor loop there, and the HTTP/1.1
and HTTP/2 code use only calls both loops have. ``devinit run`` runs the same server for each
app (in a process of its own, see devinit/sidecar.py) and learns through ``on_ready`` when it
listens and how to stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from devinit.components import KnownRedis
from devinit.server.runtime import DEFAULT_STORE_TIMEOUT, Runtime

log = logging.getLogger("devinit.serve")


@dataclass
class ServeOptions:
    """What ``devinit serve`` (or ``devinit run``, for one app) was asked to do."""

    components_path: Path | Sequence[Path]  # one folder, or several (devinit run -d A -d B)
    host: str = "127.0.0.1"
    http_port: int = 3500
    grpc_port: int = 50001
    app_id: str | None = None
    api_token: str | None = None
    log_level: str = "info"
    store_timeout: float = DEFAULT_STORE_TIMEOUT
    pid_file: Path | None = None  # written with this process's pid once both ports listen
    allowed_origins: tuple[str, ...] = ()  # web origins allowed besides loopback ones (browser.py)
    known_redis: KnownRedis | None = None  # the Redis devinit init runs (devinit run: samples' empty passwords)

    @property
    def folders(self) -> str:
        """The components folder(s), for the log."""
        paths = [self.components_path] if isinstance(self.components_path, Path) else self.components_path
        return ", ".join(str(p) for p in paths)


#: called once both front ends listen, with the function that stops the server (given why)
#: and the HTTP and gRPC ports as bound (a port asked for as 0 is the one the OS chose)
OnReady = Callable[[Callable[[str], None], int, int], None]


async def serve_async(opts: ServeOptions, on_ready: OnReady | None = None) -> int:
    """Serve until a stop signal (or until the stop function given to ``on_ready`` is called);
    returns the process exit code."""
    from devinit import ports
    from devinit.errors import GrpcBindError
    from devinit.server.browser import BrowserPolicy
    from devinit.server.grpc_api import start_grpc_server
    from devinit.server.http_api import HttpApp, error_response
    from devinit.server.http_wire import H1Server

    log.debug(
        "settings: host %s, HTTP port %d, gRPC port %d, store timeout %gs, app id %s, API token %s, allowed origins %s",
        opts.host,
        opts.http_port,
        opts.grpc_port,
        opts.store_timeout,
        opts.app_id,
        "set" if opts.api_token else "not set",
        ", ".join(opts.allowed_origins) or "loopback only",
    )
    runtime = await Runtime.start(
        opts.components_path, opts.app_id, opts.api_token, opts.store_timeout, known_redis=opts.known_redis
    )
    stores = ", ".join(f"{n} ({e.spec.type})" for n, e in sorted(runtime.entries.items())) or "none"
    log.info("components from %s; stores: %s", opts.folders, stores)
    for note in runtime.notes:
        log.info("%s", note)
    for err in runtime.errors:
        log.error("component not loaded: %s", err)
    grpc_server = None
    try:
        # gRPC first and in this process, so that both front ends share one runtime (one
        # in-memory store); a port in use stops the server before HTTP starts.
        try:
            grpc_server = await start_grpc_server(runtime, opts.host, opts.grpc_port)
        except GrpcBindError as e:
            log.error("%s", e)
            return 1
        log.info("gRPC API on %s:%d (dapr.proto.runtime.v1.Dapr)", opts.host, grpc_server.port)
        app = HttpApp(runtime)
        browsers = BrowserPolicy(opts.host, opts.allowed_origins, error_response)
        # The inspector's live feed sees calls of both front ends (a flag check while unwatched).
        grpc_server.handler = app.inspector.feed.watch_grpc(grpc_server.handler)
        server = H1Server(
            app.inspector.feed.watch_http(app),
            opts.host,
            opts.http_port,
            error_response=error_response,
            screen=browsers.screen,
            cors=browsers.cors,
        )
        try:
            await server.start()
        except OSError as e:
            if ports.classify(e) is ports.PortState.RESERVED:  # WinError 10013: not "in use"
                log.error(
                    "the HTTP server could not listen on %s:%d: %s",
                    opts.host,
                    opts.http_port,
                    ports.refusal(opts.http_port, "--http-port"),
                )
                return 1
            log.error(
                "the HTTP server could not listen on %s:%d (is port %d in use? try --http-port): %s",
                opts.host,
                opts.http_port,
                opts.http_port,
                e.strerror or e,
            )
            return 1
        log.info("HTTP API on http://%s:%d/v1.0/state/<store>", opts.host, server.port)
        log.info("inspector on http://%s:%d/ui/", opts.host, server.port)
        if opts.pid_file is not None:
            _write_pid_file(opts.pid_file)
        # Everything loaded so far lives as long as the server: keep it out of the collector's
        # full passes, which otherwise walk it all (~34k objects, 13-23 ms measured: the largest
        # stalls in the fixed-rate latency runs of bench/).
        gc.collect()
        gc.freeze()

        asked: list[str] = []

        def stop(why: str) -> None:  # both front ends stop taking work at once, then drain
            if not asked:
                asked.append(why)
                log.info("stopping (%s): finishing the requests in flight", why)
            server.stop()
            grpc_server.begin_stop()

        app.on_shutdown = lambda: stop("POST /v1.0/shutdown")
        with _stop_on_signals(stop):
            if on_ready is not None:
                on_ready(stop, server.port, grpc_server.port)
            await server.serve()
        return 0
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=2)
        await runtime.close()
        if opts.pid_file is not None:
            _remove_pid_file(opts.pid_file)
        log.info("stopped; stores closed")


def _write_pid_file(path: Path) -> None:
    from devinit.atomic import write_atomic

    write_atomic(path, f"{os.getpid()}\n".encode(), 0o644)


def _remove_pid_file(path: Path) -> None:
    """Remove the pid file if it still names this process (a newer server may own it now)."""
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text(encoding="ascii").strip()) == os.getpid():
            path.unlink()


@contextlib.contextmanager
def _stop_on_signals(stop: Callable[[str], None]) -> Iterator[None]:
    """SIGINT/SIGTERM (and Ctrl-Break on Windows) call ``stop`` instead of killing the process."""
    loop = asyncio.get_running_loop()
    signals = [signal.SIGINT, signal.SIGTERM]
    if sys.platform == "win32":
        signals.append(signal.SIGBREAK)
    previous = {}
    for sig in signals:
        try:
            loop.add_signal_handler(sig, stop, sig.name)
        except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
            previous[sig] = signal.signal(sig, lambda *_, name=sig.name: loop.call_soon_threadsafe(stop, name))
    try:
        yield
    finally:
        for sig in signals:
            if sig in previous:
                signal.signal(sig, previous[sig])
            else:
                loop.remove_signal_handler(sig)


def loop_factory(platform: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop the server runs on, for ``platform`` (``sys.platform`` when None).

    Windows: a selector loop (psycopg refuses asyncio's default Proactor loop there). Elsewhere
    uvloop when installed (a dependency off Windows), else asyncio's default (None).
    """
    if (platform or sys.platform) == "win32":
        return asyncio.SelectorEventLoop
    try:
        import uvloop
    except ImportError:
        return None
    new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new_loop


def configure_logging(level: str) -> None:
    """devinit's own loggers at ``level``; every other library's at INFO at most.

    Third-party debug logs are not devinit's to expose: hpack's, for one, logs every header
    it decodes, ``dapr-api-token`` values included."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    wanted = getattr(logging, level.upper(), logging.INFO)
    logging.getLogger().setLevel(max(wanted, logging.INFO))
    logging.getLogger("devinit").setLevel(wanted)


def serve(opts: ServeOptions, platform: str | None = None, on_ready: OnReady | None = None) -> int:
    """Run the server in this process until a stop signal, ``POST /v1.0/shutdown`` or
    ``on_ready``'s stop function."""
    configure_logging(opts.log_level)
    with asyncio.Runner(loop_factory=loop_factory(platform)) as runner:
        log.debug("event loop: %s", type(runner.get_loop()).__name__)
        return runner.run(serve_async(opts, on_ready))
