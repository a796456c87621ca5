"""Concurrent workloads against real `devinit serve` processes, shared by tests and scripts/stress.py.

Each client is a thread with its own connection (HTTP through httpx, or gRPC through the
generated Dapr stub), so K clients are K independent callers racing on the same keys.
Nothing here asserts: the functions return what happened, and the callers decide.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import httpx
from dapr.proto import api_service_v1, api_v1, common_v1

S = "/v1.0/state/statestore"
_FIRST_WRITE = common_v1.StateOptions(concurrency=common_v1.StateOptions.CONCURRENCY_FIRST_WRITE)


@dataclass(frozen=True)
class Endpoint:
    """Where one devinit server listens."""

    http_port: int
    grpc_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@dataclass
class IncrementResult:
    """K clients x N read-modify-write increments of one counter."""

    clients: int
    ops: int
    final: int
    conflicts: int  # 409 / ABORTED answers that were retried
    errors: list[str] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return self.clients * self.ops

    @property
    def lost(self) -> int:
        return self.expected - self.final


class _HttpCounter:
    def __init__(self, ep: Endpoint, key: str, timeout: float) -> None:
        self.c = httpx.Client(base_url=ep.url, timeout=timeout)
        self.key = key

    def read(self) -> tuple[int, str | None]:
        r = self.c.get(f"{S}/{self.key}")
        if r.status_code == 204:
            return 0, None
        r.raise_for_status()
        return int(r.json()), r.headers["etag"]

    def write(self, value: int, etag: str | None, first_write: bool) -> bool:
        item: dict[str, object] = {"key": self.key, "value": value}
        if first_write:
            item["options"] = {"concurrency": "first-write"}
            if etag is not None:
                item["etag"] = etag
        r = self.c.post(S, json=[item])
        if r.status_code == 409:
            return False
        if r.status_code != 204:
            raise RuntimeError(f"HTTP save answered {r.status_code}: {r.text}")
        return True

    def close(self) -> None:
        self.c.close()


class _GrpcCounter:
    def __init__(self, ep: Endpoint, key: str, timeout: float) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{ep.grpc_port}")
        self.stub = api_service_v1.DaprStub(self.channel)
        self.key = key
        self.timeout = timeout

    def read(self) -> tuple[int, str | None]:
        r = self.stub.GetState(api_v1.GetStateRequest(store_name="statestore", key=self.key), timeout=self.timeout)
        if not r.etag:
            return 0, None
        return int(r.data), r.etag

    def write(self, value: int, etag: str | None, first_write: bool) -> bool:
        item = common_v1.StateItem(key=self.key, value=str(value).encode())
        if first_write:
            item.options.CopyFrom(_FIRST_WRITE)
            if etag is not None:
                item.etag.value = etag
        try:
            self.stub.SaveState(api_v1.SaveStateRequest(store_name="statestore", states=[item]), timeout=self.timeout)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.ABORTED:
                return False
            raise
        return True

    def close(self) -> None:
        self.channel.close()


def run_threads(n: int, target: Callable[[int], None]) -> list[str]:
    """Run ``target(i)`` for i in range(n) on n threads; the errors they raised, as text."""
    errors: list[str] = []

    def wrap(i: int) -> None:
        try:
            target(i)
        except BaseException as e:
            errors.append(f"client {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def increments(
    endpoints: Sequence[Endpoint],
    key: str,
    clients: int,
    ops: int,
    first_write: bool,
    grpc_share: float = 0.0,
    timeout: float = 30.0,
) -> IncrementResult:
    """``clients`` threads, spread over ``endpoints``, each adding 1 to ``key`` ``ops`` times.

    With ``first_write`` each increment carries the etag it read (first-write when the key is
    missing) and retries on a conflict; without, it is a blind last-write save. A share
    ``grpc_share`` of the clients speaks gRPC, the rest HTTP.
    """
    conflicts = 0
    lock = threading.Lock()
    grpc_clients = round(clients * grpc_share)

    def client(i: int) -> None:
        nonlocal conflicts
        ep = endpoints[i % len(endpoints)]
        counter = _GrpcCounter(ep, key, timeout) if i < grpc_clients else _HttpCounter(ep, key, timeout)
        try:
            for _ in range(ops):
                while True:
                    value, etag = counter.read()
                    if counter.write(value + 1, etag, first_write):
                        break
                    with lock:
                        conflicts += 1
        finally:
            counter.close()

    errors = run_threads(clients, client)
    final, _ = _HttpCounter(endpoints[0], key, timeout).read()
    return IncrementResult(clients, ops, final, conflicts, errors)


@dataclass
class TransferResult:
    """Movers moving one unit at a time between two keys in transactions."""

    movers: int
    moves: int
    total_before: int
    total_after: int
    balance: tuple[int, int]
    conflicts: int
    errors: list[str] = field(default_factory=list)


def transfers(
    endpoints: Sequence[Endpoint], a: str, b: str, movers: int, moves: int, start: int = 1000, timeout: float = 30.0
) -> TransferResult:
    """Half the movers move a->b, half b->a, each ``moves`` times, with etags, in transactions."""
    first = httpx.post(endpoints[0].url + S, json=[{"key": a, "value": start}, {"key": b, "value": start}], timeout=timeout)
    first.raise_for_status()
    conflicts = 0
    lock = threading.Lock()

    def mover(i: int) -> None:
        nonlocal conflicts
        src, dst = (a, b) if i % 2 else (b, a)
        with httpx.Client(base_url=endpoints[i % len(endpoints)].url, timeout=timeout) as c:
            for _ in range(moves):
                while True:
                    got = {o["key"]: o for o in c.post(f"{S}/bulk", json={"keys": [src, dst]}).json()}
                    ops = [
                        {"operation": "upsert", "request": {"key": src, "value": got[src]["data"] - 1, "etag": got[src]["etag"]}},
                        {"operation": "upsert", "request": {"key": dst, "value": got[dst]["data"] + 1, "etag": got[dst]["etag"]}},
                    ]
                    r = c.post(f"{S}/transaction", json={"operations": ops})
                    if r.status_code == 204:
                        break
                    if r.status_code != 409:
                        raise RuntimeError(f"transaction answered {r.status_code}: {r.text}")
                    with lock:
                        conflicts += 1

    errors = run_threads(movers, mover)
    got = {o["key"]: o["data"] for o in httpx.post(endpoints[0].url + S + "/bulk", json={"keys": [a, b]}, timeout=timeout).json()}
    return TransferResult(movers, moves, 2 * start, got[a] + got[b], (got[a], got[b]), conflicts, errors)


def first_write_race(
    endpoints: Sequence[Endpoint], keys: Sequence[str], clients: int, timeout: float = 30.0
) -> dict[str, list[int]]:
    """Every client tries to create every key with first-write; returns, per key, which clients won."""
    winners: dict[str, list[int]] = {k: [] for k in keys}
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(base_url=endpoints[i % len(endpoints)].url, timeout=timeout) as c:
            for k in keys:
                r = c.post(S, json=[{"key": k, "value": i, "options": {"concurrency": "first-write"}}])
                if r.status_code == 204:
                    with lock:
                        winners[k].append(i)
                elif r.status_code != 409:
                    raise RuntimeError(f"first-write answered {r.status_code}: {r.text}")

    errors = run_threads(clients, client)
    if errors:
        raise RuntimeError("; ".join(errors))
    return winners


@dataclass
class Probe:
    """What clients hammering a server saw around a store outage."""

    answers: dict[int, int] = field(default_factory=dict)  # status -> count
    not_json_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)  # timeouts (hangs) and resets
    first_error_at: float | None = None  # monotonic time of the first 500
    last_error_at: float | None = None  # monotonic time of the last 500
    first_ok_after_error: float | None = None  # first success after mark_restart()
    restarted_at: float | None = None

    def mark_outage(self) -> int:
        """Start timing an outage now (errors seen before, e.g. store timeouts under load, are
        not its first error); returns the number of 500s seen before."""
        self.first_error_at = self.last_error_at = self.first_ok_after_error = None
        return self.answers.get(500, 0)

    def mark_restart(self) -> float:
        """The store is being brought back now: the next success times the recovery."""
        self.restarted_at = time.monotonic()
        self.first_ok_after_error = None
        return self.restarted_at

    def record(self, status: int, ok_json: bool, text: str, now: float) -> None:
        self.answers[status] = self.answers.get(status, 0) + 1
        if status >= 500:
            if not ok_json:
                self.not_json_errors.append(f"{status} {text[:200]}")
            self.first_error_at = self.first_error_at or now
            self.last_error_at = now
        elif self.restarted_at is not None and now >= self.restarted_at and self.first_ok_after_error is None:
            # only after the restart: answers to requests served before the outage can be
            # recorded after its first error
            self.first_ok_after_error = now


def hammer(endpoint: Endpoint, clients: int, stop: threading.Event, probe: Probe, timeout: float) -> list[threading.Thread]:
    """Start ``clients`` threads doing save+get in a loop until ``stop``; every answer is recorded."""
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(base_url=endpoint.url, timeout=timeout) as c:
            n = 0
            while not stop.is_set():
                n += 1
                calls = (
                    lambda n=n: c.post(S, json=[{"key": f"hammer-{i}", "value": n}]),
                    lambda: c.get(f"{S}/hammer-{i}"),
                )
                for call in calls:
                    try:
                        r = call()
                    except httpx.HTTPError as e:
                        with lock:
                            probe.transport_errors.append(f"{type(e).__name__}: {e}")
                        continue
                    ok_json = True
                    if r.status_code >= 500:
                        try:
                            ok_json = "errorCode" in r.json() and r.headers["content-type"].startswith("application/json")
                        except (ValueError, KeyError):
                            ok_json = False
                    with lock:
                        probe.record(r.status_code, ok_json, r.text, time.monotonic())
                time.sleep(0.01)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    return threads
