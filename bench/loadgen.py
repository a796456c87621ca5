"""External load generators: wrk (throughput, and fixed-rate latency through a Lua pacer),
h2load (gRPC over HTTP/2: throughput, and fixed-rate latency), redis-benchmark (the Redis
ceiling), and hey (an optional cross-check of fixed-rate latency).

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
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(LUA),
        url,
        "--",
        *args,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    s = json.loads(line[len("BENCH_JSON ") :])
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


def grpc_body(message: Any) -> bytes:
    """A protobuf message as one gRPC request body (uncompressed, length-prefixed)."""
    data = message.SerializeToString()
    return b"\0" + len(data).to_bytes(4, "big") + data


def _h2load(
    url: str, body: bytes, runs: list[list[str]], gap: float, timeout: float
) -> tuple[int, int, int, list[tuple[int, int]]]:
    """Start one h2load process per entry of ``runs`` (its own arguments), ``gap`` seconds
    apart, all posting ``body`` as a gRPC call to ``url``. Returns (calls succeeded, calls
    failed, bytes of DATA received, one (start us since epoch, duration us) per call)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-h2load-") as tmp:
        body_file = Path(tmp) / "body"
        body_file.write_bytes(body)
        procs = []
        for i, args in enumerate(runs):
            argv = [
                "h2load",
                "-m",
                "1",
                "-t",
                "1",
                "-d",
                str(body_file),
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                f"--log-file={Path(tmp) / f'log{i}'}",
                *args,
                url,
            ]
            t_next = time.monotonic() + gap
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            time.sleep(max(0.0, t_next - time.monotonic()))
        ok = failed = data = 0
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            o, f, d = _h2load_summary(stdout)
            if not o:
                raise RuntimeError(f"h2load got no answers (exit {proc.returncode}):\n{stdout}\n{stderr}")
            ok, failed, data = ok + o, failed + f, data + d
        rows = [
            (int(f[0]), int(f[2]))
            for i in range(len(runs))
            for f in (ln.split("\t") for ln in (Path(tmp) / f"log{i}").read_text().splitlines())
            if len(f) >= 3
        ]
    return ok, failed, data, rows


def _h2load_summary(stdout: str) -> tuple[int, int, int]:
    """(requests succeeded, requests failed or errored, bytes of DATA) from h2load's summary."""
    ok = failed = data = 0
    for line in stdout.splitlines():
        if line.startswith("requests:"):
            fields = dict((v, int(k)) for k, v in (part.strip().split(" ", 1) for part in line[9:].split(",")) if k.isdigit())
            ok, failed = fields.get("succeeded", 0), fields.get("failed", 0) + fields.get("errored", 0) + fields.get("timeout", 0)
        elif line.startswith("traffic:"):
            data = int(line.split(",")[-1].split("(")[1].split(")")[0]) if "(" in line.split(",")[-1] else 0
    return ok, failed, data


def _grpc_measure(
    ok: int, failed: int, data: int, times: list[float], duration: float, expect_bytes: int, tool: str, **extra: Any
) -> Measure:
    """h2load counts HTTP status only (a gRPC error is HTTP 200 too): a run whose answers
    average fewer than ``expect_bytes`` of DATA counts every call as an error."""
    per_answer = data / ok
    if per_answer < expect_bytes:
        failed, ok = failed + ok, 0
    times.sort()
    return Measure(
        rps=len(times) / duration if ok else 0.0,
        p50_ms=percentile(times, 50),
        p99_ms=percentile(times, 99),
        requests=ok,
        errors=failed,
        duration_s=duration,
        tool=tool,
        extra={"data_bytes_per_answer": round(per_answer, 1), **extra},
    )


def h2load_grpc(url: str, body: bytes, duration: float, connections: int = 32, expect_bytes: int = 0) -> Measure:
    """gRPC calls flat out with h2load (nghttp2-client): ``connections`` connections, one call
    in flight on each, for ``duration`` seconds."""
    ok, failed, data, rows = _h2load(
        url, body, [["-c", str(connections), "-D", str(max(1, round(duration)))]], 0.0, duration + 60
    )
    return _grpc_measure(
        ok, failed, data, [us / 1000 for _, us in rows], duration, expect_bytes, f"h2load -c{connections} -m1 (gRPC)"
    )


def h2load_grpc_paced(
    url: str, body: bytes, duration: float, rate: float, connections: int = 16, expect_bytes: int = 0, warmup: float = 1.0
) -> Measure:
    """gRPC calls at a fixed total ``rate`` over ``connections`` connections: one h2load process
    per connection (``--rps rate/connections``), started one call apart. One h2load process
    with many connections would fire them all on the same tick (bursts of ``connections``
    calls, as hey does); separate processes spread their phases. The calls of the first
    ``warmup`` seconds (the processes still starting, connections being set up) are left out."""
    args = ["-c", "1", "-D", str(max(1, round(duration + warmup))), "--rps", f"{rate / connections:g}"]
    ok, failed, data, rows = _h2load(url, body, [args] * connections, 1.0 / rate, duration + warmup + 60)
    first = min(t for t, _ in rows)
    times = [us / 1000 for t, us in rows if t - first >= warmup * 1e6]
    return _grpc_measure(
        ok,
        failed,
        data,
        times,
        duration,
        expect_bytes,
        f"h2load x{connections} processes, -c1 --rps {rate / connections:g} each (gRPC; first {warmup:g} s left out)",
        target_rate=rate,
        calls_measured=len(times),
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
    """redis-benchmark running one literal command (e.g. the HMGET of devinit's read) at the same concurrency."""
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
