"""The pure parts of init, as tables: the setup record (today's files and older ones), the undo
of a failed init, and the choice of the server's ports. The end-to-end tests are in
test_lifecycle.py.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from devinit import paths, ports, setup_record
from devinit.errors import UsageError
from devinit.lifecycle import InitOptions, Undo, server_ports
from devinit.setup_record import SCHEMA, ComponentSetup, RedisSetup, SetupRecord

# --- the setup record ---------------------------------------------------------------------------

# What devinit wrote before the record had a class (schema 1: no "schema" key), for Redis and SQLite.
SCHEMA1_REDIS = {
    "home": "/home/me/.dapr",
    "store": "redis",
    "http_port": 3500,
    "grpc_port": 50001,
    "redis": {
        "image": "docker.io/library/redis:7.2.5",
        "port": 6379,
        "password": "pw",
        "container": "devinit-redis-3bb04d5d5c42",
        "volume": "devinit-redis-data-3bb04d5d5c42",
    },
    "component": {"path": "/home/me/.dapr/components/statestore.yaml", "sha256": "ab" * 32},
}
SCHEMA1_SQLITE = {
    "home": "/home/me/.dapr",
    "store": "sqlite",
    "http_port": 3600,
    "grpc_port": 50002,
    "sqlite": {"db": "/home/me/.local/share/devinit/statestore-3bb04d5d5c42.db"},
    "component": {"path": "/home/me/.dapr/components/statestore.yaml", "sha256": None},
}


def test_schema1_records_read_as_typed_values() -> None:
    r = SetupRecord.from_dict(SCHEMA1_REDIS, "/ignored")
    assert r == SetupRecord(
        "/home/me/.dapr",
        "redis",
        3500,
        50001,
        RedisSetup("docker.io/library/redis:7.2.5", 6379, "pw", "devinit-redis-3bb04d5d5c42", "devinit-redis-data-3bb04d5d5c42"),
        None,
        ComponentSetup("/home/me/.dapr/components/statestore.yaml", "ab" * 32),
    )
    s = SetupRecord.from_dict(SCHEMA1_SQLITE, "/ignored")
    assert (s.store, s.http_port, s.redis, s.sqlite_db) == ("sqlite", 3600, None, SCHEMA1_SQLITE["sqlite"]["db"])  # type: ignore[index]
    assert s.component == ComponentSetup("/home/me/.dapr/components/statestore.yaml", None)


@pytest.mark.parametrize("old", [SCHEMA1_REDIS, SCHEMA1_SQLITE])
def test_written_as_schema2_with_the_same_keys(old: dict) -> None:  # type: ignore[type-arg]
    out = SetupRecord.from_dict(old, "/ignored").to_dict()
    assert out == {**old, "schema": SCHEMA}
    assert SetupRecord.from_dict(out, "/ignored") == SetupRecord.from_dict(old, "/ignored")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ({"store": "mongodb"}, {"store": None}),
        ({"http_port": "3500"}, {"http_port": None}),
        ({"grpc_port": True}, {"grpc_port": None}),
        ({"http_port": -1}, {"http_port": None}),
        ({"redis": {"image": "x", "port": "6379"}}, {"redis": None}),
        ({"redis": "nope"}, {"redis": None}),
        ({"component": {"sha256": "x"}}, {"component": None}),
        ({"component": {"path": "/p", "sha256": 5}}, {"component": ComponentSetup("/p", None)}),
        ({"home": 7}, {"home": "/given"}),
    ],
)
def test_damaged_fields_read_as_missing(damage: dict, expected: dict) -> None:  # type: ignore[type-arg]
    r = SetupRecord.from_dict({**SCHEMA1_REDIS, **damage}, "/given")
    for name, value in expected.items():
        assert getattr(r, name) == value


def test_a_newer_schema_is_refused_with_what_to_do() -> None:
    with pytest.raises(UsageError, match=r"written by a newer devinit \(schema 3.*Upgrade devinit"):
        SetupRecord.from_dict({**SCHEMA1_REDIS, "schema": SCHEMA + 1}, "/h")


def test_read_and_write_through_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVINIT_DATA_DIR", str(tmp_path))
    key = paths.home_key(tmp_path / "home")
    assert setup_record.read(key, "/h") == SetupRecord("/h")  # none yet
    paths.state_dir().mkdir(parents=True)
    paths.setup_file(key).write_text("{not json")
    assert setup_record.read(key, "/h") == SetupRecord("/h")  # unreadable: start from the defaults
    paths.setup_file(key).write_text(json.dumps(SCHEMA1_REDIS))
    record = setup_record.read(key, "/h")
    assert record.redis is not None and record.redis.password == "pw"
    assert setup_record.write(key, record) == []
    assert stat.S_IMODE(paths.setup_file(key).stat().st_mode) == 0o600  # it holds the password
    assert json.loads(paths.setup_file(key).read_text())["schema"] == SCHEMA


def test_every_file_is_named_by_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVINIT_DATA_DIR", str(tmp_path))
    key = paths.home_key(tmp_path / "home")
    assert len(key) == 12 and key == paths.home_key(tmp_path / "home" / ".." / "home")
    assert paths.setup_file(key) == tmp_path / "state" / f"setup-{key}.json"
    assert paths.server_record(key) == tmp_path / "state" / f"server-{key}.json"
    assert paths.server_pid_file(key) == tmp_path / "state" / f"server-{key}.pid"
    assert paths.server_log(key) == tmp_path / "log" / f"server-{key}.log"
    assert paths.sqlite_db(key) == tmp_path / "data" / f"statestore-{key}.db"


# --- the undo of a failed init ---------------------------------------------------------------------


def ok() -> None:
    pass


def fails() -> None:
    raise RuntimeError("engine gone")


@pytest.mark.parametrize(
    ("actions", "left", "summary"),
    [
        ([], [], "Nothing was left behind by this run."),
        ([], ["volume v"], "Left as it was before: volume v. Nothing was left behind by this run."),
        ([("removed volume v", ok)], [], "Undone: removed volume v."),
        # newest first: the container goes before the volume it uses
        (
            [("removed volume v", ok), ("removed container c", ok), ("stopped the server (pid 7)", ok)],
            [],
            "Undone: stopped the server (pid 7); removed container c; removed volume v.",
        ),
        # one step cannot be undone: the others still are, and the summary says which failed and why
        (
            [("removed volume v", ok), ("removed container c", fails)],
            ["the previous server (pid 5) was stopped"],
            "Undone: removed volume v. Could not undo: removed container c (engine gone). "
            "Left as it was before: the previous server (pid 5) was stopped.",
        ),
        ([("removed container c", fails)], [], "Could not undo: removed container c (engine gone)."),
    ],
)
def test_undo_of_a_failed_init(actions: list, left: list[str], summary: str) -> None:  # type: ignore[type-arg]
    undo = Undo()
    ran: list[str] = []
    for what, action in actions:
        undo.add(what, lambda what=what, action=action: (ran.append(what), action()))
    undo.left += left
    assert undo.run() == summary
    assert ran == [what for what, _ in reversed(actions)]


# --- the server's ports ------------------------------------------------------------------------


def probe_with(states: dict[int, ports.PortState]):  # type: ignore[no-untyped-def]
    return lambda port: states.get(port, ports.PortState.FREE)


R, U = ports.PortState.RESERVED, ports.PortState.IN_USE


@pytest.mark.parametrize(
    ("asked", "before", "states", "expect", "notes"),
    [
        ((None, None), (None, None), {}, (3500, 50001), 0),
        ((4000, 4001), (3600, 50002), {}, (4000, 4001), 0),
        ((None, None), (3600, 50002), {}, (3600, 50002), 0),
        # 50001 in a Windows reserved range, not asked for: another port, and a note
        ((None, None), (None, None), {50001: R}, (3500, None), 1),
        # asked for on the command line: kept (the start says what is wrong)
        ((None, 50001), (None, None), {50001: R}, (3500, 50001), 0),
        # merely in use (maybe our own server): kept
        ((None, None), (None, None), {3500: U, 50001: U}, (3500, 50001), 0),
        # a port from the last run that Windows reserved since (ranges change at boot)
        ((None, None), (3600, 50002), {3600: R}, (None, 50002), 1),
    ],
)
def test_server_ports(asked, before, states, expect, notes) -> None:  # type: ignore[no-untyped-def]
    opts = InitOptions(http_port=asked[0], grpc_port=asked[1])
    setup = SetupRecord("/h", http_port=before[0], grpc_port=before[1])
    said: list[str] = []
    http, grpc = server_ports(opts, setup, said, probe_with(states))
    for got, want, reserved in ((http, expect[0], 3500 if before[0] is None else before[0]), (grpc, expect[1], 50001)):
        if want is None:
            assert got != reserved and ports.probe(got) is ports.PortState.FREE
        else:
            assert got == want
    assert len(said) == notes
    for note in said:
        assert "cannot be used" in note and "DAPR_" in note and "instead" in note
