"""Fidelity to daprd (issue 16, and 13.11 / 13.14): what a sidecar answers, devinit answers.

Each test names the point it covers. They run on every store (the ``server`` fixture), over
HTTP (httpx) and gRPC (the official Python SDK, or its generated stub for fields the
DaprClient hides). daprd's behaviour is taken from its source (dapr/dapr pkg/api, dapr/kit
errors, components-contrib state) and from dapr/python-sdk's examples' expected output.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.proto import api_service_v1, api_v1, common_v1

from support import DevinitServer, RedisServer, point_sdk_at, write_component

STORE = "statestore"
S = f"/v1.0/state/{STORE}"
MIB = 1024 * 1024
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


def etag_of(client: httpx.Client, key: str) -> str:
    r = client.get(f"{S}/{key}")
    assert r.status_code == 200, r.text
    return r.headers["etag"]


def error_body(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text[:500]
    body = r.json()
    assert body["errorCode"] == code, body
    return body


def error_info(body: dict) -> dict:
    """The ErrorInfo of an HTTP error body (daprd puts it last)."""
    info = body["details"][-1]
    assert info["@type"] == ERROR_INFO and info["domain"] == "dapr.io", body
    return info


def said_once(server: DevinitServer, words: str) -> bool:
    return server.log().count(words) == 1


# -- 16.1 / 16.2: errors carry daprd's details, and start with daprd's text ----------------


def test_http_illegal_key_is_daprds_error(client: httpx.Client, key: str) -> None:
    message = f"input key/keyPrefix '{key}||x' can't contain '||'"
    for r in (
        client.post(S, json=[{"key": f"{key}||x", "value": 1}]),
        client.get(f"{S}/{key}%7C%7Cx"),
        client.delete(f"{S}/{key}||x"),
        client.post(f"{S}/bulk", json={"keys": [f"{key}||x"]}),
        client.post(f"{S}/transaction", json={"operations": [{"operation": "upsert", "request": {"key": f"{key}||x"}}]}),
    ):
        body = error_body(r, 400, "ERR_MALFORMED_REQUEST")
        assert body["message"] == message
        # dapr/kit's JSON: BadRequest, ResourceInfo, ErrorInfo, in the order daprd adds them
        assert body["details"] == [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "field_violations": [{"field": f"{key}||x", "description": message}],
            },
            {
                "@type": "type.googleapis.com/google.rpc.ResourceInfo",
                "description": "",
                "owner": "",
                "resource_name": STORE,
                "resource_type": "state",
            },
            {"@type": ERROR_INFO, "domain": "dapr.io", "metadata": None, "reason": "DAPR_STATE_ILLEGAL_KEY"},
        ]


def test_http_store_errors_start_with_daprds_text(client: httpx.Client, key: str) -> None:
    body = error_body(client.get(f"/v1.0/state/nosuch/{key}"), 400, "ERR_STATE_STORE_NOT_FOUND")
    assert body["message"].startswith("state store nosuch is not found") and STORE in body["message"]
    assert body["details"] == [{"@type": ERROR_INFO, "domain": "dapr.io", "metadata": None, "reason": "DAPR_STATE_NOT_FOUND"}]

    client.post(S, json=[{"key": key, "value": 1}])
    stale = etag_of(client, key)
    client.post(S, json=[{"key": key, "value": 2}])
    cases = [
        (
            client.post(S, json=[{"key": key, "value": 3, "etag": stale}]),
            409,
            "ERR_STATE_SAVE",
            f"failed saving state in state store {STORE}: possible etag mismatch",
        ),
        (
            client.delete(f"{S}/{key}", headers={"If-Match": stale}),
            409,
            "ERR_STATE_DELETE",
            f"failed deleting state with key {key}: possible etag mismatch",
        ),
        (
            client.post(
                f"{S}/transaction", json={"operations": [{"operation": "delete", "request": {"key": key, "etag": stale}}]}
            ),
            409,
            "ERR_STATE_TRANSACTION",
            "error while executing state transaction: possible etag mismatch",
        ),
        (
            client.post(f"{S}/transaction", json={"operations": [{"operation": "merge", "request": {"key": key}}]}),
            400,
            "ERR_NOT_SUPPORTED_STATE_OPERATION",
            "operation type merge not supported",
        ),
        (client.post(S, json=[{"key": "", "value": 1}]), 400, "ERR_MALFORMED_REQUEST", '"key" is a required field'),
    ]
    for r, status, code, opening in cases:
        body = error_body(r, status, code)
        assert body["message"].startswith(opening), body
        assert error_info(body)["reason"] in (code, "ERR_STATE_SAVE")
    assert client.get(f"{S}/{key}").json() == 2


def test_sdk_stale_etag(dapr: DaprClient, stub: api_service_v1.DaprStub, key: str) -> None:
    dapr.save_state(STORE, key, "v1")
    stale = dapr.get_state(STORE, key).etag
    dapr.save_state(STORE, key, "v2")
    calls = [
        (lambda: dapr.save_state(STORE, key, "v3", etag=stale), "ERR_STATE_SAVE", f"failed saving state in state store {STORE}"),
        (lambda: dapr.delete_state(STORE, key, etag=stale), "ERR_STATE_DELETE", f"failed deleting state with key {key}"),
        (
            lambda: dapr.execute_state_transaction(STORE, [TransactionalStateOperation(key, "v3", etag=stale)]),
            "ERR_STATE_TRANSACTION",
            "error while executing state transaction",
        ),
    ]
    for call, reason, opening in calls:
        with pytest.raises(DaprGrpcError) as excinfo:
            call()
        err = excinfo.value
        assert err.code() == grpc.StatusCode.ABORTED
        assert err.error_code() == reason and err.details().startswith(opening + ": possible etag mismatch")
        details = err.status_details()
        assert details.error_info == {"@type": ERROR_INFO, "reason": reason, "domain": "dapr.io"}
        assert details.resource_info is None and details.bad_request is None
    with pytest.raises(grpc.RpcError) as excinfo:  # DeleteBulkState: the SDK has no call for it
        stub.DeleteBulkState(
            api_v1.DeleteBulkStateRequest(
                store_name=STORE, states=[common_v1.StateItem(key=key, etag=common_v1.Etag(value=stale))]
            )
        )
    assert excinfo.value.code() == grpc.StatusCode.ABORTED
    assert DaprGrpcError(excinfo.value).error_code() == "ERR_STATE_BULK_DELETE"
    assert dapr.get_state(STORE, key).data == b"v2"


def test_sdk_illegal_key(dapr: DaprClient) -> None:
    for call in (
        lambda: dapr.save_state(STORE, "a||b", "v"),
        lambda: dapr.get_state(STORE, "a||b"),
        lambda: dapr.delete_state(STORE, "a||b"),
        lambda: dapr.get_bulk_state(STORE, ["a||b"]),
    ):
        with pytest.raises(DaprGrpcError) as excinfo:
            call()
        err = excinfo.value
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details() == "input key/keyPrefix 'a||b' can't contain '||'"
        assert err.error_code() == "DAPR_STATE_ILLEGAL_KEY"
        details = err.status_details()
        assert details.resource_info == {
            "@type": "type.googleapis.com/google.rpc.ResourceInfo",
            "resource_type": "state",
            "resource_name": STORE,
        }
        assert details.bad_request["field_violations"] == [{"field": "a||b", "description": err.details()}]


def test_sdk_missing_store(dapr: DaprClient, key: str) -> None:
    with pytest.raises(DaprGrpcError) as excinfo:
        dapr.save_state("nosuch", key, "v")
    err = excinfo.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("state store nosuch is not found")
    assert err.error_code() == "DAPR_STATE_NOT_FOUND"
    assert err.status_details().error_info == {"@type": ERROR_INFO, "reason": "DAPR_STATE_NOT_FOUND", "domain": "dapr.io"}
    assert err.status_details().resource_info is None and err.status_details().bad_request is None


def test_sdk_malformed_requests(dapr: DaprClient, stub: api_service_v1.DaprStub, key: str) -> None:
    with pytest.raises(DaprGrpcError) as excinfo:
        dapr.save_state(STORE, "", "v")
    err = excinfo.value  # daprd: InvalidArgument, ERR_STATE_SAVE, "state key cannot be empty"
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "state key cannot be empty" in err.details()
    assert err.error_code() == "ERR_STATE_SAVE"
    op = api_v1.TransactionalStateOperation(operationType="merge", request=common_v1.StateItem(key=key, value=b"v"))
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.ExecuteStateTransaction(api_v1.ExecuteStateTransactionRequest(storeName=STORE, operations=[op]))
    err = DaprGrpcError(excinfo.value)
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED and err.details().startswith("operation type merge not supported")
    assert err.error_code() == "ERR_NOT_SUPPORTED_STATE_OPERATION"
    with pytest.raises(DaprGrpcError) as excinfo:
        dapr.save_state(STORE, key, "v", state_metadata={"ttlInSeconds": "soon"})
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert excinfo.value.error_code() == "ERR_MALFORMED_REQUEST"


# In the style of dapr/python-sdk examples/error_handling (its README's expected lines below are
# the contract; the script is devinit's own).
ERROR_HANDLING = """
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError

