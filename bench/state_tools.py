"""The inspector's figures (issue 12), each beside what it is compared with, measured in one run:

- ``devinit state ls --json`` over N and then 10 x N keys (1,000,000 by default): wall time and
  the peak RSS of the command and of the server; flat memory means the peaks do not grow with N;
- ``devinit state import`` of 100,000 items of 1 KB, on Redis and on SQLite, beside
  ``redis-benchmark`` SET of the same count and size and a bare ``sqlite3`` bulk insert of the
  same rows (Python's sqlite3, one transaction, the store's own table layout);
- the page's first list of a store holding the 10 x N keys: the devinit route's first page
  alone (median of 5), and in headless Chromium from navigation to the rows drawn (the page's
  ``devinit:first-list`` mark), when chromium, chromedriver and selenium are installed.

The keys are written straight into the store (Dapr's Redis hash layout; the SQLite store's
table) so that seeding a million keys takes seconds, not what an import would take.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procs import Devinit, RssSampler, devinit_env, start_devinit

VALUE_1K = '"' + "v" * 1022 + '"'  # compact JSON text of exactly 1024 bytes
SMALL_VALUE = b'{"n":1}'
SEED_BATCH = 10_000


# -- seeding ------------------------------------------------------------------------------------


def seed_redis(port: int, start: int, stop: int) -> None:
    """Keys ``bench||k<i>`` for i in [start, stop) in Dapr's hash layout (data, version)."""
    import redis

    r = redis.Redis(port=port)
    for lo in range(start, stop, SEED_BATCH):
        pipe = r.pipeline(transaction=False)
        for i in range(lo, min(stop, lo + SEED_BATCH)):
            pipe.hset(f"bench||k{i:07d}", mapping={"data": SMALL_VALUE, "version": 1})
        pipe.execute()
    r.close()


def seed_sqlite(db: Path, start: int, stop: int, table: str = "state") -> None:
    """The same keys as rows of the SQLite store's table (the server made it at start)."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        with conn:
            conn.executemany(
                f'INSERT OR REPLACE INTO "{table}" (key, value, etag, expire_at) VALUES (?, ?, ?, NULL)',
                ((f"bench||k{i:07d}", SMALL_VALUE, str(i + 1)) for i in range(start, stop)),
            )
    finally:
        conn.close()


# -- measurements -------------------------------------------------------------------------------


def _devinit_cli(args: list[str], stdout: Any = subprocess.DEVNULL) -> dict[str, Any]:
    """Run ``python -m devinit <args>``; wall seconds, exit code and the command's peak RSS (KiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "devinit", *args], env=devinit_env(), stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"devinit {' '.join(args)} failed ({proc.returncode}): {err[-2000:]}")
    return {"seconds": round(wall, 3), "peak_rss_kib": usage.ru_maxrss}


def measure_ls(srv: Devinit, keys: int) -> dict[str, Any]:
    """`devinit state ls --json` over the whole store, with the server's RSS sampled meanwhile."""
    with RssSampler(srv.proc.pid, interval=0.05) as rss:
        cli = _devinit_cli(["state", "ls", "--json", "--http-port", str(srv.http_port), "--store", "statestore"])
    return {**cli, "keys": keys, "keys_per_s": round(keys / cli["seconds"]), "server_peak_rss_kib": rss.peak}


def first_page_ms(srv: Devinit, runs: int = 5) -> dict[str, Any]:
    """The route's first page of keys (what the page asks first), median of ``runs``."""
    import httpx

    times = []
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        c.get("/devinit/v1/stores").raise_for_status()
        for _ in range(runs):
            t0 = time.perf_counter()
            r = c.get("/devinit/v1/stores/statestore/keys", params={"limit": 100})
            times.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            assert r.json()["keys"], "the first page came back empty"
    return {"median_ms": round(statistics.median(times), 2), "runs_ms": [round(t, 2) for t in times]}


def first_list_in_browser(srv: Devinit, workdir: Path) -> dict[str, Any]:
    """Headless Chromium: navigation start to the first list drawn (the page's own mark)."""
    chromium, driver_path = "/usr/bin/chromium", "/usr/bin/chromedriver"
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return {"skipped": "selenium is not installed (pip install selenium)"}
    if not (Path(chromium).exists() and Path(driver_path).exists()):
        return {"skipped": "chromium / chromedriver are not installed (apt-get install chromium chromium-driver)"}
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={workdir / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
        )
        loads = []
        for _ in range(3):
            driver.get("about:blank")
            driver.get(f"{srv.url}/ui/#/statestore")
            deadline = time.monotonic() + 60
            mark = None
            while mark is None and time.monotonic() < deadline:
                mark = driver.execute_script(
                    "const m = performance.getEntriesByName('devinit:first-list'); return m.length ? m[0].startTime : null"
                )
                time.sleep(0.02)
            if mark is None:
                return {"skipped": "the page did not draw its first list within 60 s"}
            fetch, html = driver.execute_script(
                "return [performance.getEntriesByName('devinit:first-list-fetch')[0].duration,"
                " performance.getEntriesByType('navigation')[0].responseEnd]"
            )
            loads.append((mark, fetch, mark - html))
        return {
            "median_ms": round(statistics.median(m for m, _, _ in loads), 1),
            "after_html_median_ms": round(statistics.median(a for _, _, a in loads), 1),
            "fetch_and_draw_median_ms": round(statistics.median(f for _, f, _ in loads), 1),
            "runs_ms": [round(m, 1) for m, _, _ in loads],
            "how": "headless Chromium 1280x800: navigation start (a new tab's first page of this origin) to the first page "
            "of keys drawn; after_html: from the page's HTML received; fetch_and_draw: the keys request and the rows",
        }
    finally:
        driver.quit()


