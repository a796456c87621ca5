"""State stores: the contract (``base``) and one module per store type.

``create_store`` turns a validated component spec into a store, importing only the module
that store needs (the CLI stays fast when Redis is not in use).
"""

from __future__ import annotations

from devinit.components import ComponentSpec, parse_bool, parse_duration
from devinit.errors import ComponentError
from devinit.state.base import Store

MAX_TTL_SECONDS = 2**31 - 1  # the largest TTL every store takes (PostgreSQL intervals, Redis EXPIRE)

#: metadata every store accepts (handled by the runtime or ignored on purpose)
COMMON_METADATA = {"keyPrefix", "actorStateStore", "ttlInSeconds", "queryIndexes", "outboxPublishPubsub"}


def _int(spec: ComponentSpec, item: str, default: int) -> int:
    raw = spec.metadata.get(item)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise spec.error(item, f"{raw!r} is not an integer") from None


def _seconds(spec: ComponentSpec, item: str, default: float | None) -> float | None:
    raw = spec.metadata.get(item)
    if raw is None or raw == "":
        return default
    try:
        return parse_duration(raw, item)
    except ValueError as e:
        raise spec.error(item, str(e)) from None


def _timeout(spec: ComponentSpec, item: str, default: float) -> float:
    """A timeout in seconds; it must be positive (devinit never waits forever on a store)."""
    seconds = _seconds(spec, item, default)
    assert seconds is not None
    if seconds <= 0:
        raise spec.error(item, f"{spec.metadata[item]!r} must be a positive duration, e.g. 2s (devinit never waits forever)")
    return seconds


def _bool(spec: ComponentSpec, item: str) -> bool:
    try:
        return parse_bool(spec.metadata.get(item, "false"), item)
    except ValueError as e:
        raise spec.error(item, str(e)) from None


def _table(spec: ComponentSpec) -> str:
    table = spec.metadata.get("tableName", "state") or "state"
    if not table.replace("_", "").isalnum() or not table.isascii():
        raise spec.error("tableName", f"{table!r} is not a valid table name (letters, digits, _)")
    return table


def _cleanup(spec: ComponentSpec) -> float | None:
    """``cleanupInterval`` in seconds; 0 or negative turns the periodic cleanup off."""
    seconds = _seconds(spec, "cleanupInterval", 600.0)
    return seconds if seconds and seconds > 0 else None


def create_store(spec: ComponentSpec) -> Store:
    """Build the store ``spec`` declares; raise ``ComponentError`` naming the bad field."""
    if spec.type == "state.in-memory":
        from devinit.state.memory import MemoryStore

        return MemoryStore(spec.name)
    if spec.type == "state.sqlite":
        from devinit.state.sqlite import SqliteStore

        database = spec.metadata.get("connectionString", "")
        if not database:
            raise spec.error("connectionString", "missing; give a database file path or :memory:")
        return SqliteStore(
            spec.name,
            database,
            table=_table(spec),
            busy_timeout=_timeout(spec, "busyTimeout", 5.0),
            cleanup_interval=_cleanup(spec),
        )
    if spec.type == "state.redis":
        from devinit.state.redis import RedisStore

        host_port = spec.metadata.get("redisHost", "")
        if not host_port:
            raise spec.error("redisHost", "missing; give host:port, e.g. 127.0.0.1:6379")
        redis_type = spec.metadata.get("redisType", "node") or "node"
        if redis_type not in ("node", "cluster"):
            raise spec.error("redisType", f"{redis_type!r} is not node or cluster")
        if "," in host_port and redis_type != "cluster":
            raise spec.error("redisHost", f"{host_port!r} lists several hosts: one host:port, or redisType: cluster")
        addresses = [a.strip() for a in host_port.split(",")] if redis_type == "cluster" else [host_port]
        seeds: list[tuple[str, int]] = []
        for address in addresses:
            host, sep, port_text = address.rpartition(":")
            if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
                example = "127.0.0.1:7000,127.0.0.1:7001" if redis_type == "cluster" else "127.0.0.1:6379"
                raise spec.error("redisHost", f"{address!r} is not host:port, e.g. {example}")
            seeds.append((host.strip("[]"), int(port_text)))
        failover = _bool(spec, "failover")
        master = spec.metadata.get("sentinelMasterName", "")
        if failover and not master:
            raise spec.error("sentinelMasterName", "missing; failover: true needs the Sentinel master's name")
        if redis_type == "cluster" and failover:
            raise spec.error("failover", "Sentinel failover is for redisType node; a Redis Cluster fails over by itself")
        if redis_type == "cluster" and _int(spec, "redisDB", 0) != 0:
            raise spec.error("redisDB", "a Redis Cluster has only database 0; remove redisDB")
        return RedisStore(
            spec.name,
            *seeds[0],
            password=spec.metadata.get("redisPassword") or None,
            username=spec.metadata.get("redisUsername") or None,
            db=_int(spec, "redisDB", 0),
            tls=_bool(spec, "enableTLS"),
            dial_timeout=_timeout(spec, "dialTimeout", 2.0),
            read_timeout=_timeout(spec, "readTimeout", 3.0),
            sentinel_master=master if failover else None,
            cluster_seeds=seeds if redis_type == "cluster" else (),
        )
    if spec.type == "state.postgresql":
        try:
            from devinit.state.postgres import PostgresStore
        except ImportError:
            raise ComponentError(
                str(spec.path), "spec.type", "state.postgresql needs psycopg: pip install 'devinit[postgres]'"
            ) from None

        conninfo = spec.metadata.get("connectionString", "")
        if not conninfo:
            raise spec.error("connectionString", "missing; e.g. host=127.0.0.1 user=postgres dbname=dapr")
        return PostgresStore(
            spec.name,
            conninfo,
            table=_table(spec),
            timeout=_timeout(spec, "timeout", 5.0),
            cleanup_interval=_cleanup(spec),
        )
    raise ComponentError(str(spec.path), "spec.type", f"{spec.type} is not supported yet")


def default_ttl(spec: ComponentSpec) -> int | None:
    """The component-level ``ttlInSeconds`` (applies to writes that give none)."""
    raw = spec.metadata.get("ttlInSeconds")
    if raw is None or raw == "":
        return None
    try:
        ttl = int(raw)
    except ValueError:
        raise spec.error("ttlInSeconds", f"{raw!r} is not an integer number of seconds") from None
    if ttl == -1:
        return None
    if ttl <= 0 or ttl > MAX_TTL_SECONDS:
        raise spec.error("ttlInSeconds", f"{ttl} must be a number of seconds from 1 to {MAX_TTL_SECONDS}, or -1 for none")
    return ttl
