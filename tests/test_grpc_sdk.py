"""The gRPC state API through the official Python SDK (``dapr``), sync and async clients.

Each store kind gets one real `devinit serve` (the ``server`` fixture); the SDK finds it
through DAPR_HTTP_PORT / DAPR_GRPC_PORT (it polls HTTP /v1.0/healthz/outbound first, then
does every state call over gRPC). Where the SDK hides a field (response metadata, bulk
delete, an operation it cannot send) the test uses the SDK's own generated stub.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from dapr.aio.clients import DaprClient as AsyncDaprClient
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError, DaprInternalError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, Consistency, StateItem, StateOptions
from dapr.proto import api_service_v1, api_v1, common_v1
from dapr.proto.runtime.v1 import configuration_pb2

from support import DevinitServer, RedisServer, devinit_env, free_port, write_component
from support import point_sdk_at as _point_sdk_at

STORE = "statestore"


@pytest.fixture
def http(server: DevinitServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def grpc_error(excinfo: pytest.ExceptionInfo[BaseException]) -> tuple[grpc.StatusCode, str]:
    err = excinfo.value
    assert isinstance(err, grpc.RpcError)
    return err.code(), err.details()  # type: ignore[attr-defined]


def parse_rfc3339(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def query_quietly(dapr: DaprClient, store: str) -> None:
    with pytest.warns(UserWarning, match="Alpha"):  # the SDK warns on every query call
        dapr.query_state(store, '{"filter": {"EQ": {"a": 1}}}')


# -- save / get / etags ----------------------------------------------------------------


def test_save_get_with_etags(dapr: DaprClient, key: str) -> None:
    dapr.save_state(STORE, key, "v1")
    first = dapr.get_state(STORE, key)
    assert first.data == b"v1" and first.etag
    dapr.save_state(STORE, key, "v2", etag=first.etag)
    second = dapr.get_state(STORE, key)
    assert second.data == b"v2" and second.etag and second.etag != first.etag
    with pytest.raises(DaprGrpcError) as excinfo:
        dapr.save_state(STORE, key, "v3", etag=first.etag)  # stale
    code, message = grpc_error(excinfo)
    assert code == grpc.StatusCode.ABORTED and key in message
    assert dapr.get_state(STORE, key).data == b"v2"


def test_etag_on_missing_key_and_unparsable_etag_abort(dapr: DaprClient, key: str) -> None:
    for etag in ("1", "not-a-number"):
        with pytest.raises(DaprGrpcError) as excinfo:
            dapr.save_state(STORE, key, "v", etag=etag)
        assert excinfo.value.code() == grpc.StatusCode.ABORTED
    assert dapr.get_state(STORE, key).data == b""


def test_empty_etag_means_none(dapr: DaprClient, key: str) -> None:
    dapr.save_state(STORE, key, "v1", etag="")
    assert dapr.get_state(STORE, key).data == b"v1"


def test_first_write(dapr: DaprClient, key: str) -> None:
    first_write = StateOptions(concurrency=Concurrency.first_write, consistency=Consistency.strong)
    dapr.save_state(STORE, key, "one", options=first_write)
    with pytest.raises(DaprGrpcError) as excinfo:
        dapr.save_state(STORE, key, "two", options=first_write)
    assert excinfo.value.code() == grpc.StatusCode.ABORTED
    etag = dapr.get_state(STORE, key).etag
    dapr.save_state(STORE, key, "three", etag=etag, options=first_write)  # with the etag it applies
    last_write = StateOptions(concurrency=Concurrency.last_write)
    dapr.save_state(STORE, key, "four", options=last_write)
    assert dapr.get_state(STORE, key).data == b"four"


def test_missing_key_is_ok_and_empty(dapr: DaprClient, key: str) -> None:
    resp = dapr.get_state(STORE, key)
    assert resp.data == b"" and resp.etag == ""


def test_bytes_are_stored_byte_for_byte(dapr: DaprClient, key: str) -> None:
    raw = bytes(range(256)) + b' {"not": json'
    dapr.save_state(STORE, key, raw)
    assert dapr.get_state(STORE, key).data == raw
    dapr.save_state(STORE, key, '  {"a": 1}  ')  # no contentType: not decoded, not compacted
    assert dapr.get_state(STORE, key).data == b'  {"a": 1}  '


def test_json_content_type_stores_compact_json(dapr: DaprClient, key: str) -> None:
    dapr.save_state(STORE, key, '{ "a" : [1, 2] }', state_metadata={"contentType": "application/json"})
    assert dapr.get_state(STORE, key).data == b'{"a":[1,2]}'
    with pytest.raises(DaprGrpcError) as excinfo:
        dapr.save_state(STORE, key, "{oops", state_metadata={"contentType": "application/json"})
    code, message = grpc_error(excinfo)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "JSON" in message


def test_bad_keys_are_invalid_argument(dapr: DaprClient) -> None:
    for bad in ("", "a||b"):
        with pytest.raises(DaprGrpcError) as excinfo:
            dapr.save_state(STORE, bad, "v")
        assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(DaprGrpcError) as excinfo:
            dapr.get_state(STORE, bad)
        assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_save_bulk_applies_items_independently(dapr: DaprClient, key: str) -> None:
    dapr.save_state(STORE, key + "-a", "old")
    with pytest.raises(DaprGrpcError) as excinfo:
        dapr.save_bulk_state(STORE, [StateItem(key + "-a", "new", etag="stale-etag"), StateItem(key + "-b", "b")])
    code, message = grpc_error(excinfo)
    assert code == grpc.StatusCode.ABORTED and f"{key}-a" in message
    assert dapr.get_state(STORE, key + "-a").data == b"old"
    assert dapr.get_state(STORE, key + "-b").data == b"b"


# -- bulk get --------------------------------------------------------------------------


def test_bulk_get(dapr: DaprClient, key: str) -> None:
    dapr.save_state(STORE, key + "-1", "one")
    dapr.save_state(STORE, key + "-2", b"\xff\x00")
    keys = [key + "-2", key + "-missing", key + "-1"]
    items = dapr.get_bulk_state(STORE, keys, parallelism=2).items
    assert [i.key for i in items] == keys
    assert [i.data for i in items] == [b"\xff\x00", b"", b"one"]
    assert items[0].etag == dapr.get_state(STORE, key + "-2").etag
    assert items[1].etag == "" and items[1].error == ""


# -- transactions ----------------------------------------------------------------------


def test_transaction(dapr: DaprClient, key: str) -> None:
    dapr.save_state(STORE, key + "-gone", "x")
    dapr.execute_state_transaction(
        STORE,
        [
            TransactionalStateOperation(key + "-a", "A"),
            TransactionalStateOperation(key + "-j", '{"n": 1}', metadata={"contentType": "application/json"}),
            TransactionalStateOperation(key + "-gone", operation_type=TransactionOperationType.delete),
        ],
    )
    assert dapr.get_state(STORE, key + "-a").data == b"A"
    assert dapr.get_state(STORE, key + "-j").data == b'{"n":1}'
    assert dapr.get_state(STORE, key + "-gone").data == b""


def test_transaction_is_all_or_nothing(dapr: DaprClient, key: str) -> None:
    dapr.save_state(STORE, key, "v1")
    stale = dapr.get_state(STORE, key).etag
    dapr.save_state(STORE, key, "v2")
    with pytest.raises(DaprGrpcError) as excinfo:
        dapr.execute_state_transaction(
            STORE,
            [
                TransactionalStateOperation(key + "-new", "n"),
                TransactionalStateOperation(key, "v3", etag=stale),
            ],
        )
    assert excinfo.value.code() == grpc.StatusCode.ABORTED
    assert dapr.get_state(STORE, key).data == b"v2"
    assert dapr.get_state(STORE, key + "-new").data == b""
    current = dapr.get_state(STORE, key).etag
    dapr.execute_state_transaction(
        STORE, [TransactionalStateOperation(key, etag=current, operation_type=TransactionOperationType.delete)]
    )
    assert dapr.get_state(STORE, key).data == b""


def test_transaction_unsupported_operation(stub: api_service_v1.DaprStub, key: str) -> None:
    op = api_v1.TransactionalStateOperation(operationType="merge", request=common_v1.StateItem(key=key, value=b"v"))
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.ExecuteStateTransaction(api_v1.ExecuteStateTransactionRequest(storeName=STORE, operations=[op]))
    code, message = grpc_error(excinfo)
    assert code == grpc.StatusCode.UNIMPLEMENTED and "merge" in message


# -- delete ----------------------------------------------------------------------------


def test_delete_with_etag(dapr: DaprClient, key: str) -> None:
    dapr.save_state(STORE, key, "v")
    etag = dapr.get_state(STORE, key).etag
    with pytest.raises(DaprGrpcError) as excinfo:
        dapr.delete_state(STORE, key, etag=etag + "0")
    assert excinfo.value.code() == grpc.StatusCode.ABORTED
    assert dapr.get_state(STORE, key).data == b"v"
    dapr.delete_state(STORE, key, etag=etag, options=StateOptions(consistency=Consistency.strong))
    assert dapr.get_state(STORE, key).data == b""
    dapr.delete_state(STORE, key)  # a missing key without etag: fine
    with pytest.raises(DaprGrpcError) as excinfo:
        dapr.delete_state(STORE, key, etag=etag)  # a missing key with an etag: mismatch
    assert excinfo.value.code() == grpc.StatusCode.ABORTED


def test_delete_bulk(dapr: DaprClient, stub: api_service_v1.DaprStub, key: str) -> None:
    dapr.save_state(STORE, key + "-1", "1")
    dapr.save_state(STORE, key + "-2", "2")
    stub.DeleteBulkState(
        api_v1.DeleteBulkStateRequest(
            store_name=STORE, states=[common_v1.StateItem(key=key + "-1"), common_v1.StateItem(key=key + "-2")]
        )
    )
    assert [i.data for i in dapr.get_bulk_state(STORE, [key + "-1", key + "-2"]).items] == [b"", b""]
    dapr.save_state(STORE, key + "-3", "3")
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.DeleteBulkState(
            api_v1.DeleteBulkStateRequest(
                store_name=STORE, states=[common_v1.StateItem(key=key + "-3", etag=common_v1.Etag(value="nope"))]
            )
        )
    assert excinfo.value.code() == grpc.StatusCode.ABORTED
    assert dapr.get_state(STORE, key + "-3").data == b"3"


# -- TTL -------------------------------------------------------------------------------


def test_ttl_metadata(dapr: DaprClient, stub: api_service_v1.DaprStub, http: httpx.Client, key: str) -> None:
    before = time.time()
    dapr.save_state(STORE, key, "v", state_metadata={"ttlInSeconds": "3600"})
    resp = stub.GetState(api_v1.GetStateRequest(store_name=STORE, key=key))
    expires = parse_rfc3339(resp.metadata["ttlExpireTime"])
    # Generous bounds: this checks the value means "one hour from the save", not timing.
    assert before + 1800 < expires < before + 7200
    bulk = stub.GetBulkState(api_v1.GetBulkStateRequest(store_name=STORE, keys=[key]))
    assert bulk.items[0].metadata["ttlExpireTime"] == resp.metadata["ttlExpireTime"]
    assert http.get(f"/v1.0/state/{STORE}/{key}").headers["metadata.ttlExpireTime"] == resp.metadata["ttlExpireTime"]
    dapr.save_state(STORE, key, "v", state_metadata={"ttlInSeconds": "-1"})  # clears it
    assert "ttlExpireTime" not in stub.GetState(api_v1.GetStateRequest(store_name=STORE, key=key)).metadata
    dapr.save_state(STORE, key, "v", state_metadata={"ttlInSeconds": "3600"})
    assert "ttlExpireTime" in stub.GetState(api_v1.GetStateRequest(store_name=STORE, key=key)).metadata
    dapr.save_state(STORE, key, "v", state_metadata={"ttlInSeconds": "0"})  # 0: no expiry, as daprd (Redis: PERSIST)
    assert "ttlExpireTime" not in stub.GetState(api_v1.GetStateRequest(store_name=STORE, key=key)).metadata
    for bad in ("abc", "-2", "-5", "+5", "1_0"):
        with pytest.raises(DaprGrpcError) as excinfo:
            dapr.save_state(STORE, key, "v", state_metadata={"ttlInSeconds": bad})
        code, message = grpc_error(excinfo)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "ttlInSeconds" in message


# -- errors, metadata, unimplemented ---------------------------------------------------


def test_unknown_store(dapr: DaprClient, key: str) -> None:
    calls = [
        lambda: dapr.get_state("nope", key),
        lambda: dapr.save_state("nope", key, "v"),
        lambda: dapr.delete_state("nope", key),
        lambda: dapr.get_bulk_state("nope", [key]),
        lambda: dapr.execute_state_transaction("nope", [TransactionalStateOperation(key, "v")]),
        lambda: query_quietly(dapr, "nope"),
    ]
    for call in calls:
        with pytest.raises(DaprGrpcError) as excinfo:
            call()
        code, message = grpc_error(excinfo)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message.startswith("state store nope is not found") and STORE in message  # names what exists
        # As from a sidecar: a google.rpc.ErrorInfo the SDK surfaces as error_code().
        assert excinfo.value.error_code() == "DAPR_STATE_NOT_FOUND"


def test_query(dapr: DaprClient, key: str) -> None:
    run = key
    for i, state in enumerate(["CA", "WA", "CA"]):
        dapr.save_state(
            STORE,
            f"{key}-{i}",
            json.dumps({"run": run, "state": state, "n": i}),
            state_metadata={"contentType": "application/json"},
        )
    q = {
        "filter": {"AND": [{"EQ": {"run": run}}, {"EQ": {"state": "CA"}}]},
        "sort": [{"key": "n", "order": "DESC"}],
        "page": {"limit": 1},
    }
    with pytest.warns(UserWarning, match="Alpha"):
        first = dapr.query_state(STORE, json.dumps(q))
    assert [r.key for r in first.results] == [f"{key}-2"]
    assert json.loads(first.results[0].value) == {"run": run, "state": "CA", "n": 2}
    assert first.results[0].etag and first.token
    q["page"]["token"] = first.token
    with pytest.warns(UserWarning, match="Alpha"):
        second = dapr.query_state(STORE, json.dumps(q))
    assert [r.key for r in second.results] == [f"{key}-0"] and not second.token
    with pytest.raises(DaprGrpcError) as excinfo, pytest.warns(UserWarning, match="Alpha"):
        dapr.query_state(STORE, '{"filter": {"LIKE": {"a": 1}}}')
    code, message = grpc_error(excinfo)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "LIKE" in message


def test_other_rpcs_are_unimplemented(dapr: DaprClient) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:  # get_secret does not wrap it in DaprGrpcError
        dapr.get_secret("secretstore", "k")
    code, message = grpc_error(excinfo)
    assert code == grpc.StatusCode.UNIMPLEMENTED and "GetSecret" in message and "state" in message


def test_streaming_rpcs_are_unimplemented(stub: api_service_v1.DaprStub) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        list(stub.SubscribeConfiguration(configuration_pb2.SubscribeConfigurationRequest(store_name="c")))
    assert grpc_error(excinfo)[0] == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as excinfo:
        list(stub.SubscribeTopicEventsAlpha1(iter([])))
    assert grpc_error(excinfo)[0] == grpc.StatusCode.UNIMPLEMENTED


def test_metadata(dapr: DaprClient, server: DevinitServer, http: httpx.Client) -> None:
    meta = dapr.get_metadata()
    over_http = http.get("/v1.0/metadata").json()
    [component] = [c for c in meta.registered_components if c.name == STORE]
    [expected] = [c for c in over_http["components"] if c["name"] == STORE]
    assert component.type == expected["type"] and component.version == expected["version"]
    assert list(component.capabilities) == expected["capabilities"]
    assert "ETAG" in component.capabilities and "TRANSACTIONAL" in component.capabilities
    assert meta.application_id == over_http["id"]


# -- across protocols ------------------------------------------------------------------


def test_json_saved_over_http_reads_back_as_json_text(dapr: DaprClient, http: httpx.Client, key: str) -> None:
    r = http.post(f"/v1.0/state/{STORE}", json=[{"key": key, "value": {"n": 1, "s": "é"}}, {"key": key + "-s", "value": "v"}])
    assert r.status_code == 204, r.text
    assert dapr.get_state(STORE, key).data == '{"n":1,"s":"é"}'.encode()
    assert dapr.get_state(STORE, key + "-s").data == b'"v"'
    assert dapr.get_state(STORE, key).etag == http.get(f"/v1.0/state/{STORE}/{key}").headers["etag"]


def test_bytes_saved_over_grpc_read_back_over_http_unchanged(dapr: DaprClient, http: httpx.Client, key: str) -> None:
    raw = b"\x00\x01\xfe\xffnot json"
    dapr.save_state(STORE, key, raw)
    r = http.get(f"/v1.0/state/{STORE}/{key}")
    assert r.status_code == 200 and r.content == raw
    assert r.headers["etag"] == dapr.get_state(STORE, key).etag
    dapr.save_state(STORE, key + "-j", '{"a": [1]}', state_metadata={"contentType": "application/json"})
    assert http.get(f"/v1.0/state/{STORE}/{key}-j").json() == {"a": [1]}


def test_etag_from_grpc_works_over_http(dapr: DaprClient, http: httpx.Client, key: str) -> None:
    dapr.save_state(STORE, key, "v")
    etag = dapr.get_state(STORE, key).etag
    assert http.delete(f"/v1.0/state/{STORE}/{key}", headers={"If-Match": etag + "x"}).status_code == 409
    assert http.delete(f"/v1.0/state/{STORE}/{key}", headers={"If-Match": etag}).status_code == 204


# -- the async client ------------------------------------------------------------------


class _Gzip(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Sends every call gzip-compressed: a client configured for compression."""

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(details._replace(compression=grpc.Compression.Gzip), request)