def import_file(path: Path, items: int) -> None:
    """``items`` JSON Lines of 1 KB JSON values, as ``devinit state export`` writes them."""
    with open(path, "w") as f:
        for i in range(items):
            f.write(f'{{"key":"imp||k{i:07d}","value":{VALUE_1K},"contentType":"application/json"}}\n')


def measure_import(srv: Devinit, path: Path, items: int) -> dict[str, Any]:
    out = _devinit_cli(["state", "import", str(path), "--http-port", str(srv.http_port), "--store", "statestore"])
    return {**out, "items": items, "items_per_s": round(items / out["seconds"])}


def redis_benchmark_set(port: int, items: int) -> dict[str, Any]:
    """redis-benchmark SET of ``items`` 1 KB values: default 50 clients, and pipelined (-P 100)."""
    out: dict[str, Any] = {}
    for name, extra in (("c50", []), ("c50_P100", ["-P", "100"])):
        t0 = time.perf_counter()
        subprocess.run(
            ["redis-benchmark", "-p", str(port), "-t", "set", "-n", str(items), "-d", "1024", "-r", str(items), "-q", *extra],
            capture_output=True,
            check=True,
            timeout=600,
        )
        out[name] = {"seconds": round(time.perf_counter() - t0, 3)}
    return out


def bare_sqlite_insert(workdir: Path, items: int) -> dict[str, Any]:
    """The same rows into a fresh table of the store's layout, one transaction (WAL, NORMAL)."""
    db = workdir / "bare.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "CREATE TABLE state (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL, etag TEXT NOT NULL, expire_at REAL) WITHOUT ROWID"
    )
    value = VALUE_1K.encode()
    t0 = time.perf_counter()
    with conn:
        conn.executemany("INSERT INTO state VALUES (?, ?, ?, NULL)", ((f"imp||k{i:07d}", value, str(i)) for i in range(items)))
    seconds = time.perf_counter() - t0
    conn.close()
    return {"seconds": round(seconds, 3)}


# -- the run ------------------------------------------------------------------------------------


