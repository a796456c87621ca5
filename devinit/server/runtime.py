"""The runtime both front ends call: store lookup, key prefix, validation, error mapping.

Front ends (HTTP, gRPC) turn their wire form into plain values and call one coroutine here;
every rule of docs/state-api.md that does not depend on the wire lives in this module once.
Errors come out as ``ApiError`` carrying Dapr's errorCode and the HTTP and gRPC status.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devinit import __version__
from devinit.components import ComponentSpec, LoadResult, load_components
from devinit.errors import ApiError, ComponentError, EtagMismatch, QueryError, StoreError, StoreRefused, malformed
from devinit.server.health import DEFAULT_INTERVAL, HealthMonitor
from devinit.state.base import DeleteOp, Op, SetOp, Store, StoredItem, ttl_seconds

log = logging.getLogger("devinit.runtime")

CONSISTENCY = ("eventual", "strong")
CONCURRENCY = ("first-write", "last-write")
DEFAULT_STORE_TIMEOUT = 10.0
# [devinit] limits every store can honour alike (one behaviour, a 400 instead of a store's 500):
# PostgreSQL's primary-key index takes at most ~2700 bytes per key, so a full key (prefix
# included) is held to 2048 bytes of UTF-8; Redis refuses an EXPIRE beyond ~2**53 ms and
# Python's datetime (PostgreSQL) ends at year 9999, so a TTL is at most 2**31-1 s (68 years).
MAX_KEY_BYTES = 2048


@dataclass(slots=True)
class StoreEntry:
    """A loaded store with the settings the runtime applies around it."""

    store: Store
    spec: ComponentSpec
    prefix: str  # added in front of every key ("" for none)
    default_ttl: int | None


@dataclass(slots=True)
class SaveRequest:
    """One item of a save, as the front end received it (types not yet checked)."""

    key: Any
    value: bytes
    etag: Any = None
    metadata: Any = None
    options: Any = None


@dataclass(slots=True)
class TxOperation:
    """One transaction operation: ``operation`` is "upsert" or "delete"."""

    operation: Any
    request: SaveRequest


def key_prefix(spec: ComponentSpec, app_id: str | None) -> str:
    """The prefix Dapr's ``keyPrefix`` metadata gives keys of this store."""
    mode = spec.metadata.get("keyPrefix", "appid") or "appid"
    if mode == "appid":
        return f"{app_id}||" if app_id else ""
    if mode == "name":
        return f"{spec.name}||"
    if mode == "none":
        return ""
    if "||" in mode:
        raise spec.error("keyPrefix", f"{mode!r} must not contain '||'")
    return f"{mode}||"


def check_token(expected: str | None, given: str | bytes | None) -> None:
    """Raise 401 unless the API token matches (constant-time comparison)."""
    if expected is None:
        return
    if isinstance(given, str):
        given = given.encode()
    if not given or not hmac.compare_digest(given, expected.encode()):
        raise ApiError(
            "ERR_API_TOKEN",
            "missing or wrong API token: send the 'dapr-api-token' header with the value of DAPR_API_TOKEN",
            401,
            "UNAUTHENTICATED",
        )


def parse_etag(etag: Any) -> str | None:
    """An etag from the wire: a string, or a number taken as its string; empty means none."""
    if etag is None or etag == "":
        return None
    if isinstance(etag, bool):
        raise malformed(f"etag must be a string, not {etag!r}")
    if isinstance(etag, int):
        return str(etag)
    if isinstance(etag, float):
        return str(int(etag)) if etag.is_integer() else repr(etag)
    if isinstance(etag, str):
        return etag
    raise malformed(f"etag must be a string, not {type(etag).__name__}")


def _option(value: Any, allowed: tuple[str, ...], what: str) -> str | None:
    if value is None or value == "":
        return None
    if value not in allowed:
        raise malformed(f"{what} {value!r} is not valid: use {' or '.join(repr(a) for a in allowed)}")
    return str(value)


def parse_options(options: Any, defaults: Mapping[str, str | None] | None = None) -> tuple[bool, bool]:
    """(first_write, strong) from an item's ``options``, falling back to request-level defaults."""
    if options is None:
        options = {}
    elif not isinstance(options, dict):
        raise malformed('options must be an object like {"concurrency": "first-write", "consistency": "strong"}')
    defaults = defaults or {}
    concurrency = _option(options.get("concurrency"), CONCURRENCY, "concurrency")
    consistency = _option(options.get("consistency"), CONSISTENCY, "consistency")
    concurrency = concurrency or _option(defaults.get("concurrency"), CONCURRENCY, "concurrency")
    consistency = consistency or _option(defaults.get("consistency"), CONSISTENCY, "consistency")
    return concurrency == "first-write", consistency == "strong"


