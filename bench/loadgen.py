"""External load generators: wrk (throughput, and fixed-rate latency through a Lua pacer),
redis-benchmark (the Redis ceiling), and hey (an optional cross-check of fixed-rate latency).

Every function returns a ``Measure``: requests per second, latency percentiles in ms, errors.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LUA = Path(__file__).resolve().parent / "lua" / "bench.lua"


@dataclass
class Measure:
    """One measured workload: throughput, latency (ms) and what went wrong."""

    rps: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int = 0
    errors: int = 0
    duration_s: float = 0.0
    tool: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def wrk(
    url: str,
    duration: float,
    connections: int = 32,
    threads: int = 1,
    args: tuple[str, ...] = (),
    rate: float | None = None,
    timeout_s: float = 5.0,
) -> Measure:
    """Run wrk with bench.lua; ``rate`` paces it (fixed-rate latency), else it runs flat out."""
    env = dict(os.environ)
    if rate:
        env["BENCH_RATE"] = str(rate)
        env["BENCH_THREADS"] = str(threads)
    argv = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", f"--timeout={timeout_s:g}s",
        "-s", str(LUA), url, "--", *args,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    s = json.loads(line[len("BENCH_JSON "):])
    seconds = s["duration_us"] / 1e6
    lat = s["latency_us"]
    errors = sum(s["errors"].values())
    return Measure(
        rps=s["requests"] / seconds if seconds else 0.0,
        p50_ms=lat["p50"] / 1000,
        p99_ms=lat["p99"] / 1000,
        requests=s["requests"],
        errors=errors,
        duration_s=seconds,
        tool=f"wrk -t{threads} -c{connections}" + (f" paced {rate:g}/s" if rate else ""),
        extra={"latency_us": lat, "errors": s["errors"], "target_rate": rate},
    )


def _redis_benchmark_csv(port: int, connections: int, n: int, args: list[str], timeout: float) -> dict[str, str]:
    """One redis-benchmark run of ``n`` requests; its last CSV row."""
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(connections), "-n", str(n), "--csv", *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    if not rows:
        raise RuntimeError(f"redis-benchmark gave no CSV (exit {out.returncode}): {out.stdout}{out.stderr}")
    return rows[-1]


def _redis_benchmark_sized(port: int, connections: int, args: list[str], duration: float, tool: str) -> Measure:
    """redis-benchmark runs a request count, not a time: a short probe sizes a ~``duration`` s run."""
    probe = _redis_benchmark_csv(port, connections, 20000, args, duration + 120)
    n = max(20000, int(float(probe["rps"]) * duration))
    t0 = time.monotonic()
    row = _redis_benchmark_csv(port, connections, n, args, duration + 120)
    return Measure(
        rps=float(row["rps"]),
        p50_ms=float(row["p50_latency_ms"]),
        p99_ms=float(row["p99_latency_ms"]),
        requests=n,
        duration_s=time.monotonic() - t0,
        tool=tool,
        extra={"avg_ms": float(row["avg_latency_ms"]), "max_ms": float(row["max_latency_ms"])},
    )


def redis_benchmark(port: int, test: str, duration: float, connections: int = 32, size: int = 1024) -> Measure:
    """redis-benchmark -t get|set at the same concurrency and value size; ~``duration`` seconds.

    Without -r every request uses the one key ``key:__rand_int__`` (a SET runs first for GET).
    """
    if test == "get":
        _redis_benchmark_csv(port, connections, 1000, ["-d", str(size), "-t", "set"], duration + 120)
    return _redis_benchmark_sized(
        port, connections, ["-d", str(size), "-t", test], duration, f"redis-benchmark -c{connections} -d{size} -t {test}"
    )


def redis_benchmark_command(port: int, command: list[str], duration: float, connections: int = 32) -> Measure:
    """redis-benchmark running one literal command (e.g. devinit's EVALSHA) at the same concurrency."""
    return _redis_benchmark_sized(port, connections, command, duration, f"redis-benchmark -c{connections} {command[0]}")


def hey(url: str, duration: float, rate: float, connections: int = 16) -> Measure | None:
    """Fixed-rate latency with hey (-q is per worker), as a cross-check of the wrk pacer.

    hey prints per-request times with 0.1 ms resolution only, so its percentiles are coarse;
    worse, its per-worker tickers fire together, so the requests arrive in bursts of
    ``connections`` (measured: ~90% of request starts within 0.2 ms of the previous one) and
    the latency includes queueing behind the rest of the burst. The wrk pacer spreads sends
    evenly and is the figure the targets use; hey's is reported as the bursty case.
    Returns None when hey is not installed (apt-get install -y hey).
    """
    if shutil.which("hey") is None:
        return None
    argv = ["hey", "-z", f"{max(1, round(duration))}s", "-c", str(connections), "-q", f"{rate / connections:g}", "-o", "csv", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    times: list[float] = []
    errors = 0
    for row in csv.DictReader(io.StringIO(out.stdout)):
        if row.get("status-code", "").startswith("2"):
            times.append(float(row["response-time"]) * 1000)
        else:
            errors += 1
    if not times:
        return None
    times.sort()
    return Measure(
        rps=len(times) / duration,
        p50_ms=percentile(times, 50),
        p99_ms=percentile(times, 99),
        requests=len(times),
        errors=errors,
        duration_s=duration,
        tool=f"hey -c{connections} -q{rate / connections:g} (bursts of {connections}, 0.1 ms resolution)",
    )


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]