with DaprClient() as client:
    try:
        client.save_state(store_name="statestore", key="key||", value="value_1")
    except DaprGrpcError as failure:
        info = failure.status_details()
        print(f"Status code: {failure.code()}")
        print(f"Message: {failure.details()}")
        print(f"Error code: {failure.error_code()}")
        if info.error_info is not None:
            print(f"Error info(reason): {info.error_info['reason']}")
        if info.resource_info is not None:
            print(f"Resource info (resource type): {info.resource_info['resource_type']}")
            print(f"Resource info (resource name): {info.resource_info['resource_name']}")
        if info.bad_request is not None:
            violation = info.bad_request["field_violations"][0]
            print(f"Bad request (field): {violation['field']}")
            print(f"Bad request (description): {violation['description']}")
        print(f"JSON: {failure.json()}")
"""
EXPECTED = [
    "Status code: StatusCode.INVALID_ARGUMENT",
    "Message: input key/keyPrefix 'key||' can't contain '||'",
    "Error code: DAPR_STATE_ILLEGAL_KEY",
    "Error info(reason): DAPR_STATE_ILLEGAL_KEY",
    "Resource info (resource type): state",
    "Resource info (resource name): statestore",
    "Bad request (field): key||",
    "Bad request (description): input key/keyPrefix 'key||' can't contain '||'",
    'JSON: {"status_code": "INVALID_ARGUMENT", "message": "input key/keyPrefix \'key||\' can\'t contain \'||\'", '
    '"error_code": "DAPR_STATE_ILLEGAL_KEY", "details": {"error_info": {"@type": "type.googleapis.com/google.rpc.ErrorInfo", '
    '"reason": "DAPR_STATE_ILLEGAL_KEY", "domain": "dapr.io"}, "retry_info": null, "debug_info": null, "quota_failure": null, '
    '"precondition_failure": null, "bad_request": {"@type": "type.googleapis.com/google.rpc.BadRequest", "field_violations": '
    '[{"field": "key||", "description": "input key/keyPrefix \'key||\' can\'t contain \'||\'"}]}, "request_info": null, '
    '"resource_info": {"@type": "type.googleapis.com/google.rpc.ResourceInfo", "resource_type": "state", "resource_name": '
    '"statestore"}, "help": null, "localized_message": null}}',
]


def test_error_handling_example_output(server: DevinitServer, tmp_path: Path) -> None:
    script = tmp_path / "error_handling.py"
    script.write_text(ERROR_HANDLING)
    env = {"DAPR_HTTP_PORT": str(server.http_port), "DAPR_GRPC_PORT": str(server.grpc_port)}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=server.env | env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == EXPECTED


# -- 16.3: a transaction's own ttlInSeconds reaches no operation --------------------------------


def test_transaction_level_ttl_is_not_applied(
    server: DevinitServer, client: httpx.Client, dapr: DaprClient, stub: api_service_v1.DaprStub, key: str
) -> None:
    ops = {"operations": [{"operation": "upsert", "request": {"key": key, "value": 1}}], "metadata": {"ttlInSeconds": "100"}}
    assert client.post(f"{S}/transaction", json=ops).status_code == 204
    assert client.get(f"{S}/{key}").status_code == 200 and "metadata.ttlExpireTime" not in client.get(f"{S}/{key}").headers
    dapr.execute_state_transaction(
        STORE, [TransactionalStateOperation(key + "-g", "v")], transactional_metadata={"ttlInSeconds": "100"}
    )
    assert "ttlExpireTime" not in stub.GetState(api_v1.GetStateRequest(store_name=STORE, key=key + "-g")).metadata
    # metadata.<name> in the query string reaches each operation (as daprd)
    r = client.post(f"{S}/transaction", params={"metadata.ttlInSeconds": "100"}, json={"operations": ops["operations"]})
    assert r.status_code == 204 and "metadata.ttlExpireTime" in client.get(f"{S}/{key}").headers
    # and an operation's own TTL applies, whatever the transaction's says
    dapr.execute_state_transaction(
        STORE,
        [TransactionalStateOperation(key + "-o", "v", metadata={"ttlInSeconds": "100"})],
        transactional_metadata={"ttlInSeconds": "5"},
    )
    assert "ttlExpireTime" in stub.GetState(api_v1.GetStateRequest(store_name=STORE, key=key + "-o")).metadata
    assert said_once(server, "request-level metadata.ttlInSeconds has no effect")


# -- 16.4: keys in the URL as daprd reads them --------------------------------------------------


def test_url_keys_are_query_unescaped_and_paths_cleaned(client: httpx.Client, key: str) -> None:
    assert client.post(S, json=[{"key": f"{key} sp", "value": "space"}, {"key": f"{key}+p", "value": "plus"}]).status_code == 204
    assert client.get(f"{S}/{key}+sp").json() == "space"  # + is a space
    assert client.get(f"{S}/{key}%20sp").json() == "space"
    assert client.get(f"{S}/{key}%2Bp").json() == "plus"
    assert client.post(S, json=[{"key": key, "value": "k"}]).status_code == 204
    for path in (f"{S}/{key}/", f"{S}//{key}", f"/v1.0//state/{STORE}/{key}", f"{S}/x/../{key}", f"{S}/./{key}"):
        r = client.send(client.build_request("GET", client.base_url.copy_with(raw_path=path.encode())))  # sent as is
        assert r.status_code == 200 and r.json() == "k", (path, r.text)
    r = client.send(client.build_request("DELETE", client.base_url.copy_with(raw_path=f"{S}/{key}/".encode())))
    assert r.status_code == 204 and client.get(f"{S}/{key}").status_code == 204  # deleted "k", not "k/"
    assert error_body(client.get(f"{S}/{key}%zz"), 400, "ERR_MALFORMED_REQUEST")  # Go refuses a bad escape too


# -- 16.5: bulk get as daprd answers it --------------------------------------------------------


def test_bulk_get_empty_and_parallelism(client: httpx.Client, stub: api_service_v1.DaprStub, key: str) -> None:
    assert client.post(S, json=[{"key": key, "value": 1}]).status_code == 204
    r = client.post(f"{S}/bulk", json={})
    assert r.status_code == 200 and r.json() == []
    for parallelism in (0, -1, 3):
        r = client.post(f"{S}/bulk", json={"keys": [key], "parallelism": parallelism})
        assert r.status_code == 200 and r.json()[0]["data"] == 1, r.text
        items = stub.GetBulkState(api_v1.GetBulkStateRequest(store_name=STORE, keys=[key], parallelism=parallelism)).items
        assert [i.data for i in items] == [b"1"]


@pytest.fixture
def failing_redis(tmp_path: Path) -> Iterator[tuple[DevinitServer, RedisServer]]:
    """A `devinit serve` whose Redis is stopped once it has a value."""
    redis = RedisServer(tmp_path / "redis")
    srv = DevinitServer(_components(tmp_path, "state.redis", {"redisHost": redis.host}))
    try:
        yield srv, redis
    finally:
        srv.stop()
        redis.stop()


def _components(tmp_path: Path, ctype: str, metadata: dict[str, str] | None = None, name: str = STORE) -> Path:
    folder = tmp_path / "components"
    write_component(folder, "c", ctype, metadata)
    path = folder / "c.yaml"
    path.write_text(path.read_text().replace("name: c\n", f"name: {name}\n", 1))
    return folder


def test_bulk_get_while_the_store_fails_answers_each_item_with_its_error(failing_redis) -> None:
    srv, redis = failing_redis
    with httpx.Client(base_url=srv.url, timeout=15) as client, grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
        assert client.post(S, json=[{"key": "a", "value": 1}]).status_code == 204
        redis.stop()
        r = client.post(f"{S}/bulk", json={"keys": ["a", "b"]})
        assert r.status_code == 200, r.text
        assert [(i["key"], sorted(i)) for i in r.json()] == [("a", ["error", "key"]), ("b", ["error", "key"])]
        assert redis.host in r.json()[0]["error"]
        items = api_service_v1.DaprStub(channel).GetBulkState(api_v1.GetBulkStateRequest(store_name=STORE, keys=["a", "b"])).items
        assert [(i.key, i.data, bool(i.error)) for i in items] == [("a", b"", True), ("b", b"", True)]


# -- 16.7: an unknown consistency is ignored on reads ------------------------------------------


def test_unknown_read_consistency_is_ignored(
    server: DevinitServer, client: httpx.Client, stub: api_service_v1.DaprStub, key: str
) -> None:
    assert client.post(S, json=[{"key": key, "value": 1}]).status_code == 204
    for _ in range(2):
        assert client.get(f"{S}/{key}", params={"consistency": "linearizable"}).json() == 1
    assert said_once(server, "a read asked for consistency 'linearizable': ignored")
    resp = stub.GetState(api_v1.GetStateRequest(store_name=STORE, key=key, consistency=7))  # not in the enum
    assert resp.data == b"1"
    for r in (
        client.post(S, params={"consistency": "linearizable"}, json=[{"key": key, "value": 2}]),
        client.delete(f"{S}/{key}", params={"consistency": "linearizable"}),
    ):
        error_body(r, 400, "ERR_MALFORMED_REQUEST")
    assert client.get(f"{S}/{key}").json() == 1


# -- 16.8: any valid path segment names a component --------------------------------------------


def test_component_named_with_a_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = DevinitServer(_components(tmp_path, "state.in-memory", name="my store"))
    try:
        point_sdk_at(monkeypatch, srv)
        with httpx.Client(base_url=srv.url, timeout=15) as client, DaprClient() as dapr:
            assert client.post("/v1.0/state/my+store", json=[{"key": "k", "value": 1}]).status_code == 204
            assert client.get("/v1.0/state/my%20store/k").json() == 1
            assert [c["name"] for c in client.get("/v1.0/metadata").json()["components"]] == ["my store"]
            dapr.save_state("my store", "g", "v")
            assert dapr.get_state("my store", "g").data == b"v"
            assert client.get("/v1.0/state/my+store/g").content == b"v"
    finally:
        srv.stop()


# -- 16.9: the metadata write API --------------------------------------------------------------


def test_metadata_write_api(client: httpx.Client, dapr: DaprClient, key: str) -> None:
    r = client.put(f"/v1.0/metadata/{key}-http", content=b"from http")
    assert r.status_code == 204 and r.content == b""
    dapr.set_metadata(f"{key}-grpc", "from grpc")
    assert client.put("/v1.0/metadata/a+b%2Fc", content=b"x").status_code == 204  # the key is a path parameter
    for extended in (client.get("/v1.0/metadata").json()["extended"], dapr.get_metadata().extended_metadata):
        assert extended[f"{key}-http"] == "from http" and extended[f"{key}-grpc"] == "from grpc"
        assert extended["a b/c"] == "x" and extended[f"devinit.health.{STORE}"]
    client.put(f"/v1.0/metadata/{key}-http", content=b"again")  # a key set again: its new value
    assert dapr.get_metadata().extended_metadata[f"{key}-http"] == "again"


# -- the leniencies: served, and said once -----------------------------------------------------


def test_leniencies_are_served_and_said_once(server: DevinitServer, client: httpx.Client, key: str) -> None:
    for i in range(2):
        r = client.post(S, json=f'[{{"key": "{key}", "value": {i}}}]')  # a JSON string holding the array
        assert r.status_code == 204, r.text
        etag = etag_of(client, key)
        body = f'[{{"key": "{key}", "value": {i}, "etag": {etag}}}]'  # unquoted: a number, when it is digits
        assert client.post(S, content=body).status_code == (204 if etag.isdigit() else 409)
        assert client.post(S, json=[{"key": key, "value": i, "metadata": {"ttlInSeconds": 60}}]).status_code == 204
        assert client.get(f"{S}/{key}", headers={"consistency": "strong"}).json() == i
        assert client.post(S, json=[{"key": f"{key}/s", "value": i}]).status_code == 204
        assert client.get(f"{S}/{key}/s").json() == i  # an unencoded / in a key
        assert client.delete(f"{S}/{key}/s", headers={"If-Match": f'"{etag_of(client, f"{key}%2Fs")}"'}).status_code == 204
    for words in (
        "a save body was a JSON string holding the array",
        "sent metadata.ttlInSeconds as a JSON number",
        "sent consistency as a header",
        "a URL key held an unencoded '/'",
        "a delete sent If-Match with a quoted etag",
    ):
        assert said_once(server, words), words
    log = server.log()
    assert log.count("sent an etag as a JSON number") <= 1
    assert "daprd answers 400" in log and "daprd ignores headers" in log and "daprd answers 404" in log


# -- 13.11: repeated keys are answered once; the answer has a bound -------------------------


def test_bulk_get_repeated_keys_are_answered_once(client: httpx.Client, stub: api_service_v1.DaprStub, key: str) -> None:
    big = "x" * MIB
    assert client.post(S, json=[{"key": key, "value": big}]).status_code == 204
    r = client.post(f"{S}/bulk", json={"keys": [key] * 100 + [key + "-missing", key]})
    assert r.status_code == 200
    assert [i["key"] for i in r.json()] == [key, key + "-missing"] and r.json()[0]["data"] == big
    items = stub.GetBulkState(api_v1.GetBulkStateRequest(store_name=STORE, keys=[key] * 100)).items
    assert len(items) == 1 and len(items[0].data) == MIB + 2


def test_bulk_get_answer_has_a_bound(client: httpx.Client, stub: api_service_v1.DaprStub, key: str) -> None:
    keys = [f"{key}-{i}" for i in range(5)]
    for k in keys:
        assert client.post(S, json=[{"key": k, "value": "x" * MIB}]).status_code == 204
    body = error_body(client.post(f"{S}/bulk", json={"keys": keys}), 400, "ERR_STATE_BULK_GET")
    assert "fewer keys" in body["message"]
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.GetBulkState(api_v1.GetBulkStateRequest(store_name=STORE, keys=keys))
    assert excinfo.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.post(f"{S}/bulk", json={"keys": keys[:3]}).status_code == 200  # within the bound


# -- 13.14: outbox projections are not saved ---------------------------------------------------


def test_outbox_pattern_as_in_the_sdk_example(server: DevinitServer, dapr: DaprClient, key: str) -> None:
    """dapr/python-sdk examples/state_store expects 'Got value after outbox pattern: b'val1''."""
    dapr.execute_state_transaction(
        STORE,
        [
            TransactionalStateOperation(key=key, data="val1", metadata={"outbox.projection": "false"}),
            TransactionalStateOperation(key=key, data="val2", metadata={"outbox.projection": "true"}),
        ],
    )
    assert f"Got value after outbox pattern: {dapr.get_state(STORE, key).data!r}" == "Got value after outbox pattern: b'val1'"
    dapr.execute_state_transaction(
        STORE,
        [
            TransactionalStateOperation(key=key, data="val3", metadata={"outbox.projection": "TRUE"}),
            TransactionalStateOperation(key=key, operation_type=TransactionOperationType.delete),
        ],
    )
    assert dapr.get_state(STORE, key).data == b""
    assert said_once(server, "nothing is published: devinit has no pub/sub")


def test_outbox_projection_without_its_operation_fails(client: httpx.Client, dapr: DaprClient, key: str) -> None:
    ops = [
        {"operation": "upsert", "request": {"key": key + "-other", "value": 1}},
        {"operation": "upsert", "request": {"key": key, "value": 2, "metadata": {"outbox.projection": "true"}}},
    ]
    body = error_body(client.post(f"{S}/transaction", json={"operations": ops}), 400, "ERR_MALFORMED_REQUEST")
    assert key in body["message"] and "outbox" in body["message"]
    with pytest.raises(DaprGrpcError) as excinfo:
        dapr.execute_state_transaction(
            STORE, [TransactionalStateOperation(key=key, data="v", metadata={"outbox.projection": "true"})]
        )
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert client.get(f"{S}/{key}-other").status_code == 204 and client.get(f"{S}/{key}").status_code == 204
