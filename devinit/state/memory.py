"""``state.in-memory``: a dict in the server process. Lost when the server stops.

Every method runs on the event loop thread without awaiting in between, so each check and
write is atomic by construction; no lock is needed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence

from devinit.errors import EtagMismatch
from devinit.state.base import DeleteOp, Op, SetOp, Store, StoredItem, expire_at, failed_keys_in_order, precondition_holds

_SWEEP_SECONDS = 30.0


class MemoryStore(Store):
    """Items in a dict; expired ones are dropped on access and by a periodic sweep."""

    bounded = True  # nothing here waits

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._items: dict[str, StoredItem] = {}
        # Etags unique within the process; a fresh store starts from a time-based base so a
        # restarted server does not hand out an etag a client still holds.
        self._etags = itertools.count(int(time.time() * 1000) << 8)
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._items.clear()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            now = time.time()
            for key in [k for k, it in self._items.items() if it.expire_at is not None and it.expire_at <= now]:
                del self._items[key]

    def _live(self, key: str) -> StoredItem | None:
        item = self._items.get(key)
        if item is not None and item.expire_at is not None and item.expire_at <= time.time():
            del self._items[key]
            return None
        return item

    def _apply(self, op: Op) -> None:
        if isinstance(op, SetOp):
            self._items[op.key] = StoredItem(op.value, str(next(self._etags)), expire_at(op.ttl))
        else:
            self._items.pop(op.key, None)

    async def get(self, key: str, strong: bool = False) -> StoredItem | None:
        return self._live(key)

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        return [self._live(k) for k in keys]

    async def set(self, op: SetOp, strong: bool = False) -> None:
        if not precondition_holds(op, self._live(op.key)):
            raise EtagMismatch([op.key])
        self._apply(op)

    async def delete(self, op: DeleteOp, strong: bool = False) -> None:
        if not precondition_holds(op, self._live(op.key)):
            raise EtagMismatch([op.key])
        self._apply(op)

    async def scan(self, prefix: str) -> list[tuple[str, StoredItem]]:
        now = time.time()
        return [(k, it) for k, it in self._items.items() if k.startswith(prefix) and (it.expire_at is None or it.expire_at > now)]

    async def transact(self, ops: Sequence[Op], strong: bool = False) -> None:
        failed = failed_keys_in_order(ops, self._live)
        if failed:
            raise EtagMismatch(failed)
        for op in ops:
            self._apply(op)
