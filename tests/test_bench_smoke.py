"""The bench harness runs end to end on a tiny budget and writes the JSON shape the README
promises. No timing is asserted (docs/architecture.md: timings belong in bench/); only shapes and the
correctness figures the harness itself checks (no lost updates on the hot key)."""

from __future__ import annotations

import json
import shutil

from bench import report
from bench.run import main, parse_args, run
from support import need


def test_bench_quick_shape(tmp_path):
    need(shutil.which("wrk") is not None, "wrk is not installed (apt-get install -y wrk)")
    need(shutil.which("h2load") is not None, "h2load is not installed (apt-get install -y nghttp2-client)")
    a = parse_args(
        [
            "--duration",
            "1",
            "--rate-duration",
            "1",
            "--rounds",
            "1",
            "--stores",
            "memory",
            "--bare-stacks",
            "devinit-h1,uvicorn",
            "--no-hey",
            "--cli-runs",
            "1",
            "--no-init",
        ]
    )
    result = run(a)
    json.dumps(result)  # serializable as written to bench/results/
    assert set(result) >= {"meta", "ceilings", "stores", "cli", "rows", "targets", "notes", "dapr_published"}
    assert result["ceilings"]["bare ASGI fastest"]["stack"] == "uvicorn"
    mem = result["stores"]["memory"]
    for workload in ("GET", "save eventual", "save strong", "RMW hot key", "GET @1000/s"):
        m = mem[workload]
        assert m["requests"] > 0 and m["rps"] > 0 and m["errors"] == 0, (workload, m)
    assert mem["RMW hot key"]["extra"]["lost_updates"] == 0
    for workload in ("gRPC GET", "gRPC GET @1000/s"):  # h2load; an error status would count as errors
        m = mem[workload]
        assert m["requests"] > 0 and m["errors"] == 0 and m["extra"]["data_bytes_per_answer"] > 1024, (workload, m)
    assert mem["rss_kib"]["idle"] > 0 and mem["rss_kib"]["loaded_peak"] >= mem["rss_kib"]["idle"]
    assert result["cli"]["--help"]["exit"] == 0
    names = {(r["group"], r["name"]) for r in result["rows"]}
    assert ("ceiling", "bare ASGI uvicorn") in names and ("ceiling", "bare devinit-h1") in names and ("memory", "GET") in names
    assert all({"target", "value", "goal", "met"} <= set(t) for t in result["targets"])
    assert "targets:" in report.table(result)


