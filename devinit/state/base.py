"""The store contract: what every state store implements, the same way.

A store sees full keys (the runtime has already validated them and added the key prefix)
and opaque values (bytes). It never sees HTTP or gRPC. The rules every store follows are
those of docs/state-api.md ("Concurrency", "Consistency", "TTL"):

- an etag is an opaque string; every write makes a new one;
- ``SetOp`` with an etag applies only if a live item exists with that etag; with
  ``first_write`` and no etag only if no live item exists; otherwise it is an upsert;
- ``DeleteOp`` with an etag must match; without one it removes the item if present;
- expired items are missing for every read and every check;
- ``transact`` applies its operations in order, all or nothing; each check sees the
  effect of the operations before it;
- the check and the write are one atomic step in the store, across processes.

Failures are raised as ``EtagMismatch`` (a check failed) or ``StoreError`` (anything else,
with a message naming the store and what failed).
"""

from __future__ import annotations

import abc
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from devinit.errors import EtagMismatch


@dataclass(slots=True)
class StoredItem:
    """A live item as read from a store."""

    value: bytes
    etag: str
    expire_at: float | None = None  # epoch seconds; None: no expiry


@dataclass(slots=True)
class SetOp:
    """Write ``value`` under ``key``, subject to the etag / first-write rules."""

    key: str
    value: bytes
    etag: str | None = None
    first_write: bool = False
    ttl: int | None = None  # seconds > 0; None: no expiry (clears an earlier one)


@dataclass(slots=True)
class DeleteOp:
    """Remove ``key``; with an etag, only if it matches."""

    key: str
    etag: str | None = None


Op = SetOp | DeleteOp


def precondition_holds(op: Op, current: StoredItem | None) -> bool:
    """Whether ``op`` may be applied to a key whose live item is ``current``."""
    if op.etag:
        return current is not None and current.etag == op.etag
    if isinstance(op, SetOp) and op.first_write:
        return current is None
    return True


def failed_keys_in_order(ops: Sequence[Op], read: Callable[[str], StoredItem | None]) -> list[str]:
    """Check a transaction's operations in order against ``read`` plus their own effects.

    Returns the keys whose check fails (empty: the whole transaction may be applied).
    A key written earlier in the transaction has an etag the caller cannot know, so a
    later etag check on it fails, and a later first-write on it fails too.
    """
    overlay: dict[str, StoredItem | None] = {}
    failed: list[str] = []
    for op in ops:
        current = overlay[op.key] if op.key in overlay else read(op.key)
        if not precondition_holds(op, current):
            failed.append(op.key)
            continue
        overlay[op.key] = StoredItem(b"", "\0pending") if isinstance(op, SetOp) else None
    return failed


def new_etag() -> str:
    """A fresh etag for stores without a version counter: a random decimal below 2**53.

    Decimal, so that the Dapr how-to's unquoted ``"etag": <etag>`` is valid JSON on every store
    (docs/state-api.md leniency: a numeric etag is taken as its string), and below 2**53, so that a
    JavaScript client parsing it as a number keeps it exact.
    """
    return str(secrets.randbits(52) | 1 << 51)  # always 16 digits: no leading-zero look-alikes


def expire_at(ttl: int | None, now: float | None = None) -> float | None:
    """The epoch second at which an item written now with ``ttl`` expires."""
    if ttl is None:
        return None
    return (time.time() if now is None else now) + ttl


class Store(abc.ABC):
    """One configured state store. Methods are coroutines; the runtime calls them."""

    #: capabilities reported by the metadata endpoint
    features: ClassVar[tuple[str, ...]] = ("ETAG", "TRANSACTIONAL", "TTL", "QUERY_API")
    #: True when every call ends within the store's own timeouts, so the runtime need not
    #: wrap it in a deadline of its own (that costs about 5 us a call on the hot path)
    bounded: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name

    async def start(self) -> None:  # noqa: B027 - an optional hook: most stores need no start
        """Open connections or files. A store that is down may still start (and fail calls)."""

    async def close(self) -> None:  # noqa: B027 - an optional hook: most stores need no close
        """Release connections and files."""

    async def ping(self) -> None:  # noqa: B027 - an optional hook: most stores need no ping
        """Raise ``StoreError`` unless the store answers."""

    @abc.abstractmethod
    async def get(self, key: str, strong: bool = False) -> StoredItem | None:
        """The live item under ``key``, or None."""

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        """The live items under ``keys``, in order (None where missing)."""
        return [await self.get(k) for k in keys]

    @abc.abstractmethod
    async def set(self, op: SetOp, strong: bool = False) -> None:
        """Apply one write; raise ``EtagMismatch`` if its check fails."""

    async def set_many(self, ops: Sequence[SetOp], strong: bool = False) -> list[str]:
        """Apply writes independently; return the keys whose check failed."""
        failed: list[str] = []
        for op in ops:
            try:
                await self.set(op, strong)
            except EtagMismatch:
                failed.append(op.key)
        return failed

    @abc.abstractmethod
    async def delete(self, op: DeleteOp, strong: bool = False) -> None:
        """Remove one item; raise ``EtagMismatch`` if its check fails."""

    async def delete_many(self, ops: Sequence[DeleteOp], strong: bool = False) -> list[str]:
        """Apply deletes independently; return the keys whose check failed."""
        failed: list[str] = []
        for op in ops:
            try:
                await self.delete(op, strong)
            except EtagMismatch:
                failed.append(op.key)
        return failed

    @abc.abstractmethod
    async def scan(self, prefix: str) -> list[tuple[str, StoredItem]]:
        """Every live item whose key starts with ``prefix`` (for the query API)."""

    @abc.abstractmethod
    async def transact(self, ops: Sequence[Op], strong: bool = False) -> None:
        """Apply all operations in order, or none; raise ``EtagMismatch`` naming failed keys."""
