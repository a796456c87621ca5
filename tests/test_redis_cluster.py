"""The Redis store on a real Redis Cluster (redisType: cluster): three masters on this machine,
made by redis-cli --cluster create, and a real `devinit serve` in front of them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from devinit.state.redis_nodes import key_slot
from support import DevinitServer, RedisClusterServers, RedisServer, free_port, write_component

STORE = "clustered"


@pytest.fixture(scope="module")
def cluster(redis_cluster: RedisClusterServers) -> RedisClusterServers:
    """The session's cluster (conftest); the last test here stops and restarts one master."""
    return redis_cluster


@pytest.fixture(scope="module")
def srv(cluster: RedisClusterServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevinitServer]:
    folder = tmp_path_factory.mktemp("cluster-components")
    # one seed is enough: the other masters are found with CLUSTER SLOTS
    write_component(
        folder,
        STORE,
        "state.redis",
        {"redisHost": f"127.0.0.1:{cluster.nodes[1].port}", "redisType": "cluster", "dialTimeout": "1s", "readTimeout": "2s"},
    )
    s = DevinitServer(folder, "--app-id", "capp")
    yield s
    s.stop()


def _owner(cluster: RedisClusterServers, key: str) -> RedisServer:
    """The master that holds ``key`` now (asked of the cluster, not computed)."""
    slot = key_slot(key)
    for first, last, master, *_ in redis.Redis(port=cluster.nodes[0].port).execute_command("CLUSTER", "SLOTS"):
        if first <= slot <= last:
            return next(n for n in cluster.nodes if n.port == int(master[1]))
    raise AssertionError(f"no master for slot {slot}")


def _node_id(node: RedisServer) -> str:
    return redis.Redis(port=node.port).execute_command("CLUSTER", "MYID").decode()


@given(st.one_of(st.binary(max_size=24), st.text(alphabet="ab{}xy", max_size=10)))
@settings(max_examples=500, deadline=None)
def test_key_slot_agrees_with_redis_py(key: str | bytes) -> None:
    """devinit's CRC16 slot (so the server need not import redis-py) is redis-py's, hash tags included."""
    from redis.crc import key_slot as redis_py_key_slot

    assert key_slot(key) == redis_py_key_slot(key if isinstance(key, bytes) else key.encode())


def test_the_state_api_works_across_every_master(srv: DevinitServer, cluster: RedisClusterServers):
    url = f"{srv.url}/v1.0/state/{STORE}"
    keys = [f"spread-{i}" for i in range(60)]
    assert httpx.post(url, json=[{"key": k, "value": {"n": i}} for i, k in enumerate(keys)]).status_code == 204
    held = {n.port: 0 for n in cluster.nodes}
    for k in keys:
        held[_owner(cluster, f"capp||{k}").port] += 1
        assert redis.Redis(port=_owner(cluster, f"capp||{k}").port).hget(f"capp||{k}", "data") is not None
    assert all(held.values()), f"the keys did not spread over the masters: {held}"
    etags = {}
    for i, k in enumerate(keys):
        r = httpx.get(f"{url}/{k}")
        assert r.status_code == 200 and r.json() == {"n": i}
        etags[k] = r.headers["etag"]
    bulk = httpx.post(f"{url}/bulk", json={"keys": [*keys[:20], "never-saved"]}).json()
    assert [b["data"] for b in bulk[:20]] == [{"n": i} for i in range(20)] and "data" not in bulk[20]
    assert [b["etag"] for b in bulk[:20]] == [etags[k] for k in keys[:20]]
    # concurrency rules, TTL, delete
    k = keys[5]
    assert httpx.post(url, json=[{"key": k, "value": 1, "etag": "999999"}]).status_code == 409
    assert httpx.post(url, json=[{"key": k, "value": 1, "options": {"concurrency": "first-write"}}]).status_code == 409
    assert httpx.post(url, json=[{"key": k, "value": 2, "etag": etags[k], "metadata": {"ttlInSeconds": "60"}}]).status_code == 204
    got = httpx.get(f"{url}/{k}")
    assert got.json() == 2 and int(got.headers["etag"]) > int(etags[k]) and "metadata.ttlExpireTime" in got.headers
    assert httpx.delete(f"{url}/{k}", headers={"If-Match": etags[k]}).status_code == 409
    assert httpx.delete(f"{url}/{k}", headers={"If-Match": got.headers["etag"]}).status_code == 204
    assert httpx.get(f"{url}/{k}").status_code == 204
    # the query API reads every master
    found = httpx.post(f"{srv.url}/v1.0-alpha1/state/{STORE}/query", json={"filter": {}}).json()["results"]
    assert {r["key"] for r in found} == set(keys) - {k}


