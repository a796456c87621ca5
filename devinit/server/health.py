"""Store health: every loaded store pinged periodically, for /v1.0/metadata and ``devinit status``.

The two health routes keep Dapr's meaning (ready once the components are loaded), so SDK
clients still start while a store is down; whether each store answers is reported here
instead. A ping runs every ``interval`` seconds; a request that fails on a store (not an etag
mismatch) marks it down at once, and the next ping that succeeds marks it up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from devinit.errors import StoreError
from devinit.state.base import Store

log = logging.getLogger("devinit.health")

DEFAULT_INTERVAL = 2.0


@dataclass(slots=True)
class StoreHealth:
    """What is known of one store: up, down (with the error), or not checked yet."""

    status: str = "unknown"  # "up" | "down" | "unknown"
    error: str | None = None
    since: float = 0.0  # epoch seconds of the last change of status

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "since": self.since}
        if self.error:
            out["error"] = self.error
        return out


class HealthMonitor:
    """Pings ``stores`` every ``interval`` seconds (each ping bounded by ``timeout``)."""

    def __init__(self, stores: Mapping[str, Store], interval: float = DEFAULT_INTERVAL, timeout: float = 5.0) -> None:
        self.stores = dict(stores)
        self.interval = interval
        self.timeout = timeout
        self.health = {name: StoreHealth(since=time.time()) for name in self.stores}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin pinging in the background (the first round at once)."""
        if self.stores and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self.interval)

    async def check_all(self) -> None:
        """Ping every store once, concurrently."""
        await asyncio.gather(*(self._check(name, store) for name, store in self.stores.items()))

    async def _check(self, name: str, store: Store) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await store.ping()
        except StoreError as e:
            self.mark(name, "down", str(e))
        except TimeoutError:
            self.mark(name, "down", f"state store {name!r} did not answer a ping within {self.timeout:g}s")
        except Exception as e:
            self.mark(name, "down", f"state store {name!r}: ping failed: {type(e).__name__}: {e}")
        else:
            self.mark(name, "up", None)

    def mark(self, name: str, status: str, error: str | None) -> None:
        """Record a store's status; a change is logged once."""
        h = self.health.get(name)
        if h is None:
            return
        if h.status != status:
            if status == "down":
                log.warning("state store %r is down: %s", name, error)
            elif h.status == "down":
                log.info("state store %r is up again", name)
            h.since = time.time()
        h.status = status
        h.error = error
