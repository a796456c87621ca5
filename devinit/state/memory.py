"""``state.in-memory``: a dict in the server process. Lost when the server stops.

Every method runs on the event loop thread without awaiting in between, so each check and
write is atomic by construction; no lock is needed.

Listing: keys are listed in the order they were created (``_CreationLog``), not sorted. A
sorted index would cost every new key O(log n) compares plus an O(n) list insert on the
fastest write path in the house; the creation log costs a new key two appends and a delete
one store, and a page is found again by bisection on creation numbers, so a page costs
O(log n + keys examined) with no copy of the key set, and keys created or deleted during a
walk do not disturb it.
"""

from __future__ import annotations

import itertools
import time
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from devinit.errors import EtagMismatch
from devinit.state.base import (
    DeleteOp,
    KeyInfo,
    KeyPage,
    Op,
    SetOp,
    Store,
    StoredItem,
    all_or_none,
    check_limit,
    cleanup_interval,
    each_checked,
    expire_at,
    plain_count,
    precondition_holds,
)

if TYPE_CHECKING:
    from devinit.components import ComponentSpec

_SWEEP_SECONDS = 30.0
_LIST_BUDGET = 10_000  # log entries one list_keys call examines at most (a sparse prefix takes several calls)
_COMPACT_AT = 1024  # holes in the creation log before it may be compacted


@dataclass(slots=True)
class _Entry(StoredItem):
    """A stored item and its place in the creation log (kept when the key is overwritten)."""

    slot: int = 0


class _CreationLog:
    """Keys in the order they were created, each with its creation number.

    ``keys[i]`` is None where a key was deleted (a hole); holes are dropped when they are more
    than half the log, and each entry's ``slot`` is renumbered then (amortized O(1) a delete).
    ``numbers`` only grows, so a cursor holding a creation number stays valid across that.
    """

    __slots__ = ("numbers", "keys", "next", "holes")

    def __init__(self) -> None:
        self.numbers = array("q")  # ascending creation numbers, 8 bytes each
        self.keys: list[str | None] = []
        self.next = 0
        self.holes = 0

    def add(self, key: str) -> int:
        """Log a new key; its slot."""
        self.numbers.append(self.next)
        self.next += 1
        self.keys.append(key)
        return len(self.keys) - 1

    def remove(self, slot: int, items: dict[str, _Entry]) -> None:
        """Mark a deleted key's slot a hole (``items``: to renumber slots when compacting)."""
        self.keys[slot] = None
        self.holes += 1
        if self.holes > _COMPACT_AT and self.holes * 2 > len(self.keys):
            live = [(n, k) for n, k in zip(self.numbers, self.keys, strict=True) if k is not None]
            self.numbers = array("q", (n for n, _ in live))
            self.keys = [k for _, k in live]
            for i, (_, key) in enumerate(live):
                items[key].slot = i
            self.holes = 0

    def first_after(self, number: int) -> int:
        """The slot of the first key created after creation number ``number``."""
        return bisect_right(self.numbers, number)


class MemoryStore(Store):
    """Items in a dict; expired ones are dropped on access and by the periodic cleanup."""

    component_types = ("state.in-memory",)
    bounded = True  # nothing here waits
    cursor_tag = "m"

    def __init__(self, name: str, cleanup_interval: float | None = _SWEEP_SECONDS) -> None:
        super().__init__(name, cleanup_interval)
        self._items: dict[str, _Entry] = {}
        self._log = _CreationLog()
        # Etags unique within the process; a fresh store starts from a time-based base so a
        # restarted server does not hand out an etag a client still holds.
        self._etags = itertools.count(int(time.time() * 1000) << 8)

    @classmethod
    def from_spec(cls, spec: ComponentSpec) -> Self:
        return cls(spec.name, cleanup_interval=cleanup_interval(spec, _SWEEP_SECONDS))

    async def release(self) -> None:
        self._items.clear()
        self._log = _CreationLog()

    async def remove_expired(self) -> None:
        now = time.time()
        for key in [k for k, it in self._items.items() if it.expire_at is not None and it.expire_at <= now]:
            self._drop(key)

    # -- the one place items change ----------------------------------------------------

    def _live(self, key: str) -> _Entry | None:
        item = self._items.get(key)
        if item is not None and item.expire_at is not None and item.expire_at <= time.time():
            self._drop(key)
            return None
        return item

    def _drop(self, key: str) -> None:
        entry = self._items.pop(key)
        self._log.remove(entry.slot, self._items)

    def _write(self, op: Op, current: _Entry | None) -> None:
        """Apply ``op`` (already checked) to a key whose live item is ``current``."""
        if isinstance(op, SetOp):
            slot = current.slot if current is not None else self._log.add(op.key)
            self._items[op.key] = _Entry(op.value, str(next(self._etags)), expire_at(op.ttl), slot)
        elif current is not None:
            self._drop(op.key)

    def _write_now(self, op: Op) -> None:
        self._write(op, self._live(op.key))

    def _check_and_write(self, op: Op) -> bool:
        current = self._live(op.key)
        if not precondition_holds(op, current):
            return False
        self._write(op, current)
        return True

    # -- the contract ------------------------------------------------------------------

    async def get(self, key: str, strong: bool = False) -> StoredItem | None:
        return self._live(key)

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        return [self._live(k) for k in keys]

    async def apply(self, op: Op, strong: bool = False) -> bool:
        return self._check_and_write(op)

    async def set(self, op: SetOp, strong: bool = False) -> None:
        # Overrides the derived set for speed: one coroutine on the hot path, not two (and the
        # check and write inline, as before the contract derived it).
        current = self._live(op.key)
        if not precondition_holds(op, current):
            raise EtagMismatch([op.key])
        self._write(op, current)

    async def delete(self, op: DeleteOp, strong: bool = False) -> None:
        # Overrides the derived delete for speed, as set.
        if not self._check_and_write(op):
            raise EtagMismatch([op.key])

    async def apply_each(self, ops: Sequence[Op], strong: bool = False) -> list[str]:
        return each_checked(ops, self._live, self._write_now)

    async def apply_atomically(self, ops: Sequence[Op], strong: bool = False) -> list[str]:
        return all_or_none(ops, self._live, self._write_now)

    async def list_keys(self, prefix: str = "", cursor: str | None = None, limit: int = 100) -> KeyPage:
        limit = check_limit(limit)
        log = self._log
        if cursor is None:
            slot = 0
        else:
            number = plain_count(self.read_cursor(cursor))
            if number is None:
                raise self.bad_cursor(cursor, "it is not a cursor this store gave out")
            slot = log.first_after(number)
        end = min(len(log.keys), slot + _LIST_BUDGET)
        now = time.time()
        keys: list[KeyInfo] = []
        # Expired items are skipped, not dropped: dropping could compact the log under this loop.
        while slot < end and len(keys) < limit:
            key = log.keys[slot]
            slot += 1
            if key is None or not key.startswith(prefix):
                continue
            item = self._items[key]
            if item.expire_at is None or item.expire_at > now:
                keys.append(KeyInfo(key, item.etag, item.expire_at, len(item.value)))
        more = slot < len(log.keys)
        return KeyPage(keys, self.make_cursor(str(log.numbers[slot - 1])) if more else None)