def test_an_etag_is_not_handed_out_twice_for_a_key_in_a_cluster(srv: DevinitServer, cluster: RedisClusterServers):
    url = f"{srv.url}/v1.0/state/{STORE}"
    assert httpx.post(url, json=[{"key": "reborn", "value": "old"}]).status_code == 204
    old = httpx.get(f"{url}/reborn").headers["etag"]
    assert httpx.delete(f"{url}/reborn").status_code == 204
    assert httpx.post(url, json=[{"key": "reborn", "value": "new"}]).status_code == 204
    new = httpx.get(f"{url}/reborn").headers["etag"]
    assert new != old
    assert httpx.post(url, json=[{"key": "reborn", "value": "stale", "etag": old}]).status_code == 409
    assert int(new) > int(old)
    # without a key of devinit's own: the master holds the user's key, and nothing of devinit's
    owner = redis.Redis(port=_owner(cluster, "capp||reborn").port)
    assert owner.hget("capp||reborn", "version") == new.encode()
    assert not [k for n in cluster.nodes for k in redis.Redis(port=n.port).keys("*devinit*")]


def test_a_transaction_needs_one_hash_slot_and_says_how(srv: DevinitServer, cluster: RedisClusterServers):
    url = f"{srv.url}/v1.0/state/{STORE}"
    tx = {
        "operations": [
            {"operation": "upsert", "request": {"key": "{order-7}total", "value": 30}},
            {"operation": "upsert", "request": {"key": "{order-7}items", "value": ["a", "b"]}},
        ]
    }
    assert httpx.post(f"{url}/transaction", json=tx).status_code == 204
    assert httpx.get(f"{url}/{{order-7}}items").json() == ["a", "b"]
    total_etag = httpx.get(f"{url}/{{order-7}}total").headers["etag"]
    # an etag check that fails rolls back the whole transaction
    bad = {
        "operations": [
            {"operation": "upsert", "request": {"key": "{order-7}items", "value": []}},
            {"operation": "delete", "request": {"key": "{order-7}total", "etag": "999999"}},
        ]
    }
    assert httpx.post(f"{url}/transaction", json=bad).status_code == 409
    assert httpx.get(f"{url}/{{order-7}}items").json() == ["a", "b"]
    # keys in different slots: refused before anything is written, with the way out
    spread = {
        "operations": [
            {"operation": "upsert", "request": {"key": "tx-left", "value": 1}},
            {"operation": "upsert", "request": {"key": "tx-right", "value": 2}},
        ]
    }
    assert key_slot("capp||tx-left") != key_slot("capp||tx-right")
    r = httpx.post(f"{url}/transaction", json=spread)
    assert r.status_code == 400 and r.json()["errorCode"] == "ERR_STATE_TRANSACTION"
    assert "hash tag" in r.json()["message"] and "{" in r.json()["message"]
    assert httpx.get(f"{url}/tx-left").status_code == 204 and httpx.get(f"{url}/tx-right").status_code == 204
    assert httpx.get(f"{url}/{{order-7}}total").headers["etag"] == total_etag
    # the store is not marked down for a refused request
    assert httpx.get(f"{srv.url}/v1.0/healthz/outbound").status_code == 204


