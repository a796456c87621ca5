"""Scratch: devinit's HttpApp served by granian (ASGI); the runtime starts in lifespan."""

import os
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from pathlib import Path

from devinit.server.http_api import HttpApp
from devinit.server.runtime import Runtime

_app = None


async def app(scope, receive, send):
    global _app
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                _app = HttpApp(await Runtime.start(Path(os.environ["COMPONENTS"])))
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await _app(scope, receive, send)
