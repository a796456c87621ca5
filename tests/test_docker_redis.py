"""docker_redis: endpoint resolution (real files in a temp Docker config folder), port choice,
pull progress, and readiness against a real container.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
from pathlib import Path

import pytest

from devinit.docker_redis import (
    Docker,
    PullProgress,
    RedisSpec,
    choose_port,
    default_endpoint,
    resolve_endpoint,
)
from devinit.errors import DockerError, ReadinessTimeout
from lifecycle_support import docker_client, ensure_test_image, remove_labelled
from support import free_port


def write_context(cfg: Path, name: str, host: str, current: bool = True) -> None:
    meta = cfg / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}}}))
    if current:
        (cfg / "config.json").write_text(json.dumps({"currentContext": name}))


def test_docker_host_wins_over_the_context(tmp_path: Path) -> None:
    write_context(tmp_path, "remote", "tcp://10.0.0.5:2375")
    ep = resolve_endpoint({"DOCKER_HOST": "unix:///run/x.sock", "DOCKER_CONFIG": str(tmp_path)}, "linux")
    assert (ep.url, ep.source) == ("unix:///run/x.sock", "DOCKER_HOST")


def test_current_context_from_config_and_meta(tmp_path: Path) -> None:
    write_context(tmp_path, "desktop-linux", "unix:///home/me/.docker/desktop/docker.sock")
    ep = resolve_endpoint({"DOCKER_CONFIG": str(tmp_path)}, "linux")
    assert ep.url == "unix:///home/me/.docker/desktop/docker.sock"
    assert "desktop-linux" in ep.source


def test_docker_context_env_overrides_config(tmp_path: Path) -> None:
    write_context(tmp_path, "one", "tcp://one:2375")
    write_context(tmp_path, "two", "tcp://two:2375", current=False)
    ep = resolve_endpoint({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "two"}, "linux")
    assert ep.url == "tcp://two:2375"


def test_default_context_means_platform_default(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "default"}))
    assert resolve_endpoint({"DOCKER_CONFIG": str(tmp_path)}, "linux").url == "unix:///var/run/docker.sock"
    # Windows, simulated: the engine's named pipe (the real thing cannot run here)
    ep = resolve_endpoint({"DOCKER_CONFIG": str(tmp_path)}, "win32")
    assert ep.url == "npipe:////./pipe/docker_engine" == default_endpoint("win32")


def test_broken_context_names_the_file_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "gone"}))
    with pytest.raises(DockerError, match=r"context 'gone'.*meta\.json.*docker context use default"):
        resolve_endpoint({"DOCKER_CONFIG": str(tmp_path)}, "linux")


def test_unreachable_engine_error_names_endpoint_and_fix() -> None:
    with pytest.raises(DockerError) as e:
        Docker.connect(resolve_endpoint({"DOCKER_HOST": "unix:///nonexistent.sock"}), timeout=5)
    assert "unix:///nonexistent.sock (from DOCKER_HOST)" in str(e.value)
    assert str(e.value).endswith("or unset DOCKER_HOST to use the current Docker context")


def test_choose_port_prefers_the_given_port_when_free() -> None:
    port = free_port()
    assert choose_port(port) == port
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        other = choose_port(taken)
        assert other != taken and other > 0


def test_pull_progress_counts_layers_and_bytes() -> None:
    p = PullProgress("docker.io/library/redis:7")
    events = [
        {"status": "Pulling from library/redis", "id": "7"},
        {"status": "Pulling fs layer", "id": "a"},
        {"status": "Pulling fs layer", "id": "b"},
        {"status": "Downloading", "id": "a", "progressDetail": {"current": 50, "total": 100}},
        {"status": "Downloading", "id": "b", "progressDetail": {"current": 10, "total": 400}},
    ]
    for ev in events:
        p.update(ev)
    assert (p.layers_done, p.layers_total, p.bytes_done, p.bytes_total) == (0, 2, 60, 500)
    for ev in [
        {"status": "Download complete", "id": "a"},
        {"status": "Pull complete", "id": "a"},
        {"status": "Already exists", "id": "c"},
    ]:
        p.update(ev)
    assert (p.layers_done, p.layers_total, p.bytes_done, p.bytes_total) == (2, 3, 110, 500)


def test_readiness_timeout_carries_the_container_logs(tmp_path: Path) -> None:
    client = docker_client()
    image = ensure_test_image(client)
    home = tmp_path / "home"
    docker = Docker.connect()
    spec = RedisSpec(home, image, free_port(), secrets.token_urlsafe(16))
    try:
        assert docker.ensure_volume(spec) is True
        info = docker.create_container(spec)
        assert info.password == spec.password and info.host_port == spec.host_port and info.host_ip == "127.0.0.1"
        assert docker.find_container(home).id == info.id  # type: ignore[union-attr]
        # The right password answers; a wrong one never does, so the wait ends with the logs.
        docker.wait_ready(info, spec.host_port, spec.password, timeout=30)
        with pytest.raises(ReadinessTimeout) as e:
            docker.wait_ready(info, spec.host_port, "wrong-password", timeout=1)
        msg = str(e.value)
        assert info.name in msg and "Ready to accept connections" in msg and "wrong-password" not in msg
        assert "AuthenticationError" in msg or "WRONGPASS" in msg
    finally:
        remove_labelled(client, home)
