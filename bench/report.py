"""Turn a bench result into table rows with ratios, target verdicts, a text table and a PNG."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench import state_tools

RATIO_COLUMNS = ("same stack", "bare fastest", "redis-bench", "redis-py")


def _m(d: Any) -> dict[str, Any] | None:
    return d if isinstance(d, dict) and "rps" in d and "p50_ms" in d else None


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measured figure as a row: group, name, rps, p50, p99, errors, ratios to the ceilings."""
    c = result["ceilings"]
    same = (_m(c.get("bare devinit-h1")) or {}).get("rps")
    fastest = (c.get("bare ASGI fastest") or {}).get("rps")
    rb_get = (_m(c.get("redis-benchmark GET")) or {}).get("rps")
    rb_set = (_m(c.get("redis-benchmark SET")) or {}).get("rps")
    py_get = (_m(c.get("redis-py devinit-GET")) or {}).get("rps")
    py_set = (_m(c.get("redis-py SET")) or {}).get("rps")
    out: list[dict[str, Any]] = []

    def ratio(x: float, base: float | None) -> float | None:
        return round(x / base, 3) if base else None

    for name, m in c.items():
        if _m(m):
            out.append(
                {
                    "group": "ceiling",
                    "name": name,
                    "rps": m["rps"],
                    "p50_ms": m["p50_ms"],
                    "p99_ms": m["p99_ms"],
                    "errors": m["errors"],
                    "tool": m["tool"],
                    "ratios": {},
                }
            )
    for store, ws in result["stores"].items():
        for name, m in ws.items():
            if not _m(m):
                continue
            ratios: dict[str, float | None] = {}
            paced = "@" in name
            if not paced and name != "RMW hot key":
                ratios["same stack"] = ratio(m["rps"], same)
                ratios["bare fastest"] = ratio(m["rps"], fastest)
                if store == "redis":
                    is_get = name.startswith("GET") or name.startswith("gRPC")
                    ratios["redis-bench"] = ratio(m["rps"], rb_get if is_get else rb_set)
                    ratios["redis-py"] = ratio(m["rps"], py_get if is_get else py_set)
            row = {
                "group": store,
                "name": name,
                "rps": m["rps"],
                "p50_ms": m["p50_ms"],
                "p99_ms": m["p99_ms"],
                "errors": m["errors"],
                "tool": m["tool"],
                "ratios": ratios,
            }
            if name == "RMW hot key":
                x = m["extra"]
                row["note"] = (
                    f"{x['increments']} increments, {x['conflicts']} conflicts, retries/increment "
                    f"mean {x['retries_mean'] if x['retries_mean'] is None else round(x['retries_mean'], 2)} max {x['retries_max']}, "
                    f"lost updates {x['lost_updates']}"
                )
            if paced:
                dapr = result["dapr_published"]["grpc" if name.startswith("gRPC") else "http"]
                row["note"] = (
                    f"target {m['extra'].get('target_rate') or 'fixed rate'}/s, achieved {m['rps']:.0f}/s; "
                    f"Dapr {'gRPC' if name.startswith('gRPC') else 'HTTP'} published p50 {dapr['p50_ms']} / p99 {dapr['p99_ms']} ms (in-memory, missing key)"
                )
            out.append(row)
    return out


