"""Shared fixtures: real Redis servers, real `devinit serve` processes, one per store kind.

Under CI=true a skipped test is reported as a failure: tests that need Docker, Redis or a
JS runtime must run there, not skip.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import CI, DevinitServer, PostgresServer, RedisClusterServers, RedisServer, point_sdk_at, write_component

STORES = ["memory", "sqlite", "redis", "postgres"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (skips count as failures in CI): {report.longrepr}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (tests use unique keys, not FLUSHALL)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """One real three-master Redis Cluster for the session (tests use unique keys)."""
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One real PostgreSQL cluster for the session (tests use unique keys or tables)."""
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    yield server
    server.stop()


def store_component(
    kind: str, folder: Path, name: str, redis: RedisServer | PostgresServer | None, extra: dict[str, str] | None = None
) -> Path:
    """Write a component called ``name`` of store ``kind`` into ``folder`` (``redis`` is the server for redis/postgres)."""
    extra = dict(extra or {})
    if kind == "memory":
        return write_component(folder, name, "state.in-memory", extra)
    if kind == "sqlite":
        return write_component(folder, name, "state.sqlite", {"connectionString": str(folder.parent / f"{name}.db"), **extra})
    if kind == "postgres":
        assert isinstance(redis, PostgresServer)
        return write_component(folder, name, "state.postgresql", {"connectionString": redis.conninfo, **extra})
    assert isinstance(redis, RedisServer)
    return write_component(folder, name, "state.redis", {"redisHost": redis.host, **extra})


def backing_server(request: pytest.FixtureRequest, kind: str) -> RedisServer | RedisClusterServers | PostgresServer | None:
    """The session's database server a store of ``kind`` needs, if any."""
    if kind == "redis":
        return request.getfixturevalue("redis_server")
    if kind == "redis-cluster":
        return request.getfixturevalue("redis_cluster")
    if kind == "postgres":
        return request.getfixturevalue("postgres_server")
    return None


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevinitServer]:
    """A `devinit serve` with one store called ``statestore`` of each kind in turn."""
    kind: str = request.param
    redis = backing_server(request, kind)
    folder = tmp_path_factory.mktemp(f"serve-{kind}") / "components"
    store_component(kind, folder, "statestore", redis)
    srv = DevinitServer(folder)
    srv.kind = kind  # type: ignore[attr-defined]
    yield srv
    srv.stop()


@pytest.fixture
def sdk_env(server: DevinitServer, monkeypatch: pytest.MonkeyPatch) -> DevinitServer:
    """``server``, with the official Python SDK pointed at it (DAPR_HTTP_PORT / DAPR_GRPC_PORT)."""
    point_sdk_at(monkeypatch, server)
    return server


@pytest.fixture
def dapr(sdk_env: DevinitServer) -> Iterator[Any]:
    """The official Python SDK's DaprClient on ``server`` (imported here: only SDK tests pay for it)."""
    from dapr.clients import DaprClient

    with DaprClient() as client:
        yield client


@pytest.fixture
def stub(server: DevinitServer) -> Iterator[Any]:
    """The SDK's generated stub on ``server``, for fields the DaprClient does not expose."""
    import grpc
    from dapr.proto import api_service_v1

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield api_service_v1.DaprStub(channel)


@pytest.fixture
def client(server: DevinitServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


@pytest.fixture
def key() -> str:
    """A key no other test uses (stores are shared across a module)."""
    return f"k-{uuid.uuid4().hex[:12]}"
