"""devinit's own copy of Dapr's messages (devinit/proto) against the official SDK's: the same
wire (names, numbers, types, packages), both loadable in one process, and a server that runs
with neither grpcio nor the dapr package importable (what `pip install .` gives).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import dapr.proto  # noqa: F401 - loads the SDK's files into protobuf's default pool
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from devinit.proto import api_v1, common_v1, dapr_pb2
from support import ROOT, devinit_env, free_port, wait_port, write_component

SDK = descriptor_pool.Default()


def ours() -> list[Descriptor]:
    return [*common_v1.DESCRIPTOR.message_types_by_name.values(), *api_v1.DESCRIPTOR.message_types_by_name.values()]


def field_facts(f: FieldDescriptor) -> tuple:  # type: ignore[type-arg]
    sub = f.message_type.full_name if f.message_type else f.enum_type.full_name if f.enum_type else None
    return (f.name, f.number, f.type, f.is_repeated, f.json_name, sub)


@pytest.mark.parametrize("message", ours(), ids=lambda d: d.full_name)
def test_each_message_is_daprs_on_the_wire(message: Descriptor) -> None:
    theirs = SDK.FindMessageTypeByName(message.full_name)  # same package, so the same type URL
    for f in message.fields:
        assert f.number in theirs.fields_by_number, f"{message.full_name}.{f.name}: no field {f.number} in Dapr's"
        assert field_facts(f) == field_facts(theirs.fields_by_number[f.number])
    if message.full_name != "dapr.proto.runtime.v1.GetMetadataResponse":  # devinit fills only some of its fields
        assert sorted(f.number for f in message.fields) == sorted(f.number for f in theirs.fields)
    for enum in message.enum_types:
        assert [(v.name, v.number) for v in enum.values] == [
            (v.name, v.number) for v in theirs.enum_types_by_name[enum.name].values
        ]


def test_the_service_is_daprs() -> None:
    mine = dapr_pb2.DESCRIPTOR.services_by_name["Dapr"]
    theirs = SDK.FindServiceByName("dapr.proto.runtime.v1.Dapr")
    assert mine.full_name == theirs.full_name
    for method in mine.methods:
        other = theirs.methods_by_name[method.name]  # every name is Dapr's
        assert (method.client_streaming, method.server_streaming) == (other.client_streaming, other.server_streaming)
        if method.input_type.full_name != "google.protobuf.Empty":  # the ones devinit declares with Dapr's types
            assert method.input_type.full_name == other.input_type.full_name
            assert method.output_type.full_name == other.output_type.full_name
    served = {"GetState", "GetBulkState", "SaveState", "DeleteState", "DeleteBulkState", "ExecuteStateTransaction"}
    assert served | {"QueryStateAlpha1", "GetMetadata", "SetMetadata", "Shutdown"} <= {
        m.name for m in mine.methods if m.input_type.full_name != "google.protobuf.Empty"
    }


def test_bytes_cross_between_devinit_and_the_sdk() -> None:
    from dapr.proto import api_v1 as sdk_api
    from dapr.proto import common_v1 as sdk_common

    item = common_v1.StateItem(
        key="k",
        value=b"\x00v",
        etag=common_v1.Etag(value="7"),
        metadata={"ttlInSeconds": "5"},
        options=common_v1.StateOptions(concurrency=common_v1.StateOptions.CONCURRENCY_FIRST_WRITE, consistency=2),
    )
    wire = api_v1.SaveStateRequest(store_name="s", states=[item]).SerializeToString()
    parsed = sdk_api.SaveStateRequest.FromString(wire)
    assert (
        parsed.states[0].etag.value == "7"
        and parsed.states[0].options.concurrency == sdk_common.StateOptions.CONCURRENCY_FIRST_WRITE
    )
    back = sdk_api.GetMetadataResponse(id="app", runtime_version="v", extended_metadata={"a": "b"}).SerializeToString()
    assert api_v1.GetMetadataResponse.FromString(back).extended_metadata == {"a": "b"}


def test_runtime_dependencies_are_only_what_runs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!;\[ ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]]
    assert "grpcio" not in names and "dapr" not in names
    assert {"dapr", "grpcio"} <= {re.split(r"[<>=!;\[ ]", d, maxsplit=1)[0] for d in project["optional-dependencies"]["test"]}
    # the protobuf floor is the version of the generated code (a runtime older than it refuses it)
    (floor,) = [d for d in project["dependencies"] if d.startswith("protobuf")]
    for module in ("common_pb2.py", "dapr_pb2.py"):
        generated = (ROOT / "devinit" / "proto" / module).read_text()
        version = re.search(r"# Protobuf Python Version: (\d+)\.(\d+)\.", generated)
        assert version is not None and floor == f"protobuf>={version[1]}.{version[2]}", (floor, module)


BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("grpc", "dapr", "grpc_status"):
            raise ImportError(f"{name} is not installed (blocked by the test)")
sys.meta_path.insert(0, Block())
from devinit.cli import main
sys.argv = ["devinit", *sys.argv[1:]]
main()
"""


def test_the_server_runs_without_grpcio_or_the_dapr_package(tmp_path: Path) -> None:
    """`pip install .` no longer brings grpcio or dapr: the server must not need them. Served
    here with both made unimportable, and called with the official SDK's stub from this process."""
    import grpc
    from dapr.proto import api_service_v1
    from dapr.proto import api_v1 as sdk_api
    from dapr.proto import common_v1 as sdk_common

    folder = tmp_path / "components"
    write_component(folder, "statestore", "state.in-memory")
    http, grpc_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                BLOCK,
                "serve",
                "--components-path",
                str(folder),
                "--http-port",
                str(http),
                "--grpc-port",
                str(grpc_port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=devinit_env(),
        )
    try:
        wait_port(http, timeout=30)  # gRPC is bound before HTTP
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = api_service_v1.DaprStub(channel)
            stub.SaveState(sdk_api.SaveStateRequest(store_name="statestore", states=[sdk_common.StateItem(key="k", value=b"v")]))
            assert stub.GetState(sdk_api.GetStateRequest(store_name="statestore", key="k")).data == b"v"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "blocked by the test" not in log.read_text(encoding="utf-8")
