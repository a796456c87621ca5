"""Scratch: syscalls uvloop makes per timer/task: `strace -f -c -e trace=getpid python uvloop_getpid.py plain|timeout|call_later|task`
(measured: asyncio.timeout 3 getpid() per use, call_later 1, create_task 1, plain await 0)."""

import asyncio
import sys

import uvloop


async def noop():
    return 1


async def main():
    mode = sys.argv[1]
    for _ in range(10000):
        if mode == "timeout":
            async with asyncio.timeout(10):
                await noop()
        elif mode == "call_later":
            h = asyncio.get_running_loop().call_later(10, lambda: None)
            h.cancel()
        elif mode == "task":
            await asyncio.get_running_loop().create_task(noop())
        else:
            await noop()


uvloop.run(main())
