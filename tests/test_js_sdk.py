"""The state API through the official JavaScript SDK (``@dapr/dapr``, pinned in tests/js).

``tests/js/state.js`` (HTTP) and ``tests/js/grpc_state.js`` (gRPC, over connect-node's gRPC
transport on Node's http2: an HTTP/2 implementation independent of the Python SDK's) each run
one scenario with the SDK against a real `devinit serve` and write what every step returned
(or the error the SDK surfaced) to a JSON report; the assertions are here.
``tests/js/grpc_wire.js`` adds @grpc/grpc-js (installed with the SDK) for wire points. node_modules is installed with ``npm ci`` when missing (.ci/run does it
up front); a missing node or npm skips locally and fails under CI=true.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from support import ROOT, DevinitServer, need

JS = ROOT / "tests" / "js"
STORE = "statestore"


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with @dapr/dapr installed under tests/js."""
    node_bin, npm_bin = shutil.which("node"), shutil.which("npm")
    need(node_bin is not None and npm_bin is not None, "node and npm are needed for the JavaScript SDK tests")
    assert node_bin is not None and npm_bin is not None
    if not (JS / "node_modules" / "@dapr" / "dapr" / "package.json").exists():
        proc = subprocess.run(
            [npm_bin, "ci", "--no-audit", "--no-fund", "--prefix", str(JS)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        need(proc.returncode == 0, f"'npm ci --prefix tests/js' failed:\n{proc.stderr[-2000:]}")
    return node_bin


def run_scenario(
    node: str, server: DevinitServer, prefix: str, tmp_path: Path, script: str = "state.js", *args: str
) -> dict[str, Any]:
    report = tmp_path / "report.json"
    env = {
        **os.environ,
        "DAPR_HTTP_PORT": str(server.http_port),
        "DAPR_GRPC_PORT": str(server.grpc_port),
        "STORE": STORE,
        "KEY_PREFIX": prefix,
    }
    env.pop("DAPR_HTTP_ENDPOINT", None)  # would win over the port
    env.pop("DAPR_GRPC_ENDPOINT", None)
    proc = subprocess.run([node, script, str(report), *args], cwd=JS, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"node {script} failed:\n{proc.stdout}\n{proc.stderr}\nserver log:\n{server.log()}"
    return json.loads(report.read_text())


def error(step: dict[str, Any]) -> tuple[int, str]:
    assert "error" in step, f"expected an error, got {step}"
    return step["error"]["status"], step["error"]["body"]["errorCode"]


def test_js_sdk_state_api(node: str, server: DevinitServer, key: str, tmp_path: Path) -> None:
    r = run_scenario(node, server, key, tmp_path)
    p = key

    # The SDK reads /v1.0/metadata before its first call; the store is listed there.
    assert [c["name"] for c in r["metadata"]["ok"]["components"]] == [STORE]

    # save, get, getBulk: JSON values come back as JSON; a missing key is "" (a 204).
    assert r["save"] == {"ok": {}}
    assert r["get"] == {"ok": {"n": 1, "s": "é"}}
    assert r["getString"] == {"ok": "text"}
    assert r["getMissing"] == {"ok": ""}
    bulk = r["bulk"]["ok"]
    assert [i["key"] for i in bulk] == [f"{p}-a", f"{p}-missing", f"{p}-s"]
    assert bulk[0]["data"] == {"n": 1, "s": "é"} and bulk[0]["etag"]
    assert bulk[1] == {"key": f"{p}-missing"}
    assert bulk[2]["data"] == "text"

    # delete with a wrong etag: 409, nothing deleted
    assert error(r["deleteWrongEtag"]) == (409, "ERR_STATE_DELETE")
    assert r["afterDeleteWrongEtag"] == {"ok": {"n": 1, "s": "é"}}

    # save with the current etag applies; with the now stale one: 409, nothing written
    assert r["saveCurrentEtag"] == {"ok": {}}
    assert error(r["saveStaleEtag"]) == (409, "ERR_STATE_SAVE")
    after = r["afterStale"]["ok"][0]
    assert after["data"] == {"n": 2} and after["etag"] != bulk[0]["etag"]
    assert error(r["firstWrite"]) == (409, "ERR_STATE_SAVE")

    # delete with the right etag
    assert r["deleteRightEtag"] == {"ok": {}}
    assert r["afterDelete"] == {"ok": ""}

    # transaction (sent with "metadata": null), then one that must apply nothing
    assert r["transaction"] == {"ok": None}, r["transaction"]
    t1, t2, s = r["afterTransaction"]["ok"]
    assert (t1["data"], t2["data"], s) == ({"t": 1}, "two", {"key": f"{p}-s"})
    assert error(r["staleTransaction"]) == (409, "ERR_STATE_TRANSACTION")
    t1_after, t3 = r["afterStaleTransaction"]["ok"]
    assert t1_after == t1 and t3 == {"key": f"{p}-t3"}

    assert error(r["unknownStore"]) == (400, "ERR_STATE_STORE_NOT_FOUND")


def test_js_sdk_over_grpc(node: str, server: DevinitServer, key: str, tmp_path: Path) -> None:
    r = run_scenario(node, server, key, tmp_path, "grpc_state.js")
    p = key
    assert r["save"] == {"ok": {}}
    assert r["get"] == {"ok": {"n": 1, "s": "é"}}
    assert r["getString"] == {"ok": "text"}
    assert r["getBigLength"] == {"ok": 300 * 1024}  # 300 KiB each way: HTTP/2 flow control
    assert r["getMissing"] == {"ok": ""}
    bulk = r["bulk"]["ok"]
    assert [i["key"] for i in bulk] == [f"{p}-a", f"{p}-missing", f"{p}-s"]
    assert bulk[0]["data"] == {"n": 1, "s": "é"} and bulk[0]["etag"] and bulk[1]["etag"] == ""

    assert r["saveCurrentEtag"] == {"ok": {}}
    aborted = 10  # gRPC ABORTED
    assert r["saveStaleEtag"]["error"]["code"] == aborted and "etag mismatch" in r["saveStaleEtag"]["error"]["message"]
    assert r["afterStale"] == {"ok": {"n": 2}}
    assert r["firstWrite"]["error"]["code"] == aborted

    assert r["transaction"] == {"ok": None}, r["transaction"]
    t1, s = r["afterTransaction"]["ok"]
    assert (t1["data"], s["data"], s["etag"]) == ("one", "", "")
    assert r["delete"] == {"ok": {}} and r["afterDelete"] == {"ok": ""}
    assert r["unknownStore"]["error"]["code"] == 3  # INVALID_ARGUMENT, as a sidecar answers
    assert "not found" in r["unknownStore"]["error"]["message"]
    assert r["many"] == {"ok": 200}  # 200 concurrent calls on one connection


def test_js_grpc_stacks_compress_and_oversized_metadata_fails_one_call(
    node: str, server: DevinitServer, key: str, tmp_path: Path
) -> None:
    """connect-node (the JS SDK's transport) and grpc-js, each sending gzip-compressed messages;
    then grpc-js makes three calls at once, one with metadata over the 64 KiB header list:
    that call fails with RESOURCE_EXHAUSTED, the other two succeed (issue 13, points 6 and 7)."""
    from dapr.proto import api_v1

    value = b"compressible " * 100_000  # 1.3 MB
    save = api_v1.SaveStateRequest(store_name=STORE, states=[{"key": f"{key}-g", "value": value}])
    get = api_v1.GetStateRequest(store_name=STORE, key=f"{key}-g")
    given = {
        "store": STORE,
        "connectKey": f"{key}-c",
        "save": base64.b64encode(save.SerializeToString()).decode(),
        "get": base64.b64encode(get.SerializeToString()).decode(),
    }
    (tmp_path / "input.json").write_text(json.dumps(given))
    r = run_scenario(node, server, key, tmp_path, "grpc_wire.js", str(tmp_path / "input.json"))
    assert r["connectSave"] == {"ok": None}, r["connectSave"]
    assert r["connectGet"] == {"ok": 2 * 1024 * 1024}
    assert "ok" in r["grpcSave"], r["grpcSave"]
    assert api_v1.GetStateResponse.FromString(base64.b64decode(r["grpcGet"]["ok"])).data == value
    first, big, third = r["concurrent"]
    assert big["error"]["code"] == 8, big  # RESOURCE_EXHAUSTED
    for other in (first, third, r["after"]):
        assert api_v1.GetStateResponse.FromString(base64.b64decode(other["ok"])).data == value, other
