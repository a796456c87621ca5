"""Helpers for the init / status / uninstall tests: a temporary HOME, the CLI as a subprocess,
the Docker engine and the local Redis image, cleanup by label.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import ROOT, devinit_env, free_port, need

TEST_IMAGE = os.environ.get("DEVINIT_TEST_REDIS_IMAGE", "devinit-test/redis:7")


@dataclass
class Home:
    """A temporary HOME with devinit's home and data folders inside it, and free ports."""

    root: Path
    env: dict[str, str]
    http_port: int
    grpc_port: int

    @property
    def dapr(self) -> Path:
        return self.root / ".dapr"

    @property
    def component(self) -> Path:
        return self.dapr / "components" / "statestore.yaml"

    @property
    def data(self) -> Path:
        return self.root / "devinit-data"

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """``python -m devinit <args>`` in this HOME (the checkout under test)."""
        return subprocess.run(
            [sys.executable, "-m", "devinit", *args],
            env=devinit_env({**self.env, **(env or {})}),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def init_args(self, *extra: str) -> list[str]:
        return ["init", "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), *extra]

    def kill_server(self) -> None:
        """Stop a background server this test left behind (by its pid file), whatever happened."""
        for pid_file in (self.data / "state").glob("server-*.json"):
            try:
                pid = json.loads(pid_file.read_text())["pid"]
                os.kill(pid, 9)
            except (OSError, ValueError, KeyError):
                pass


def make_home(tmp_path: Path) -> Home:
    root = tmp_path / "home"
    root.mkdir()
    env = {
        "HOME": str(root),
        "USERPROFILE": str(root),
        "DEVINIT_HOME": str(root / ".dapr"),
        "DEVINIT_DATA_DIR": str(root / "devinit-data"),
    }
    # The temporary HOME has no ~/.docker: pin the engine this user's Docker context points
    # at, so a developer on Docker Desktop (a non-default context) runs the same tests.
    if "DOCKER_HOST" not in os.environ:
        from devinit.docker_redis import resolve_endpoint

        try:
            env["DOCKER_HOST"] = resolve_endpoint().url
        except Exception:
            pass
    return Home(root, env, free_port(), free_port())


def docker_client():  # type: ignore[no-untyped-def]
    """A Docker SDK client on the real engine, or a skip (a failure under CI=true)."""
    import docker

    try:
        from devinit.docker_redis import resolve_endpoint

        client = docker.DockerClient(base_url=resolve_endpoint().url, timeout=120)
        client.ping()
    except Exception as e:
        need(False, f"no Docker engine reachable ({e})")
    return client


def ensure_test_image(client) -> str:  # type: ignore[no-untyped-def]
    """The local Redis image for the tests; built by .ci/redis-image.sh when missing."""
    import docker

    try:
        client.images.get(TEST_IMAGE)
        return TEST_IMAGE
    except docker.errors.ImageNotFound:
        pass
    need(shutil.which("redis-server") is not None, "redis-server is needed to build the test Redis image")
    subprocess.run([str(ROOT / ".ci" / "redis-image.sh"), TEST_IMAGE], check=True, timeout=300)
    return TEST_IMAGE


def labelled(client, home: Path) -> tuple[list, list]:  # type: ignore[no-untyped-def]
    """devinit's containers and volumes for ``home``, found by label."""
    from devinit.docker_redis import home_labels

    labels = [f"{k}={v}" for k, v in home_labels(home).items()]
    containers = client.containers.list(all=True, filters={"label": labels})
    volumes = client.volumes.list(filters={"label": labels})
    return containers, volumes


def remove_labelled(client, home: Path) -> None:  # type: ignore[no-untyped-def]
    """Remove what a test left in Docker for ``home`` (by label only: nothing else is touched)."""
    containers, volumes = labelled(client, home)
    for c in containers:
        c.remove(force=True)
    for v in volumes:
        v.remove(force=True)


@pytest.fixture
def home(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A temporary HOME; its background server is killed at the end whatever happened."""
    h = make_home(tmp_path)
    yield h
    h.kill_server()