def test_a_client_configured_for_gzip_works(sdk_env: DevinitServer, key: str) -> None:
    """grpc's own message compression (grpc-encoding: gzip), as the SDK's channel sends it
    with a compressing interceptor; the 4 MiB limit applies to the message once inflated."""
    value = b"gzip me " * 300_000  # 2.4 MB, a few KB compressed
    with DaprClient(interceptors=[_Gzip()]) as d:
        d.save_state(STORE, key, value)
        assert d.get_state(STORE, key).data == value
        with pytest.raises(DaprGrpcError) as excinfo:
            d.save_state(STORE, key + "-big", b"z" * (5 * 1024 * 1024))  # ~5 KB on the wire, 5 MiB inflated
        assert excinfo.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "decompressed" in (excinfo.value.details() or "")
    with DaprClient() as d:
        assert d.get_state(STORE, key).data == value
        assert d.get_state(STORE, key + "-big").data == b""


def test_async_client(sdk_env: DevinitServer, key: str) -> None:
    async def scenario() -> None:
        async with AsyncDaprClient() as d:
            await d.save_state(STORE, key, "v1")
            first = await d.get_state(STORE, key)
            assert first.data == b"v1" and first.etag
            await d.save_state(STORE, key, "v2", etag=first.etag)
            # The async save_state (alone among the state calls) wraps a failed RPC in
            # DaprInternalError with only the status message: the code is not kept.
            with pytest.raises(DaprInternalError, match="etag mismatch"):
                await d.save_state(STORE, key, "v3", etag=first.etag)
            with pytest.raises(DaprInternalError, match="etag mismatch"):
                await d.save_state(STORE, key, "x", options=StateOptions(concurrency=Concurrency.first_write))
            with pytest.raises(DaprGrpcError) as excinfo:  # save_bulk_state keeps the code
                await d.save_bulk_state(STORE, [StateItem(key, "x", etag=first.etag)])
            assert excinfo.value.code() == grpc.StatusCode.ABORTED
            assert (await d.get_state(STORE, key + "-missing")).data == b""
            items = (await d.get_bulk_state(STORE, [key, key + "-missing"])).items
            assert [(i.key, i.data) for i in items] == [(key, b"v2"), (key + "-missing", b"")]
            await d.execute_state_transaction(
                STORE,
                [
                    TransactionalStateOperation(key + "-t", "t"),
                    TransactionalStateOperation(key, operation_type=TransactionOperationType.delete),
                ],
            )
            assert (await d.get_state(STORE, key)).data == b""
            etag = (await d.get_state(STORE, key + "-t")).etag
            with pytest.raises(DaprGrpcError) as excinfo:
                await d.delete_state(STORE, key + "-t", etag="wrong")
            assert excinfo.value.code() == grpc.StatusCode.ABORTED
            await d.delete_state(STORE, key + "-t", etag=etag)
            assert (await d.get_state(STORE, key + "-t")).data == b""
            with pytest.raises(DaprGrpcError) as excinfo:
                await d.get_state("nope", key)
            assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(scenario())


