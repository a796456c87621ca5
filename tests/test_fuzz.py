"""Property-based fuzzing (hypothesis): request bodies over HTTP, and each store against a model.

1. Bodies for save, bulk and transaction, built from fields of every JSON type (and raw
   bytes), sent to a live `devinit serve` on each store: the answer is always one of the
   contract's (never a 5xx), errors are JSON, a refused save writes nothing, and an accepted
   one stores exactly the values sent.
2. A RuleBasedStateMachine drives each store class directly (memory, SQLite, Redis,
   PostgreSQL) with random saves (last-write, first-write, right / stale / made-up etags,
   TTLs), deletes, multi-item saves and transactions, comparing every answer and every read
   with a plain Python model of the contract.

Under CI=true the examples are derandomized (the same every run); locally they vary. The
number of examples keeps each property to a few seconds on 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import backing_server
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from devinit.errors import EtagMismatch
from devinit.state.base import DeleteOp, SetOp, Store
from support import CI

S = "/v1.0/state/statestore"
FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=CI,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
COUNTS: dict[str, int] = {}  # examples run per property, printed at the end of each test (-s)

# -- strategies --------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12)
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8
)
weird_keys = st.sampled_from(["", "a||b", "||", "a\x00b", "x" * 2100, " ", "é/%2F?#", "k\u2028"])
options = st.one_of(
    st.none(),
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "concurrency": st.sampled_from(["first-write", "last-write", "", "x", 1]),
            "consistency": st.sampled_from(["strong", "eventual", "", "sometimes", None]),
        },
    ),
)
metadata = st.one_of(
    st.none(),
    json_values,
    st.fixed_dictionaries(
        {"ttlInSeconds": st.sampled_from(["-1", "3600", "0", "-5", "abc", "1.5", "", 3600, True, None, "99999999999"])}
    ),
)


def item_for(marker: str) -> st.SearchStrategy[Any]:
    """A save item: a dict with any of the fields, each of any type; string keys carry ``marker``."""
    key = st.one_of(st.text(min_size=1, max_size=10).map(lambda k: marker + k), weird_keys, json_values)
    fields = {
        "key": key,
        "value": json_values,
        "etag": st.one_of(st.none(), st.just(""), st.text(max_size=5), st.integers(), json_values),
        "options": options,
        "metadata": metadata,
    }
    return st.one_of(st.fixed_dictionaries({}, optional=fields), json_values)


@st.composite
def save_bodies(draw: st.DrawFn) -> tuple[str, Any]:
    marker = f"fz{uuid.uuid4().hex[:10]}-"
    body = draw(st.one_of(st.lists(item_for(marker), max_size=4), json_values))
    return marker, body


# -- 1. request bodies over HTTP -------------------------------------------------------------


def _assert_contract_answer(r: httpx.Response, allowed: set[int]) -> None:
    assert r.status_code in allowed, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert body["errorCode"] and body["message"]


def _marked_keys(body: Any, marker: str) -> list[str]:
    if not isinstance(body, list):
        return []
    return [
        k
        for it in body
        if isinstance(it, dict)
        and isinstance(k := it.get("key"), str)
        and k.startswith(marker)
        and "||" not in k
        and "\x00" not in k
        and len(k.encode()) <= 2048  # readable keys only
    ]


def test_fuzz_save_bodies(server, client: httpx.Client):
    n = 0

    @FUZZ
    @given(save_bodies())
    def prop(case: tuple[str, Any]) -> None:
        nonlocal n
        n += 1
        marker, body = case
        r = client.post(S, json=body)
        _assert_contract_answer(r, {204, 400, 409})
        keys = _marked_keys(body, marker)
        if not keys:
            return
        found = {o["key"]: o for o in client.post(S + "/bulk", json={"keys": keys}).json()}
        if r.status_code == 400:  # refused: nothing of it written
            assert not [k for k, o in found.items() if "data" in o], found
        elif r.status_code == 204:  # accepted: every item stored as sent (the last one per key wins)
            last = {it["key"]: it.get("value") for it in body if isinstance(it, dict) and it.get("key") in found}
            for k, value in last.items():
                assert found[k].get("data") == value, (k, value, found[k])

    prop()
    print(f"\n[fuzz] save bodies on {server.kind}: {n} cases")  # type: ignore[attr-defined]


def test_fuzz_bulk_and_transaction_bodies(server, client: httpx.Client):
    n = 0
    marker = f"fzt{uuid.uuid4().hex[:8]}-"
    ops = st.fixed_dictionaries(
        {},
        optional={
            "operation": st.one_of(st.sampled_from(["upsert", "delete", "get", ""]), json_values),
            "request": st.one_of(item_for(marker), json_values),
        },
    )
    tx_body = st.one_of(
        st.fixed_dictionaries(
            {}, optional={"operations": st.one_of(st.lists(ops, max_size=4), json_values), "metadata": metadata}
        ),
        json_values,
    )
    bulk_body = st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "keys": st.one_of(st.lists(st.one_of(st.text(max_size=8), weird_keys, json_values), max_size=4), json_values),
                "parallelism": st.one_of(st.integers(-2, 10), json_values),
            },
        ),
        json_values,
    )

    @FUZZ
    @given(tx_body, bulk_body)
    def prop(tx: Any, bulk: Any) -> None:
        nonlocal n
        n += 1
        r = client.post(S + "/transaction", json=tx)
        _assert_contract_answer(r, {204, 400, 409})
        r = client.post(S + "/bulk", json=bulk)
        _assert_contract_answer(r, {200, 400})

    prop()
    print(f"\n[fuzz] transaction + bulk bodies on {server.kind}: {n} cases")  # type: ignore[attr-defined]


def test_fuzz_raw_bytes_on_every_body_route(server, client: httpx.Client):
    n = 0
    raw = st.one_of(
        st.binary(max_size=64),
        st.text(max_size=40).map(str.encode),
        st.builds(lambda v: json.dumps(v).encode()[:-1], json_values),
    )

    @FUZZ
    @given(raw, st.sampled_from([S, S + "/bulk", S + "/transaction"]))
    def prop(body: bytes, path: str) -> None:
        nonlocal n
        n += 1
        r = client.post(path, content=body)
        _assert_contract_answer(r, {200, 204, 400, 409})

    prop()
    assert client.get("/v1.0/healthz").status_code == 204
    print(f"\n[fuzz] raw bytes on {server.kind}: {n} cases")  # type: ignore[attr-defined]


# -- 2. each store against a model of the contract -----------------------------------------

KEYS = ["a", "b", "c"]


def _make_store(kind: str, backing: Any, loop: asyncio.AbstractEventLoop, folder: Path) -> Store:
    if kind == "memory":
        from devinit.state.memory import MemoryStore

        store: Store = MemoryStore("m")
    elif kind == "sqlite":
        from devinit.state.sqlite import SqliteStore

        store = SqliteStore("s", str(folder / "sm.db"), cleanup_interval=None)
    elif kind == "redis":
        from devinit.state.redis import RedisStore

        store = RedisStore("r", "127.0.0.1", backing.port)
    elif kind == "redis-cluster":
        from devinit.state.redis import RedisStore

        store = RedisStore("rc", "127.0.0.1", backing.nodes[0].port, cluster_seeds=[("127.0.0.1", n.port) for n in backing.nodes])
    else:
        from devinit.state.postgres import PostgresStore

        store = PostgresStore("p", backing.conninfo, table="fuzz_model", cleanup_interval=None, max_connections=2)
    loop.run_until_complete(store.start())
    return store


class Model:
    """The contract's concurrency rules on a dict: key -> (value, etag, has_ttl)."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[bytes, str, bool]] = {}

    def holds(self, key: str, etag: str | None, first_write: bool, pending: dict[str, bool] | None = None) -> bool:
        if pending is not None and key in pending:  # written (True) or deleted (False) earlier in the transaction
            exists, known = pending[key], None
        else:
            exists, known = key in self.items, self.items.get(key, (b"", None, False))[1]
        if etag:
            return exists and known is not None and known == etag
        if first_write:
            return not exists
        return True


