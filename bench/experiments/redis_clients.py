"""Scratch: what a Python process can get out of Redis for devinit's GET as it was then (EVALSHA
of the Lua script below; devinit now sends HMGET + PTTL), 32 concurrent callers, 3 s each: redis-py as devinit configures it, redis-py
with a per-tick pipeline coalescer, and a raw hiredis protocol multiplexing one connection."""

import asyncio
import sys
import time

import hiredis
import uvloop

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

# devinit's Lua GET until the read became plain commands (state/redis.read_commands)
_GET = """
local v = redis.call("HMGET", KEYS[1], "data", "version")
if not v[2] then return false end
return {v[1], v[2], redis.call("PTTL", KEYS[1])}
"""

PORT = int(sys.argv[1])
DUR = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
CONC = 32
VALUE = b'"' + b"v" * 1022 + b'"'


async def loop_ops(op):
    n = 0
    deadline = time.perf_counter() + DUR

    async def w():
        nonlocal n
        while time.perf_counter() < deadline:
            await op()
            n += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(w() for _ in range(CONC)))
    return n / (time.perf_counter() - t0)


async def redispy_devinit():
    c = aioredis.Redis(
        host="127.0.0.1",
        port=PORT,
        socket_timeout=3,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=1,
    )
    await c.hset("h", mapping={"data": VALUE, "version": 1})
    s = c.register_script(_GET)
    r = await loop_ops(lambda: s(keys=["h"]))
    await c.aclose()
    return r


async def redispy_plain():
    c = aioredis.Redis(host="127.0.0.1", port=PORT)
    s = c.register_script(_GET)
    r = await loop_ops(lambda: s(keys=["h"]))
    await c.aclose()
    return r


async def redispy_coalesced():
    c = aioredis.Redis(host="127.0.0.1", port=PORT, socket_timeout=3, retry=Retry(NoBackoff(), 0))
    sha = await c.script_load(_GET)
    pending = []

    async def flush():
        batch = pending[:]
        pending.clear()
        async with c.pipeline(transaction=False) as p:
            for key, _fut in batch:
                p.evalsha(sha, 1, key)
            res = await p.execute()
        for (_key, fut), r in zip(batch, res, strict=True):
            fut.set_result(r)

    def get(key):
        fut = asyncio.get_running_loop().create_future()
        if not pending:
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(flush()))
        pending.append((key, fut))
        return fut

    r = await loop_ops(lambda: get("h"))
    await c.aclose()
    return r


class Resp(asyncio.Protocol):
    def __init__(self):
        self.reader = hiredis.Reader()
        self.waiters = __import__("collections").deque()

    def connection_made(self, t):
        self.t = t

    def data_received(self, data):
        self.reader.feed(data)
        while True:
            r = self.reader.gets()
            if r is False:
                return
            self.waiters.popleft().set_result(r)

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.t.write(b"".join(out))
        f = asyncio.get_running_loop().create_future()
        self.waiters.append(f)
        return f


async def raw_hiredis(nconn):
    loop = asyncio.get_running_loop()
    conns = [(await loop.create_connection(Resp, "127.0.0.1", PORT))[1] for _ in range(nconn)]
    sha = (await conns[0].call("SCRIPT", "LOAD", _GET)).decode()
    i = 0

    def get():
        nonlocal i
        i += 1
        return conns[i % nconn].call("EVALSHA", sha, 1, "h")

    return await loop_ops(get)


async def main():
    c = aioredis.Redis(host="127.0.0.1", port=PORT)
    await c.hset("h", mapping={"data": VALUE, "version": 1})
    await c.aclose()
    for name, f in [
        ("redis-py as devinit configures it (pool, health_check_interval=1, timeouts)", redispy_devinit),
        ("redis-py defaults", redispy_plain),
        ("redis-py + per-tick pipeline coalescer", redispy_coalesced),
        ("raw hiredis protocol, 1 multiplexed connection", lambda: raw_hiredis(1)),
        ("raw hiredis protocol, 4 multiplexed connections", lambda: raw_hiredis(4)),
    ]:
        print(f"{await f():9.0f} ops/s  {name}", flush=True)


uvloop.run(main())
