"""Durability: strong writes acknowledged before a crash are all there after it.

Writers run while the process that holds the data is killed with SIGKILL (the devinit server
for SQLite, the PostgreSQL server for PostgreSQL); every strong write that was acknowledged
must be found after the restart. Eventual writes are measured the same way and printed, not
asserted: the contract promises them nothing beyond the store's own policy. (A SIGKILL loses
only what the process had not yet handed to the kernel; an OS crash or power loss, which
fsync protects against, cannot be produced here.) The Redis container case is in
tests/test_docker_reliability.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from conftest import store_component

from support import DevinitServer, PostgresServer
from workloads import run_threads

S = "/v1.0/state/statestore"
WRITERS = 4  # 2 strong, 2 eventual


def write_until_failure(
    url: str, tag: str, strong: bool, acked: list[str], started: threading.Event, stop: threading.Event, headers: dict[str, str]
) -> None:
    """Save distinct keys one by one; record each acknowledged one; stop at the first failure."""
    options = {"consistency": "strong" if strong else "eventual"}
    with httpx.Client(base_url=url, timeout=15, headers=headers) as c:
        i = 0
        while not stop.is_set():
            key = f"{tag}-{i}"
            try:
                r = c.post(S, json=[{"key": key, "value": i, "options": options}])
            except httpx.HTTPError:
                return  # the server or the store went away mid-request: outcome unknown, not counted
            if r.status_code != 204:
                return
            acked.append(key)
            if len(acked) >= 20:
                started.set()
            i += 1


def crash_during_writes(
    url: str, crash: Callable[[], object], prefix: str, headers: dict[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Run strong and eventual writers, call ``crash`` once they are busy; the acknowledged keys."""
    strong: list[str] = []
    eventual: list[str] = []
    started = threading.Event()
    stop = threading.Event()

    def writer(i: int) -> None:
        acked = strong if i % 2 == 0 else eventual
        write_until_failure(url, f"{prefix}-{'s' if i % 2 == 0 else 'e'}{i}", i % 2 == 0, acked, started, stop, headers or {})

    def crasher(_: int) -> None:
        started.wait(30)
        time.sleep(0.3)  # writes in flight when the crash comes
        crash()
        time.sleep(2)
        stop.set()  # writers that did not notice (a store that accepts again) stop now

    errors = run_threads(WRITERS + 1, lambda i: crasher(i) if i == WRITERS else writer(i))
    assert errors == [], errors
    return strong, eventual


def missing(url: str, keys: list[str], headers: dict[str, str] | None = None) -> list[str]:
    """The keys bulk get does not find; retried while the store reconnects."""
    for _ in range(20):
        r = httpx.post(url + S + "/bulk", json={"keys": keys}, headers=headers, timeout=15)
        if r.status_code == 200:
            return [o["key"] for o in r.json() if "data" not in o]
        time.sleep(0.25)
    raise AssertionError(f"bulk get kept failing: {r.status_code} {r.text}")


def assert_strong_writes_survive(url: str, crash: Callable[[], None], restart: Callable[[], None], tag: str, label: str) -> None:
    """Crash during strong and eventual writes, restart, and check every acknowledged strong
    write is there (eventual losses are reported, not asserted)."""
    strong, eventual = crash_during_writes(url, crash, tag)
    restart()
    lost_strong = missing(url, strong)
    lost_eventual = missing(url, eventual)
    print(
        f"\n[durability {label}] strong acked {len(strong)} lost {len(lost_strong)}; "
        f"eventual acked {len(eventual)} lost {len(lost_eventual)}"
    )
    assert len(strong) >= 10
    assert lost_strong == []


def test_sqlite_strong_writes_survive_kill_9_of_the_server(tmp_path: Path):
    folder = tmp_path / "components"
    store_component("sqlite", folder, "statestore", None)
    srv = DevinitServer(folder)
    try:
        assert_strong_writes_survive(srv.url, lambda: srv.stop(kill=True), srv.start, "sq", "sqlite kill -9 server")
    finally:
        srv.stop()


def test_postgres_strong_writes_survive_kill_9_of_postgres(tmp_path: Path):
    pg = PostgresServer(tmp_path / "pg")
    folder = tmp_path / "components"
    store_component("postgres", folder, "statestore", pg, {"timeout": "2s"})
    srv = DevinitServer(folder)
    try:
        assert_strong_writes_survive(srv.url, lambda: pg.stop(fast=True), pg.start, "pg", "postgres kill -9 postmaster")
    finally:
        srv.stop()
        pg.stop()
