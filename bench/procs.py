"""Processes the bench starts (devinit serve, redis-server, bare ASGI servers), ports, memory.

The bench never imports tests/: these helpers mirror tests/support.py where it makes sense.
Every process started here is stopped by the ``Proc`` that started it (by its own pid).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: tool -> the Debian package that provides it
TOOLS = {
    "wrk": "wrk",
    "redis-server": "redis-server",
    "redis-benchmark": "redis-tools",
    "redis-cli": "redis-tools",
    "h2load": "nghttp2-client",
}
OPTIONAL_TOOLS = {"hey": "hey", "granian": "(pip) granian", "py-spy": "(pip) py-spy"}


def check_tools() -> tuple[list[str], list[str]]:
    """(missing required tools as apt advice, missing optional tools); installs nothing."""
    missing = [f"{t} (apt-get install -y {pkg})" for t, pkg in TOOLS.items() if shutil.which(t) is None]
    optional = [f"{t} ({pkg})" for t, pkg in OPTIONAL_TOOLS.items() if shutil.which(t) is None]
    return missing, optional


def devinit_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a devinit subprocess: this checkout's package first on the path."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_answers(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_answers(port):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process and its threads (VmRSS), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples a pid's RSS every ``interval`` seconds in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = rss_kib(pid) or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            v = rss_kib(self.pid)
            if v is None:
                return
            self.peak = max(self.peak, v)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


@dataclass
class Proc:
    """A subprocess the bench owns: started on construction, stopped by ``stop()``."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Proc:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            list(self.argv), stdout=self._log, stderr=subprocess.STDOUT, env=dict(self.env) if self.env else None
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self._log.close()


def wait_http(proc: Proc, url: str, ok: tuple[int, ...] = (200, 204), timeout: float = 20.0) -> None:
    """Poll ``url`` until it answers one of ``ok``; raise with the log tail if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited before it answered {url}:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=0.5) as r:
                if r.status in ok:
                    return
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout}s:\n{proc.log_tail()}")


def start_redis(workdir: Path) -> tuple[Proc, int]:
    """A private redis-server on a free loopback port (no persistence, like the tests)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = Proc(
        "redis-server",
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        workdir / "redis.log",
    ).start()
    wait_port(port)
    return proc, port


def component_yaml(name: str, ctype: str, metadata: Mapping[str, str]) -> str:
    lines = [
        "apiVersion: dapr.io/v1alpha1",
        "kind: Component",
        "metadata:",
        f"  name: {name}",
        "spec:",
        f"  type: {ctype}",
        "  version: v1",
    ]
    if metadata:
        lines.append("  metadata:")
        for k, v in metadata.items():
            lines += [f"  - name: {k}", f'    value: "{v}"']
    else:
        lines.append("  metadata: []")
    return "\n".join(lines) + "\n"


@dataclass
class Devinit:
    """`python -m devinit serve` of this checkout with one store called ``statestore``."""

    proc: Proc
    http_port: int
    grpc_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def start_devinit(kind: str, workdir: Path, redis_port: int | None = None) -> Devinit:
    folder = workdir / f"components-{kind}"
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "memory":
        ctype, meta = "state.in-memory", {}
    elif kind == "sqlite":
        ctype, meta = "state.sqlite", {"connectionString": str(workdir / f"bench-{os.getpid()}-{time.time_ns()}.db")}
    elif kind == "redis":
        assert redis_port is not None
        ctype, meta = "state.redis", {"redisHost": f"127.0.0.1:{redis_port}"}
    else:
        raise ValueError(kind)
    (folder / "statestore.yaml").write_text(component_yaml("statestore", ctype, meta))
    http_port, grpc_port = free_port(), free_port()
    proc = Proc(
        f"devinit serve ({kind})",
        [
            sys.executable,
            "-m",
            "devinit",
            "serve",
            "--components-path",
            str(folder),
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
            "--log-level",
            "warning",
        ],
        workdir / f"serve-{kind}.log",
        env=devinit_env(),
    ).start()
    wait_http(proc, f"http://127.0.0.1:{http_port}/v1.0/healthz")
    return Devinit(proc, http_port, grpc_port)


def start_bare(stack: str, workdir: Path) -> tuple[Proc, int]:
    """The bare 1 KB ASGI app (bench/bare_app.py) on one server stack; see BARE_STACKS."""
    port = free_port()
    if stack in ("uvicorn", "devinit-h1"):
        argv = [sys.executable, "-m", "bench.bare_app", "h1" if stack == "devinit-h1" else "uvicorn", str(port)]
    else:
        argv = [*BARE_STACKS[stack], "--port", str(port)]
    proc = Proc(f"bare ASGI on {stack}", argv, workdir / f"bare-{stack}.log", env=devinit_env()).start()
    wait_http(proc, f"http://127.0.0.1:{port}/")
    return proc, port


_GRANIAN = [
    sys.executable,
    "-m",
    "granian",
    "--interface",
    "asgi",
    "--host",
    "127.0.0.1",
    "--workers",
    "1",
    "--http",
    "1",
    "--no-ws",
    "--log-level",
    "warning",
]
#: the stacks the bare app is measured on: devinit's own HTTP server (devinit-h1, the
#: same-stack ceiling) and the fastest single-worker ASGI servers installed (the best of them
#: is "fastest bare ASGI", the issue's target base).
BARE_STACKS: dict[str, list[str]] = {
    "devinit-h1": [],  # started through bench.bare_app on devinit/server/http_wire.py
    "uvicorn": [],  # started through bench.bare_app
    "granian": [*_GRANIAN, "--loop", "uvloop", "bench.bare_app:app"],
    "granian-st-rust": [*_GRANIAN, "--loop", "uvloop", "--runtime-mode", "st", "--task-impl", "rust", "bench.bare_app:app"],
}


def have_granian() -> bool:
    try:
        import granian  # noqa: F401
    except ImportError:
        return False
    return True
