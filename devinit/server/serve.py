"""Run the state server: load the components, serve HTTP (and gRPC) until told to stop.

``serve()`` blocks until SIGINT/SIGTERM, then stops accepting requests, lets the ones in
flight finish, and closes every store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from devinit.server.runtime import DEFAULT_STORE_TIMEOUT, Runtime

log = logging.getLogger("devinit.serve")


@dataclass
class ServeOptions:
    """What ``devinit serve`` was asked to do."""

    components_path: Path
    host: str = "127.0.0.1"
    http_port: int = 3500
    grpc_port: int = 50001
    app_id: str | None = None
    api_token: str | None = None
    log_level: str = "info"
    store_timeout: float = DEFAULT_STORE_TIMEOUT


def _uvicorn_server(app: object, opts: ServeOptions) -> object:
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            # uvicorn re-raises the signal after shutdown, which would end the process before
            # the stores are closed; we only ask it to exit and return normally instead.
            handled = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGBREAK] if sys.platform == "win32" else [])  # type: ignore[attr-defined]
            originals = {s: signal.signal(s, self.handle_exit) for s in handled}
            try:
                yield
            finally:
                for s, handler in originals.items():
                    signal.signal(s, handler)

    config = uvicorn.Config(
        app,
        host=opts.host,
        port=opts.http_port,
        http="httptools",
        lifespan="off",
        access_log=False,
        server_header=False,
        date_header=False,
        log_level=opts.log_level,
        log_config=None,
        timeout_keep_alive=30,
        backlog=2048,
    )
    return Server(config)


async def serve_async(opts: ServeOptions) -> int:
    """Serve until a stop signal; returns the process exit code."""
    from devinit.server.grpc_api import GrpcBindError, start_grpc_server
    from devinit.server.http import HttpApp

    runtime = await Runtime.start(opts.components_path, opts.app_id, opts.api_token, opts.store_timeout)
    stores = ", ".join(f"{n} ({e.spec.type})" for n, e in sorted(runtime.entries.items())) or "none"
    log.info("components from %s; stores: %s", opts.components_path, stores)
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
        log.info("gRPC API on %s:%d (dapr.proto.runtime.v1.Dapr)", opts.host, opts.grpc_port)
        server = _uvicorn_server(HttpApp(runtime), opts)
        log.info("HTTP API on http://%s:%d/v1.0/state/<store>", opts.host, opts.http_port)
        await server.serve()  # type: ignore[attr-defined]
        if not server.started:  # type: ignore[attr-defined]
            log.error("the HTTP server could not start (is port %d in use? try --http-port)", opts.http_port)
            return 1
        return 0
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=2)
        await runtime.close()
        log.info("stopped; stores closed")


def serve(opts: ServeOptions) -> int:
    """Run the server in this process until SIGINT/SIGTERM."""
    logging.basicConfig(
        level=getattr(logging, opts.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop

        return uvloop.run(serve_async(opts))
    except ImportError:
        return asyncio.run(serve_async(opts))
