"""The Redis container `devinit init` makes: loopback only, password, 0600 files, no secret shown;
acknowledged writes survive `docker kill` + start (AOF on the volume); while it is down the
server answers 500 JSON, `devinit status` and the metadata show the store down, and when it is
back requests succeed without restarting devinit.

One `devinit init` for the module (a real Docker engine, the local image .ci/redis-image.sh
builds), with DAPR_API_TOKEN set so that the token is checked and must never be printed.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from test_durability import crash_during_writes, missing

from lifecycle_support import Home, docker_client, ensure_test_image, labelled, make_home, remove_labelled
from support import free_port

TOKEN = "tok-" + os.urandom(12).hex()
S = "/v1.0/state/statestore"


class Setup:
    """What the module's init made."""

    def __init__(self, h: Home, client, container, password: str, redis_port: int, outputs: list[str]) -> None:  # type: ignore[no-untyped-def]
        self.h, self.client, self.container = h, client, container
        self.password, self.redis_port, self.outputs = password, redis_port, outputs

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.h.http_port}"

    def run(self, *args: str) -> tuple[int, str]:
        p = self.h.run(*args, env={"DAPR_API_TOKEN": TOKEN})
        self.outputs += [p.stdout, p.stderr]
        return p.returncode, p.stdout + p.stderr

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, password=self.password, socket_timeout=5)

    def wait_redis(self) -> None:
        for _ in range(200):
            try:
                if self.redis().ping():
                    return
            except redis.exceptions.RedisError:
                time.sleep(0.1)
        raise AssertionError("Redis did not come back")

    def server_pid(self) -> int:
        return json.loads(next((self.h.data / "state").glob("server-*.json")).read_text())["pid"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    h = make_home(tmp_path_factory.mktemp("docker-reliab"))
    h.env["DAPR_API_TOKEN"] = TOKEN  # the background server inherits it
    client = docker_client()
    image = ensure_test_image(client)
    redis_port = free_port()
    outputs: list[str] = []
    try:
        p = h.run(*h.init_args("--image", image, "--redis-port", str(redis_port)))
        outputs += [p.stdout, p.stderr]
        assert p.returncode == 0, p.stdout + p.stderr
        (container,), _ = labelled(client, h.dapr)
        doc = __import__("yaml").safe_load(h.component.read_text())
        password = {m["name"]: m["value"] for m in doc["spec"]["metadata"]}["redisPassword"]
        yield Setup(h, client, container, password, redis_port, outputs)
    finally:
        h.kill_server()
        remove_labelled(client, h.dapr)


def listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net shows them) of the sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.rpartition(":")
            if state == "0A" and int(hexport, 16) == port:
                found.append(addr)
    return found


LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def test_everything_listens_on_loopback_only(setup: Setup):
    h = setup.h
    for port in (h.http_port, h.grpc_port, setup.redis_port):
        addrs = listening(port)
        assert addrs, f"nothing listens on {port}"
        assert set(addrs) <= LOOPBACK, (port, addrs)
    setup.container.reload()
    bindings = setup.container.attrs["HostConfig"]["PortBindings"]
    assert bindings == {"6379/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(setup.redis_port)}]}


def test_redis_demands_the_password(setup: Setup):
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=setup.redis_port).ping()
    with pytest.raises((redis.exceptions.AuthenticationError, redis.exceptions.ResponseError)):
        redis.Redis(port=setup.redis_port, password=setup.password + "x").ping()
    assert setup.redis().ping()


def test_secret_files_are_0600(setup: Setup):
    h = setup.h
    assert stat.S_IMODE(h.component.stat().st_mode) == 0o600
    (setup_file,) = (h.data / "state").glob("setup-*.json")
    assert stat.S_IMODE(setup_file.stat().st_mode) == 0o600
    assert setup.password in setup_file.read_text()  # it is the file that holds it


def test_the_token_guards_the_background_server(setup: Setup):
    r = httpx.get(setup.url + "/v1.0/metadata", timeout=15)
    assert r.status_code == 401 and r.json()["errorCode"] == "ERR_API_TOKEN"
    assert httpx.get(setup.url + "/v1.0/healthz/outbound", timeout=15).status_code == 204
    r = httpx.post(setup.url + S, json=[{"key": "k", "value": 1}], headers={"dapr-api-token": TOKEN}, timeout=15)
    assert r.status_code == 204


