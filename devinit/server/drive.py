"""Run a request's handler coroutine without an asyncio Task.

Both front ends (``http_wire``, ``grpc_wire``) start a handler inside the callback that read its
request and resume it from the done callback of the future it waits on: what a Task does,
less its scheduling (a loop turn before it starts) and bookkeeping. Measured on the Redis
GET hot path (bench/), that was the largest cost left after the socket work; a handler that
never waits (the in-memory store) answers inside the read callback.

A handler run this way has no ``asyncio.current_task()``, so it must not use
``asyncio.timeout`` (or a library that does) directly: ``runtime.Runtime._call`` runs the
stores that need one in a task of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

#: called once with (result, None) or (None, exception)
Done = Callable[[Any, "BaseException | None"], None]


class Driven:
    """One coroutine driven to its end; ``cancel()`` cancels the future it waits on."""

    __slots__ = ("coro", "done", "loop", "waiting", "cancelled")

    def __init__(self, coro: Coroutine[Any, Any, Any], done: Done, loop: asyncio.AbstractEventLoop) -> None:
        self.coro = coro
        self.done = done
        self.loop = loop
        self.waiting: asyncio.Future[Any] | None = None
        self.cancelled = False

    def step(self, _future: object = None) -> None:
        """Run the coroutine up to its next wait (call once to start it)."""
        self.waiting = None
        try:
            waited = self.coro.send(None)
        except StopIteration as stop:
            self.done(stop.value, None)
            return
        except BaseException as e:
            self.done(None, e)
            if not isinstance(e, Exception | asyncio.CancelledError):
                raise
            return
        if getattr(waited, "_asyncio_future_blocking", False):  # `await future`, as a Task sees it
            waited._asyncio_future_blocking = False
            self.waiting = waited
            waited.add_done_callback(self.step)
            if self.cancelled and waited.cancel():
                self.cancelled = False  # delivered once, as a Task does
        elif waited is None:  # a bare yield (asyncio.sleep(0)): go on in the next loop turn
            self.loop.call_soon(self.step)
        else:
            self.coro.close()
            self.done(None, RuntimeError(f"the handler awaited {waited!r}, which is not an asyncio future"))

    def cancel(self) -> None:
        """Cancel the wait in progress (or the next one): the coroutine sees CancelledError
        there once, as in a Task, and may still await in its clean-up."""
        self.cancelled = True
        if self.waiting is not None and self.waiting.cancel():
            self.cancelled = False
