"""The bench's own small clients, for what wrk and redis-benchmark cannot do:

- ``rmw``: read-modify-write increments on one hot key with first-write + etag (contention),
  counting conflicts and retries and checking that no increment was lost;
- ``redis_direct``: redis-py (asyncio, hiredis) doing devinit's operation straight on Redis,
  the ceiling for what a Python process can get out of redis-py.

(gRPC is driven by h2load: loadgen.h2load_grpc.) They are Python asyncio loops on the same 2 cores as the server, so their own cost is part of
what they measure; the report says which client measured what.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from bench.loadgen import Measure, percentile

PAD = "p" * 1000  # keeps the hot counter's value about 1 KB


def _run(coro: Awaitable[Any]) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


async def _closed_loop(
    op: Callable[[], Awaitable[Any]], duration: float, concurrency: int, rate: float | None = None
) -> tuple[list[float], int]:
    """``concurrency`` tasks calling ``op`` until ``duration``; latencies in ms.

    Without ``rate`` each task calls back to back; with it, the tasks share ``rate`` calls/s on
    staggered, evenly spaced slots (a slot missed while a call is in flight is sent at once).
    """
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    deadline = start + duration

    async def worker(i: int) -> None:
        nonlocal errors
        interval = concurrency / rate if rate else 0.0
        slot = start + i * interval / concurrency
        while time.perf_counter() < deadline:
            if interval:
                wait = slot - time.perf_counter()
                slot += interval
                if wait > 0:
                    await asyncio.sleep(wait)
            t0 = time.perf_counter()
            try:
                await op()
            except Exception:
                errors += 1
                await asyncio.sleep(0.01)
                continue
            latencies.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return latencies, errors


def _measure(latencies: list[float], errors: int, seconds: float, tool: str, **extra: Any) -> Measure:
    latencies.sort()
    return Measure(
        rps=len(latencies) / seconds,
        p50_ms=percentile(latencies, 50) if latencies else None,
        p99_ms=percentile(latencies, 99) if latencies else None,
        requests=len(latencies),
        errors=errors,
        duration_s=seconds,
        tool=tool,
        extra=extra,
    )


# -- a minimal keep-alive HTTP/1.1 client (httpx costs more CPU than the server we measure) --


class _Http:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for ln in lines[1:]:
            if b":" in ln:
                k, v = ln.split(b":", 1)
                headers[k.strip().lower()] = v.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:  # bounded by the server closing or the terminating 0-size chunk
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(data[:-2])
            return status, headers, b"".join(parts)
        length = int(headers.get(b"content-length", b"0"))
        data = await self.reader.readexactly(length) if length else b""
        return status, headers, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass


async def _rmw(port: int, store: str, key: str, duration: float, concurrency: int, max_attempts: int) -> dict[str, Any]:
    increments = conflicts = errors = gave_up = 0
    attempts_per_increment: list[int] = []
    latencies: list[float] = []
    deadline = time.perf_counter() + duration
    base = f"/v1.0/state/{store}"

    async def worker() -> None:
        nonlocal increments, conflicts, errors, gave_up
        http = _Http(port)
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                for attempt in range(1, max_attempts + 1):  # bounded retries
                    status, headers, data = await http.request("GET", f"{base}/{key}")
                    if status == 200:
                        n = orjson.loads(data)["n"]
                        item = {
                            "key": key,
                            "value": {"n": n + 1, "pad": PAD},
                            "etag": headers[b"etag"].decode(),
                            "options": {"concurrency": "first-write"},
                        }
                    elif status == 204:  # first write of the key: insert only
                        item = {"key": key, "value": {"n": 1, "pad": PAD}, "options": {"concurrency": "first-write"}}
                    else:
                        errors += 1
                        break
                    status, _, _ = await http.request("POST", base, orjson.dumps([item]))
                    if status == 204:
                        increments += 1
                        attempts_per_increment.append(attempt)
                        latencies.append((time.perf_counter() - t0) * 1000)
                        break
                    if status == 409:
                        conflicts += 1
                        continue
                    errors += 1
                    break
                else:
                    gave_up += 1
        finally:
            await http.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - t0
    http = _Http(port)
    status, _, data = await http.request("GET", f"{base}/{key}")
    await http.close()
    final = orjson.loads(data)["n"] if status == 200 else 0
    return {
        "latencies": latencies,
        "seconds": seconds,
        "increments": increments,
        "conflicts": conflicts,
        "errors": errors,
        "gave_up": gave_up,
        "final": final,
        "retries_mean": (sum(attempts_per_increment) / len(attempts_per_increment) - 1) if attempts_per_increment else None,
        "retries_max": (max(attempts_per_increment) - 1) if attempts_per_increment else None,
    }


def rmw(
    port: int, duration: float, concurrency: int = 16, store: str = "statestore", key: str | None = None, max_attempts: int = 200
) -> Measure:
    """Increments/s on one hot key; p50/p99 are per successful increment (retries included)."""
    key = key or f"bench-hot-{time.time_ns()}"
    r = _run(_rmw(port, store, key, duration, concurrency, max_attempts))
    lost = r["increments"] - r["final"]
    return _measure(
        r["latencies"],
        r["errors"],
        r["seconds"],
        f"bench rmw client ({concurrency} asyncio workers, raw HTTP/1.1)",
        increments=r["increments"],
        conflicts=r["conflicts"],
        retries_mean=r["retries_mean"],
        retries_max=r["retries_max"],
        gave_up=r["gave_up"],
        final_value=r["final"],
        lost_updates=lost,
    )


# -- redis-py straight to Redis ----------------------------------------------------------


async def _redis_direct(port: int, op: str, duration: float, concurrency: int) -> tuple[list[float], int, float]:
    import redis.asyncio as aioredis

    from devinit.state.redis import read_commands  # the very commands devinit sends for a GET

    client = aioredis.Redis(host="127.0.0.1", port=port, max_connections=concurrency)
    value = b'"' + b"v" * 1022 + b'"'
    try:
        await client.set("bench:direct:plain", value)
        await client.hset("bench:direct:hash", mapping={"data": value, "version": 1})

        def devinit_get() -> Awaitable[Any]:
            pipe = client.pipeline(transaction=False)
            for command in read_commands("bench:direct:hash"):
                pipe.execute_command(*command)
            return pipe.execute()

        ops: dict[str, Callable[[], Awaitable[Any]]] = {
            "get": lambda: client.get("bench:direct:plain"),
            "set": lambda: client.set("bench:direct:plain", value),
            "devinit-get": devinit_get,
        }
        t0 = time.perf_counter()
        lat, errors = await _closed_loop(ops[op], duration, concurrency)
        return lat, errors, time.perf_counter() - t0
    finally:
        await client.aclose()


def redis_direct(port: int, op: str, duration: float, concurrency: int = 32) -> Measure:
    """redis-py asyncio (hiredis parser if installed) doing ``op`` with ``concurrency`` tasks."""
    lat, errors, seconds = _run(_redis_direct(port, op, duration, concurrency))
    try:
        import hiredis  # noqa: F401

        parser = "hiredis"
    except ImportError:
        parser = "pure-Python parser"
    return _measure(lat, errors, seconds, f"redis-py asyncio, {concurrency} tasks, {parser}")
