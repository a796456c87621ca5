"""No update is lost: K clients over 2 servers sharing one store, over HTTP and gRPC.

K and N are parameters, the K·N figure and the number lost are reported, a quarter of the
clients use gRPC and race the HTTP ones; also a first-write insert race (exactly one creator
per key) and transfers between two keys whose sum must never change. The last-write runs must lose updates: they show that the
first-write runs are able to fail. Larger runs: scripts/stress.py --clients K --ops N.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from conftest import backing_server, store_component

from support import DevinitServer
from workloads import Endpoint, first_write_race, increments, transfers


@pytest.fixture(scope="module", params=["redis", "sqlite", "postgres"])
def endpoints(request, tmp_path_factory) -> Iterator[list[Endpoint]]:
    """Two `devinit serve` processes on ONE store of each shareable kind."""
    kind = request.param
    backing = backing_server(request, kind)
    base = tmp_path_factory.mktemp(f"reliab-{kind}")
    servers = []
    for i in range(2):
        folder = base / f"components{i}"
        store_component(kind, folder, "statestore", backing)
        if kind == "sqlite":  # both point at one database file
            text = (folder / "statestore.yaml").read_text().replace(str(folder.parent / "statestore.db"), str(base / "shared.db"))
            (folder / "statestore.yaml").write_text(text)
        servers.append(DevinitServer(folder))
    yield [Endpoint(s.http_port, s.grpc_port) for s in servers]
    for s in servers:
        s.stop()


def _key(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("clients, ops", [(2, 30), (12, 6)])
def test_first_write_increments_lose_nothing(endpoints, clients, ops):
    res = increments(endpoints, _key("count"), clients, ops, first_write=True, grpc_share=0.25)
    print(f"\n[first-write] K={clients} N={ops} K·N={res.expected} final={res.final} lost={res.lost} conflicts={res.conflicts}")
    assert res.errors == []
    assert res.final == res.expected
    if clients > 2:
        assert res.conflicts > 0  # the clients really raced


def test_last_write_increments_lose_updates(endpoints):
    """The same race without etags: updates are lost (so the test above can fail)."""
    res = increments(endpoints, _key("blind"), 12, 6, first_write=False, grpc_share=0.25)
    print(f"\n[last-write] K=12 N=6 K·N={res.expected} final={res.final} lost={res.lost}")
    assert res.errors == []
    assert res.lost > 0


def test_first_write_insert_has_exactly_one_winner(endpoints):
    keys = [_key("once") for _ in range(15)]
    winners = first_write_race(endpoints, keys, clients=8)
    assert {k: len(w) for k, w in winners.items()} == {k: 1 for k in keys}


def test_transfers_keep_the_sum(endpoints):
    res = transfers(endpoints, _key("acct-a"), _key("acct-b"), movers=6, moves=8)
    print(f"\n[transfers] movers=6 moves=8 sum {res.total_before} -> {res.total_after} conflicts={res.conflicts}")
    assert res.errors == []
    assert res.total_after == res.total_before
    assert res.balance == (1000, 1000)  # as many moves each way