def measure(
    kinds: list[str], workdir: Path, redis_port: int | None, keys: int, import_items: int, log: Any = print
) -> dict[str, Any]:
    """Every figure of the module docstring for each store kind in ``kinds`` (redis, sqlite)."""
    out: dict[str, Any] = {"keys_small": keys // 10, "keys_big": keys, "import_items": import_items, "stores": {}}
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "import-1k.jsonl"
    import_file(data, import_items)
    for kind in kinds:
        out["stores"][kind] = _measure_store(kind, workdir, redis_port, keys, data, import_items, kind == kinds[0], log)
    return out


def _measure_store(
    kind: str, workdir: Path, redis_port: int | None, keys: int, data: Path, import_items: int, browser: bool, log: Any
) -> dict[str, Any]:
    srv = start_devinit(kind, workdir, redis_port if kind == "redis" else None)
    db = _sqlite_db(srv) if kind == "sqlite" else None

    def seed(start: int, stop: int) -> None:
        if db is None:
            assert redis_port is not None
            seed_redis(redis_port, start, stop)
        else:
            seed_sqlite(db, start, stop)

    res: dict[str, Any] = {}
    try:
        log(f"   state tools, {kind} store: seeding {keys // 10} keys")
        seed(0, keys // 10)
        res["ls_small"] = measure_ls(srv, keys // 10)
        log(f"   state tools, {kind} store: seeding {keys} keys")
        seed(keys // 10, keys)
        res["ls_big"] = measure_ls(srv, keys)
        res["ls_rss_ratio"] = round(res["ls_big"]["peak_rss_kib"] / res["ls_small"]["peak_rss_kib"], 3)
        res["server_rss_ratio"] = round(res["ls_big"]["server_peak_rss_kib"] / res["ls_small"]["server_peak_rss_kib"], 3)
        res["first_page"] = first_page_ms(srv)
        if browser:
            res["first_list_browser"] = first_list_in_browser(srv, workdir)
        log(f"   state tools, {kind} store: import of {import_items} 1 KB items")
        res["import"] = measure_import(srv, data, import_items)
    finally:
        srv.proc.stop()
    if kind == "redis":
        assert redis_port is not None
        res["redis-benchmark SET"] = redis_benchmark_set(redis_port, import_items)
    else:
        res["bare sqlite3 insert"] = bare_sqlite_insert(workdir, import_items)
    return res


def _sqlite_db(srv: Devinit) -> Path:
    """The database file of a bench server's SQLite store (from its component file)."""
    import yaml

    folder = Path(srv.proc.argv[srv.proc.argv.index("--components-path") + 1])
    doc = yaml.safe_load((folder / "statestore.yaml").read_text())
    return Path(next(m["value"] for m in doc["spec"]["metadata"] if m["name"] == "connectionString"))


def targets(st: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals for these figures (import <= 10 s; first list <= 500 ms; flat memory)."""
    out = []

    def add(name: str, value: float | None, goal: float, unit: str = "", why: str | None = None) -> None:
        row: dict[str, Any] = {
            "target": name,
            "value": value,
            "goal": f"<= {goal:g}{unit}",
            "met": None if value is None else value <= goal,
        }
        if why:
            row["why"] = why
        out.append(row)

    for kind, res in st["stores"].items():
        add(f"{kind}: state import of {st['import_items']} 1 KB items", res["import"]["seconds"], 10, " s")
        add(f"{kind}: state ls peak RSS at {st['keys_big']} keys / at {st['keys_small']}", res["ls_rss_ratio"], 1.25)
    browser = next((r["first_list_browser"] for r in st["stores"].values() if "first_list_browser" in r), None)
    if browser is not None:
        add(f"page's first list of a {st['keys_big']}-key store", browser.get("median_ms"), 500, " ms", browser.get("skipped"))
    return out


def lines(st: dict[str, Any]) -> list[str]:
    """The block the bench table prints for these figures."""
    out = [f"\nstate tools ({st['keys_big']} keys; import of {st['import_items']} 1 KB items):"]
    for kind, res in st["stores"].items():
        small, big = res["ls_small"], res["ls_big"]
        out.append(
            f"  {kind:<7} state ls --json: {small['keys']} keys {small['seconds']:.1f} s ({small['keys_per_s']}/s), "
            f"{big['keys']} keys {big['seconds']:.1f} s ({big['keys_per_s']}/s); peak RSS command "
            f"{small['peak_rss_kib'] / 1024:.0f} -> {big['peak_rss_kib'] / 1024:.0f} MiB, server "
            f"{small['server_peak_rss_kib'] / 1024:.0f} -> {big['server_peak_rss_kib'] / 1024:.0f} MiB"
        )
        imp = res["import"]
        beside = res.get("redis-benchmark SET") or {}
        bare = res.get("bare sqlite3 insert")
        ceiling = (
            f"redis-benchmark SET {beside['c50']['seconds']:.2f} s (-c 50), {beside['c50_P100']['seconds']:.2f} s (-P 100)"
            if beside
            else f"bare sqlite3 insert {bare['seconds']:.2f} s"
            if bare
            else ""
        )
        out.append(f"  {kind:<7} state import: {imp['seconds']:.2f} s ({imp['items_per_s']}/s); beside: {ceiling}")
        out.append(f"  {kind:<7} first page of keys (route, median of 5): {res['first_page']['median_ms']} ms")
        if "first_list_browser" in res:
            b = res["first_list_browser"]
            out.append(
                f"  {kind:<7} page's first list in Chromium: "
                + (
                    f"skipped: {b['skipped']}"
                    if "skipped" in b
                    else f"{b['median_ms']} ms from navigation ({b['after_html_median_ms']} ms after the HTML arrived; "
                    f"keys request and rows {b['fetch_and_draw_median_ms']} ms)"
                )
            )
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.state_tools``: these figures alone (the whole bench runs them too)."""
    import argparse

    from bench.procs import start_redis

    p = argparse.ArgumentParser(prog="python -m bench.state_tools", description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=1_000_000, help="keys in the store for the big ls and the first list [1,000,000]")
    p.add_argument("--import-items", type=int, default=100_000, help="1 KB items imported [100,000]")
    p.add_argument("--stores", default="redis,sqlite", help="comma-separated subset of redis,sqlite")
    a = p.parse_args(argv)
    kinds = [k for k in a.stores.split(",") if k]
    with tempfile.TemporaryDirectory(prefix="devinit-bench-state-") as tmp:
        work = Path(tmp)
        redis_proc, redis_port = start_redis(work / "redis") if "redis" in kinds else (None, None)
        try:
            st = measure(kinds, work, redis_port, a.keys, a.import_items, log=lambda m: print(m, file=sys.stderr, flush=True))
        finally:
            if redis_proc is not None:
                redis_proc.stop()
    print("\n".join(lines(st)))
    for t in targets(st):
        verdict = {True: "MET", False: "NOT MET", None: "not measured"}[t["met"]]
        print(f"  {verdict:<12} {t['target']}: {t['value']} (goal {t['goal']})" + (f"  [{t['why']}]" if t.get("why") else ""))
    print(json.dumps(st, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
