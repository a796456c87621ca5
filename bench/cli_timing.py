"""CLI start-up: wall time of `devinit --help`, `devinit status` and `devinit init`, how
much later an app starts under `devinit run` than alone (bench/run_startup.py), and the test
fixture's server start (bench/fixture_startup.py).

Each runs this checkout (`python -m devinit` with the checkout first on PYTHONPATH), several
times; the median is reported beside `python -c pass`, the interpreter's own floor. A command
this version does not have yet is reported as skipped with the reason, never as a failure.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.procs import devinit_env, free_port


def _time(argv: list[str], env: dict[str, str], timeout: float = 60.0) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    return (time.perf_counter() - t0) * 1000, out


def _median(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, list[float], subprocess.CompletedProcess[str]]:
    _time(argv, env)  # warm the page cache and .pyc files
    times = []
    out = None
    for _ in range(runs):
        ms, out = _time(argv, env)
        times.append(ms)
    assert out is not None
    return statistics.median(times), times, out


def commands(env: dict[str, str]) -> set[str]:
    """The sub-commands `devinit --help` lists."""
    out = subprocess.run([sys.executable, "-m", "devinit", "--help"], capture_output=True, text=True, env=env, timeout=60)
    names: set[str] = set()
    in_commands = False
    for line in out.stdout.splitlines():
        if line.strip() == "Commands:":
            in_commands = True
            continue
        if in_commands and line.startswith("  ") and line.strip():
            names.add(line.split()[0])
    return names


def measure(runs: int = 5, with_init: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="devinit-bench-home-") as home:
        env = devinit_env({"DEVINIT_HOME": home})
        result: dict[str, Any] = {"runs": runs, "how": "python -m devinit <args>, this checkout, median wall ms"}
        floor, _, _ = _median([sys.executable, "-c", "pass"], env, runs)
        result["python -c pass"] = {"median_ms": floor}
        ms, times, out = _median([sys.executable, "-m", "devinit", "--help"], env, runs)
        result["--help"] = {"median_ms": ms, "runs_ms": times, "exit": out.returncode, "target_ms": 150}
        have = commands(env)
        result["commands"] = sorted(have)
        if "status" in have:
            ms, times, out = _median([sys.executable, "-m", "devinit", "status"], env, runs)
            result["status"] = {"median_ms": ms, "runs_ms": times, "exit": out.returncode, "target_ms": 300}
        else:
            result["status"] = {"skipped": "this devinit has no 'status' command yet"}
        if "run" in have:
            from bench import run_startup

            result["run"] = run_startup.measure(env, runs)
        else:
            result["run"] = {"skipped": "this devinit has no 'run' command yet"}
        from bench import fixture_startup

        result["fixture"] = fixture_startup.measure(env, runs)
        if "init" not in have:
            result["init"] = {"skipped": "this devinit has no 'init' command yet"}
        elif not with_init:
            result["init"] = {"skipped": "--no-init given"}
        else:
            result["init"] = _init(env)
        return result


def _init(env: dict[str, str]) -> dict[str, Any]:
    """`devinit init` in a throw-away DEVINIT_HOME (ports chosen free when init accepts them),
    timed until it returns (init returns once the server is healthy), then `uninstall --all`."""
    help_text = subprocess.run(
        [sys.executable, "-m", "devinit", "init", "--help"], capture_output=True, text=True, env=env, timeout=60
    ).stdout
    argv = [sys.executable, "-m", "devinit", "init"]
    if "--http-port" in help_text:
        argv += ["--http-port", str(free_port())]
    if "--grpc-port" in help_text:
        argv += ["--grpc-port", str(free_port())]
    try:
        ms, out = _time(argv, env, timeout=180)
    finally:
        subprocess.run([sys.executable, "-m", "devinit", "uninstall", "--all"], capture_output=True, env=env, timeout=120)
    res: dict[str, Any] = {"ms": ms, "exit": out.returncode, "target_ms": 3000, "argv": argv[3:]}
    if out.returncode != 0:
        res["stderr_tail"] = out.stderr[-500:]
    return res
