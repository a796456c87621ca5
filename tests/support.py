"""Helpers the tests share: free ports, real servers started as subprocesses, component files.

Everything here starts real things (redis-server, `devinit serve`); nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parents[1]


def devinit_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a devinit subprocess: this checkout's package first."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def point_sdk_at(mp: pytest.MonkeyPatch, srv: DevinitServer, token: str | None = None) -> None:
    """Point the official Python SDK at ``srv`` the way a user does: DAPR_* env vars (and its
    settings, which it reads from the environment once, at import)."""
    from dapr.conf import settings

    values = {"DAPR_HTTP_PORT": srv.http_port, "DAPR_GRPC_PORT": srv.grpc_port, "DAPR_API_TOKEN": token}
    for name, value in values.items():
        if value is None:
            mp.delenv(name, raising=False)
        else:
            mp.setenv(name, str(value))
        mp.setattr(settings, name, value, raising=False)
    # An outer DAPR_GRPC_ENDPOINT / DAPR_HTTP_ENDPOINT would win over the ports.
    for name in ("DAPR_GRPC_ENDPOINT", "DAPR_HTTP_ENDPOINT"):
        mp.delenv(name, raising=False)
        mp.setattr(settings, name, None, raising=False)


def need(condition: bool, reason: str) -> None:
    """Skip when a real service is missing; under CI=true, a missing service is a failure."""
    if not condition:
        if CI:
            pytest.fail(f"required under CI=true: {reason}")
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class RedisServer:
    """A real redis-server on a free port, in a temp dir; killed by stop()."""

    def __init__(self, workdir: Path, *args: str, port: int | None = None) -> None:
        need(shutil.which("redis-server") is not None, "redis-server is not installed (apt-get install redis-server)")
        self.port = port or free_port()
        self.workdir = workdir
        self.args = args
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(self.workdir),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


class RedisClusterServers:
    """A real Redis Cluster: ``masters`` redis-server processes in cluster mode (no replicas),
    the slots spread over them by ``redis-cli --cluster create``; each node can be stopped and
    started again (it rejoins from its nodes.conf)."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        need(shutil.which("redis-cli") is not None, "redis-cli is not installed (apt-get install redis-tools)")
        self.nodes = [
            RedisServer(
                workdir / f"node{i}",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                str(free_port()),
                "--cluster-node-timeout",
                "1000",
                # the slots of a node that is down fail, the others go on serving
                "--cluster-require-full-coverage",
                "no",
            )
            for i in range(masters)
        ]
        out = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes), "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        self.wait_ok()

    @property
    def seeds(self) -> str:
        """``redisHost`` for a component: every node, comma-separated."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node says cluster_state:ok and they agree on the slots."""
        import redis

        deadline = time.monotonic() + timeout
        while True:
            try:
                states = [redis.Redis(port=n.port).cluster("info")["cluster_state"] for n in self.nodes]
                if all(s == "ok" for s in states):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Redis Cluster is not ok after {timeout}s")
            time.sleep(0.1)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def component(name: str, ctype: str, metadata: Mapping[str, str] | None = None) -> str:
    lines = [
        "apiVersion: dapr.io/v1alpha1",
        "kind: Component",
        "metadata:",
        f"  name: {name}",
        "spec:",
        f"  type: {ctype}",
        "  version: v1",
        "  metadata:",
    ]
    for k, v in (metadata or {}).items():
        lines += [f"  - name: {k}", f'    value: "{v}"']
    if not metadata:
        lines[-1] = "  metadata: []"
    return "\n".join(lines) + "\n"


def write_component(folder: Path, name: str, ctype: str, metadata: Mapping[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(component(name, ctype, metadata))
    return path


class DevinitServer:
    """`python -m devinit serve` as a subprocess on free ports; waits for /v1.0/healthz."""

    def __init__(self, components: Path, *extra: str, env: Mapping[str, str] | None = None) -> None:
        self.components = components
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.log_path = components.parent / f"serve-{self.http_port}.log"
        self.extra = extra
        self.env = devinit_env(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devinit",
                "serve",
                "--components-path",
                str(self.components),
                "--http-port",
                str(self.http_port),
                "--grpc-port",
                str(self.grpc_port),
                *self.extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"devinit serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/v1.0/healthz", timeout=0.5).status_code == 204:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"devinit serve did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, kill: bool = False) -> int | None:
        if self.proc is None:
            return None
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        self._log.close()
        return code


PG_BIN = Path("/usr/lib/postgresql")


def _pg_bindir() -> Path | None:
    if shutil.which("initdb"):
        return Path(shutil.which("initdb")).parent  # type: ignore[arg-type]
    versions = sorted(PG_BIN.glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


class PostgresServer:
    """A real PostgreSQL cluster made with initdb in a temp dir, on a free port (trust auth).

    PostgreSQL refuses to run as root, so under root it runs as the 'postgres' user.
    """

    def __init__(self, workdir: Path, *settings: str) -> None:
        bindir = _pg_bindir()
        self.settings = settings  # extra "name=value" server settings
        need(bindir is not None, "PostgreSQL is not installed (apt-get install postgresql)")
        assert bindir is not None
        self.bindir = bindir
        self.port = free_port()
        self.workdir = workdir
        self.data = workdir / "pgdata"
        workdir.mkdir(parents=True, exist_ok=True)
        self.user: dict[str, str] = {}
        if os.geteuid() == 0:
            self.user = {"user": "postgres", "group": "postgres"}
            shutil.chown(workdir, "postgres")
            os.chmod(workdir, 0o755)
            p = workdir
            while p != p.parent:  # the postgres user must be able to reach the folder
                p = p.parent
                try:
                    os.chmod(p, os.stat(p).st_mode | 0o005)
                except PermissionError:
                    break
        made = subprocess.run(
            [str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            **self.user,  # type: ignore[call-overload]
        )
        if made.returncode != 0:
            raise RuntimeError(f"initdb failed in {self.data}: {made.stderr}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it takes connections. After a kill -9 the old
        server's backends may still hold its shared memory for a while, and the new postmaster
        then exits at once: it is started again until ``timeout`` (the log says why it waited)."""
        deadline = time.monotonic() + timeout
        while True:
            self._spawn()
            assert self.proc is not None
            try:
                self._wait_ready(deadline)
                return
            except (TimeoutError, OSError) as e:
                if self.proc.poll() is None or time.monotonic() > deadline:
                    log = (self.workdir / "postgres.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"PostgreSQL did not start within {timeout:.0f}s ({e}); its log ends:\n{log}") from None
                time.sleep(0.5)  # it exited: start it again

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.workdir),
                "-c",
                "listen_addresses=127.0.0.1",
                *[a for kv in self.settings for a in ("-c", kv)],
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "postgres.log", "ab"),
            **self.user,  # type: ignore[call-overload]
        )

    def _wait_ready(self, deadline: float) -> None:
        """Until the server takes a connection; OSError when it exits, TimeoutError at the deadline."""
        import psycopg

        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise OSError(f"postgres exited with code {self.proc.returncode}")
            try:
                psycopg.connect(self.conninfo, connect_timeout=2).close()
                return
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    raise TimeoutError(str(e).strip()) from None
                time.sleep(0.1)

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def stop(self, fast: bool = False) -> None:
        if self.proc is not None:
            self.proc.send_signal(9 if fast else 2)  # SIGKILL, or SIGINT = fast shutdown
            self.proc.wait(timeout=30)
            self.proc = None
