"""The setup record: what ``devinit init`` set up for one home folder, as a typed value.

Stored as JSON in ``paths.setup_file(key)``, owner-only (it holds the Redis password). The
``schema`` number says which shape a file has: schema 1 is the untyped dict devinit wrote
before this class (no ``schema`` key; the same fields), schema 2 adds the number. Reading is
lenient (a field of the wrong type reads as missing, so a damaged file makes init start from
the defaults rather than fail); a file from a newer devinit is refused with what to do.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from devinit import paths
from devinit.atomic import write_atomic
from devinit.errors import UsageError

SCHEMA = 2


@dataclass
class RedisSetup:
    """The Redis container init made: image, host port, password, names."""

    image: str
    port: int
    password: str
    container: str
    volume: str


@dataclass
class ComponentSetup:
    """The component file init wrote, and the sha256 of what it wrote (None: not devinit's)."""

    path: str
    sha256: str | None = None


@dataclass
class SetupRecord:
    """Everything init remembers about one home folder."""

    home: str
    store: str | None = None  # "redis", "sqlite", or None: init has not run
    http_port: int | None = None
    grpc_port: int | None = None
    redis: RedisSetup | None = None
    sqlite_db: str | None = None
    component: ComponentSetup | None = None
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (keys as schema 1 had them, plus ``schema``)."""
        out: dict[str, Any] = {"schema": SCHEMA, "home": self.home, "store": self.store}
        out["http_port"], out["grpc_port"] = self.http_port, self.grpc_port
        if self.redis is not None:
            out["redis"] = asdict(self.redis)
        if self.sqlite_db is not None:
            out["sqlite"] = {"db": self.sqlite_db}
        if self.component is not None:
            out["component"] = asdict(self.component)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], home: str) -> SetupRecord:
        """Read schema 1 or 2; ``home`` fills in a record that does not name its own."""
        schema = data.get("schema", 1)
        if not isinstance(schema, int) or schema > SCHEMA:
            raise UsageError(
                f"the setup record for {home} was written by a newer devinit (schema {schema!r}, this one reads up to "
                f"{SCHEMA}). Upgrade devinit, or run 'devinit uninstall' with that version first"
            )
        redis = _dict(data.get("redis"))
        redis_setup = None
        if all(isinstance(redis.get(k), str) for k in ("image", "password", "container", "volume")) and _int(redis.get("port")):
            redis_setup = RedisSetup(redis["image"], int(redis["port"]), redis["password"], redis["container"], redis["volume"])
        comp = _dict(data.get("component"))
        component = None
        if isinstance(comp.get("path"), str):
            component = ComponentSetup(comp["path"], comp.get("sha256") if isinstance(comp.get("sha256"), str) else None)
        store = data.get("store")
        return cls(
            home=data["home"] if isinstance(data.get("home"), str) else home,
            store=store if store in ("redis", "sqlite") else None,
            http_port=_int(data.get("http_port")),
            grpc_port=_int(data.get("grpc_port")),
            redis=redis_setup,
            sqlite_db=_str(_dict(data.get("sqlite")).get("db")),
            component=component,
        )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def read(key: str, home: str) -> SetupRecord:
    """The record for the home folder named by ``key``; an empty one when there is none (or it is unreadable)."""
    try:
        data = json.loads(paths.setup_file(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return SetupRecord(home)
    return SetupRecord.from_dict(data, home) if isinstance(data, dict) else SetupRecord(home)


def write(key: str, record: SetupRecord) -> list[str]:
    """Write the record (owner-only); returns warnings where the file could not be protected."""
    return write_atomic(paths.setup_file(key), json.dumps(record.to_dict(), indent=2, sort_keys=True).encode())