def test_redirects_are_followed_while_a_slot_moves_and_after(srv: DevinitServer, cluster: RedisClusterServers):
    url = f"{srv.url}/v1.0/state/{STORE}"
    assert httpx.post(url, json=[{"key": "mover", "value": "here"}]).status_code == 204
    etag = httpx.get(f"{url}/mover").headers["etag"]  # devinit now knows the slot's master
    key = "capp||mover"
    slot = key_slot(key)
    source = _owner(cluster, key)
    target = next(n for n in cluster.nodes if n is not source)
    src, dst = redis.Redis(port=source.port), redis.Redis(port=target.port)
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(source))
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(target))
    src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", key)
    # mid-migration the source answers ASK for the key: followed with ASKING
    r = httpx.get(f"{url}/mover")
    assert r.status_code == 200 and r.json() == "here" and r.headers["etag"] == etag, r.text
    for node in cluster.nodes:
        redis.Redis(port=node.port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", _node_id(target))
    # now MOVED: the slot map is read again, and reads and writes go to the new master
    assert httpx.post(url, json=[{"key": "mover", "value": "there", "etag": etag}]).status_code == 204
    r = httpx.get(f"{url}/mover")
    assert r.status_code == 200 and r.json() == "there" and int(r.headers["etag"]) > int(etag)
    assert dst.hget(key, "data") == b'"there"' and src.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0


def test_a_seed_outside_the_cluster_is_passed_over(tmp_path: Path, cluster: RedisClusterServers):
    """The first seed is a cluster-mode Redis that never joined (CLUSTER SLOTS: empty): the
    slot map comes from the next seed."""
    loner = RedisServer(
        tmp_path / "loner", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", str(free_port())
    )
    folder = tmp_path / "components"
    write_component(
        folder, STORE, "state.redis", {"redisHost": f"{loner.host},127.0.0.1:{cluster.nodes[0].port}", "redisType": "cluster"}
    )
    s = DevinitServer(folder)
    try:
        url = f"{s.url}/v1.0/state/{STORE}"
        assert httpx.post(url, json=[{"key": f"via-seed-{i}", "value": i} for i in range(10)]).status_code == 204
        assert [httpx.get(f"{url}/via-seed-{i}").json() for i in range(10)] == list(range(10))
    finally:
        s.stop()
        loner.stop()


def test_a_cluster_setting_on_a_plain_redis_says_so(tmp_path: Path, redis_server: RedisServer):
    folder = tmp_path / "components"
    write_component(folder, STORE, "state.redis", {"redisHost": redis_server.host, "redisType": "cluster"})
    s = DevinitServer(folder)
    try:
        r = httpx.get(f"{s.url}/v1.0/state/{STORE}/k")
        assert r.status_code == 500 and "redisType: node" in r.json()["message"], r.text
    finally:
        s.stop()


@pytest.mark.parametrize(
    "meta, field",
    [
        ({"redisHost": "127.0.0.1:7000,nonsense", "redisType": "cluster"}, "redisHost"),
        ({"redisHost": "127.0.0.1:7000", "redisType": "cluster", "redisDB": "2"}, "redisDB"),
        ({"redisHost": "127.0.0.1:7000", "redisType": "ring"}, "redisType"),
        ({"redisHost": "127.0.0.1:7000,127.0.0.1:7001"}, "redisHost"),  # a list is for redisType: cluster
    ],
)
def test_bad_cluster_settings_name_the_field(tmp_path: Path, meta: dict[str, str], field: str):
    folder = tmp_path / "components"
    write_component(folder, STORE, "state.redis", meta)
    s = DevinitServer(folder)
    try:
        r = httpx.get(f"{s.url}/v1.0/state/{STORE}/k")
        assert r.status_code == 400 and f"spec.metadata.{field}" in r.json()["message"], r.text
    finally:
        s.stop()


def test_a_master_that_goes_away_fails_its_keys_fast_and_comes_back(srv: DevinitServer, cluster: RedisClusterServers):
    """Runs last in this module: it stops a master, the very node devinit was given as seed."""
    url = f"{srv.url}/v1.0/state/{STORE}"
    keys = [f"outage-{i}" for i in range(30)]
    assert httpx.post(url, json=[{"key": k, "value": k} for k in keys]).status_code == 204
    victim = cluster.nodes[1]
    lost = [k for k in keys if _owner(cluster, f"capp||{k}") is victim]
    kept = [k for k in keys if k not in lost]
    assert lost and kept
    victim.stop()
    try:
        t0 = time.monotonic()
        r = httpx.get(f"{url}/{lost[0]}", timeout=30)
        assert r.status_code == 500 and r.json()["errorCode"] == "ERR_STATE_GET"
        assert time.monotonic() - t0 < 8, "an unreachable master must fail within the store's timeouts"
        for k in kept[:5]:  # the other masters keep serving their slots
            assert httpx.get(f"{url}/{k}", timeout=30).json() == k
    finally:
        victim.start()
    cluster.wait_ok()
    deadline = time.monotonic() + 20
    while True:  # no restart of devinit: it reconnects by itself (the node kept no data: no persistence)
        w = httpx.post(url, json=[{"key": lost[0], "value": "again"}], timeout=30)
        if w.status_code == 204 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert w.status_code == 204, w.text
    assert httpx.get(f"{url}/{lost[0]}").json() == "again"
