"""Two `devinit serve` processes sharing one store: first-write with etags loses no update.

The last-write variant (no etag) runs the same load and must lose updates, which shows the
first test is able to fail.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import backing_server, store_component
from support import DevinitServer

CLIENTS = 8
INCREMENTS = 25


@pytest.fixture(scope="module", params=["redis", "sqlite", "postgres"])
def pair(request, tmp_path_factory) -> Iterator[list[DevinitServer]]:
    kind = request.param
    redis = backing_server(request, kind)
    base = tmp_path_factory.mktemp(f"shared-{kind}")
    servers = []
    for i in range(2):
        folder = base / f"components{i}"
        store_component(kind, folder, "statestore", redis)
        if kind == "sqlite":  # both point at ONE database file
            text = (folder / "statestore.yaml").read_text().replace(str(folder.parent / "statestore.db"), str(base / "shared.db"))
            (folder / "statestore.yaml").write_text(text)
        servers.append(DevinitServer(folder))
    yield servers
    for s in servers:
        s.stop()


def run_increments(servers: list[DevinitServer], key: str, use_etag: bool) -> tuple[int, int]:
    """CLIENTS threads, spread over the servers, each doing INCREMENTS read-modify-writes."""
    conflicts = 0
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        nonlocal conflicts
        url = servers[i % len(servers)].url + "/v1.0/state/statestore"
        try:
            with httpx.Client(timeout=30) as c:
                for _ in range(INCREMENTS):
                    while True:
                        r = c.get(f"{url}/{key}")
                        value = r.json() if r.status_code == 200 else 0
                        item = {"key": key, "value": value + 1}
                        if use_etag:
                            item["options"] = {"concurrency": "first-write"}
                            if r.status_code == 200:
                                item["etag"] = r.headers["etag"]
                        w = c.post(url, json=[item])
                        if w.status_code == 204:
                            break
                        assert w.status_code == 409, w.text
                        with lock:
                            conflicts += 1
        except BaseException as e:  # surfaced in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    final = httpx.get(f"{servers[0].url}/v1.0/state/statestore/{key}").json()
    return final, conflicts


def test_first_write_increments_are_exact(pair):
    key = f"counter-{uuid.uuid4().hex[:8]}"
    final, conflicts = run_increments(pair, key, use_etag=True)
    assert final == CLIENTS * INCREMENTS
    assert conflicts > 0  # the load really contended


def test_last_write_without_etag_loses_updates(pair):
    key = f"counter-{uuid.uuid4().hex[:8]}"
    final, _ = run_increments(pair, key, use_etag=False)
    assert final < CLIENTS * INCREMENTS


def test_transfers_in_transactions_keep_the_sum(pair):
    a, b = f"acct-a-{uuid.uuid4().hex[:8]}", f"acct-b-{uuid.uuid4().hex[:8]}"
    url0 = pair[0].url + "/v1.0/state/statestore"
    assert httpx.post(url0, json=[{"key": a, "value": 100}, {"key": b, "value": 100}]).status_code == 204
    errors: list[BaseException] = []

    def mover(i: int) -> None:
        url = pair[i % 2].url + "/v1.0/state/statestore"
        src, dst = (a, b) if i % 2 else (b, a)
        try:
            with httpx.Client(timeout=30) as c:
                for _ in range(15):
                    while True:
                        items = {o["key"]: o for o in c.post(f"{url}/bulk", json={"keys": [src, dst]}).json()}
                        ops = [
                            {"operation": "upsert", "request": {"key": src, "value": items[src]["data"] - 1, "etag": items[src]["etag"]}},
                            {"operation": "upsert", "request": {"key": dst, "value": items[dst]["data"] + 1, "etag": items[dst]["etag"]}},
                        ]
                        r = c.post(f"{url}/transaction", json={"operations": ops})
                        if r.status_code == 204:
                            break
                        assert r.status_code == 409, r.text
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=mover, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    bulk = httpx.post(url0 + "/bulk", json={"keys": [a, b]}).json()
    assert bulk[0]["data"] + bulk[1]["data"] == 200
    assert bulk[0]["data"] == 100  # 3 movers each way, 15 moves each