def make_machine(kind: str, backing: Any) -> type[RuleBasedStateMachine]:
    class StoreMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.folder = Path(tempfile.mkdtemp(prefix="devinit-sm-"))
            self.store = _make_store(kind, backing, self.loop, self.folder)
            self.prefix = f"sm{uuid.uuid4().hex[:10]}-"  # shared servers: keys of this run only
            if kind == "redis-cluster":  # one hash slot per run (transactions need one); runs spread over the masters
                self.prefix = "{" + self.prefix + "}"
            self.model = Model()
            self.seen: dict[str, list[str]] = {k: [] for k in KEYS}  # every etag a key had

        def run(self, coro: Any) -> Any:
            return self.loop.run_until_complete(coro)

        def teardown(self) -> None:
            self.run(self.store.close())
            self.loop.close()

        def full(self, k: str) -> str:
            return self.prefix + k

        def etag_for(self, key: str, choice: str) -> str | None:
            current = self.model.items.get(key, (b"", None, False))[1]
            if choice == "current":
                return current
            if choice == "stale":
                old = [e for e in self.seen[key] if e != current]
                return old[-1] if old else "1"
            if choice == "made-up":
                return "999999"
            return None

        def learn(self, key: str, value: bytes, ttl: bool) -> None:
            """After a successful write: read the new etag from the store; it must be new."""
            item = self.run(self.store.get(self.full(key)))
            assert item is not None and item.value == value
            assert item.etag not in self.seen[key], f"etag {item.etag} reused for {key}"
            self.seen[key].append(item.etag)
            self.model.items[key] = (value, item.etag, ttl)

        def expect(self, ok: bool, coro: Any) -> None:
            try:
                self.run(coro)
            except EtagMismatch:
                assert not ok, "the store refused an operation the contract allows"
                return
            assert ok, "the store applied an operation the contract refuses"

        @rule(
            key=st.sampled_from(KEYS),
            value=st.binary(max_size=8),
            first_write=st.booleans(),
            etag=st.sampled_from(["none", "current", "stale", "made-up"]),
            ttl=st.booleans(),
            strong=st.booleans(),
        )
        def save(self, key: str, value: bytes, first_write: bool, etag: str, ttl: bool, strong: bool) -> None:
            e = self.etag_for(key, etag)
            ok = self.model.holds(key, e, first_write)
            note(f"save {key} etag={e} fw={first_write} -> {ok}")
            self.expect(ok, self.store.set(SetOp(self.full(key), value, e, first_write, 3600 if ttl else None), strong))
            if ok:
                self.learn(key, value, ttl)

        @rule(key=st.sampled_from(KEYS), etag=st.sampled_from(["none", "current", "stale", "made-up"]))
        def delete(self, key: str, etag: str) -> None:
            e = self.etag_for(key, etag)
            ok = self.model.holds(key, e, False)
            self.expect(ok, self.store.delete(DeleteOp(self.full(key), e)))
            if ok:
                self.model.items.pop(key, None)  # its old etags stay in `seen`: never reused

        @rule(
            items=st.lists(
                st.tuples(st.sampled_from(KEYS), st.binary(max_size=4), st.sampled_from(["none", "current", "made-up"])),
                min_size=1,
                max_size=3,
                unique_by=lambda t: t[0],
            )
        )
        def save_many(self, items: list[tuple[str, bytes, str]]) -> None:
            ops = [SetOp(self.full(k), v, self.etag_for(k, e)) for k, v, e in items]
            expected_failed = [self.full(k) for k, _, e in items if not self.model.holds(k, self.etag_for(k, e), False)]
            failed = self.run(self.store.set_many(ops))
            assert sorted(failed) == sorted(expected_failed)
            for (k, v, _), op in zip(items, ops, strict=True):
                if op.key not in failed:
                    self.learn(k, v, False)

        @rule(
            ops=st.lists(
                st.tuples(
                    st.sampled_from(["upsert", "delete"]),
                    st.sampled_from(KEYS),
                    st.binary(max_size=4),
                    st.sampled_from(["none", "current", "stale"]),
                    st.booleans(),
                ),
                min_size=1,
                max_size=4,
            )
        )
        def transact(self, ops: list[tuple[str, str, bytes, str, bool]]) -> None:
            built = []
            pending: dict[str, bool] = {}
            ok = True
            for kind_, k, v, e, fw in ops:
                etag = self.etag_for(k, e)
                fw = fw and kind_ == "upsert"
                if not self.model.holds(k, etag, fw, pending):
                    ok = False
                pending[k] = kind_ == "upsert"
                built.append(SetOp(self.full(k), v, etag, fw) if kind_ == "upsert" else DeleteOp(self.full(k), etag))
            note(f"transact {ops} -> {ok}")
            self.expect(ok, self.store.transact(built))
            if ok:
                last: dict[str, bytes | None] = {}
                for kind_, k, v, _, _ in ops:
                    last[k] = v if kind_ == "upsert" else None
                for k, v in last.items():
                    if v is None:
                        self.model.items.pop(k, None)
                    else:
                        self.learn(k, v, False)

        @invariant()
        def reads_match_the_model(self) -> None:
            items = self.run(self.store.bulk_get([self.full(k) for k in KEYS]))
            for k, item in zip(KEYS, items, strict=True):
                want = self.model.items.get(k)
                if want is None:
                    assert item is None, (k, item)
                else:
                    assert item is not None, k
                    assert (item.value, item.etag, item.expire_at is not None) == want, (k, item, want)

    StoreMachine.__name__ = f"StoreMachine_{kind}"
    return StoreMachine


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis", "redis-cluster", "postgres"])
def test_store_matches_the_model(kind: str, request: pytest.FixtureRequest):
    machine = make_machine(kind, backing_server(request, kind))
    run_state_machine_as_test(
        machine,
        settings=settings(FUZZ, max_examples=40, stateful_step_count=25),
    )


@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300))
@settings(max_examples=300, deadline=None)
def test_redis_get_command_packed_by_hand_matches_hiredis(key: str) -> None:
    """The Redis GET hot path packs its two commands itself (state/redis.pack_read)."""
    import hiredis

    from devinit.state.redis import pack_read, read_commands

    assert pack_read(key) == b"".join(hiredis.pack_command(c) for c in read_commands(key))