def test_status_reports_the_store_up(setup: Setup):
    code, out = setup.run("status", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["stores"] == [{"name": "statestore", "type": "state.redis", "status": "up", "error": None}]
    code, out = setup.run("status")
    assert code == 0 and "store" in out and "statestore (state.redis)" in out, out


def test_acknowledged_writes_survive_docker_kill(setup: Setup):
    """Strong writes acknowledged before `docker kill` are all there once the container is started again."""
    url = setup.url
    r = setup.redis()
    version = tuple(int(x) for x in r.info("server")["redis_version"].split(".")[:2])
    headers = {"dapr-api-token": TOKEN}

    def kill() -> None:
        setup.client.containers.get(setup.container.id).kill()

    def start() -> None:
        setup.client.containers.get(setup.container.id).start()
        setup.wait_redis()

    if version < (7, 2):
        # Redis 7.0 has no WAITAOF, so devinit's strong write can only rely on Redis' own policy;
        # "always" stands in for it here, so that what is checked is devinit's container
        # (AOF on, on the volume, replayed on start), not the everysec window of Redis 7.0.
        r.config_set("appendfsync", "always")
    strong, eventual = crash_during_writes(url, kill, "dk1", headers)
    start()
    lost_strong = missing(url, strong, headers)
    assert len(strong) >= 10
    assert lost_strong == [], f"{len(lost_strong)} of {len(strong)} acknowledged strong writes lost"

    # measured, not asserted: the container's own setting (everysec, restored by the restart)
    strong2, eventual2 = crash_during_writes(url, kill, "dk2", headers)
    start()
    print(
        f"\n[durability redis container {'.'.join(map(str, version))}, docker kill] appendfsync always: strong acked {len(strong)} "
        f"lost {len(lost_strong)}, eventual acked {len(eventual)} lost {len(missing(url, eventual, headers))}; "
        f"everysec: strong acked {len(strong2)} lost {len(missing(url, strong2, headers))}, "
        f"eventual acked {len(eventual2)} lost {len(missing(url, eventual2, headers))}"
    )


def test_outage_shown_and_recovered_without_restart(setup: Setup):
    pid = setup.server_pid()
    headers = {"dapr-api-token": TOKEN}
    setup.client.containers.get(setup.container.id).kill()
    try:
        r = httpx.get(setup.url + S + "/k", headers=headers, timeout=15)  # bounded: a hang fails here
        assert r.status_code == 500 and r.json()["errorCode"] == "ERR_STATE_GET", r.text
        for _ in range(100):  # the server's ping sees it within its interval
            comp = httpx.get(setup.url + "/v1.0/metadata", headers=headers, timeout=15).json()["components"][0]
            if comp["health"]["status"] == "down":
                break
            time.sleep(0.1)
        assert comp["health"]["status"] == "down", comp
        code, out = setup.run("status", "--json")
        assert code == 1
        doc = json.loads(out)
        assert doc["stores"][0]["status"] == "down" and doc["stores"][0]["error"]
        assert any("cannot use store 'statestore'" in p for p in doc["problems"]), doc["problems"]
        code, out = setup.run("status")
        assert code == 1 and "store      down" in out, out
        assert httpx.get(setup.url + "/v1.0/healthz/outbound", timeout=15).status_code == 204
    finally:
        setup.client.containers.get(setup.container.id).start()
        setup.wait_redis()
    ok = [
        httpx.post(setup.url + S, json=[{"key": "back", "value": i}], headers=headers, timeout=15).status_code for i in range(3)
    ]
    assert ok[-1] == 204, ok
    assert setup.server_pid() == pid  # recovered by itself, not restarted
    for _ in range(100):
        code, out = setup.run("status", "--json")
        if code == 0:
            break
        time.sleep(0.2)
    assert code == 0, out


def test_init_after_a_killed_container_waits_for_the_server_and_status_agrees_at_once(setup: Setup):
    """The server still runs and has seen Redis go: init starts the container again, and must
    not report success until the server itself reports the store up; status right after must
    not show the old "down"."""
    headers = {"dapr-api-token": TOKEN}
    pid = setup.server_pid()
    setup.client.containers.get(setup.container.id).kill()
    for _ in range(100):  # bounded: the server's ping sees it within its interval
        comp = httpx.get(setup.url + "/v1.0/metadata", headers=headers, timeout=15).json()["components"][0]
        if comp["health"]["status"] == "down":
            break
        time.sleep(0.1)
    assert comp["health"]["status"] == "down", comp
    code, out = setup.run(*setup.h.init_args())
    assert code == 0, out
    assert "container  started" in out and "server     unchanged" in out and "stores     up" in out, out
    # what the server says the moment init has returned (no ping in between can hide a stale "down")
    comp = httpx.get(setup.url + "/v1.0/metadata", headers=headers, timeout=15).json()["components"][0]
    assert comp["health"]["status"] == "up", comp
    code, out = setup.run("status", "--json")
    assert code == 0, out
    assert json.loads(out)["stores"][0]["status"] == "up"
    assert setup.server_pid() == pid


def test_no_secret_in_outputs_logs_or_command_lines(setup: Setup):
    """Runs last: everything printed or logged in this module, and every process' command line."""
    logs = [p.read_text(errors="replace") for p in (setup.h.data / "log").glob("*.log")]
    assert logs and any("stores:" in text for text in logs)
    for text in setup.outputs + logs:
        assert setup.password not in text
        assert TOKEN not in text
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes()
        except OSError:
            continue
        assert setup.password.encode() not in argv, f"the Redis password is in {cmdline}"
        assert TOKEN.encode() not in argv, f"the API token is in {cmdline}"
