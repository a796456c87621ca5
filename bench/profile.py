"""Profile `devinit serve` under wrk GET load with py-spy; print the hottest frames.

    python -m bench --profile memory|sqlite|redis [--duration S]

Writes bench/results/profile-<store>-<time>.txt (collapsed stacks, py-spy's "raw" format, which
speedscope and flamegraph.pl read) and .svg (a flame graph), and prints the top frames by
self time and by inclusive time, as shares of all samples.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from bench import loadgen
from bench.procs import start_devinit, start_redis

RESULTS = Path(__file__).resolve().parent / "results"


_DEVINIT_FILES = {p.name for p in (Path(__file__).resolve().parents[1] / "devinit").rglob("*.py")}
_LAYERS = (
    ("uvicorn/", "uvicorn (incl. its socket writes)"),
    ("granian", "granian"),
    ("redis/", "redis-py (incl. its socket I/O)"),
    ("asyncio/runners.py", "event loop (uvloop, native: epoll, reads, callbacks)"),
    ("asyncio/", "asyncio (tasks, timeouts, streams)"),
    ("typing.py", "typing (isinstance on Protocols)"),
)


def layer(frame: str) -> str:
    """Which layer a leaf frame belongs to; native code is charged to the Python frame calling it."""
    where = frame.partition(" (")[2]
    for key, name in _LAYERS:
        if key in where:
            return name
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    if where.startswith("devinit/") or file in _DEVINIT_FILES:
        return "devinit (http.py, runtime.py, state/)"
    return "other"


def summarize(collapsed: str, top: int = 25) -> str:
    """Top frames by self and inclusive share from py-spy's collapsed ("raw") output."""
    self_t: collections.Counter[str] = collections.Counter()
    layers: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        self_t[_short(frames[-1])] += count
        layers[layer(frames[-1])] += count
        for f in set(_short(f) for f in frames):
            incl[f] += count
    if not total:
        return "no samples"
    out = [f"{total} samples (idle time not sampled)", "", "self time by layer:"]
    out += [f"  {100 * c / total:5.1f}%  {name}" for name, c in layers.most_common()]
    out += ["", "self time:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_t.most_common(top)]
    out += ["", "inclusive time:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)": aggregate over lines of one function
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    parts = file.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else file
    return f"{name} ({short})"


def main(a: argparse.Namespace) -> int:
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    kind = a.profile
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = RESULTS / f"profile-{kind}-{stamp}"
    with tempfile.TemporaryDirectory(prefix="devinit-profile-") as tmp:
        work = Path(tmp)
        redis_proc = redis_port = None
        if kind == "redis":
            redis_proc, redis_port = start_redis(work / "redis")
        try:
            srv = start_devinit(kind, work, redis_port)
            try:
                import urllib.request

                body = b'[{"key":"bench-get","value":"' + b"v" * 1022 + b'"}]'
                urllib.request.urlopen(
                    urllib.request.Request(srv.url + "/v1.0/state/statestore", data=body, method="POST"), timeout=5
                )
                url = f"{srv.url}/v1.0/state/statestore/bench-get"
                loadgen.wrk(url, 1, a.connections, a.wrk_threads)
                seconds = max(3, round(a.duration))
                result: dict[str, loadgen.Measure] = {}
                t = threading.Thread(
                    target=lambda: result.setdefault("m", loadgen.wrk(url, seconds + 2, a.connections, a.wrk_threads))
                )
                t.start()
                for fmt, path in (("raw", base.with_suffix(".txt")),):
                    subprocess.run(
                        [
                            "py-spy",
                            "record",
                            "--pid",
                            str(srv.proc.pid),
                            "--duration",
                            str(seconds),
                            "--rate",
                            "250",
                            "--format",
                            fmt,
                            "--output",
                            str(path),
                            "--nonblocking",
                        ],
                        check=True,
                        capture_output=True,
                        timeout=seconds + 60,
                    )
                t.join()
                # a flame graph from the same load, second pass (py-spy draws SVG from its own samples)
                t = threading.Thread(target=lambda: loadgen.wrk(url, seconds + 2, a.connections, a.wrk_threads))
                t.start()
                subprocess.run(
                    [
                        "py-spy",
                        "record",
                        "--pid",
                        str(srv.proc.pid),
                        "--duration",
                        str(seconds),
                        "--rate",
                        "250",
                        "--format",
                        "flamegraph",
                        "--output",
                        str(base.with_suffix(".svg")),
                        "--nonblocking",
                    ],
                    check=True,
                    capture_output=True,
                    timeout=seconds + 60,
                )
                t.join()
            finally:
                srv.proc.stop()
        finally:
            if redis_proc is not None:
                redis_proc.stop()
    m = result.get("m")
    print(
        f"profile of devinit serve ({kind}) under wrk GET -c{a.connections}: "
        + (f"{m.rps:.0f} rps under py-spy (sampling slows it a little)" if m else "wrk failed")
    )
    print(summarize(base.with_suffix(".txt").read_text()))
    print(f"\ncollapsed stacks: {base.with_suffix('.txt')}\nflame graph: {base.with_suffix('.svg')}")
    return 0