# -- the API token (one memory server; the token is front-end logic) ------------------


TOKEN = "s3cret-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevinitServer]:
    folder = tmp_path_factory.mktemp("grpc-token") / "components"
    write_component(folder, STORE, "state.in-memory")
    srv = DevinitServer(folder, "--app-id", "orders", env={"DAPR_API_TOKEN": TOKEN})
    yield srv
    srv.stop()


def test_api_token(token_server: DevinitServer, monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    _point_sdk_at(monkeypatch, token_server, TOKEN)
    with DaprClient() as d:  # the SDK sends settings.DAPR_API_TOKEN as dapr-api-token
        d.save_state(STORE, key, "v")
        assert d.get_state(STORE, key).data == b"v"
        assert d.get_metadata().application_id == "orders"
        with pytest.raises(DaprGrpcError) as excinfo:
            d.get_state("nope", key)
        assert excinfo.value.error_code() == "DAPR_STATE_NOT_FOUND"
        # as a sidecar: its gRPC API looks the store up without the app id (no ErrorInfo
        # metadata), its HTTP API with it
        assert "metadata" not in excinfo.value.status_details().error_info
        r = httpx.get(f"{token_server.url}/v1.0/state/nope/{key}", headers={"dapr-api-token": TOKEN})
        assert r.json()["details"][-1]["metadata"] == {"appID": "orders"}
        with pytest.raises(grpc.RpcError) as excinfo:
            d.get_secret("secretstore", "k")  # past the token check, then UNIMPLEMENTED
        assert excinfo.value.code() == grpc.StatusCode.UNIMPLEMENTED

    async def scenario() -> bytes:
        async with AsyncDaprClient() as d:
            return (await d.get_state(STORE, key)).data

    assert asyncio.run(scenario()) == b"v"

    for token in (None, "wrong"):
        _point_sdk_at(monkeypatch, token_server, token)
        with DaprClient() as d:  # construction only polls the health route: no token needed
            for call in (
                lambda: d.get_state(STORE, key),
                lambda: d.save_state(STORE, key, "x"),
                lambda: d.get_metadata(),
                lambda: d.get_secret("secretstore", "k"),
            ):
                with pytest.raises(grpc.RpcError) as excinfo:
                    call()
                code, message = grpc_error(excinfo)
                assert code == grpc.StatusCode.UNAUTHENTICATED and "dapr-api-token" in message
    with grpc.insecure_channel(f"127.0.0.1:{token_server.grpc_port}") as channel:  # streaming RPCs too
        stub = api_service_v1.DaprStub(channel)
        with pytest.raises(grpc.RpcError) as excinfo:
            list(stub.SubscribeConfiguration(configuration_pb2.SubscribeConfigurationRequest(store_name="c")))
        assert grpc_error(excinfo)[0] == grpc.StatusCode.UNAUTHENTICATED
    _point_sdk_at(monkeypatch, token_server, TOKEN)
    with DaprClient() as d:
        assert d.get_state(STORE, key).data == b"v"  # the refused save changed nothing


# -- servers that cannot serve -------------------------------------------------------


def test_no_store_configured_is_failed_precondition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "components"
    folder.mkdir()
    srv = DevinitServer(folder)
    try:
        _point_sdk_at(monkeypatch, srv)
        with DaprClient() as d:
            with pytest.raises(DaprGrpcError) as excinfo:
                d.get_state(STORE, "k")
            code, message = grpc_error(excinfo)
            assert code == grpc.StatusCode.FAILED_PRECONDITION and "component" in message
            assert excinfo.value.error_code() == "DAPR_STATE_NOT_CONFIGURED"
    finally:
        srv.stop()


def test_grpc_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "components"
    write_component(folder, STORE, "state.in-memory")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "devinit",
                "serve",
                "--components-path",
                str(folder),
                "--http-port",
                str(free_port()),
                "--grpc-port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=devinit_env(),
        )
    assert proc.returncode == 1
    assert f"port {port} in use" in proc.stderr and "--grpc-port" in proc.stderr


