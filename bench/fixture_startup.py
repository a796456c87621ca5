"""The test fixture's costs (devinit.testing, devinit_pytest.py): a server's start, emptying it,
stopping it, and importing the pytest plugin, each beside what it is made of.

Side by side, interleaved, several runs (medians):

- ``python -c pass``: the interpreter's own start, the floor of any spawned server.
- ``devinit serve``: ``python -m devinit serve`` until its HTTP port answers ``/v1.0/healthz``
  (ports given; the server's own start, without the fixture's checks).
- ``StateServer().start()``: in this process, as a test process calls it, until it returns
  (the server spawned as ``python -m devinit.sidecar``, its ports reported, its store pinged);
  its target is at most 300 ms. Then ``stop()``.

Then, on one server: ``reset()`` of an in-memory store holding 5 keys (the keys written again
before each reset, only the reset timed), and of an empty one; and the time ``import
devinit_pytest`` adds to a process that has pytest loaded (every pytest run pays it).
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procs import component_yaml, free_port

RESETS = 200
KEYS = 5


def _healthy(port: int) -> bool:
    """One raw GET /v1.0/healthz (procs.wait_http polls every 50 ms: too coarse to time a start)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"GET /v1.0/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 204")
    except OSError:
        return False


def _python_pass(env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True, timeout=60)
    return (time.perf_counter() - t0) * 1000


def _serve(env: dict[str, str], components: Path) -> float:
    """ms from spawning ``devinit serve`` until it answers its health route."""
    http, grpc = free_port(), free_port()
    argv = [sys.executable, "-m", "devinit", "serve", "--components-path", str(components)]
    argv += ["--http-port", str(http), "--grpc-port", str(grpc), "--log-level", "warning"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = t0 + 60
        while not _healthy(http):
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"devinit serve did not start (exit {proc.returncode})")
            time.sleep(0.002)
        return (time.perf_counter() - t0) * 1000
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _fixture() -> tuple[float, float]:
    """(ms for StateServer().start(), ms for its stop())."""
    from devinit.testing import StateServer

    t0 = time.perf_counter()
    server = StateServer().start()
    t1 = time.perf_counter()
    server.stop()
    return (t1 - t0) * 1000, (time.perf_counter() - t1) * 1000


def _resets() -> dict[str, float]:
    """Median µs of one reset(): the store holding ``KEYS`` keys, and empty."""
    from devinit.testing import StateServer

    body = json.dumps([{"key": f"k{i}", "value": {"n": i}} for i in range(KEYS)]).encode()
    with StateServer() as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        full, empty = [], []
        for _ in range(RESETS):
            conn.request("POST", "/v1.0/state/statestore", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 204:
                raise RuntimeError(f"save answered {r.status}")
            t0 = time.perf_counter()
            server.reset()
            t1 = time.perf_counter()
            server.reset()
            t2 = time.perf_counter()
            full.append((t1 - t0) * 1e6)
            empty.append((t2 - t1) * 1e6)
        conn.close()
    return {f"reset_{KEYS}_keys_us": round(statistics.median(full), 1), "reset_empty_us": round(statistics.median(empty), 1)}


def _plugin_import_us(env: dict[str, str], runs: int) -> float:
    """Median µs that ``import devinit_pytest`` adds to a process with pytest loaded."""
    code = "import time, pytest\nt = time.perf_counter()\nimport devinit_pytest\nprint((time.perf_counter() - t) * 1e6)"
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
        times.append(float(out.stdout.strip()))
    return round(statistics.median(times), 1)


def measure(env: dict[str, str], runs: int = 7) -> dict[str, Any]:
    """The medians, and each run's figures."""
    try:
        import devinit.testing  # noqa: F401
    except ImportError:
        return {"skipped": "this devinit has no devinit.testing yet"}
    with tempfile.TemporaryDirectory(prefix="devinit-bench-fixture-") as tmp:
        components = Path(tmp) / "components"
        components.mkdir()
        (components / "statestore.yaml").write_text(component_yaml("statestore", "state.in-memory", {}))
        _python_pass(env), _serve(env, components), _fixture()  # warm the page cache and .pyc files
        rows: dict[str, list[float]] = {
            "python -c pass": [],
            "devinit serve": [],
            "StateServer.start": [],
            "StateServer.stop": [],
        }
        for _ in range(runs):  # interleaved: a busy moment hits all of them alike
            rows["python -c pass"].append(_python_pass(env))
            rows["devinit serve"].append(_serve(env, components))
            start, stop = _fixture()
            rows["StateServer.start"].append(start)
            rows["StateServer.stop"].append(stop)
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "runs": runs,
        "how": "median wall ms: python -c pass; devinit serve until /v1.0/healthz; StateServer().start() until it returns",
        "python_pass_ms": round(med["python -c pass"], 1),
        "serve_ms": round(med["devinit serve"], 1),
        "start_ms": round(med["StateServer.start"], 1),
        "stop_ms": round(med["StateServer.stop"], 1),
        "start_over_serve": round(med["StateServer.start"] / max(1.0, med["devinit serve"]), 2),
        **_resets(),
        "plugin_import_us": _plugin_import_us(env, runs),
        "runs_ms": {k: [round(x, 1) for x in v] for k, v in rows.items()},
        "target_ms": 300,
    }
