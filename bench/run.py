"""The devinit benchmark: every store and every ceiling, side by side in one run.

    python -m bench [--quick] [--duration S] [--rounds N] [--stores memory,sqlite,redis]

Installs nothing: it checks for wrk, redis-server and redis-benchmark and says what to
apt-get install when one is missing. Results: a table on stdout, bench/results/<time>.json
and bench/results/<time>.png (the chart needs matplotlib, an optional bench-only dependency).
Ratios compare numbers measured in the same run on the same machine; with --rounds N every
figure is the median of N interleaved rounds (this 2-core machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from dapr.proto import api_v1

from bench import cli_timing, clients, loadgen, report, state_tools
from bench.loadgen import Measure
from bench.procs import BARE_STACKS, ROOT, RssSampler, check_tools, have_granian, rss_kib, start_bare, start_devinit, start_redis

RESULTS = Path(__file__).resolve().parent / "results"
STORES = ("memory", "sqlite", "redis")
VALUE_1K = b'"' + b"v" * 1022 + b'"'  # compact JSON text of exactly 1024 bytes
GET_KEY = "bench-get"
#: Dapr's published sidecar latency (in-memory store, missing key, 1000 rps), in ms
DAPR_PUBLISHED = {"http": {"p50_ms": 0.73, "p99_ms": 1.97}, "grpc": {"p50_ms": 0.57, "p99_ms": 1.65}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 s per workload, one round (about 2 minutes in all)")
    p.add_argument("--duration", type=float, default=None, help="seconds per workload [10; 3 with --quick]")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds, medians reported [3; 1 with --quick]")
    p.add_argument("--stores", default=",".join(STORES), help="comma-separated subset of memory,sqlite,redis")
    p.add_argument(
        "--bare-stacks", default=",".join(BARE_STACKS), help=f"ceiling stacks for the bare ASGI app: {','.join(BARE_STACKS)}"
    )
    p.add_argument("--connections", type=int, default=32, help="wrk connections for throughput [32]")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads [1: leaves the other core to the server]")
    p.add_argument("--rate", type=float, default=1000.0, help="fixed rate for the latency runs, requests/s [1000]")
    p.add_argument("--rate-duration", type=float, default=None, help="seconds of each fixed-rate run [max(duration, 5)]")
    p.add_argument("--rate-connections", type=int, default=16, help="connections for the fixed-rate runs [16]")
    p.add_argument("--no-hey", action="store_true", help="skip the hey cross-check of the fixed-rate latency")
    p.add_argument("--no-cli", action="store_true", help="skip the CLI start-up timings")
    p.add_argument("--cli-runs", type=int, default=None, help="runs per CLI command timed [7; 3 with --quick]")
    p.add_argument("--no-init", action="store_true", help="never run 'devinit init' even when it exists")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    p.add_argument(
        "--no-state-tools",
        action="store_true",
        help="skip the inspector's figures (state ls, import, first list: bench/state_tools.py)",
    )
    p.add_argument(
        "--state-keys", type=int, default=None, help="keys for state ls and the first list [1,000,000; 100,000 with --quick]"
    )
    p.add_argument("--state-import", type=int, default=None, help="1 KB items for state import [100,000; 20,000 with --quick]")
    p.add_argument("--out", type=Path, default=None, help="JSON path [bench/results/<timestamp>.json]")
    p.add_argument(
        "--profile", choices=STORES, default=None, help="only profile: serve this store under wrk GET load with py-spy"
    )
    args = p.parse_args(argv)
    args.duration = args.duration if args.duration is not None else (3.0 if args.quick else 10.0)
    args.rate_duration = args.rate_duration if args.rate_duration is not None else max(args.duration, 5.0)
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    args.state_keys = args.state_keys or (100_000 if args.quick else 1_000_000)
    args.state_import = args.state_import or (20_000 if args.quick else 100_000)
    args.store_list = [s for s in args.stores.split(",") if s]
    args.stack_list = [s for s in args.bare_stacks.split(",") if s]
    for s in args.store_list:
        if s not in STORES:
            p.error(f"unknown store {s!r}: use {', '.join(STORES)}")
    for s in args.stack_list:
        if s not in BARE_STACKS:
            p.error(f"unknown stack {s!r}: use {', '.join(BARE_STACKS)}")
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _seed(url: str, key: str, value: bytes) -> None:
    body = b'[{"key":"' + key.encode() + b'","value":' + value + b"}]"
    req = urllib.request.Request(
        url + "/v1.0/state/statestore", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 204, r.status
    with urllib.request.urlopen(url + f"/v1.0/state/statestore/{key}", timeout=5) as r:
        got = r.read()
    if got != value:
        raise RuntimeError(f"seeding {key}: read back {len(got)} bytes, not the {len(value)} saved")


def measure_bare(stack: str, workdir: Path, a: argparse.Namespace) -> Measure:
    proc, port = start_bare(stack, workdir)
    try:
        loadgen.wrk(f"http://127.0.0.1:{port}/", 1, a.connections, a.wrk_threads)  # warm-up
        m = loadgen.wrk(f"http://127.0.0.1:{port}/", a.duration, a.connections, a.wrk_threads)
        m.extra["rss_kib"] = rss_kib(proc.pid)
        return m
    finally:
        proc.stop()


def measure_redis_ceilings(redis_port: int, a: argparse.Namespace) -> dict[str, Measure]:
    out: dict[str, Measure] = {}
    out["redis-benchmark GET"] = loadgen.redis_benchmark(redis_port, "get", a.duration, a.connections)
    out["redis-benchmark SET"] = loadgen.redis_benchmark(redis_port, "set", a.duration, a.connections)
    # devinit's read is HMGET + PTTL written together (state/redis.read_commands); redis-benchmark
    # sends one command per request, so this row is its HMGET on a 1 KB hash alone.
    subprocess.run(
        ["redis-cli", "-p", str(redis_port), "HSET", "bench:read:hash", "data", VALUE_1K.decode(), "version", "1"],
        capture_output=True,
        check=True,
    )
    out["redis-benchmark HMGET"] = loadgen.redis_benchmark_command(
        redis_port, ["HMGET", "bench:read:hash", "data", "version"], a.duration, a.connections
    )
    out["redis-py GET"] = clients.redis_direct(redis_port, "get", a.duration, a.connections)
    out["redis-py SET"] = clients.redis_direct(redis_port, "set", a.duration, a.connections)
    out["redis-py devinit-GET"] = clients.redis_direct(redis_port, "devinit-get", a.duration, a.connections)
    return out


def measure_store(kind: str, workdir: Path, redis_port: int | None, a: argparse.Namespace, with_hey: bool) -> dict[str, Any]:
    srv = start_devinit(kind, workdir, redis_port)
    results: dict[str, Any] = {}
    try:
        _seed(srv.url, GET_KEY, VALUE_1K)
        time.sleep(0.3)
        idle = rss_kib(srv.proc.pid)
        get_url = f"{srv.url}/v1.0/state/statestore/{GET_KEY}"
        save_url = f"{srv.url}/v1.0/state/statestore"
        with RssSampler(srv.proc.pid) as rss:
            loadgen.wrk(get_url, 1, a.connections, a.wrk_threads)  # warm-up
            results["GET"] = loadgen.wrk(get_url, a.duration, a.connections, a.wrk_threads)
            results["save eventual"] = loadgen.wrk(save_url, a.duration, a.connections, a.wrk_threads, args=("mode=save",))
            results["save strong"] = loadgen.wrk(
                save_url, a.duration, a.connections, a.wrk_threads, args=("mode=save", "consistency=strong")
            )
            results["RMW hot key"] = clients.rmw(srv.http_port, a.duration, concurrency=16)
            results[f"GET @{a.rate:g}/s"] = loadgen.wrk(get_url, a.rate_duration, a.rate_connections, 1, rate=a.rate)
            if kind == "memory":  # Dapr's published figures use the in-memory store and a missing key
                results[f"GET missing key @{a.rate:g}/s"] = loadgen.wrk(
                    f"{srv.url}/v1.0/state/statestore/bench-missing", a.rate_duration, a.rate_connections, 1, rate=a.rate
                )
            if with_hey:
                h = loadgen.hey(get_url, a.rate_duration, a.rate, a.rate_connections)
                if h is not None:
                    results[f"GET @{a.rate:g}/s (hey, bursty)"] = h
            # gRPC GetState of the same 1 KB item, driven by h2load (external, like wrk for HTTP)
            get_grpc = f"http://127.0.0.1:{srv.grpc_port}/dapr.proto.runtime.v1.Dapr/GetState"
            body = loadgen.grpc_body(api_v1.GetStateRequest(store_name="statestore", key=GET_KEY))
            expect = len(VALUE_1K)  # an answer without the item's bytes (an error status) is an error
            loadgen.h2load_grpc(get_grpc, body, 1, a.connections)  # warm-up
            results["gRPC GET"] = loadgen.h2load_grpc(get_grpc, body, a.duration, a.connections, expect)
            results[f"gRPC GET @{a.rate:g}/s"] = loadgen.h2load_grpc_paced(
                get_grpc, body, a.rate_duration, a.rate, a.rate_connections, expect
            )
            if kind == "memory":
                missing = loadgen.grpc_body(api_v1.GetStateRequest(store_name="statestore", key="bench-missing"))
                results[f"gRPC GET missing key @{a.rate:g}/s"] = loadgen.h2load_grpc_paced(
                    get_grpc, missing, a.rate_duration, a.rate, a.rate_connections
                )
        results["rss_kib"] = {"idle": idle, "loaded_peak": rss.peak}
        if not srv.proc.alive():
            raise RuntimeError(f"devinit serve ({kind}) died under load:\n{srv.proc.log_tail()}")
    finally:
        srv.proc.stop()
    return results


def median_measure(ms: list[Measure]) -> Measure:
    """The median of each figure over rounds; the rounds' rps stay in extra['rounds_rps']."""
    if len(ms) == 1:
        return ms[0]
    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    out = Measure(
        rps=statistics.median(m.rps for m in ms),
        p50_ms=med([m.p50_ms for m in ms if m.p50_ms is not None]),
        p99_ms=med([m.p99_ms for m in ms if m.p99_ms is not None]),
        requests=sum(m.requests for m in ms),
        errors=sum(m.errors for m in ms),
        duration_s=sum(m.duration_s for m in ms),
        tool=ms[0].tool,
        extra={**ms[-1].extra, "rounds_rps": [round(m.rps, 1) for m in ms]},
    )
    return out