def test_bench_cli_writes_json(tmp_path, capsys):
    need(shutil.which("wrk") is not None, "wrk is not installed (apt-get install -y wrk)")
    need(shutil.which("h2load") is not None, "h2load is not installed (apt-get install -y nghttp2-client)")
    out = tmp_path / "r.json"
    code = main(
        [
            "--duration",
            "1",
            "--rate-duration",
            "1",
            "--rounds",
            "1",
            "--stores",
            "memory",
            "--bare-stacks",
            "uvicorn",
            "--no-hey",
            "--no-cli",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert data["stores"]["memory"]["GET"]["rps"] > 0
    printed = capsys.readouterr().out
    assert "memory" in printed and str(out) in printed


def test_state_tools_shape(tmp_path):
    """bench/state_tools.py end to end at a small scale: every figure is there (none is judged)."""
    from bench import state_tools
    from bench.procs import start_redis
    from browser import CHROMEDRIVER, CHROMIUM

    need(shutil.which("redis-benchmark") is not None, "redis-benchmark is not installed (apt-get install -y redis-tools)")
    need(
        shutil.which(CHROMIUM) is not None and shutil.which(CHROMEDRIVER) is not None, "apt-get install chromium chromium-driver"
    )
    redis_proc, redis_port = start_redis(tmp_path / "redis")
    try:
        st = state_tools.measure(
            ["redis", "sqlite"], tmp_path / "work", redis_port, keys=3000, import_items=500, log=lambda m: None
        )
    finally:
        redis_proc.stop()
    json.dumps(st)
    for kind in ("redis", "sqlite"):
        res = st["stores"][kind]
        assert res["ls_small"]["keys"] == 300 and res["ls_big"]["keys"] == 3000
        assert res["ls_big"]["peak_rss_kib"] > 0 and res["ls_big"]["server_peak_rss_kib"] > 0
        assert res["import"]["items"] == 500 and res["first_page"]["median_ms"] > 0
    assert st["stores"]["redis"]["redis-benchmark SET"]["c50"]["seconds"] > 0
    assert st["stores"]["sqlite"]["bare sqlite3 insert"]["seconds"] > 0
    assert st["stores"]["redis"]["first_list_browser"]["median_ms"] > 0  # the page drew its first list
    names = [t["target"] for t in state_tools.targets(st)]
    assert len(names) == 5 and all("goal" in t for t in state_tools.targets(st))
    assert "state import" in "\n".join(state_tools.lines(st))


def test_bench_run_startup_shape():
    """`devinit run` start-up beside the app alone (bench/run_startup.py): runs end to end."""
    from bench.procs import devinit_env
    from bench.run_startup import MULTI, measure

    r = measure(devinit_env(), runs=1)
    json.dumps(r)
    assert {"alone_ms", "run_ms", "overhead_ms", "run_f_last_app_ms", "run_f_overhead_ms", "run_f_over_single"} <= set(r)
    assert r["alone_ms"] > 0 and r["run_ms"] > 0 and r["run_f_last_app_ms"] > 0 and r["multi_apps"] == MULTI
    assert [len(v) for v in r["runs_ms"].values()] == [1, 1, 1, 1] and r["alone_together_ms"] > 0
    result = {"cli": {"runs": 1, "python -c pass": {"median_ms": 1.0}, "run": r}}
    published = {"http": {"p50_ms": 0.73, "p99_ms": 1.97}, "grpc": {"p50_ms": 0.57, "p99_ms": 1.65}}
    targets = {t["target"]: t for t in report.targets({"meta": {"rate": 1000}, "dapr_published": published, **result})}
    assert targets["devinit run: app starts later than alone by"]["value"] == r["overhead_ms"]
    assert targets[f"devinit run -f, {MULTI} apps: start-up / one app's"]["value"] == r["run_f_over_single"]


def test_bench_fixture_startup_shape():
    """The test fixture's start beside python -c pass and devinit serve (bench/fixture_startup.py): runs end to end."""
    from bench.fixture_startup import measure
    from bench.procs import devinit_env

    r = measure(devinit_env(), runs=1)
    json.dumps(r)
    for name in ("python_pass_ms", "serve_ms", "start_ms", "stop_ms", "reset_5_keys_us", "reset_empty_us", "plugin_import_us"):
        assert r[name] > 0, name
    assert [len(v) for v in r["runs_ms"].values()] == [1, 1, 1, 1] and r["target_ms"] == 300
    result = {"cli": {"runs": 1, "python -c pass": {"median_ms": 1.0}, "fixture": r}}
    published = {"http": {"p50_ms": 0.73, "p99_ms": 1.97}, "grpc": {"p50_ms": 0.57, "p99_ms": 1.65}}
    targets = {t["target"]: t for t in report.targets({"meta": {"rate": 1000}, "dapr_published": published, **result})}
    assert targets["devinit.testing: a state server starts in"]["value"] == r["start_ms"]


def test_bench_ab_runs_two_checkouts_side_by_side(capsys):
    """bench/ab.py (two checkouts, alternated): runs end to end and prints both ratios; here
    the same checkout twice, so both servers answer every workload."""
    need(bool(shutil.which("wrk") and shutil.which("h2load")), "wrk and h2load (apt-get install wrk nghttp2-client)")
    from pathlib import Path

    from bench.ab import main as ab_main

    here = Path(__file__).resolve().parents[1]
    assert ab_main([str(here), str(here), "--store", "memory", "--rounds", "1", "--duration", "1"]) == 0
    out = capsys.readouterr().out
    assert "round 1: A http" in out
    for kind in ("http", "grpc"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(f"{kind} GET"))
        assert float(line.split("B/A")[1]) > 0, line
