"""devinit init / status / uninstall end to end: real `python -m devinit` processes in a
temporary HOME, a real Docker engine (the local image .ci/redis-image.sh builds), real Redis.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import uuid
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from lifecycle_support import Home, docker_client, ensure_test_image, home, labelled, remove_labelled  # noqa: F401
from support import free_port, need

NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent.sock"}


def component_values(path: Path) -> dict[str, str]:
    doc = yaml.safe_load(path.read_text())
    return {m["name"]: m["value"] for m in doc["spec"]["metadata"]}


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def get_state(h: Home, key: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{h.http_port}/v1.0/state/statestore/{key}", timeout=15)


def test_init_status_uninstall_end_to_end(home: Home) -> None:
    h = home
    client = docker_client()
    image = ensure_test_image(client)
    outputs: list[str] = []

    def run(*args: str) -> tuple[int, str, str]:
        p = h.run(*args)
        outputs.extend([p.stdout, p.stderr])
        return p.returncode, p.stdout, p.stderr

    try:
        # init: the labelled container, published on 127.0.0.1 only, password, AOF, volume
        redis_port = free_port()
        code, out, err = run(*h.init_args("--image", image, "--redis-port", str(redis_port)))
        assert code == 0, out + err
        containers, volumes = labelled(client, h.dapr)
        assert len(containers) == 1 and len(volumes) == 1
        c = containers[0]
        assert c.status == "running"
        assert c.labels["io.devinit.managed"] == "true"
        assert c.labels["io.devinit.home"] == str(h.dapr.resolve())
        assert c.labels["io.devinit.config"]
        assert c.attrs["NetworkSettings"]["Ports"]["6379/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(redis_port)}]
        assert c.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert [m["Name"] for m in c.attrs["Mounts"] if m["Destination"] == "/data"] == [volumes[0].name]
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=redis_port).ping()  # no password: refused

        # statestore.yaml: 0600, the container's port and password
        assert stat.S_IMODE(h.component.stat().st_mode) == 0o600
        values = component_values(h.component)
        assert values["redisHost"] == f"127.0.0.1:{redis_port}"
        assert values["actorStateStore"] == "true"
        password = values["redisPassword"]
        r = redis.Redis(port=redis_port, password=password)
        assert r.ping()
        assert r.config_get("appendonly") == {"appendonly": "yes"}

        # a state round trip over HTTP, through the background server
        base = f"http://127.0.0.1:{h.http_port}/v1.0/state/statestore"
        assert httpx.post(base, json=[{"key": "order", "value": {"qty": 1}}], timeout=15).status_code == 204
        got = get_state(h, "order")
        assert got.status_code == 200 and got.json() == {"qty": 1}

        # status --json: healthy, exit 0
        code, out, err = run("status", "--json")
        assert code == 0, out + err
        doc = json.loads(out)
        assert doc["healthy"] is True and doc["problems"] == [] and doc["store"] == "redis"
        assert doc["container"]["state"] == "running" and doc["container"]["healthy"] is True
        assert doc["container"]["port"] == redis_port and doc["container"]["host_ip"] == "127.0.0.1"
        assert doc["server"]["running"] and doc["server"]["healthy"] and doc["server"]["http_port"] == h.http_port
        assert doc["server"]["grpc_port"] == h.grpc_port and doc["server"]["grpc_listening"] is True
        assert [(x["name"], x["valid"]) for x in doc["components"]] == [("statestore", True)]
        code, out, _ = run("status")
        assert code == 0 and "healthy" in out

        # init again: nothing changes, same container
        code, out, err = run(*h.init_args("--image", image))
        assert code == 0, out + err
        assert "already up" in out
        assert [x.id for x in labelled(client, h.dapr)[0]] == [c.id]

        # a component file the user changed is kept, and replaced only with --force
        edited = h.component.read_text() + "# my note\n"
        h.component.write_text(edited)
        code, out, err = run(*h.init_args())
        assert code == 0 and "Kept" in out and h.component.read_text() == edited
        code, out, err = run(*h.init_args("--force"))
        assert code == 0, out + err
        assert "my note" not in h.component.read_text()
        assert stat.S_IMODE(h.component.stat().st_mode) == 0o600

        # the container and the server killed: status says so (non-zero), init repairs both,
        # the data is there
        client.containers.get(c.id).kill()
        server_pid = json.loads(next((h.data / "state").glob("server-*.json")).read_text())["pid"]
        os.kill(server_pid, signal.SIGKILL)
        code, out, _ = run("status")
        assert code != 0 and "NOT healthy" in out
        assert "Redis container" in out and "state server is not running" in out
        code, out, err = run(*h.init_args())
        assert code == 0, out + err
        assert "container  started" in out and "server     restarted" in out
        assert [x.id for x in labelled(client, h.dapr)[0]] == [c.id]
        assert json.loads(redis.Redis(port=redis_port, password=password).hget("order", "data")) == {"qty": 1}
        # init restarted the server, which reconnects to the restarted container by itself
        got = get_state(h, "order")
        assert got.status_code == 200 and got.json() == {"qty": 1}
        assert run("status")[0] == 0

        # other settings (another Redis port): the container is recreated on the same volume
        new_port = free_port()
        code, out, err = run(*h.init_args("--redis-port", str(new_port)))
        assert code == 0, out + err
        assert "container  recreated" in out and "component  updated" in out and "server     restarted" in out
        (c2,) = labelled(client, h.dapr)[0]
        assert c2.id != c.id and c2.attrs["NetworkSettings"]["Ports"]["6379/tcp"][0]["HostPort"] == str(new_port)
        assert component_values(h.component)["redisHost"] == f"127.0.0.1:{new_port}"
        assert get_state(h, "order").json() == {"qty": 1}

        # uninstall while Docker is unreachable: the server stops, the container cannot be
        # removed, and the exit code says so
        p = h.run("uninstall", env=NO_DOCKER)
        outputs.extend([p.stdout, p.stderr])
        assert p.returncode == 1, p.stdout + p.stderr
        assert "removed: state server" in p.stdout and "FAILED:  Redis container" in p.stdout
        assert port_closed(h.http_port)
        assert len(labelled(client, h.dapr)[0]) == 1

        # uninstall: server stopped, container gone, volume and component file kept
        code, out, err = run("uninstall")
        assert code == 0, out + err
        assert "removed: container" in out and "kept:    volume" in out
        assert port_closed(h.http_port)
        containers, volumes = labelled(client, h.dapr)
        assert containers == [] and len(volumes) == 1
        assert h.component.exists()
        assert run("status")[0] != 0

        # uninstall --all: volume and files gone; then a clean no-op
        code, out, err = run("uninstall", "--all")
        assert code == 0, out + err
        assert labelled(client, h.dapr) == ([], [])
        assert not h.component.exists()
        assert not list((h.data / "log").glob("*.log"))
        code, out, err = run("uninstall")
        assert code == 0 and "Nothing to uninstall" in out, out + err

        assert not any(password in text for text in outputs), "the password was printed"
    finally:
        remove_labelled(client, h.dapr)


def test_no_docker_falls_back_to_sqlite(home: Home) -> None:
    h = home
    (h.data / "data").mkdir(parents=True)
    (h.data / "data").chmod(0o755)  # as an older devinit left it: init makes it owner-only
    p = h.run(*h.init_args(), env=NO_DOCKER)
    assert p.returncode == 0, p.stdout + p.stderr
    notes = [line for line in p.stdout.splitlines() if "Docker is not reachable" in line]
    assert len(notes) == 1 and "nonexistent.sock" in notes[0]
    doc = yaml.safe_load(h.component.read_text())
    assert doc["spec"]["type"] == "state.sqlite"
    db = Path(component_values(h.component)["connectionString"])
    assert db.is_relative_to(h.data)
    # the apps' data: in a folder only its owner can enter (the file itself gets SQLite's mode)
    assert db.parent.stat().st_mode & 0o777 == 0o700
    base = f"http://127.0.0.1:{h.http_port}/v1.0/state/statestore"
    assert httpx.post(base, json=[{"key": "k", "value": "v"}], timeout=15).status_code == 204
    assert get_state(h, "k").json() == "v"
    assert db.exists()

    st = h.run("status", "--json", env=NO_DOCKER)
    assert st.returncode == 0, st.stdout + st.stderr
    doc = json.loads(st.stdout)
    assert doc["store"] == "sqlite" and doc["docker"]["reachable"] is False

    p = h.run("uninstall", "--all", env=NO_DOCKER)
    assert p.returncode == 0, p.stdout + p.stderr
    assert port_closed(h.http_port)
    assert not h.component.exists() and not db.exists()


def test_store_redis_without_docker_fails_clearly(home: Home) -> None:
    h = home
    p = h.run(*h.init_args("--store", "redis"), env=NO_DOCKER)
    assert p.returncode == 1
    assert p.stderr.startswith("Error: cannot reach the Docker engine at unix:///nonexistent.sock")
    assert "DOCKER_HOST" in p.stderr and "Traceback" not in p.stderr
    assert not h.component.exists()
    assert port_closed(h.http_port)


def test_pull_of_missing_tag_fails_clearly_and_leaves_nothing(home: Home) -> None:
    h = home
    client = docker_client()
    image = f"devinit-test/redis:missing-{uuid.uuid4().hex[:8]}"
    try:
        p = h.run(*h.init_args("--image", image, "--redis-port", str(free_port())))
        assert p.returncode == 1, p.stdout + p.stderr
        assert p.stderr.startswith(f"Error: could not pull image {image}: the registry said: ")
        assert "--image" in p.stderr and "--store sqlite" in p.stderr
        assert "Nothing was left behind" in p.stderr and "Traceback" not in p.stderr
        assert labelled(client, h.dapr) == ([], [])
        assert not h.component.exists()
        assert port_closed(h.http_port)
    finally:
        remove_labelled(client, h.dapr)


def test_failed_step_undoes_what_this_run_created(home: Home) -> None:
    h = home
    client = docker_client()
    image = ensure_test_image(client)
    try:
        with socket.socket() as busy:  # the server cannot start: after container and file
            busy.bind(("127.0.0.1", h.http_port))
            busy.listen()
            p = h.run(*h.init_args("--image", image, "--redis-port", str(free_port())))
        assert p.returncode == 1, p.stdout + p.stderr
        assert p.stderr.startswith(f"Error: the HTTP port {h.http_port} is already in use")
        assert (
            "Undone: removed " in p.stderr and "container devinit-redis-" in p.stderr and "volume devinit-redis-data-" in p.stderr
        )
        assert labelled(client, h.dapr) == ([], [])
        assert not h.component.exists()
        assert not list((h.data / "state").glob("setup-*.json"))
    finally:
        remove_labelled(client, h.dapr)


def test_cli_quick_checks() -> None:
    from click.testing import CliRunner

    from devinit.cli import cli
    from devinit.errors import UsageError

    runner = CliRunner()
    result = runner.invoke(cli, ["init", "--help"])
    assert result.exit_code == 0
    for option in ("--store", "--slim", "--image", "--redis-port", "--http-port", "--grpc-port", "--force", "--home"):
        assert option in result.output
    result = runner.invoke(cli, ["init", "--slim", "--store", "redis"])
    assert isinstance(result.exception, UsageError)
    assert runner.invoke(cli, ["uninstall", "--help"]).exit_code == 0
    assert "--json" in runner.invoke(cli, ["status", "--help"]).output


def test_a_dead_system_proxy_does_not_reach_devinits_own_calls(home: Home) -> None:
    """A system proxy (here the environment's, as on Windows/macOS it comes from the settings)
    must never receive devinit's calls to its own server on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens: every proxied call fails
    proxies = {name: dead for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")}
    h = home
    env = {**NO_DOCKER, **proxies, "NO_PROXY": "", "no_proxy": ""}
    p = h.run(*h.init_args("--store", "sqlite", "--timeout", "20"), env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    st = h.run("status", "--json", env=env)
    assert st.returncode == 0, st.stdout + st.stderr
    doc = json.loads(st.stdout)
    assert doc["server"]["healthy"] and doc["stores"][0]["status"] == "up"
    p = h.run("uninstall", "--all", env=env)
    assert p.returncode == 0 and port_closed(h.http_port), p.stdout + p.stderr


def test_offline_without_the_image_falls_back_to_sqlite(home: Home) -> None:
    """Docker answers, but the default image is not there and there is no registry to pull it
    from: without --store (or --image), init says why in one line and uses SQLite."""
    from devinit.docker_redis import DEFAULT_IMAGE

    client = docker_client()
    try:
        client.images.get(DEFAULT_IMAGE)
        present = True
    except Exception:
        present = False
    need(not present, f"{DEFAULT_IMAGE} must be absent for this test (the pull must fail)")
    h = home
    try:
        p = h.run(*h.init_args())
        assert p.returncode == 0, p.stdout + p.stderr
        notes = [line for line in p.stdout.splitlines() if "could not pull it" in line]
        assert len(notes) == 1 and notes[0].startswith(f"Docker has no image {DEFAULT_IMAGE} and could not pull it (")
        assert notes[0].endswith("using the embedded SQLite store instead.")
        assert yaml.safe_load(h.component.read_text())["spec"]["type"] == "state.sqlite"
        assert labelled(client, h.dapr) == ([], [])
        base = f"http://127.0.0.1:{h.http_port}/v1.0/state/statestore"
        assert httpx.post(base, json=[{"key": "k", "value": "v"}], timeout=15).status_code == 204
        # asked for Redis: today's error, nothing switched
        q = h.run("uninstall", "--all")
        assert q.returncode == 0, q.stdout + q.stderr
        p = h.run(*h.init_args("--store", "redis"))
        assert p.returncode == 1 and p.stderr.startswith(f"Error: could not pull image {DEFAULT_IMAGE}: the registry said: ")
        assert not h.component.exists()
    finally:
        remove_labelled(client, h.dapr)
