"""drive.Driven: handler coroutines run without a Task, with a Task's cancellation semantics."""

from __future__ import annotations

import asyncio
from typing import Any


def test_result_exception_and_bare_yield() -> None:
    async def main() -> None:
        from devinit.server.drive import Driven

        loop = asyncio.get_running_loop()
        outcomes: list[tuple[Any, Any]] = []

        async def ok() -> str:
            await asyncio.sleep(0)  # bare yield
            fut = loop.create_future()
            loop.call_soon(fut.set_result, "v")
            return await fut

        async def boom() -> None:
            raise ValueError("x")

        Driven(ok(), lambda r, e: outcomes.append((r, e)), loop).step()
        Driven(boom(), lambda r, e: outcomes.append((r, type(e))), loop).step()
        assert outcomes == [(None, ValueError)]  # the failing one ended at once
        for _ in range(5):
            await asyncio.sleep(0)
        assert outcomes == [(None, ValueError), ("v", None)]

    asyncio.run(main())


def test_cancel_is_delivered_once_and_clean_up_may_still_wait() -> None:
    async def main() -> None:
        from devinit.server.drive import Driven

        loop = asyncio.get_running_loop()
        outcomes: list[tuple[Any, Any]] = []
        cleaned: list[str] = []

        async def handler() -> str:
            try:
                await loop.create_future()  # never completes by itself
            except asyncio.CancelledError:
                fut = loop.create_future()
                loop.call_soon(fut.set_result, "cleaned")
                cleaned.append(await fut)  # awaiting again after the cancellation works
                raise
            return "not reached"

        d = Driven(handler(), lambda r, e: outcomes.append((r, type(e))), loop)
        d.step()
        d.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert cleaned == ["cleaned"]
        assert outcomes == [(None, asyncio.CancelledError)]

    asyncio.run(main())
