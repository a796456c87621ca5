"""The runtime both front ends call: store lookup, key prefix, validation, error mapping.

Front ends (HTTP, gRPC) turn their wire form into plain values and call one coroutine here;
every rule of docs/state-api.md that does not depend on the wire lives in this module once.
Errors come out as ``ApiError`` carrying Dapr's errorCode, the HTTP and gRPC status, and the
details daprd attaches; messages start with daprd's own text for the same error, then say
what to do. Where devinit is kinder than daprd (the leniencies of docs/state-api.md), it logs
a warning once per kind naming what daprd would answer (``warn_once``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from devinit import __version__
from devinit.components import ComponentSpec, KnownRedis, LoadResult, load_components
from devinit.errors import (
    ApiError,
    ComponentError,
    EtagMismatch,
    FieldViolation,
    QueryError,
    ResourceInfo,
    StoreError,
    StoreRefused,
    malformed,
)
from devinit.server.health import DEFAULT_INTERVAL, HealthMonitor, StoreHealth
from devinit.state.base import DeleteOp, Op, SetOp, Store, StoredItem, ttl_seconds

log = logging.getLogger("devinit.runtime")
T = TypeVar("T")

CONSISTENCY = ("eventual", "strong")
CONCURRENCY = ("first-write", "last-write")
DEFAULT_STORE_TIMEOUT = 10.0
# [devinit] limits every store can honour alike (one behaviour, a 400 instead of a store's 500):
# PostgreSQL's primary-key index takes at most ~2700 bytes per key, so a full key (prefix
# included) is held to 2048 bytes of UTF-8; Redis refuses an EXPIRE beyond ~2**53 ms and
# Python's datetime (PostgreSQL) ends at year 9999, so a TTL is at most 2**31-1 s (68 years).
MAX_KEY_BYTES = 2048
# A bulk get answers at most this many bytes of values, the counterpart of the 4 MiB request
# limit (and daprd's own gRPC send limit): repeated keys are answered once, so a small request
# cannot make a large answer out of one big value.
MAX_BULK_ANSWER = 4 * 1024 * 1024
# Keys a bulk get reads from its store at once: the answer's size is checked after each slice,
# so what is read past MAX_BULK_ANSWER is bounded by one slice, while a request of up to this
# many keys stays one round trip.
BULK_SLICE = 256
# What clients may keep under `extended` (PUT /v1.0/metadata/{key}, SetMetadata): keys + values.
MAX_EXTENDED_BYTES = 1024 * 1024
_SHOWN_KEY = 256  # characters of a key quoted in an error message
_TRUTHY = ("y", "yes", "true", "t", "on", "1")  # daprd's truthy strings (dapr/kit IsTruthy)

# What daprd's message for a failed store call starts with, per errorCode ({store}, {key}).
_FAILED = {
    "ERR_STATE_GET": "fail to get {key} from state store {store}",
    "ERR_STATE_BULK_GET": "",  # daprd: the store's own error, on each item
    "ERR_STATE_SAVE": "failed saving state in state store {store}",
    "ERR_STATE_DELETE": "failed deleting state with key {key}",
    "ERR_STATE_BULK_DELETE": "failed deleting state in state store {store}",
    "ERR_STATE_TRANSACTION": "error while executing state transaction",
    "ERR_STATE_QUERY": "state store {store} query failed",
    "ERR_STATE_LIST_KEYS": "failed listing the keys of state store {store}",  # [devinit] the devinit route
}

_warned: set[str] = set()


def warn_once(kind: str, message: str, *args: object) -> None:
    """Log ``message`` the first time something of ``kind`` happens in this process.

    For the leniencies: devinit serves the request, and the developer learns once what a
    Dapr sidecar would answer, before the code meets one.
    """
    if kind not in _warned:
        _warned.add(kind)
        log.warning(message, *args)


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
class DeleteRequest:
    """One delete, as the front end received it (types not yet checked)."""

    key: Any
    etag: Any = None
    metadata: Any = None
    options: Any = None


@dataclass(slots=True)
class TxOperation:
    """One transaction operation: ``operation`` is "upsert" (a SaveRequest) or "delete"."""

    operation: Any
    request: SaveRequest | DeleteRequest


@dataclass(slots=True)
class BulkItem:
    """One key of a bulk get: its item (None when missing), or the error reading it."""

    key: str
    item: StoredItem | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ComponentInfo:
    """One loaded store as the metadata API shows it."""

    name: str
    type: str
    version: str
    capabilities: tuple[str, ...]
    health: StoreHealth  # [devinit] whether the store answers (a copy, taken when asked)


@dataclass(frozen=True, slots=True)
class RuntimeMetadata:
    """What GET /v1.0/metadata and gRPC GetMetadata show; each front end renders it."""

    app_id: str
    runtime_version: str
    components: tuple[ComponentInfo, ...]
    extended: dict[str, str] = field(default_factory=dict)  # set by clients, plus devinit.health.<store>


def key_prefix(spec: ComponentSpec, app_id: str | None) -> str:
    """The prefix Dapr's ``keyPrefix`` metadata gives keys of this store.

    As daprd: the value is taken in lower case (``Name`` is the strategy ``name``, and a literal
    prefix ``MyApp`` writes ``myapp||key``), and ``namespace`` without a NAMESPACE in the
    environment (always so outside Kubernetes) falls back to the app id.
    """
    mode = (spec.metadata.get("keyPrefix", "appid") or "appid").lower()
    if mode in ("appid", "namespace"):
        return f"{app_id}||" if app_id else ""
    if mode == "name":
        if "||" in spec.name:
            raise spec.error("keyPrefix", f"'name' needs a component name without '||' ({spec.name!r} has one)")
        return f"{spec.name}||"
    if mode == "none":
        return ""
    if "||" in mode:
        raise spec.error("keyPrefix", f"input key/keyPrefix '{mode}' can't contain '||'")
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
    if isinstance(etag, str):
        return etag or None
    if etag is None:
        return None
    if isinstance(etag, bool):
        raise malformed(f"etag must be a string, not {etag!r}")
    if isinstance(etag, (int, float)):
        warn_once(
            "numeric-etag",
            "a request sent an etag as a JSON number (%r): devinit takes it as its string, but daprd "
            "answers 400 ERR_MALFORMED_REQUEST; send the etag as a JSON string",
            etag,
        )
        if isinstance(etag, int):
            return str(etag)
        return str(int(etag)) if etag.is_integer() else repr(etag)
    raise malformed(f"etag must be a string, not {type(etag).__name__}")


def _option(value: Any, allowed: tuple[str, ...], what: str) -> str | None:
    if value is None or value == "":
        return None
    if value not in allowed:
        # daprd's stores say "unrecognized consistency model 'x'"
        raise malformed(f"unrecognized {what} model {value!r}: use {' or '.join(repr(a) for a in allowed)}")
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
        if isinstance(value, str):
            out[name] = value
            continue
        if value is None:  # daprd reads a JSON null into a string as ""
            out[name] = ""
            continue
        if not isinstance(value, (bool, int, float)):
            raise malformed(f"metadata.{name} must be a string, not {type(value).__name__}")
        warn_once(
            "metadata-not-string",
            "a request sent metadata.%s as a JSON %s: devinit takes it as text, but daprd answers "
            "400 ERR_MALFORMED_REQUEST; send metadata values as strings",
            name,
            "boolean" if isinstance(value, bool) else "number",
        )
        out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def is_projection(metadata: Any) -> bool:
    """Whether an upsert's metadata marks it as an outbox projection (``outbox.projection``)."""
    if not isinstance(metadata, dict) or "outbox.projection" not in metadata:
        return False
    value = metadata["outbox.projection"]
    if isinstance(value, bool):
        return value
    return isinstance(value, (str, int)) and str(value).strip().lower() in _TRUTHY


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
        self.extended: dict[str, str] = {}  # set by clients: PUT /v1.0/metadata/{key}, SetMetadata
        self.extended_bytes = 0  # their keys' and values' bytes (UTF-8), against MAX_EXTENDED_BYTES
        self.notes: list[str] = []  # documents skipped, a password taken from devinit's Redis: for the log
        # whether each store answers: shown by /v1.0/metadata and `devinit status`
        self.monitor = HealthMonitor({n: e.store for n, e in entries.items()}, health_interval, store_timeout)

    # -- set-up ------------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        components_path: Path | Sequence[Path],
        app_id: str | None = None,
        api_token: str | None = None,
        store_timeout: float = DEFAULT_STORE_TIMEOUT,
        health_interval: float = DEFAULT_INTERVAL,
        known_redis: KnownRedis | None = None,
    ) -> Runtime:
        """Load the components folder(s), build and open every store they declare; start pinging them."""
        from devinit.state import create_store, default_ttl

        loaded: LoadResult = load_components(components_path, app_id, known_redis)
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
        runtime.notes = loaded.notes
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
        app = {"appID": self.app_id} if self.app_id else None
        if not self.entries and not self.failed:
            help_ = (
                "no state store is loaded" + broken + ": fix the file, then restart the server"
                if broken
                else "add a component file (e.g. statestore.yaml) to the components folder, or run 'devinit init'"
            )
            raise ApiError(
                "ERR_STATE_STORE_NOT_CONFIGURED",
                f"state store {name} is not configured: {help_}",
                500,
                "FAILED_PRECONDITION",
                reason="DAPR_STATE_NOT_CONFIGURED",
                http_metadata=app,
            )
        if name in self.failed:
            message = f"state store {name} is not found: it failed to load: {self.failed[name]}"
        else:
            known = ", ".join(repr(n) for n in sorted(self.entries)) or "none"
            message = f"state store {name} is not found; loaded stores: {known}"
            if self.failed:
                message += "; failed to load: " + ", ".join(repr(n) for n in sorted(self.failed))
            message += broken
        raise ApiError(
            "ERR_STATE_STORE_NOT_FOUND", message, 400, "INVALID_ARGUMENT", reason="DAPR_STATE_NOT_FOUND", http_metadata=app
        )

    @staticmethod
    def full_key(entry: StoreEntry, key: Any, empty: str = "ERR_MALFORMED_REQUEST") -> str:
        """Validate a key and add the store's prefix (``empty``: the ErrorInfo reason of a missing key)."""
        if not isinstance(key, str) or not key:
            if key is None or key == "":  # daprd: '"key" is a required field' (HTTP), 'state key cannot be empty' (gRPC)
                message = '"key" is a required field: state key cannot be empty'
            else:
                message = f"key must be a string, not {type(key).__name__}"
            raise ApiError("ERR_MALFORMED_REQUEST", message, 400, "INVALID_ARGUMENT", reason=empty)
        if "||" in key:
            shown = key if len(key) <= _SHOWN_KEY else key[:_SHOWN_KEY] + "..."
            message = f"input key/keyPrefix '{shown}' can't contain '||'"  # daprd's words, details and all
            raise ApiError(
                "ERR_MALFORMED_REQUEST",
                message,
                400,
                "INVALID_ARGUMENT",
                reason="DAPR_STATE_ILLEGAL_KEY",
                resource=ResourceInfo("state", entry.spec.name),
                violation=FieldViolation(shown, message),
            )
        if "\x00" in key:  # PostgreSQL text cannot hold it (was a 500 there, accepted elsewhere)
            raise malformed(f"key {key[:_SHOWN_KEY]!r} contains a NUL character (\\u0000), which keys may not hold")
        full = entry.prefix + key
        # 4 bytes per character at most: only a long key needs encoding to be measured.
        if len(full) > MAX_KEY_BYTES // 4 and len(full.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise malformed(
                f"key {key[:40]!r}... is too long: keys (with their prefix) take at most {MAX_KEY_BYTES} bytes of UTF-8"
            )
        return full

    @staticmethod
    def _what(entry: StoreEntry, code: str, key: Any) -> str:
        """daprd's opening words for a failed ``code`` call (naming the store or the key)."""
        return _FAILED[code].format(store=entry.spec.name, key=key)

    def _mismatch(self, entry: StoreEntry, code: str, keys: Sequence[str], key: Any = "") -> ApiError:
        names = ", ".join(repr(k[len(entry.prefix) :]) for k in keys)
        return ApiError(
            code,
            f"{self._what(entry, code, key)}: possible etag mismatch for key(s) {names}: the item changed, was "
            "deleted, or already exists (first-write); read it again and retry with its current etag",
            409,
            "ABORTED",
        )

    async def _call(self, entry: StoreEntry, code: str, awaitable: Any, key: Any = "") -> Any:
        try:
            if entry.store.bounded:
                return await awaitable
            # A task of its own: the front ends run handlers without one (drive.Driven), and
            # asyncio.timeout (and a driver's own waits, e.g. psycopg's) need a current task.
            return await asyncio.ensure_future(_deadline(awaitable, self.store_timeout))
        except (EtagMismatch, StoreError, TimeoutError) as e:
            raise self._failed(entry, code, e, key) from None

    def _failed(self, entry: StoreEntry, code: str, e: Exception, key: Any = "") -> ApiError:
        """The API error for a store call that failed (the one mapping of store failures)."""
        if isinstance(e, EtagMismatch):
            return self._mismatch(entry, code, e.keys, key)
        what = self._what(entry, code, key)
        what = f"{what}: " if what else ""
        if isinstance(e, StoreRefused):
            return ApiError(code, f"{what}{e}", 400, "INVALID_ARGUMENT")
        if isinstance(e, StoreError):
            log.warning("%s", e, exc_info=log.isEnabledFor(logging.DEBUG))
            cause = str(e)
        else:
            cause = f"state store {entry.spec.name!r} did not answer within {self.store_timeout:g}s"
        self.monitor.mark(entry.spec.name, "down", cause)
        if code == "ERR_STATE_QUERY":  # daprd's QueryFailed names the store as a resource
            return ApiError(
                code,
                what + cause,
                500,
                "INTERNAL",
                reason="DAPR_STATE_QUERY_FAILED",
                resource=ResourceInfo("state", entry.spec.name),
            )
        return ApiError(code, what + cause, 500, "INTERNAL")

    # -- the operations ----------------------------------------------------------------

    async def get(self, store: str, key: Any, consistency: Any = None) -> StoredItem | None:
        """GET one key (an unknown ``consistency`` is ignored, as daprd's stores do on reads)."""
        entry = self.entry(store)
        full = self.full_key(entry, key)
        strong = consistency == "strong"
        if consistency and not strong and consistency != "eventual":
            warn_once(
                "read-consistency",
                "a read asked for consistency %r: ignored, as daprd does on reads (saves and deletes answer 400); "
                "use 'eventual' or 'strong'",
                consistency,
            )
        if not entry.store.bounded:
            found: StoredItem | None = await self._call(entry, "ERR_STATE_GET", entry.store.get(full, strong), key)
            return found
        try:  # the hot path, without _call's coroutine in between
            item: StoredItem | None = await entry.store.get(full, strong)
            return item
        except (EtagMismatch, StoreError) as e:
            raise self._failed(entry, "ERR_STATE_GET", e, key) from None

    async def bulk_get(self, store: str, keys: Any) -> list[BulkItem]:
        """GET many keys, each answered once, in the order first asked.

        A store that fails answers the items it did not read with its ``error`` (as daprd, which
        reads each key on its own); an answer over ``MAX_BULK_ANSWER`` bytes of values is
        refused. The store is read ``BULK_SLICE`` keys at a time and the answer's size checked
        after each slice, so a request for many large values is refused having read at most one
        slice past the limit, not every value it names.
        """
        entry = self.entry(store)
        if not isinstance(keys, list):
            raise malformed("keys must be an array of strings")
        full = list(dict.fromkeys([self.full_key(entry, k) for k in keys]))  # every key checked; repeats once
        cut = len(entry.prefix)
        answer: list[BulkItem] = []
        size = 0
        for start in range(0, len(full), BULK_SLICE):
            part = full[start : start + BULK_SLICE]
            try:
                items: list[StoredItem | None] = await self._call(entry, "ERR_STATE_BULK_GET", entry.store.bulk_get(part))
            except ApiError as e:
                if e.http_status != 500:  # the store refused the request as given: that stays an error
                    raise
                answer.extend(BulkItem(k[cut:], error=e.message) for k in full[start:])
                return answer
            size += sum(len(item.value) for item in items if item is not None)
            if size > MAX_BULK_ANSWER:
                raise ApiError(
                    "ERR_STATE_BULK_GET",
                    f"the answer would hold over {MAX_BULK_ANSWER} bytes of values ({size} in the first "
                    f"{start + len(part)} of {len(full)} keys), devinit's limit per bulk get: ask for fewer keys "
                    "per request",
                    400,
                    "RESOURCE_EXHAUSTED",
                )
            answer.extend(BulkItem(k[cut:], item) for k, item in zip(part, items, strict=True))
        return answer

    def _set_op(self, entry: StoreEntry, req: SaveRequest, defaults: Mapping[str, str | None] | None) -> tuple[SetOp, bool]:
        full = self.full_key(entry, req.key, "ERR_STATE_SAVE")
        first_write, strong = parse_options(req.options, defaults)
        ttl = parse_ttl(parse_metadata(req.metadata), entry.default_ttl)
        return SetOp(full, req.value, parse_etag(req.etag), first_write, ttl), strong

    def _delete_op(
        self, entry: StoreEntry, req: DeleteRequest, defaults: Mapping[str, str | None] | None
    ) -> tuple[DeleteOp, bool]:
        full = self.full_key(entry, req.key)
        _, strong = parse_options(req.options, defaults)
        parse_metadata(req.metadata)
        return DeleteOp(full, parse_etag(req.etag)), strong

    async def save(self, store: str, items: Sequence[SaveRequest], defaults: Mapping[str, str | None] | None = None) -> None:
        """Save items independently; 409 naming the keys whose etag check failed."""
        entry = self.entry(store)
        n = len(items)
        ops = [_at(i, n, self._set_op, entry, item, defaults) for i, item in enumerate(items)]  # all checked first
        if not ops:
            return
        strong = any(s for _, s in ops)
        if n == 1:
            await self._call(entry, "ERR_STATE_SAVE", entry.store.set(ops[0][0], strong))
            return
        failed = await self._call(entry, "ERR_STATE_SAVE", entry.store.set_many([op for op, _ in ops], strong))
        if failed:
            raise self._mismatch(entry, "ERR_STATE_SAVE", failed)

    async def delete(self, store: str, req: DeleteRequest, defaults: Mapping[str, str | None] | None = None) -> None:
        """Delete one key (with an etag: only if it matches)."""
        entry = self.entry(store)
        op, strong = self._delete_op(entry, req, defaults)
        await self._call(entry, "ERR_STATE_DELETE", entry.store.delete(op, strong), req.key)

    async def delete_many(self, store: str, reqs: Sequence[DeleteRequest]) -> None:
        """Delete keys independently; 409 naming the keys whose etag check failed."""
        entry = self.entry(store)
        n = len(reqs)
        ops = [_at(i, n, self._delete_op, entry, r, None) for i, r in enumerate(reqs)]
        if not ops:
            return
        strong = any(s for _, s in ops)
        failed = await self._call(entry, "ERR_STATE_BULK_DELETE", entry.store.delete_many([op for op, _ in ops], strong))
        if failed:
            raise self._mismatch(entry, "ERR_STATE_BULK_DELETE", failed)

    async def transact(
        self,
        store: str,
        operations: Sequence[TxOperation],
        metadata: Any = None,
        defaults: Mapping[str, str | None] | None = None,
    ) -> None:
        """Apply operations in order, all or nothing.

        ``metadata`` is the transaction's own (as daprd, it does not reach the operations: a
        ``ttlInSeconds`` there has no effect); ``defaults`` are request-level options. An
        upsert marked ``outbox.projection`` is the message daprd would publish instead of the
        value saved under the same key: it is not saved, and it needs such an operation.
        """
        entry = self.entry(store)
        if "ttlInSeconds" in parse_metadata(metadata):
            warn_once(
                "transaction-ttl",
                "a transaction's request-level metadata.ttlInSeconds has no effect (as in daprd, which passes "
                "it to the transaction, not to the operations): put ttlInSeconds in each operation's metadata",
            )
        ops: list[Op] = []
        projected: list[str] = []
        strong = False
        n = len(operations)
        for i, tx in enumerate(operations):
            req = tx.request
            where = "operations[{}].request"
            op: Op
            if tx.operation == "upsert" and isinstance(req, SaveRequest):
                op, s = _at(i, n, self._set_op, entry, req, defaults, where)
                if is_projection(req.metadata):
                    projected.append(op.key)
                    continue
            elif tx.operation == "delete" and isinstance(req, DeleteRequest):
                op, s = _at(i, n, self._delete_op, entry, req, defaults, where)
            else:
                raise ApiError(
                    "ERR_NOT_SUPPORTED_STATE_OPERATION",
                    f"operation type {tx.operation} not supported: operations[{i}].operation must be 'upsert' or 'delete'",
                    400,
                    "UNIMPLEMENTED",
                )
            ops.append(op)
            strong = strong or s
        if projected:
            warn_once(
                "outbox",
                "a transaction holds outbox projections (outbox.projection: true): they are not saved, as in "
                "daprd, and nothing is published: devinit has no pub/sub",
            )
            keys = {op.key for op in ops}
            for key in projected:
                if key not in keys:
                    raise malformed(
                        f"the outbox projection for key {key[len(entry.prefix) :]!r} has no operation on the same key: "
                        "a projection replaces the message published for another operation of the transaction "
                        "(Dapr fails the whole transaction); add that operation, or drop outbox.projection"
                    )
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

    # -- the metadata API --------------------------------------------------------------

    def metadata(self) -> RuntimeMetadata:
        """What GET /v1.0/metadata and GetMetadata show (each front end renders it)."""
        # A fresh round of pings for whoever reads next (devinit init/status wait for it),
        # rather than a result up to one interval old.
        self.monitor.request_check()
        components = []
        extended = dict(self.extended)
        for name, entry in sorted(self.entries.items()):
            caps = list(entry.store.features)
            if "ETAG" in caps and "TRANSACTIONAL" in caps:
                caps.append("ACTOR")
            health = replace(self.monitor.health[name])
            components.append(ComponentInfo(name, entry.spec.type, entry.spec.version, tuple(caps), health))
            # the same as text, for gRPC's string map (GetMetadata has no per-component field)
            extended[f"devinit.health.{name}"] = health.status + (f": {health.error}" if health.error else "")
        return RuntimeMetadata(self.app_id or "", __version__, tuple(components), extended)

    def set_metadata(self, key: str, value: str) -> None:
        """Keep ``key: value`` under ``extended`` (an empty key is a no-op, as in daprd).

        The entries' bytes (UTF-8, keys and values) are kept as a running total, so a call
        costs its own entry's size, not a walk over every entry."""
        if not key:
            return
        old = self.extended.get(key)
        size = self.extended_bytes + _utf8_size(key) + _utf8_size(value)
        if old is not None:
            size -= _utf8_size(key) + _utf8_size(old)
        if size > MAX_EXTENDED_BYTES:
            raise malformed(
                f"the extended metadata would hold {size} bytes, over devinit's limit of {MAX_EXTENDED_BYTES}: "
                "keep fewer or shorter values"
            )
        self.extended[key] = value
        self.extended_bytes = size

    # -- the devinit route (server/inspector_api.py): keys as stored, of every app id -----

    async def store_call(self, store: str, code: str, call: Callable[[Store], Awaitable[T]], key: str = "") -> T:
        """Run ``call`` on the store called ``store`` with the deadline and error mapping of the
        state API (``code``: the errorCode when it fails; ``key``: the one it is about). For the
        devinit route, which reaches full keys (``alpha||k``) that Dapr's routes refuse; off the
        hot path."""
        entry = self.entry(store)
        whole = StoreEntry(entry.store, entry.spec, "", entry.default_ttl)  # errors name keys whole
        result: T = await self._call(whole, code, call(entry.store), key)
        return result


def _utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (a lone surrogate from a client counts as 3)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _at(index: int, count: int, build: Any, entry: StoreEntry, req: Any, defaults: Any, where: str = "item {}") -> Any:
    """Build one operation; when the request holds several, a 400 says which one it was about.

    The location goes after the message, which starts with daprd's own text.
    """
    try:
        return build(entry, req, defaults)
    except ApiError as e:
        if e.http_status == 400 and count > 1:
            e.message = f"{e.message} ({where.format(index)})"
        raise
