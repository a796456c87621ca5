"""Two checkouts of devinit side by side: GET over HTTP and gRPC, alternated, medians.

    git worktree add --detach /tmp/devinit-base <commit>
    python -m bench.ab /tmp/devinit-base .            # redis store, 6 rounds
    python -m bench.ab /tmp/devinit-base . --store memory --rounds 10

Why: ``python -m bench`` measures one checkout against its ceilings; two such runs, one after
the other, differ by more than a change on the request path costs (the machine's load drifts
between them). Here both servers run at once, on one redis-server, and each round measures
them back to back in alternating order (A B, then B A), so drift falls on both alike. The
answer is the ratio of medians, B / A (above 1: B is faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench import loadgen, procs
from bench.run import GET_KEY, VALUE_1K, _seed
from devinit.proto import api_v1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path, help="the first checkout (e.g. the base commit in a worktree)")
    p.add_argument("b", type=Path, help="the second checkout (e.g. this one: .)")
    p.add_argument("--store", choices=("redis", "memory", "sqlite"), default="redis")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per measurement [4]")
    p.add_argument("--connections", type=int, default=32)
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    redis, redis_port = procs.start_redis(work) if a.store == "redis" else (None, None)
    servers: dict[str, procs.Devinit] = {}
    try:
        for name, root in (("A", a.a), ("B", a.b)):
            procs.ROOT = root.resolve()  # devinit_env puts this checkout first on the path
            (work / name).mkdir()
            servers[name] = procs.start_devinit(a.store, work / name, redis_port)
            _seed(servers[name].url, GET_KEY, VALUE_1K)
        body = loadgen.grpc_body(api_v1.GetStateRequest(store_name="statestore", key=GET_KEY))
        results: dict[str, list[float]] = {f"{n} {kind}": [] for kind in ("http", "grpc") for n in servers}
        for srv in servers.values():  # warm-up
            loadgen.wrk(f"{srv.url}/v1.0/state/statestore/{GET_KEY}", 1, a.connections, 1)
        for r in range(a.rounds):
            order = ["A", "B"] if r % 2 == 0 else ["B", "A"]
            for n in order:
                url = f"{servers[n].url}/v1.0/state/statestore/{GET_KEY}"
                results[f"{n} http"].append(loadgen.wrk(url, a.duration, a.connections, 1).rps)
            for n in order:
                url = f"http://127.0.0.1:{servers[n].grpc_port}/dapr.proto.runtime.v1.Dapr/GetState"
                results[f"{n} grpc"].append(loadgen.h2load_grpc(url, body, a.duration, a.connections, len(VALUE_1K)).rps)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in results.items()), flush=True)
        print(f"\n{a.store} store, {a.rounds} rounds of {a.duration:g} s; A = {a.a}, B = {a.b}")
        for kind in ("http", "grpc"):
            ma, mb = statistics.median(results[f"A {kind}"]), statistics.median(results[f"B {kind}"])
            print(f"  {kind} GET  A {ma:8.0f}  B {mb:8.0f}  B/A {mb / ma:.3f}")
    finally:
        for srv in servers.values():
            srv.proc.stop()
        if redis is not None:
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