def test_get_state_consistency_enum(dapr: DaprClient, stub: api_service_v1.DaprStub, key: str) -> None:
    dapr.save_state(STORE, key, "v", options=StateOptions(consistency=Consistency.strong))
    for consistency in (common_v1.StateOptions.CONSISTENCY_STRONG, common_v1.StateOptions.CONSISTENCY_EVENTUAL):
        resp = stub.GetState(api_v1.GetStateRequest(store_name=STORE, key=key, consistency=consistency))
        assert resp.data == b"v"


def test_store_down_is_internal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    redis = RedisServer(tmp_path / "redis")
    folder = tmp_path / "components"
    write_component(folder, STORE, "state.redis", {"redisHost": redis.host})
    srv = DevinitServer(folder, "--store-timeout", "5")
    try:
        _point_sdk_at(monkeypatch, srv)
        with DaprClient() as d:
            d.save_state(STORE, "k", "v")
            redis.stop()
            for call in (
                lambda: d.get_state(STORE, "k"),
                lambda: d.save_state(STORE, "k", "w"),
                lambda: d.execute_state_transaction(STORE, [TransactionalStateOperation("k", "w")]),
            ):
                with pytest.raises(DaprGrpcError) as excinfo:
                    call()
                code, message = grpc_error(excinfo)
                assert code == grpc.StatusCode.INTERNAL and STORE in message
            redis.start()  # recovers by itself (the data is gone: redis ran without persistence)
            d.save_state(STORE, "k", "again")
            assert d.get_state(STORE, "k").data == b"again"
    finally:
        srv.stop()
        redis.stop()
