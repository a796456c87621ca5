"""A store that goes down under load: bounded 500 JSON errors, the store shown down, recovery.

Clients keep hammering a running server while its Redis is killed and restarted. Every
answer must arrive within the client timeout (a hang fails the test through it; a bound, not
a timing assertion), every 5xx must be a JSON error, /v1.0/metadata (HTTP and gRPC) must show
the store down and then up, the health routes keep answering 204, and requests succeed again
without restarting devinit. The times seen are printed for the record (run with -s).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import httpx
from conftest import store_component
from dapr.proto import api_service_v1, api_v1

from support import DevinitServer, RedisServer, write_component
from workloads import Endpoint, Probe, hammer

TIMEOUT = 15.0  # client timeout: no request may take longer (the server's store timeout is 3 s here)
CLIENTS = 6


def store_health(url: str, name: str = "statestore") -> dict:
    comps = {c["name"]: c for c in httpx.get(url + "/v1.0/metadata", timeout=TIMEOUT).json()["components"]}
    return comps[name]["health"]


def wait_for_status(url: str, status: str, rounds: int = 100) -> dict:
    """Poll the metadata until the store has ``status`` (at most ``rounds`` x 0.1 s + answers)."""
    for _ in range(rounds):
        health = store_health(url)
        if health["status"] == status:
            return health
        time.sleep(0.1)
    raise AssertionError(f"the store never showed {status!r}: {health}")


def grpc_extended(srv: DevinitServer) -> dict[str, str]:
    with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as ch:
        meta = api_service_v1.DaprStub(ch).GetMetadata(api_v1.GetMetadataRequest(), timeout=TIMEOUT)
    return dict(meta.extended_metadata)


def test_redis_down_under_load_then_back(tmp_path: Path):
    rs = RedisServer(tmp_path / "redis")
    folder = tmp_path / "components"
    store_component("redis", folder, "statestore", rs, {"readTimeout": "1s", "dialTimeout": "1s"})
    write_component(folder, "mem", "state.in-memory")
    srv = DevinitServer(folder, "--store-timeout", "3")
    probe = Probe()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        assert wait_for_status(srv.url, "up")["status"] == "up"
        assert grpc_extended(srv)["devinit.health.statestore"] == "up"
        threads = hammer(Endpoint(srv.http_port, srv.grpc_port), CLIENTS, stop, probe, TIMEOUT)
        time.sleep(0.5)  # some load before the outage
        assert probe.answers.get(204) and not probe.answers.get(500), probe.answers

        killed = time.monotonic()
        rs.stop()
        down = wait_for_status(srv.url, "down")
        assert "statestore" in down["error"] and rs.host in down["error"], down
        assert grpc_extended(srv)["devinit.health.statestore"].startswith("down: ")
        assert store_health(srv.url, "mem")["status"] == "up"  # the other store is fine
        while probe.first_error_at is None and time.monotonic() - killed < TIMEOUT:
            time.sleep(0.05)
        # the health routes keep Dapr's meaning: components loaded, SDK clients may start
        assert httpx.get(srv.url + "/v1.0/healthz", timeout=TIMEOUT).status_code == 204
        assert httpx.get(srv.url + "/v1.0/healthz/outbound", timeout=TIMEOUT).status_code == 204
        assert httpx.post(srv.url + "/v1.0/state/mem", json=[{"key": "k", "value": 1}], timeout=TIMEOUT).status_code == 204
        time.sleep(1.0)  # the outage lasts a while under load

        restarted = probe.mark_restart()
        rs.start()
        wait_for_status(srv.url, "up")
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and (probe.first_ok_after_error is None or probe.first_ok_after_error < restarted):
            time.sleep(0.05)
        with httpx.Client(base_url=srv.url, timeout=TIMEOUT) as c:  # back for good, not by luck
            answers = [c.post("/v1.0/state/statestore", json=[{"key": "after", "value": i}]).status_code for i in range(20)]
        assert answers == [204] * 20, answers
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=TIMEOUT + 5)
        srv.stop()
        rs.stop()

    assert not [t for t in threads if t.is_alive()], "a client is stuck"
    assert probe.transport_errors == [], probe.transport_errors[:5]  # no hang, no reset
    assert probe.not_json_errors == [], probe.not_json_errors[:5]
    assert set(probe.answers) <= {200, 204, 500}, probe.answers
    assert probe.answers.get(500, 0) > 0
    assert probe.first_error_at is not None and probe.first_ok_after_error is not None
    assert probe.first_ok_after_error > restarted  # it recovered by itself, no restart of devinit
    print(
        f"\n[outage] {CLIENTS} clients, answers {probe.answers}; first 500 {probe.first_error_at - killed:.2f}s after the kill; "
        f"first success {probe.first_ok_after_error - restarted:.2f}s after the restart"
    )


def test_health_of_a_store_that_never_came_up(tmp_path: Path):
    """A Redis that is not there at start: loaded, shown down, and up once it appears."""
    rs = RedisServer(tmp_path / "redis")
    rs.stop()
    folder = tmp_path / "components"
    store_component("redis", folder, "statestore", rs, {"dialTimeout": "1s"})
    srv = DevinitServer(folder)
    try:
        assert wait_for_status(srv.url, "down")["error"]
        r = httpx.get(srv.url + "/v1.0/state/statestore/k", timeout=TIMEOUT)
        assert r.status_code == 500 and r.json()["errorCode"] == "ERR_STATE_GET"
        rs.start()
        wait_for_status(srv.url, "up")
        assert httpx.get(srv.url + "/v1.0/state/statestore/k", timeout=TIMEOUT).status_code == 204
        assert "is down" in srv.log() and "is up again" in srv.log()  # each change logged once
        assert srv.log().count("is down") == 1
    finally:
        srv.stop()
        rs.stop()