def parse_metadata(metadata: Any) -> dict[str, str]:
    """Request metadata: a map of names to strings (numbers and booleans are taken as text)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise malformed('metadata must be an object of string values, e.g. {"ttlInSeconds": "60"}')
    out: dict[str, str] = {}
    for name, value in metadata.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        elif value is None:
            value = ""
        elif not isinstance(value, str):
            raise malformed(f"metadata.{name} must be a string, not {type(value).__name__}")
        out[name] = value
    return out


def parse_ttl(metadata: Mapping[str, str], default: int | None) -> int | None:
    """``ttlInSeconds`` by the one TTL rule (state/base.py ``ttl_seconds``); absent means the
    store's default."""
    raw = metadata.get("ttlInSeconds")
    if raw is None or raw == "":
        return default
    try:
        return ttl_seconds(raw)
    except ValueError as e:
        raise malformed(f"metadata.ttlInSeconds {e}") from None


async def _deadline(awaitable: Any, seconds: float) -> Any:
    async with asyncio.timeout(seconds):
        return await awaitable


class Runtime:
    """The stores of one server and the operations of the state API on them."""

    def __init__(
        self,
        entries: dict[str, StoreEntry],
        failed: dict[str, str],
        app_id: str | None = None,
        api_token: str | None = None,
        store_timeout: float = DEFAULT_STORE_TIMEOUT,
        health_interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.entries = entries
        self.failed = failed  # component name -> why it did not load
        self.app_id = app_id
        self.api_token = api_token or None
        self.store_timeout = store_timeout
        self.errors: list[ComponentError] = []
        # whether each store answers: shown by /v1.0/metadata and `devinit status`
        self.monitor = HealthMonitor({n: e.store for n, e in entries.items()}, health_interval, store_timeout)

    # -- set-up ------------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        components_path: Path,
        app_id: str | None = None,
        api_token: str | None = None,
        store_timeout: float = DEFAULT_STORE_TIMEOUT,
        health_interval: float = DEFAULT_INTERVAL,
    ) -> Runtime:
        """Load the components folder, build and open every store it declares; start pinging them."""
        from devinit.state import create_store, default_ttl

        loaded: LoadResult = load_components(components_path, app_id)
        entries: dict[str, StoreEntry] = {}
        errors = list(loaded.errors)
        for spec in loaded.specs:
            try:
                store = create_store(spec)
                entry = StoreEntry(store, spec, key_prefix(spec, app_id), default_ttl(spec))
            except ComponentError as e:
                errors.append(e)
                continue
            try:
                await store.start()
            except StoreError as e:
                err = spec.error("(open)", str(e))
                errors.append(err)
                continue
            entries[spec.name] = entry
        failed: dict[str, str] = {}
        for err in errors:
            if err.component:
                failed[err.component] = str(err)
        runtime = cls(entries, failed, app_id, api_token, store_timeout, health_interval)
        runtime.errors = errors
        runtime.monitor.start()
        return runtime

    async def close(self) -> None:
        """Close every store; errors while closing are logged, not raised."""
        await self.monitor.close()
        for entry in self.entries.values():
            try:
                await entry.store.close()
            except Exception:
                log.exception("closing store %s", entry.spec.name)

    # -- helpers -----------------------------------------------------------------------

    def entry(self, name: str) -> StoreEntry:
        """The store called ``name``, or the contract's error saying what exists and why not."""
        entry = self.entries.get(name)
        if entry is not None:
            return entry
        # files that failed before a component name could be read (bad YAML, unreadable)
        broken = "; ".join(str(e) for e in self.errors if not e.component)
        broken = f"; component files that failed to load: {broken}" if broken else ""
        if not self.entries and not self.failed:
            raise ApiError(
                "ERR_STATE_STORE_NOT_CONFIGURED",
                ("no state store is loaded" + broken + ": fix the file, then restart the server")
                if broken
                else "no state store is configured: add a component file (e.g. statestore.yaml) to the "
                "components folder, or run 'devinit init'",
                500,
                "FAILED_PRECONDITION",
            )
        if name in self.failed:
            message = f"state store {name!r} failed to load: {self.failed[name]}"
        else:
            known = ", ".join(repr(n) for n in sorted(self.entries)) or "none"
            message = f"state store {name!r} is not found; loaded stores: {known}"
            if self.failed:
                message += "; failed to load: " + ", ".join(repr(n) for n in sorted(self.failed))
            message += broken
        raise ApiError("ERR_STATE_STORE_NOT_FOUND", message, 400, "INVALID_ARGUMENT")

    @staticmethod
    def full_key(entry: StoreEntry, key: Any) -> str:
        """Validate a key and add the store's prefix."""
        if not isinstance(key, str) or not key:
            raise malformed("key is missing or empty: every item needs a non-empty string 'key'")
        if "||" in key:
            raise malformed(f"key {key!r} contains '||', which is reserved as the key prefix separator")
        if "\x00" in key:  # PostgreSQL text cannot hold it (was a 500 there, accepted elsewhere)
            raise malformed(f"key {key!r} contains a NUL character (\\u0000), which keys may not hold")
        full = entry.prefix + key
        # 4 bytes per character at most: only a long key needs encoding to be measured.
        if len(full) > MAX_KEY_BYTES // 4 and len(full.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise malformed(
                f"key {key[:40]!r}... is too long: keys (with their prefix) take at most {MAX_KEY_BYTES} bytes of UTF-8"
            )
        return full

    @staticmethod
    def _mismatch(entry: StoreEntry, code: str, keys: Sequence[str]) -> ApiError:
        names = ", ".join(repr(k[len(entry.prefix) :]) for k in keys)
        return ApiError(
            code,
            f"etag mismatch on store {entry.spec.name!r} for key(s) {names}: the item changed, was deleted, "
            "or already exists (first-write); read it again and retry with its current etag",
            409,
            "ABORTED",
        )

    async def _call(self, entry: StoreEntry, code: str, awaitable: Any) -> Any:
        try:
            if entry.store.bounded:
                return await awaitable
            # A task of its own: the front ends run handlers without one (drive.Driven), and
            # asyncio.timeout (and a driver's own waits, e.g. psycopg's) need a current task.
            return await asyncio.ensure_future(_deadline(awaitable, self.store_timeout))
        except (EtagMismatch, StoreError, TimeoutError) as e:
            raise self._failed(entry, code, e) from None

    def _failed(self, entry: StoreEntry, code: str, e: Exception) -> ApiError:
        """The API error for a store call that failed (the one mapping of store failures)."""
        if isinstance(e, EtagMismatch):
            return self._mismatch(entry, code, e.keys)
        if isinstance(e, StoreRefused):
            return ApiError(code, str(e), 400, "INVALID_ARGUMENT")
        if isinstance(e, StoreError):
            log.warning("%s", e, exc_info=log.isEnabledFor(logging.DEBUG))
            message = str(e)
        else:
            message = f"state store {entry.spec.name!r} did not answer within {self.store_timeout:g}s"
        self.monitor.mark(entry.spec.name, "down", message)
        return ApiError(code, message, 500, "INTERNAL")

    # -- the operations ----------------------------------------------------------------

    async def get(self, store: str, key: Any, consistency: Any = None) -> StoredItem | None:
        """GET one key."""
        entry = self.entry(store)
        full = self.full_key(entry, key)
        strong = consistency is not None and _option(consistency, CONSISTENCY, "consistency") == "strong"
        if not entry.store.bounded:
            found: StoredItem | None = await self._call(entry, "ERR_STATE_GET", entry.store.get(full, strong))
            return found
        try:  # the hot path, without _call's coroutine in between
            item: StoredItem | None = await entry.store.get(full, strong)
            return item
        except (EtagMismatch, StoreError) as e:
            raise self._failed(entry, "ERR_STATE_GET", e) from None

    async def bulk_get(self, store: str, keys: Any) -> list[tuple[str, StoredItem | None]]:
        """GET many keys; answers in the order given."""
        entry = self.entry(store)
        if not isinstance(keys, list):
            raise malformed("keys must be an array of strings")
        full = [self.full_key(entry, k) for k in keys]
        items = await self._call(entry, "ERR_STATE_BULK_GET", entry.store.bulk_get(full))
        return list(zip(keys, items, strict=True))

    def _set_op(self, entry: StoreEntry, req: SaveRequest, defaults: Mapping[str, str | None] | None) -> tuple[SetOp, bool]:
        full = self.full_key(entry, req.key)
        first_write, strong = parse_options(req.options, defaults)
        ttl = parse_ttl(parse_metadata(req.metadata), entry.default_ttl)
        return SetOp(full, req.value, parse_etag(req.etag), first_write, ttl), strong

    def _delete_op(self, entry: StoreEntry, req: SaveRequest, defaults: Mapping[str, str | None] | None) -> tuple[DeleteOp, bool]:
        full = self.full_key(entry, req.key)
        _, strong = parse_options(req.options, defaults)
        parse_metadata(req.metadata)
        return DeleteOp(full, parse_etag(req.etag)), strong

    async def save(self, store: str, items: Sequence[SaveRequest], defaults: Mapping[str, str | None] | None = None) -> None:
        """Save items independently; 409 naming the keys whose etag check failed."""
        entry = self.entry(store)
        ops = [_at(i, self._set_op, entry, item, defaults) for i, item in enumerate(items)]  # all checked first
        if not ops:
            return
        strong = any(s for _, s in ops)
        if len(ops) == 1:
            await self._call(entry, "ERR_STATE_SAVE", entry.store.set(ops[0][0], strong))
            return
        failed = await self._call(entry, "ERR_STATE_SAVE", entry.store.set_many([op for op, _ in ops], strong))
        if failed:
            raise self._mismatch(entry, "ERR_STATE_SAVE", failed)

    async def delete(self, store: str, req: SaveRequest, defaults: Mapping[str, str | None] | None = None) -> None:
        """Delete one key (with an etag: only if it matches)."""
        entry = self.entry(store)
        op, strong = self._delete_op(entry, req, defaults)
        await self._call(entry, "ERR_STATE_DELETE", entry.store.delete(op, strong))

    async def delete_many(self, store: str, reqs: Sequence[SaveRequest]) -> None:
        """Delete keys independently; 409 naming the keys whose etag check failed."""
        entry = self.entry(store)
        ops = [_at(i, self._delete_op, entry, r, None) for i, r in enumerate(reqs)]
        if not ops:
            return
        strong = any(s for _, s in ops)
        failed = await self._call(entry, "ERR_STATE_DELETE", entry.store.delete_many([op for op, _ in ops], strong))
        if failed:
            raise self._mismatch(entry, "ERR_STATE_DELETE", failed)

    async def transact(
        self,
        store: str,
        operations: Sequence[TxOperation],
        metadata: Any = None,
        defaults: Mapping[str, str | None] | None = None,
    ) -> None:
        """Apply operations in order, all or nothing (``defaults``: request-level options)."""
        entry = self.entry(store)
        shared = parse_metadata(metadata)
        ops: list[Op] = []
        strong = False
        for i, tx in enumerate(operations):
            req = tx.request
            if shared:
                req.metadata = {**shared, **parse_metadata(req.metadata)}
            if tx.operation == "upsert":
                op, s = _at(i, self._set_op, entry, req, defaults, "operations[{}].request")
            elif tx.operation == "delete":
                op, s = _at(i, self._delete_op, entry, req, defaults, "operations[{}].request")
            else:
                raise ApiError(
                    "ERR_NOT_SUPPORTED_STATE_OPERATION",
                    f"operations[{i}].operation {tx.operation!r} is not supported: use 'upsert' or 'delete'",
                    400,
                    "UNIMPLEMENTED",
                )
            ops.append(op)
            strong = strong or s
        if ops:
            await self._call(entry, "ERR_STATE_TRANSACTION", entry.store.transact(ops, strong))

    async def query(self, store: str, body: Any) -> tuple[list[tuple[str, bytes, str]], str | None]:
        """Run a query document; returns ``(key, value, etag)`` results (keys without prefix) and a token."""
        from devinit.state.query import parse_query, run_query

        entry = self.entry(store)
        try:
            query = parse_query(body)
        except QueryError as e:
            raise malformed(str(e)) from None
        found = await self._call(entry, "ERR_STATE_QUERY", entry.store.scan(entry.prefix))
        cut = len(entry.prefix)
        return run_query(query, [(k[cut:], it.value, it.etag) for k, it in found])

    def metadata(self) -> dict[str, Any]:
        """The body of GET /v1.0/metadata."""
        # A fresh round of pings for whoever reads next (devinit init/status wait for it),
        # rather than a result up to one interval old.
        self.monitor.request_check()
        components = []
        extended: dict[str, str] = {}
        for name, entry in sorted(self.entries.items()):
            caps = list(entry.store.features)
            if "ETAG" in caps and "TRANSACTIONAL" in caps:
                caps.append("ACTOR")
            health = self.monitor.health[name]
            components.append(
                {
                    "name": name,
                    "type": entry.spec.type,
                    "version": entry.spec.version,
                    "capabilities": caps,
                    "health": health.as_json(),
                }  # [devinit] extra field: clients ignore what they do not know
            )
            # the same as text, for gRPC's string map (GetMetadata has no per-component field)
            extended[f"devinit.health.{name}"] = health.status + (f": {health.error}" if health.error else "")
        return {
            "id": self.app_id or "",
            "runtimeVersion": __version__,
            "enabledFeatures": [],
            "actors": [],
            "components": components,
            "extended": extended,
        }


def _at(index: int, build: Any, entry: StoreEntry, req: SaveRequest, defaults: Any, where: str = "item {}") -> Any:
    """Build one operation; a 400 says which item of the request it was about."""
    try:
        return build(entry, req, defaults)
    except ApiError as e:
        if e.http_status == 400:
            e.message = f"{where.format(index)}: {e.message}"
        raise
