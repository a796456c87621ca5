"""The ceiling app: a bare ASGI callable answering a constant 1 KB JSON body.

It does the least any HTTP front end must do (one ``http.response.start`` and one
``http.response.body``), so its rps on a server stack is the most devinit can reach on it.

``python -m bench.bare_app uvicorn PORT`` serves it on uvicorn (httptools, uvloop, no
lifespan, no access log, no Server or Date header); ``python -m bench.bare_app h1 PORT`` serves
the same body on devinit's own HTTP server (devinit/server/http_wire.py): the same-stack ceiling.
Granian serves ``bench.bare_app:app`` from its own command line.
"""

from __future__ import annotations

import sys
from typing import Any

BODY = b'"' + b"x" * 1022 + b'"'  # a 1 KB JSON string, as devinit stores and returns it
# With Content-Length (without it uvicorn frames the body as chunked, which costs more).
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
}
_BODY = {"type": "http.response.body", "body": BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(_START)
    await send(_BODY)


def serve_uvicorn(port: int) -> None:
    """uvicorn with the options of devinit/server/serve.py (kept in step by hand)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http="httptools",
        loop="uvloop",
        lifespan="off",
        access_log=False,
        server_header=False,
        date_header=False,
        log_level="warning",
        log_config=None,
        timeout_keep_alive=30,
        backlog=2048,
    )
    uvicorn.Server(config).run()


def serve_h1(port: int) -> None:
    """devinit's own HTTP server (devinit/server/http_wire.py) answering the same constant body."""
    import asyncio

    from devinit.server.http_api import error_response
    from devinit.server.http_wire import H1Server, Request, Response

    answer: Response = (200, [(b"Content-Type", b"application/json")], BODY)

    async def handler(req: Request) -> Response:
        return answer

    async def main() -> None:
        server = H1Server(handler, "127.0.0.1", port, error_response=error_response)
        await server.start()
        await server.serve()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


if __name__ == "__main__":
    serve = {"uvicorn": serve_uvicorn, "h1": serve_h1}
    if len(sys.argv) != 3 or sys.argv[1] not in serve:
        sys.exit("usage: python -m bench.bare_app uvicorn|h1 PORT")
    serve[sys.argv[1]](int(sys.argv[2]))