def _get(result: dict[str, Any], *path: str) -> Any:
    cur: Any = result
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and met / not met / not measured."""
    out: list[dict[str, Any]] = []
    rate = result["meta"]["rate"]

    def add(name: str, value: float | None, target: float, higher_is_better: bool, unit: str = "") -> None:
        met = None if value is None else (value >= target if higher_is_better else value <= target)
        out.append({"target": name, "value": value, "goal": f"{'>=' if higher_is_better else '<='} {target:g}{unit}", "met": met})

    per_round = result.get("per_round") or {}

    def ratio(num: float | None, den: float | None, key: str) -> float | None:
        rounds = per_round.get(key) or []
        if len(rounds) > 1:
            return round(statistics.median(rounds), 3)  # median of same-round ratios
        return round(num / den, 3) if num and den else None

    mem = _get(result, "stores", "memory", "GET", "rps")
    fastest = _get(result, "ceilings", "bare ASGI fastest", "rps")
    add("in-memory GET rps / fastest bare ASGI rps", ratio(mem, fastest, "memory GET / fastest bare ASGI"), 0.70, True)
    red = _get(result, "stores", "redis", "GET", "rps")
    rb = _get(result, "ceilings", "redis-benchmark GET", "rps")
    add("Redis-store GET rps / redis-benchmark GET rps", ratio(red, rb, "redis GET / redis-benchmark GET"), 0.50, True)
    for t, key in zip(out, ("memory GET / fastest bare ASGI", "redis GET / redis-benchmark GET"), strict=False):
        if len(per_round.get(key) or []) > 1:
            t["rounds"] = per_round[key]
    paced = _get(result, "stores", "redis", f"GET @{rate:g}/s")
    dapr = result["dapr_published"]["http"]
    add(f"Redis-store GET p50 at {rate:g}/s (Dapr HTTP 0.73 ms)", paced and paced["p50_ms"], dapr["p50_ms"], False, " ms")
    add(f"Redis-store GET p99 at {rate:g}/s (Dapr HTTP 1.97 ms)", paced and paced["p99_ms"], dapr["p99_ms"], False, " ms")
    grpc = _get(result, "stores", "redis", f"gRPC GET @{rate:g}/s")
    gdapr = result["dapr_published"]["grpc"]
    if _m(grpc) is None:
        why = (_get(result, "stores", "redis", "gRPC GET") or {}).get("skipped", "not measured")
        out.append(
            {
                "target": f"Redis-store gRPC GetState p50/p99 at {rate:g}/s (Dapr gRPC 0.57 / 1.65 ms)",
                "value": None,
                "goal": "< Dapr",
                "met": None,
                "why": why,
            }
        )
    else:
        add(f"Redis-store gRPC GetState p50 at {rate:g}/s (Dapr gRPC 0.57 ms)", grpc["p50_ms"], gdapr["p50_ms"], False, " ms")
        add(f"Redis-store gRPC GetState p99 at {rate:g}/s (Dapr gRPC 1.65 ms)", grpc["p99_ms"], gdapr["p99_ms"], False, " ms")
    cli = result.get("cli") or {}
    add("devinit --help", _get(cli, "--help", "median_ms"), 150, False, " ms")
    add("devinit status", _get(cli, "status", "median_ms"), 300, False, " ms")
    add("devinit init (image present) until healthy", _get(cli, "init", "ms"), 3000, False, " ms")
    add("devinit run: app starts later than alone by", _get(cli, "run", "overhead_ms"), 300, False, " ms")
    # N apps of a run file must not take N times one app's start-up
    n = _get(cli, "run", "multi_apps") or 3
    add(f"devinit run -f, {n} apps: start-up / one app's", _get(cli, "run", "run_f_over_single"), n / 2, False, "x")
    for t, key in zip(out[-5:], ("--help", "status", "init", "run", "run"), strict=False):
        why = _get(cli, key, "skipped") or cli.get("skipped")
        if why:
            t["why"] = why
    add("devinit.testing: a state server starts in", _get(cli, "fixture", "start_ms"), 300, False, " ms")
    why = _get(cli, "fixture", "skipped") or cli.get("skipped")
    if why:
        out[-1]["why"] = why
    st = result.get("state_tools") or {}
    if "stores" in st:
        out += state_tools.targets(st)
    return out


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        f"devinit bench @ {meta['commit']}  {meta['timestamp']}  mode={meta['mode']} {meta['duration_s']:g}s x {meta['rounds']} round(s), "
        f"wrk -t{meta['wrk_threads']} -c{meta['connections']}, {meta['value_bytes']} B values, {meta['cpus']} CPUs, "
        f"load {meta['loadavg_start'][0]:.2f} -> {meta['loadavg_end'][0]:.2f}",
        "",
        f"{'group':<8} {'workload':<36} {'rps':>9} {'p50 ms':>7} {'p99 ms':>7} {'err':>5}  "
        + " ".join(f"{'x' + c:>13}" for c in RATIO_COLUMNS),
    ]
    for r in result["rows"]:
        ratios = " ".join(f"{_fmt(r['ratios'].get(c), '.2f'):>13}" for c in RATIO_COLUMNS)
        lines.append(
            f"{r['group']:<8} {r['name']:<36} {r['rps']:>9.0f} {_fmt(r['p50_ms'], '.2f'):>7} {_fmt(r['p99_ms'], '.2f'):>7} {r['errors']:>5}  {ratios}"
        )
        if r.get("note"):
            lines.append(f"{'':<8}   {r['note']}")
    fastest = result["ceilings"].get("bare ASGI fastest")
    if fastest:
        lines.append(f"\nfastest bare ASGI stack: {fastest['stack']} ({fastest['rps']:.0f} rps)")
    for store, ws in result["stores"].items():
        rss = ws.get("rss_kib") or {}
        lines.append(
            f"{store:<8} RSS idle {(rss.get('idle') or 0) / 1024:.1f} MiB, loaded peak {(rss.get('loaded_peak') or 0) / 1024:.1f} MiB"
        )
        for name, m in ws.items():
            if isinstance(m, dict) and "skipped" in m:
                lines.append(f"{store:<8} {name}: skipped: {m['skipped']}")
    cli = result.get("cli") or {}
    if "skipped" not in cli:
        lines.append(f"\nCLI start-up (median of {cli['runs']}): python -c pass {cli['python -c pass']['median_ms']:.0f} ms")
        run = cli.get("run") or {}
        if "skipped" not in run:
            lines.append(
                f"devinit run: the app starts after {run['run_ms']:.0f} ms (alone {run['alone_ms']:.0f} ms: "
                f"+{run['overhead_ms']:.0f} ms); {run['multi_apps']} apps of a run file after {run['run_f_last_app_ms']:.0f} ms "
                f"(alone, at once: {run['alone_together_ms']:.0f} ms: +{run['run_f_overhead_ms']:.0f} ms, "
                f"{run['run_f_over_single']:.2f}x one app's)"
            )
        fx = cli.get("fixture") or {}
        if "skipped" not in fx:
            lines.append(
                f"test fixture: StateServer().start() {fx['start_ms']:.0f} ms (devinit serve until healthy "
                f"{fx['serve_ms']:.0f} ms, python -c pass {fx['python_pass_ms']:.0f} ms), stop {fx['stop_ms']:.0f} ms; "
                f"reset {fx['reset_5_keys_us']:.0f} us with 5 keys, {fx['reset_empty_us']:.0f} us empty; "
                f"import devinit_pytest {fx['plugin_import_us']:.0f} us"
            )
    st = result.get("state_tools") or {}
    lines += state_tools.lines(st) if "stores" in st else [f"\nstate tools: skipped: {st.get('skipped', 'not measured')}"]
    lines.append("\ntargets:")
    for t in result["targets"]:
        verdict = {True: "MET", False: "NOT MET", None: "not measured"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:g}"
        lines.append(
            f"  {verdict:<12} {t['target']}: {value} (goal {t['goal']})"
            + (f"  [{t['why']}]" if t.get("why") else "")
            + (f"  median of rounds {t['rounds']}" if t.get("rounds") else "")
        )
    for n in result["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> str | None:
    """Draw the PNG; returns why not when matplotlib is missing (pip install matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib; an optional bench-only dependency)"
    rws = [r for r in result["rows"] if "@" not in r["name"] and r["name"] != "RMW hot key"]
    paced = [r for r in result["rows"] if "@" in r["name"] and "(hey" not in r["name"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 7), gridspec_kw={"width_ratios": [3, 1]})
    colors = {"ceiling": "#999999", "memory": "#1f77b4", "sqlite": "#2ca02c", "redis": "#d62728"}
    labels = [f"{r['group']}: {r['name']}" if r["group"] != "ceiling" else r["name"] for r in rws]
    ax1.barh(range(len(rws)), [r["rps"] for r in rws], color=[colors.get(r["group"], "#555") for r in rws])
    ax1.set_yticks(range(len(rws)), labels, fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xscale("log")
    ax1.set_xlabel("requests/s (log scale)")
    for i, r in enumerate(rws):
        ax1.text(r["rps"], i, f" {r['rps']:.0f}", va="center", fontsize=7)
    fastest = (result["ceilings"].get("bare ASGI fastest") or {}).get("rps")
    if fastest:
        ax1.axvline(fastest * 0.7, color="#1f77b4", ls=":", lw=2.5, label="0.70 x fastest bare ASGI (in-memory GET target)")
    rb = (result["ceilings"].get("redis-benchmark GET") or {}).get("rps")
    if rb:
        ax1.axvline(rb * 0.5, color="#d62728", ls="--", lw=1, label="0.50 x redis-benchmark GET (Redis GET target)")
    ax1.legend(fontsize=8, loc="lower right")
    meta = result["meta"]
    ax1.set_title(
        f"throughput, wrk -c{meta['connections']}, 1 KB ({meta['mode']}, {meta['duration_s']:g}s x {meta['rounds']})", fontsize=10
    )
    names = [
        r["group"] + (" gRPC" if r["name"].startswith("gRPC") else "") + (" (missing key)" if "missing" in r["name"] else "")
        for r in paced
    ]
    p50 = [r["p50_ms"] for r in paced]
    p99 = [r["p99_ms"] for r in paced]
    for proto in ("http", "grpc") if any(r["name"].startswith("gRPC") for r in paced) else ("http",):
        names.append(f"Dapr {proto.upper() if proto == 'http' else 'gRPC'} (published,\nin-memory, missing key)")
        p50.append(result["dapr_published"][proto]["p50_ms"])
        p99.append(result["dapr_published"][proto]["p99_ms"])
    xs = range(len(names))
    ax2.bar([x - 0.2 for x in xs], p50, width=0.4, label="p50", color="#4c72b0")
    ax2.bar([x + 0.2 for x in xs], p99, width=0.4, label="p99", color="#dd8452")
    for x, a, b in zip(xs, p50, p99, strict=True):
        ax2.text(x - 0.2, a, f"{a:.2f}", ha="center", va="bottom", fontsize=7)
        ax2.text(x + 0.2, b, f"{b:.2f}", ha="center", va="bottom", fontsize=7)
    ax2.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
    ax2.set_yscale("log")
    ax2.set_ylabel("ms (log scale)")
    ax2.set_title(f"GET latency at {meta['rate']:g} req/s, {meta['rate_connections']} connections", fontsize=10)
    ax2.legend(fontsize=8)
    fig.suptitle(f"devinit bench @ {meta['commit']} {meta['timestamp']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
