"""The store contract: what every state store implements, and what it gets for free.

A store sees full keys (the runtime has already validated them and added the key prefix)
and opaque values (bytes). It never sees HTTP or gRPC. The rules every store follows are
those of docs/state-api.md ("Concurrency", "Consistency", "TTL"):

- an etag is an opaque string; every write makes a new one;
- ``SetOp`` with an etag applies only if a live item exists with that etag; with
  ``first_write`` and no etag only if no live item exists; otherwise it is an upsert;
- ``DeleteOp`` with an etag must match; without one it removes the item if present;
- ``SetOp.ttl`` None means no expiry, and clears an earlier one;
- expired items are missing for every read, every check and every listing;
- an atomic batch applies its operations in order, all or nothing; each check sees the
  effect of the operations before it;
- the check and the write are one atomic step in the store, across processes.

Writing a store (docs/architecture.md, "The store contract"): subclass ``Store``, declare
``component_types`` and add the module to ``STORE_MODULES`` (state/__init__.py), and implement
the core: ``from_spec``, ``get``, ``apply`` (one operation with its check), ``apply_atomically``
(several, all or nothing) and ``list_keys``; optionally ``open``/``release``/``ping``,
``bulk_get`` and ``apply_each`` (one round trip for many), and ``remove_expired`` (run every
``cleanup_interval`` seconds). ``set``, ``delete``, ``set_many``, ``delete_many``,
``transact``, ``scan`` (the query API's input) and the cleanup loop are derived here.

Failures are raised as ``EtagMismatch`` (a check failed), ``StoreRefused`` (the request cannot
be done as given) or ``StoreError`` (anything else, with a message naming the store and what
failed).
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Self

from devinit.errors import BadCursor, EtagMismatch, StoreError, StoreRefused

if TYPE_CHECKING:
    from devinit.components import ComponentSpec

log = logging.getLogger("devinit.state")

#: the largest TTL every store takes (PostgreSQL intervals, Redis EXPIRE): 68 years
MAX_TTL_SECONDS = 2**31 - 1
#: the most keys one ``list_keys`` page may ask for
MAX_LIST_LIMIT = 1000
#: bytes of values a ``scan`` (the query API) reads at most: it holds them, and a query parses them
MAX_SCAN_BYTES = 16 * 1024 * 1024


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


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One live key as a listing shows it, without its value."""

    key: str  # the full key, as stored (key prefix included)
    etag: str
    expire_at: float | None  # epoch seconds; None: no expiry
    size: int  # bytes of the value


@dataclass(frozen=True, slots=True)
class KeyPage:
    """A page of a key listing; ``cursor`` continues it (None: the listing is complete).

    A page may hold fewer keys than asked for, even none, and still have a cursor: each call
    does a bounded amount of work (a sparse prefix over many keys takes several calls).
    """

    keys: list[KeyInfo]
    cursor: str | None


# -- the TTL rule ------------------------------------------------------------------------

_PLAIN_INTEGER = re.compile(r"-?[0-9]+")


def ttl_seconds(text: str) -> int | None:
    """``ttlInSeconds`` as text, for requests and components alike (docs/state-api.md "TTL").

    N > 0 (at most ``MAX_TTL_SECONDS``) is N seconds; "0" and "-1" mean no expiry (None: on
    Redis, PERSIST). Anything else, below -1 or not a plain integer ("1_0", "+5", "1.5", "1e3"),
    raises ValueError with the reason; callers name the field (a 400, or a ComponentError).
    Surrounding spaces are allowed.
    """
    stripped = text.strip()
    if not _PLAIN_INTEGER.fullmatch(stripped):  # int() alone would take "1_0", "+5" and "٣"
        raise ValueError(f"{text!r} is not an integer: give seconds > 0, or 0 or -1 for no expiry")
    ttl = int(stripped)
    if ttl in (0, -1):
        return None
    if ttl < -1 or ttl > MAX_TTL_SECONDS:
        raise ValueError(f"{ttl} is not valid: give seconds > 0 (at most {MAX_TTL_SECONDS}), or 0 or -1 for no expiry")
    return ttl


def plain_count(text: str) -> int | None:
    """``text`` as a whole number >= 0 when it is written plainly (ASCII digits, at most 20:
    any unsigned 64-bit number), else None. For counts, positions and cursors from clients:
    ``str.isdigit`` alone takes "²", which ``int()`` then refuses, and ``int()`` refuses more
    than 4300 digits; either was a 500."""
    if 0 < len(text) <= 20 and text.isascii() and text.isdigit():
        return int(text)
    return None


def expire_at(ttl: int | None, now: float | None = None) -> float | None:
    """The epoch second at which an item written now with ``ttl`` expires."""
    if ttl is None:
        return None
    return (time.time() if now is None else now) + ttl


def cleanup_interval(spec: ComponentSpec, default: float) -> float | None:
    """A component's ``cleanupInterval`` in seconds; 0 or negative turns the periodic cleanup off."""
    seconds = spec.duration("cleanupInterval", default)
    return seconds if seconds > 0 else None


# -- the concurrency rules ---------------------------------------------------------------


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


