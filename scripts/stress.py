#!/usr/bin/env python3
"""Larger reliability runs than the test suite makes: lost updates, transfers, a store outage.

Starts real things (redis-server / a PostgreSQL cluster / a SQLite file, and two
`devinit serve` processes sharing the store), runs the workloads of tests/workloads.py, and
prints the figures. Nothing is asserted; the exit code is 1 when an update was lost with
first-write, a transfer changed the sum, or an outage request hung or was not JSON.

    python scripts/stress.py --store redis --clients 32 --ops 50
    python scripts/stress.py --store sqlite --clients 16 --ops 100 --skip-outage
    python scripts/stress.py --store postgres --grpc-share 0.5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import store_component  # noqa: E402

from support import DevinitServer, PostgresServer, RedisServer  # noqa: E402
from workloads import Endpoint, Probe, hammer, increments, transfers  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=["redis", "sqlite", "postgres"], default="redis")
    ap.add_argument("--clients", type=int, default=16, help="K concurrent clients (threads)")
    ap.add_argument("--ops", type=int, default=50, help="N increments per client")
    ap.add_argument("--grpc-share", type=float, default=0.25, help="share of the clients speaking gRPC")
    ap.add_argument("--movers", type=int, default=8)
    ap.add_argument("--moves", type=int, default=25)
    ap.add_argument("--skip-outage", action="store_true", help="no store outage phase (always skipped for sqlite)")
    ap.add_argument("--outage-seconds", type=float, default=3.0)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="devinit-stress-"))
    backing = None
    if args.store == "redis":
        backing = RedisServer(tmp / "redis")
    elif args.store == "postgres":
        backing = PostgresServer(tmp / "pg")
    servers: list[DevinitServer] = []
    bad = False
    try:
        for i in range(2):
            folder = tmp / f"components{i}"
            extra = {"readTimeout": "1s", "dialTimeout": "1s"} if args.store == "redis" else {}
            store_component(args.store, folder, "statestore", backing, extra)
            if args.store == "sqlite":
                text = (folder / "statestore.yaml").read_text().replace(str(tmp / "statestore.db"), str(tmp / "shared.db"))
                (folder / "statestore.yaml").write_text(text)
            servers.append(DevinitServer(folder, "--log-level", "warning", "--store-timeout", "3"))
        eps = [Endpoint(s.http_port, s.grpc_port) for s in servers]

        for first_write in (True, False):
            t0 = time.monotonic()
            res = increments(eps, f"count-{uuid.uuid4().hex[:8]}", args.clients, args.ops, first_write, args.grpc_share)
            mode = "first-write+etag" if first_write else "last-write, no etag"
            print(
                f"increments ({mode}): K={res.clients} N={res.ops} K·N={res.expected} final={res.final} "
                f"lost={res.lost} conflicts={res.conflicts} errors={len(res.errors)} in {time.monotonic() - t0:.1f}s"
            )
            if first_write and (res.lost or res.errors):
                bad = True
                print("  errors:", res.errors[:5])

        t0 = time.monotonic()
        tr = transfers(eps, f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}", args.movers, args.moves)
        print(
            f"transfers: movers={tr.movers} moves={tr.moves} sum {tr.total_before} -> {tr.total_after} "
            f"balance={tr.balance} conflicts={tr.conflicts} errors={len(tr.errors)} in {time.monotonic() - t0:.1f}s"
        )
        bad = bad or tr.total_after != tr.total_before or bool(tr.errors)

        if not args.skip_outage and backing is not None:
            probe, stop = Probe(), threading.Event()
            threads = hammer(eps[0], args.clients, stop, probe, timeout=15)
            time.sleep(1)
            errors_before = probe.mark_outage()
            killed = time.monotonic()
            backing.stop(**({"fast": True} if args.store == "postgres" else {}))
            time.sleep(args.outage_seconds)
            restarted = probe.mark_restart()
            backing.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (probe.first_ok_after_error is None or probe.first_ok_after_error < restarted):
                time.sleep(0.05)
            time.sleep(1)
            stop.set()
            for t in threads:
                t.join(20)
            first_err = f"{probe.first_error_at - killed:.2f}s" if probe.first_error_at else "none"
            recover = f"{probe.first_ok_after_error - restarted:.2f}s" if probe.first_ok_after_error else "never"
            print(
                f"outage ({args.store} killed {args.outage_seconds:g}s): {args.clients} clients, answers {probe.answers}; "
                f"first error {first_err} after the kill; first success {recover} after the restart; 500s before the kill {errors_before}; "
                f"hangs/resets {len(probe.transport_errors)}; non-JSON errors {len(probe.not_json_errors)}"
            )
            bad = bad or bool(probe.transport_errors or probe.not_json_errors) or probe.first_ok_after_error is None
    finally:
        for s in servers:
            s.stop()
        if backing is not None:
            backing.stop()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
