"""Store health: every loaded store pinged periodically, for /v1.0/metadata and ``devinit status``.

The two health routes keep Dapr's meaning (ready once the components are loaded), so SDK
clients still start while a store is down; whether each store answers is reported here
instead. A ping runs every ``interval`` seconds; a request that fails on a store (not an etag
mismatch) marks it down at once, and the next ping that succeeds marks it up again.

Each result carries ``checked``: when the check behind it began. A caller that must not act on
an old result (``devinit init`` and ``status``) asks for a round now (``request_check``, which
``GET /v1.0/metadata`` does) and reads until ``checked`` is later than its question.
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
#: rounds asked for on demand are at least this far apart (a client polling metadata in a loop
#: costs at most one ping per store per gap)
MIN_GAP = 0.05


@dataclass(slots=True)
class StoreHealth:
    """What is known of one store: up, down (with the error), or not checked yet."""

    status: str = "unknown"  # "up" | "down" | "unknown"
    error: str | None = None
    since: float = 0.0  # epoch seconds of the last change of status
    checked: float = 0.0  # epoch seconds when the check behind ``status`` began (0: none yet)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "since": self.since, "checked": self.checked}
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
        self._wake: asyncio.Event | None = None

    def start(self) -> None:
        """Begin pinging in the background (the first round at once)."""
        if self.stores and self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def request_check(self) -> None:
        """Ask for a round of pings now, not at the next interval (one that begins after this call)."""
        if self._wake is not None:
            self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()  # before the round: a request during it gets a round of its own
            await self.check_all()
            await asyncio.sleep(MIN_GAP)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self.interval - MIN_GAP)):
                    await self._wake.wait()

    async def check_all(self) -> None:
        """Ping every store once, concurrently."""
        await asyncio.gather(*(self._check(name, store) for name, store in self.stores.items()))

    async def _check(self, name: str, store: Store) -> None:
        began = time.time()
        try:
            async with asyncio.timeout(self.timeout):
                await store.ping()
        except StoreError as e:
            self.mark(name, "down", str(e), began)
        except TimeoutError:
            self.mark(name, "down", f"state store {name!r} did not answer a ping within {self.timeout:g}s", began)
        except Exception as e:
            self.mark(name, "down", f"state store {name!r}: ping failed: {type(e).__name__}: {e}", began)
        else:
            self.mark(name, "up", None, began)

    def mark(self, name: str, status: str, error: str | None, checked: float | None = None) -> None:
        """Record a store's status as found by a check that began at ``checked`` (default: now).

        A result older than the one recorded is dropped (a slow ping must not overwrite what a
        failed request found later). A change is logged once.
        """
        h = self.health.get(name)
        checked = time.time() if checked is None else checked
        if h is None or checked < h.checked:
            return
        h.checked = checked
        if h.status != status:
            if status == "down":
                log.warning("state store %r is down: %s", name, error)
            elif h.status == "down":
                log.info("state store %r is up again", name)
            h.since = time.time()
        h.status = status
        h.error = error
