"""`devinit state ...` and `devinit ui` as a user runs them: subprocesses of this checkout against
real `devinit serve` processes (and one started by a real `devinit init`)."""

from __future__ import annotations

import base64
import json
import os
import pty
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
from conftest import backing_server, store_component
from dapr.proto import api_v1, common_v1
from dapr.proto.runtime.v1 import dapr_pb2_grpc

from lifecycle_support import make_home
from support import ROOT, DevinitServer, devinit_env, free_port, write_component

R = "/devinit/v1/"


def devinit(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devinit", *args],
        env=devinit_env({"DAPR_HTTP_PORT": "", **(env or {})}),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def state(srv: DevinitServer, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``devinit state <args> --http-port <srv>``."""
    return devinit("state", *args, "--http-port", str(srv.http_port), **kw)


def ok(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    assert "Traceback" not in p.stderr, p.stderr
    return p.stdout


def fails(p: subprocess.CompletedProcess[str], *words: str) -> str:
    assert p.returncode == 1, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    assert p.stderr.startswith("Error: ") and "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in p.stderr, (w, p.stderr)
    return p.stderr


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevinitServer]:
    folder = tmp_path_factory.mktemp("cli") / "components"
    write_component(folder, "statestore", "state.in-memory")
    s = DevinitServer(folder, "--app-id", "alpha")
    yield s
    s.stop()


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


def test_set_get_ls_rm_with_etags(srv: DevinitServer, tag: str):
    key = f"alpha||{tag}"
    assert ok(state(srv, "set", key, '{"qty": 1, "tags": ["a"]}')).startswith(f"Saved {key} in statestore; etag ")
    assert json.loads(ok(state(srv, "get", key))) == {"qty": 1, "tags": ["a"]}
    assert '\n  "qty": 1' in ok(state(srv, "get", key))  # pretty-printed
    # the same key through Dapr's route of the app that owns it
    assert httpx.get(f"{srv.url}/v1.0/state/statestore/{tag}").json() == {"qty": 1, "tags": ["a"]}
    item = json.loads(ok(state(srv, "get", key, "--json")))
    assert item["key"] == key and item["appId"] == "alpha" and item["contentType"] == "application/json" and item["ttl"] is None
    etag = item["etag"]
    # a stale etag: exit 1 with the reason, nothing changed
    assert ok(state(srv, "set", key, "2", "--etag", etag))
    fails(state(srv, "set", key, "3", "--etag", etag), "etag mismatch", key)
    assert ok(state(srv, "get", key)).strip() == "2"
    fails(state(srv, "rm", key, "--etag", etag), "etag mismatch")
    # text that is not JSON is stored as a JSON string; '-' reads stdin; a TTL shows in ls
    ok(state(srv, "set", f"beta||{tag}-t", "hello world", "--ttl", "300"))
    assert httpx.get(f"{srv.url}{R}stores/statestore/keys/{quote(f'beta||{tag}-t', safe='')}").json()["value"] == "hello world"
    ok(state(srv, "set", f"beta||{tag}-s", "-", stdin='{"from": "stdin"}\n'))
    assert json.loads(ok(state(srv, "get", f"beta||{tag}-s"))) == {"from": "stdin"}
    table = ok(state(srv, "ls", "--prefix", f"beta||{tag}"))
    lines = table.splitlines()
    assert lines[0].split() == ["KEY", "APP", "ID", "SIZE", "EXPIRES", "ETAG"]
    row = next(line for line in lines if line.startswith(f"beta||{tag}-t "))
    assert row.split()[1] == "beta" and (" 4m" in row or " 5m00s" in row)  # 300 s, counting down
    listed = json.loads(ok(state(srv, "ls", "--app-id", "beta", "--json")))
    mine = {k["key"]: k for k in listed if tag in k["key"]}
    assert set(mine) == {f"beta||{tag}-t", f"beta||{tag}-s"} and all(k["appId"] == "beta" for k in listed)
    assert 200 < mine[f"beta||{tag}-t"]["ttl"] <= 300 and mine[f"beta||{tag}-s"]["ttl"] is None
    assert {"key", "etag", "size", "expireAt"} <= set(mine[f"beta||{tag}-s"])
    assert len(json.loads(ok(state(srv, "ls", "--app-id", "beta", "--json", "--limit", "1")))) == 1
    # rm with the current etag, then the key is gone
    current = json.loads(ok(state(srv, "get", key, "--json")))["etag"]
    assert ok(state(srv, "rm", key, "--etag", current)) == f"Deleted {key} from statestore.\n"
    fails(state(srv, "get", key), "is not in store 'statestore'")


def test_binary_and_text_values_print_as_they_are(srv: DevinitServer, tag: str):
    binary = bytes(range(256))
    with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as ch:  # raw bytes, as a gRPC client saves them
        dapr_pb2_grpc.DaprStub(ch).SaveState(
            api_v1.SaveStateRequest(
                store_name="statestore",
                states=[
                    common_v1.StateItem(key=f"{tag}-b", value=binary),
                    common_v1.StateItem(key=f"{tag}-t", value="naïve text".encode()),
                ],
            )
        )
    out = subprocess.run(
        [sys.executable, "-m", "devinit", "state", "get", f"alpha||{tag}-b", "--http-port", str(srv.http_port)],
        env=devinit_env(),
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout == binary  # piped: the bytes themselves
    assert ok(state(srv, "get", f"alpha||{tag}-t")) == "naïve text"
    item = json.loads(ok(state(srv, "get", f"alpha||{tag}-b", "--json")))
    assert item["contentType"] == "application/octet-stream" and base64.b64decode(item["value"]) == binary


def _mixed_state(srv: DevinitServer, tag: str) -> None:
    """JSON, text and binary values, with and without a TTL, of two app ids."""
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert (
            c.post(
                "/v1.0/state/statestore", json=[{"key": f"{tag}-j{i}", "value": {"i": i, "s": "é" * i}} for i in range(30)]
            ).status_code
            == 204
        )
        assert (
            c.post(
                "/v1.0/state/statestore", json=[{"key": f"{tag}-ttl", "value": [1], "metadata": {"ttlInSeconds": "900"}}]
            ).status_code
            == 204
        )
    with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as ch:
        dapr_pb2_grpc.DaprStub(ch).SaveState(
            api_v1.SaveStateRequest(
                store_name="statestore",
                states=[
                    common_v1.StateItem(key=f"{tag}-bin", value=b"\x00\xff\xfe binary", metadata={"ttlInSeconds": "600"}),
                    common_v1.StateItem(key=f"{tag}-txt", value=b"plain text, not JSON"),
                    common_v1.StateItem(key=f"{tag}-sp", value=b'{"spaced": true}'),
                ],
            )
        )
    ok(state(srv, "set", f"beta||{tag}-other", '{"app": "beta"}'))


def _exported(path: Path) -> dict[str, dict]:
    items = [json.loads(line) for line in path.read_text().splitlines()]
    return {i["key"]: i for i in items}


@pytest.mark.parametrize("target", ["sqlite", "redis", "postgres"])
def test_export_then_import_into_another_store_gives_the_same_state(
    target: str, srv: DevinitServer, tmp_path: Path, request: pytest.FixtureRequest, tag: str
):
    _mixed_state(srv, tag)
    first = tmp_path / "export.jsonl"
    assert f"to {first}" in state(srv, "export", "-o", str(first), "--prefix", f"alpha||{tag}").stderr
    assert first.stat().st_mode & 0o777 == 0o600  # it holds the data
    source = _exported(first)
    assert len(source) == 34 and f"beta||{tag}-other" not in source
    assert source[f"alpha||{tag}-j3"] == {
        "key": f"alpha||{tag}-j3",
        "value": {"i": 3, "s": "ééé"},
        "contentType": "application/json",
    }
    assert base64.b64decode(source[f"alpha||{tag}-bin"]["value"]) == b"\x00\xff\xfe binary"
    assert source[f"alpha||{tag}-txt"]["contentType"] == "text/plain; charset=utf-8"
    assert 500 <= source[f"alpha||{tag}-bin"]["ttl"] <= 600 and 800 <= source[f"alpha||{tag}-ttl"]["ttl"] <= 900

    folder = tmp_path / "components"
    store_component(
        target, folder, "statestore", backing_server(request, target), {"tableName": f"t{tag}"} if target != "redis" else None
    )
    other = DevinitServer(folder, "--app-id", "elsewhere")  # another app id: the keys keep theirs
    try:
        assert ok(state(other, "import", str(first))) == "Imported 34 keys into statestore.\n"
        assert ok(state(other, "import", str(first))) == "Imported 34 keys into statestore.\n"  # twice: same state
        second = tmp_path / "again.jsonl"
        ok(state(other, "export", "-o", str(second), "--prefix", f"alpha||{tag}"))
        again = _exported(second)
        assert set(again) == set(source)
        for key, item in source.items():
            copy = dict(again[key])
            if "ttl" in item:
                assert item["ttl"] - 120 <= copy.pop("ttl") <= item["ttl"], key  # kept, less the time between
            assert copy == {k: v for k, v in item.items() if k != "ttl"}, key
        # the bytes themselves (JSON that is not compact JSON text stays as it was written)
        raw = httpx.get(f"{other.url}{R}stores/statestore/keys/{quote(f'alpha||{tag}-sp', safe='')}").json()
        assert base64.b64decode(raw["value"]) == b'{"spaced": true}'
    finally:
        other.stop()


def test_export_to_stdout_and_import_from_stdin(srv: DevinitServer, tmp_path: Path, tag: str):
    ok(state(srv, "set", f"io||{tag}", '{"x": [1, 2]}'))
    out = ok(state(srv, "export", "--prefix", f"io||{tag}"))
    assert json.loads(out) == {"key": f"io||{tag}", "value": {"x": [1, 2]}, "contentType": "application/json"}
    ok(state(srv, "rm", f"io||{tag}"))
    assert ok(state(srv, "import", "-", stdin=out + "\n\n")) == "Imported 1 keys into statestore.\n"  # blank lines skipped
    assert json.loads(ok(state(srv, "get", f"io||{tag}"))) == {"x": [1, 2]}


def test_bad_import_lines_are_named_and_nothing_is_lost(srv: DevinitServer, tmp_path: Path, tag: str):
    good = [json.dumps({"key": f"bad||{tag}-{i}", "value": i}) for i in range(1500)]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([*good, "{not json", *good]) + "\n")
    err = fails(state(srv, "import", str(path)), f"{path} line 1501 is not JSON", "1000 items before it were imported", "again")
    assert "Traceback" not in err
    path.write_text(
        "\n".join([good[0], json.dumps({"key": f"bad||{tag}-x", "value": "%%%", "contentType": "application/octet-stream"})])
    )
    fails(state(srv, "import", str(path)), "line 2", "base64", "Nothing was imported")
    fails(state(srv, "import", str(tmp_path / "missing.jsonl")), "cannot read")
    fails(state(srv, "ls", "--prefix", "a", "--app-id", "b"), "cannot go together")


def test_clear_asks_or_takes_yes(srv: DevinitServer, tag: str):
    for i in range(5):
        ok(state(srv, "set", f"gone||{tag}-{i}", str(i)))
    ok(state(srv, "set", f"stays||{tag}", "1"))
    fails(state(srv, "clear", "--app-id", "gone"), "--yes")  # no terminal to ask on
    assert ok(state(srv, "clear", "--app-id", "gone", "--yes")) == "Deleted 5 keys from statestore.\n"
    assert json.loads(ok(state(srv, "ls", "--prefix", f"gone||{tag}", "--json"))) == []
    assert ok(state(srv, "get", f"stays||{tag}")).strip() == "1"


def test_ls_into_a_closed_pipe_stops_quietly(srv: DevinitServer, tag: str):
    body = {"items": [{"key": f"pipe||{tag}-{i:05d}", "value": "v" * 50} for i in range(3000)]}
    assert httpx.post(f"{srv.url}{R}stores/statestore/import", json=body, timeout=30).status_code == 200
    ls = subprocess.Popen(
        [sys.executable, "-m", "devinit", "state", "ls", "--http-port", str(srv.http_port)],
        env=devinit_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert ls.stdout is not None and ls.stderr is not None
    ls.stdout.readline()
    ls.stdout.close()  # as `| head -1` does
    assert ls.wait(timeout=60) == 0
    assert b"Traceback" not in ls.stderr.read()


def test_which_store_and_which_server(tmp_path: Path, srv: DevinitServer, tag: str):
    two = tmp_path / "two"
    write_component(two, "statestore", "state.in-memory")
    write_component(two, "orders", "state.in-memory")
    one = tmp_path / "one"
    write_component(one, "orders", "state.in-memory")
    a, b = DevinitServer(two), DevinitServer(one)
    try:
        ok(state(a, "set", "k", "1"))  # two stores: statestore
        assert httpx.get(f"{a.url}/v1.0/state/statestore/k").json() == 1
        ok(state(a, "set", "k", "2", "--store", "orders"))
        assert httpx.get(f"{a.url}/v1.0/state/orders/k").json() == 2
        ok(state(b, "set", "k", "3"))  # one store: that one, whatever its name
        assert httpx.get(f"{b.url}/v1.0/state/orders/k").json() == 3
        fails(state(b, "get", "k", "--store", "nope"), "nope is not found", "orders")
    finally:
        a.stop()
        b.stop()
    # DAPR_HTTP_PORT when nothing else says
    ok(
        devinit(
            "state",
            "set",
            f"env||{tag}",
            "1",
            env={"DAPR_HTTP_PORT": str(srv.http_port), "DEVINIT_DATA_DIR": str(tmp_path / "d")},
        )
    )
    assert ok(state(srv, "get", f"env||{tag}")).strip() == "1"
    port = free_port()
    fails(
        devinit("state", "ls", env={"DAPR_HTTP_PORT": str(port), "DEVINIT_DATA_DIR": str(tmp_path / "d")}),
        f"no devinit state server answers at http://127.0.0.1:{port} (DAPR_HTTP_PORT)",
        "devinit init",
    )
    fails(devinit("state", "ls", env={"DAPR_HTTP_PORT": "http", "DEVINIT_DATA_DIR": str(tmp_path / "d")}), "DAPR_HTTP_PORT")


def test_the_server_devinit_init_started_is_found_and_init_prints_the_page(tmp_path: Path):
    home = make_home(tmp_path)
    try:
        p = home.run(*home.init_args("--store", "sqlite"))
        assert p.returncode == 0, p.stdout + p.stderr
        assert f"inspector  http://127.0.0.1:{home.http_port}/ui/" in p.stdout
        env = {"DAPR_HTTP_PORT": str(free_port())}  # the init server comes first
        assert home.run("state", "set", "k", '{"v": 1}', env=env).returncode == 0
        assert json.loads(home.run("state", "get", "k", env=env).stdout) == {"v": 1}
        assert httpx.get(f"http://127.0.0.1:{home.http_port}/v1.0/state/statestore/k").json() == {"v": 1}
        listed = home.run("state", "ls", "--json")
        assert [k["key"] for k in json.loads(listed.stdout)] == ["k"]
    finally:
        home.run("uninstall", "--all")
        home.kill_server()


def test_ui_never_puts_the_token_on_the_browsers_command_line(tmp_path: Path):
    """devinit ui opens the page with a single-use ticket, never the token: the browser's
    argv (xdg-open, open, the browser) is readable by every local user (ps)."""
    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.in-memory")
    s = DevinitServer(folder, env={"DAPR_API_TOKEN": "s3cret/+"})
    opened = tmp_path / "opened.txt"
    fake = tmp_path / "browser.sh"  # $BROWSER: the command webbrowser runs with the URL
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$0" "$@" > {opened}.part && mv {opened}.part {opened}\n')
    fake.chmod(0o755)

    def browser_argv() -> list[str]:
        deadline = time.monotonic() + 20
        while not opened.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        argv = opened.read_text().splitlines()
        opened.unlink()
        return argv

    try:
        env = {"DAPR_API_TOKEN": "s3cret/+", "BROWSER": str(fake)}
        p = devinit("ui", "--http-port", str(s.http_port), env=env)
        assert ok(p).startswith(f"Inspector: http://127.0.0.1:{s.http_port}/ui/")
        assert "s3cret" not in p.stdout + p.stderr  # never printed
        argv = browser_argv()
        assert not any("s3cret" in a or quote("s3cret/+", safe="") in a for a in argv), argv
        url = argv[-1]
        base, _, fragment = url.partition("#ticket=")
        assert base == f"http://127.0.0.1:{s.http_port}/ui/" and fragment, url
        assert httpx.get(base).status_code == 200
        # the page trades the ticket for the token, once
        redeem = httpx.post(s.url + R + "tickets/redeem", json={"ticket": fragment})
        assert redeem.status_code == 200 and redeem.json() == {"token": "s3cret/+"}
        again = httpx.post(s.url + R + "tickets/redeem", json={"ticket": fragment})
        assert again.status_code == 403 and again.json()["errorCode"] == "ERR_TICKET_USED"
        p = devinit("ui", "--http-port", str(s.http_port), "--no-browser", env={"DAPR_API_TOKEN": "wrong"})
        fails(p, "API token")  # checked before any browser is sent there
    finally:
        s.stop()
    # a server without a token: the page as it is, no ticket
    s = DevinitServer(folder)
    try:
        ok(devinit("ui", "--http-port", str(s.http_port), env={"BROWSER": str(fake)}))
        assert browser_argv()[-1] == f"http://127.0.0.1:{s.http_port}/ui/"
    finally:
        s.stop()


def test_import_shows_a_progress_bar_on_a_terminal(srv: DevinitServer, tmp_path: Path, tag: str):
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"key": f"big||{tag}-{i}", "value": "x" * 1000}) + "\n" for i in range(1500)))
    assert path.stat().st_size > 1024 * 1024
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devinit", "state", "import", str(path), "--http-port", str(srv.http_port)],
            env=devinit_env({"COLUMNS": "100"}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=follower,
        )
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal's other end closed: the command ended
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=120) == 0
        assert proc.stdout is not None and proc.stdout.read() == b"Imported 1500 keys into statestore.\n"
    finally:
        os.close(leader)
    assert f"Importing {path.name}".encode() in seen and b"100%" in seen


def test_export_into_a_folder_that_is_not_there_is_a_clear_error(srv: DevinitServer, tmp_path: Path, tag: str):
    ok(state(srv, "set", f"x||{tag}", "1"))
    target = tmp_path / "no-such-folder" / "export.jsonl"
    err = fails(state(srv, "export", "-o", str(target)), f"cannot write {target}", "No such file or directory")
    assert "Traceback" not in err


def test_export_file_is_owner_only_even_over_a_leftover_partial_file(srv: DevinitServer, tmp_path: Path, tag: str):
    """A partial file left by an export that was killed, readable by others: the new export
    does not write the data into it (its mode would carry over to the export)."""
    ok(state(srv, "set", f"x||{tag}", "1"))
    target = tmp_path / "export.jsonl"
    leftover = tmp_path / ".export.jsonl.partial"
    leftover.write_text("old")
    leftover.chmod(0o644)
    ok(state(srv, "export", "-o", str(target), "--prefix", f"x||{tag}"))
    assert target.stat().st_mode & 0o777 == 0o600
    assert not leftover.exists()


def test_ls_shows_control_characters_in_keys_escaped_one_row_each(srv: DevinitServer, tag: str):
    """A key is any string: a newline would split its row in two and an escape sequence would
    recolour (or retitle) the user's terminal. The table shows them escaped, as redis-cli does;
    --json keeps the keys exact."""
    odd = f"odd||{tag}-a\nb\x1b[31mred\u202e"
    r = httpx.put(f"{srv.url}{R}stores/statestore/keys/{quote(odd, safe='')}", json={"value": 1}, trust_env=False)
    assert r.status_code == 200, r.text
    lines = ok(state(srv, "ls", "--prefix", f"odd||{tag}")).splitlines()
    assert len(lines) == 2 and "\x1b" not in lines[1] and "\u202e" not in lines[1], lines
    assert lines[1].startswith(f"odd||{tag}-a\\nb\\x1b[31mred\\u202e "), lines
    assert [k["key"] for k in json.loads(ok(state(srv, "ls", "--prefix", f"odd||{tag}", "--json")))] == [odd]