def each_checked(ops: Sequence[Op], read: Callable[[str], StoredItem | None], write: Callable[[Op], None]) -> list[str]:
    """For stores with a synchronous read and write (inside their own atomic step): apply each
    operation whose check holds; the keys of those whose check failed."""
    failed = []
    for op in ops:
        if precondition_holds(op, read(op.key)):
            write(op)
        else:
            failed.append(op.key)
    return failed


def all_or_none(ops: Sequence[Op], read: Callable[[str], StoredItem | None], write: Callable[[Op], None]) -> list[str]:
    """For stores with a synchronous read and write (inside their own atomic step): check every
    operation in order, then apply them all, or none; the keys whose check failed."""
    failed = failed_keys_in_order(ops, read)
    if not failed:
        for op in ops:
            write(op)
    return failed


def new_etag() -> str:
    """A fresh etag for stores without a version counter: a random decimal below 2**53.

    Decimal, so that the Dapr how-to's unquoted ``"etag": <etag>`` is valid JSON on every store
    (docs/state-api.md leniency: a numeric etag is taken as its string), and below 2**53, so that a
    JavaScript client parsing it as a number keeps it exact.
    """
    return str(secrets.randbits(52) | 1 << 51)  # always 16 digits: no leading-zero look-alikes


def check_limit(limit: int) -> int:
    """A listing's page size, or ``StoreRefused`` saying the range."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise StoreRefused(f"limit {limit!r} is out of range: ask for 1 to {MAX_LIST_LIMIT} keys a page")
    return limit


class Store(abc.ABC):
    """One configured state store. Methods are coroutines; the runtime calls them.

    **Bounded stores.** A store that sets ``bounded = True`` promises that every call ends
    within its own timeouts, and the runtime then calls it straight from the request handler.
    Handlers run without an asyncio Task (server/drive.py), so such a store must never call
    ``asyncio.timeout``, ``asyncio.current_task`` or anything else that needs a current task
    (``asyncio.wait_for`` and ``create_task`` inside a task of its own are fine).
    tests/test_stores.py runs every bounded store's operations under ``drive.Driven`` to hold
    this. A store that cannot promise it leaves ``bounded`` False: the runtime then runs each
    call in a task of its own under ``--store-timeout`` (about 5 us a call more).
    """

    #: the component types (``spec.type``) this class serves; registered when it is defined
    component_types: ClassVar[tuple[str, ...]] = ()
    #: capabilities reported by the metadata endpoint
    features: ClassVar[tuple[str, ...]] = ("ETAG", "TRANSACTIONAL", "TTL", "QUERY_API")
    #: True when every call ends within the store's own timeouts (see the class docstring)
    bounded: ClassVar[bool] = False
    #: the first part of this store's listing cursors (a cursor of another kind is refused)
    cursor_tag: ClassVar[str] = "c"

    _registry: ClassVar[dict[str, type[Store]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        for component_type in cls.__dict__.get("component_types", ()):
            Store._registry[component_type] = cls

    @staticmethod
    def registered(component_type: str) -> type[Store]:
        """The class that declared ``component_type`` (its module must be imported)."""
        return Store._registry[component_type]

    def __init__(self, name: str, cleanup_interval: float | None = None) -> None:
        self.name = name
        #: seconds between two ``remove_expired`` runs (None: no periodic cleanup)
        self.cleanup_interval = cleanup_interval
        self._cleaner: asyncio.Task[None] | None = None

    @classmethod
    @abc.abstractmethod
    def from_spec(cls, spec: ComponentSpec) -> Self:
        """Build the store from its component: read its metadata with its defaults, raising
        ``spec.error(item, reason)`` for a bad item. No I/O here (``open`` does that)."""

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, then run ``remove_expired`` every ``cleanup_interval`` seconds."""
        await self.open()
        if self.cleanup_interval is not None:
            self._cleaner = asyncio.get_running_loop().create_task(self._clean_forever(self.cleanup_interval))

    async def close(self) -> None:
        """Stop the cleanup, then release connections and files."""
        if self._cleaner is not None:
            self._cleaner.cancel()
            self._cleaner = None
        await self.release()

    async def open(self) -> None:  # noqa: B027 - an optional hook: the in-memory store opens nothing
        """Open connections or files. A store that is down may still open (and fail calls);
        raise ``StoreError`` only when it can never work (a file that cannot be made)."""

    async def release(self) -> None:  # noqa: B027 - an optional hook: the in-memory store holds nothing
        """Release connections and files."""

    async def ping(self) -> None:  # noqa: B027 - an optional hook: the in-memory store always answers
        """Raise ``StoreError`` unless the store answers."""

    async def remove_expired(self) -> None:  # noqa: B027 - an optional hook: Redis expires keys itself
        """Delete expired items for good (reads already skip them); run by the cleanup loop."""

    async def _clean_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.remove_expired()
            except StoreError as e:  # the next round tries again; reads never return expired items anyway
                log.debug("store %r: removing expired items failed: %s", self.name, e)
            except Exception:  # a bug: say so, and keep cleaning
                log.exception("store %r: removing expired items failed", self.name)

    # -- the core each store implements --------------------------------------------------

    @abc.abstractmethod
    async def get(self, key: str, strong: bool = False) -> StoredItem | None:
        """The live item under ``key``, or None."""

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        """The live items under ``keys``, in order (None where missing). Stores that can read
        many keys in one round trip override this."""
        return [await self.get(k) for k in keys]

    @abc.abstractmethod
    async def apply(self, op: Op, strong: bool = False) -> bool:
        """Check and apply one operation as one atomic step; False when its check failed
        (nothing written)."""

    async def apply_each(self, ops: Sequence[Op], strong: bool = False) -> list[str]:
        """Check and apply operations independently; the keys whose check failed. Stores that
        can send many in one round trip (one commit) override this."""
        return [op.key for op in ops if not await self.apply(op, strong)]

    @abc.abstractmethod
    async def apply_atomically(self, ops: Sequence[Op], strong: bool = False) -> list[str]:
        """Check every operation in order (each seeing the ones before) and apply them all, as
        one atomic step; or, if any check fails, apply none and return the failed keys."""

    @abc.abstractmethod
    async def list_keys(self, prefix: str = "", cursor: str | None = None, limit: int = 100) -> KeyPage:
        """A page of the live keys that start with ``prefix``, from ``cursor`` (None: the start).

        Each key present for the whole walk appears exactly once; a key created or deleted
        meanwhile may or may not. Expired keys never appear; listing changes no etag and no TTL.
        ``limit`` is 1 to ``MAX_LIST_LIMIT`` (``check_limit``); memory stays flat however many
        keys there are, and each call does a bounded amount of work. A cursor this store did
        not give out raises ``BadCursor`` (``read_cursor``).
        """

    # -- derived ---------------------------------------------------------------------------

    async def set(self, op: SetOp, strong: bool = False) -> None:
        """Apply one write; raise ``EtagMismatch`` if its check fails."""
        if not await self.apply(op, strong):
            raise EtagMismatch([op.key])

    async def delete(self, op: DeleteOp, strong: bool = False) -> None:
        """Remove one item; raise ``EtagMismatch`` if its check fails."""
        if not await self.apply(op, strong):
            raise EtagMismatch([op.key])

    async def set_many(self, ops: Sequence[SetOp], strong: bool = False) -> list[str]:
        """Apply writes independently; return the keys whose check failed."""
        return await self.apply_each(ops, strong)

    async def delete_many(self, ops: Sequence[DeleteOp], strong: bool = False) -> list[str]:
        """Apply deletes independently; return the keys whose check failed."""
        return await self.apply_each(ops, strong)

    async def transact(self, ops: Sequence[Op], strong: bool = False) -> None:
        """Apply all operations in order, or none; raise ``EtagMismatch`` naming failed keys."""
        failed = await self.apply_atomically(ops, strong) if ops else []
        if failed:
            raise EtagMismatch(failed)

    async def scan(self, prefix: str, max_bytes: int = MAX_SCAN_BYTES) -> list[tuple[str, StoredItem]]:
        """Every live item whose key starts with ``prefix`` (the query API's input): the key
        listing, page by page, each page's items read in one ``bulk_get``. Past ``max_bytes``
        of values (by the listing's sizes, before a page is read) ``StoreRefused``: the items
        are held, and a query parses them all, in memory."""
        found: list[tuple[str, StoredItem]] = []
        cursor: str | None = None
        size = 0
        while True:
            page = await self.list_keys(prefix, cursor, MAX_LIST_LIMIT)
            size += sum(info.size for info in page.keys)
            if size > max_bytes:
                raise StoreRefused(
                    f"the keys of this app hold over {max_bytes >> 20} MiB of values in store {self.name!r}: devinit "
                    "runs a query over all of them in memory, and reads at most that much; query a store holding less"
                )
            keys = [info.key for info in page.keys]
            for key, item in zip(keys, await self.bulk_get(keys) if keys else [], strict=True):
                if item is not None:  # gone since it was listed
                    found.append((key, item))
            if page.cursor is None:
                return found
            cursor = page.cursor

    # -- listing cursors -------------------------------------------------------------------

    def make_cursor(self, position: str) -> str:
        """An opaque cursor holding ``position`` (text), tagged with this store's kind."""
        encoded = base64.urlsafe_b64encode(position.encode("utf-8", "surrogatepass")).rstrip(b"=")
        return f"{self.cursor_tag}.{encoded.decode()}"

    def read_cursor(self, cursor: str) -> str:
        """The position a cursor from ``make_cursor`` holds; ``BadCursor`` for any other text."""
        tag, dot, body = cursor.partition(".") if isinstance(cursor, str) else ("", "", "")
        try:
            if tag != self.cursor_tag or not dot:
                raise ValueError(cursor)
            return base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise self.bad_cursor(cursor, "it is not a cursor this store gave out") from None

    def bad_cursor(self, cursor: object, why: str) -> BadCursor:
        """The error for a cursor this store cannot continue from."""
        shown = cursor[:60] if isinstance(cursor, str) else cursor
        return BadCursor(f"store {self.name!r} cannot list keys from cursor {shown!r}: {why}; start again without a cursor")