def _merge(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of every Measure; other values are taken from the last round."""
    out: dict[str, Any] = {}
    for key in rounds[-1]:
        vals = [r[key] for r in rounds if key in r]
        if all(isinstance(v, Measure) for v in vals):
            out[key] = median_measure(vals)
        elif key == "rss_kib":
            out[key] = {"idle": max(v["idle"] or 0 for v in vals), "loaded_peak": max(v["loaded_peak"] for v in vals)}
        else:
            out[key] = vals[-1]
    return out


def bare_label(stack: str) -> str:
    """The ceiling's name: devinit's own server is the same-stack ceiling, not an ASGI one."""
    return "bare devinit-h1" if stack == "devinit-h1" else f"bare ASGI {stack}"


def per_round_ratios(ceil_rounds: list[dict[str, Any]], store_rounds: dict[str, list[dict[str, Any]]]) -> dict[str, list[float]]:
    """The two throughput target ratios within each round (figures minutes apart, not a whole run
    apart); the targets use their median, which drifts less than a ratio of medians."""
    out: dict[str, list[float]] = {"memory GET / fastest bare ASGI": [], "redis GET / redis-benchmark GET": []}
    for i, ceil in enumerate(ceil_rounds):
        bare = [m.rps for k, m in ceil.items() if k.startswith("bare ASGI ")]
        mem = store_rounds.get("memory", [])
        if bare and i < len(mem) and isinstance(mem[i].get("GET"), Measure):
            out["memory GET / fastest bare ASGI"].append(round(mem[i]["GET"].rps / max(bare), 3))
        red = store_rounds.get("redis", [])
        rb = ceil.get("redis-benchmark GET")
        if rb and i < len(red) and isinstance(red[i].get("GET"), Measure):
            out["redis GET / redis-benchmark GET"].append(round(red[i]["GET"].rps / rb.rps, 3))
    return out


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        return "unknown"


def run(a: argparse.Namespace) -> dict[str, Any]:
    missing, optional = check_tools()
    if missing:
        raise SystemExit("bench: missing tools; install them and run again:\n  " + "\n  ".join(missing))
    notes: list[str] = []
    if optional:
        notes.append("optional tools missing: " + ", ".join(optional))
    stacks = [s for s in a.stack_list if s in ("uvicorn", "devinit-h1") or have_granian()]
    if len(stacks) < len(a.stack_list):
        notes.append("granian is not installed (pip install granian): the fastest-stack ceiling is uvicorn only")
    with_hey = not a.no_hey and shutil.which("hey") is not None
    load_start = os.getloadavg()
    commit = git_commit()
    t_start = time.monotonic()
    ceil_rounds: list[dict[str, Any]] = []
    store_rounds: dict[str, list[dict[str, Any]]] = {s: [] for s in a.store_list}
    with tempfile.TemporaryDirectory(prefix="devinit-bench-") as tmp:
        work = Path(tmp)
        redis_proc = None
        redis_port = None
        if "redis" in a.store_list:
            redis_proc, redis_port = start_redis(work / "redis")
        try:
            for rnd in range(a.rounds):
                log(f"== round {rnd + 1}/{a.rounds}")
                ceil: dict[str, Any] = {}
                for stack in stacks:
                    log(f"   bare app on {stack}")
                    ceil[bare_label(stack)] = measure_bare(stack, work, a)
                if redis_port is not None:
                    log("   Redis ceilings (redis-benchmark, redis-py)")
                    ceil.update(measure_redis_ceilings(redis_port, a))
                ceil_rounds.append(ceil)
                for kind in a.store_list:
                    log(f"   devinit serve, {kind} store")
                    store_rounds[kind].append(
                        measure_store(kind, work, redis_port if kind == "redis" else None, a, with_hey and kind == "redis")
                    )
            tool_kinds = [k for k in ("redis", "sqlite") if k in a.store_list]
            if a.no_state_tools or not tool_kinds:
                state = {"skipped": "--no-state-tools" if a.no_state_tools else "needs the redis or sqlite store (--stores)"}
            else:
                log("== state tools (devinit state ls / import, the page's first list)")
                state = state_tools.measure(tool_kinds, work / "state-tools", redis_port, a.state_keys, a.state_import, log)
        finally:
            if redis_proc is not None:
                redis_proc.stop()
    cli = (
        cli_timing.measure(runs=a.cli_runs or (3 if a.quick else 7), with_init=not a.no_init)
        if not a.no_cli
        else {"skipped": "--no-cli"}
    )
    ceilings = _merge(ceil_rounds)
    bare = {k: v for k, v in ceilings.items() if k.startswith("bare ASGI ")}
    if bare:
        fastest = max(bare, key=lambda k: bare[k].rps)
        ceilings["bare ASGI fastest"] = {"stack": fastest[len("bare ASGI ") :], "rps": bare[fastest].rps}
    stores = {k: _merge(v) for k, v in store_rounds.items()}
    result: dict[str, Any] = {
        "meta": {
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "commit": commit,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "mode": "quick" if a.quick else "default",
            "duration_s": a.duration,
            "rounds": a.rounds,
            "connections": a.connections,
            "wrk_threads": a.wrk_threads,
            "rate": a.rate,
            "rate_connections": a.rate_connections,
            "value_bytes": len(VALUE_1K),
            "wall_s": round(time.monotonic() - t_start, 1),
        },
        "ceilings": {k: (v.to_json() if isinstance(v, Measure) else v) for k, v in ceilings.items()},
        "stores": {k: {w: (m.to_json() if isinstance(m, Measure) else m) for w, m in v.items()} for k, v in stores.items()},
        "cli": cli,
        "state_tools": state,
        "dapr_published": DAPR_PUBLISHED,
        "notes": notes,
    }
    result["per_round"] = per_round_ratios(ceil_rounds, store_rounds)
    result["rows"] = report.rows(result)
    result["targets"] = report.targets(result)
    if "redis" in a.store_list:
        notes.append(
            "Redis 'save strong' adds no WAIT/WAITAOF here: the bench's redis-server runs without AOF "
            "and replicas, so it measures the strong path's extra INFO check only"
        )
    if "sqlite" in a.store_list:
        notes.append(f"SQLite files live in {tempfile.gettempdir()} (strong saves fsync there)")
    if load_start[0] > (os.cpu_count() or 1) * 0.5:
        notes.append(f"the machine was busy when the run started (load average {load_start[0]:.2f}): figures are noisy")
    return result


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.profile:
        from bench import profile

        return profile.main(a)
    result = run(a)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = a.out or RESULTS / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(report.table(result))
    print(f"\nJSON: {out}")
    if not a.no_chart:
        png = out.with_suffix(".png")
        err = report.chart(result, png)
        print(f"chart: {png}" if err is None else f"chart skipped: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
