"""The pure rules of the state API as table tests: no server, no store, milliseconds each.

Option, metadata and etag parsing and the key prefix (devinit/server/runtime.py), URL path
cleaning and path-parameter decoding as daprd does them (devinit/server/http_api.py), and the
component-name rule (devinit/components.py). The end-to-end tests check the same rules over
the wire; these pin each rule's table in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devinit.components import ComponentSpec, load_components
from devinit.errors import ApiError, ComponentError
from devinit.server.http_api import clean_path
from devinit.server.runtime import is_projection, key_prefix, parse_etag, parse_metadata, parse_options
from devinit.server.urls import query_params, unescape

# -- options: (first_write, strong) ------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "defaults", "expected"),
    [
        (None, None, (False, False)),
        ({}, None, (False, False)),
        ({"concurrency": "first-write"}, None, (True, False)),
        ({"concurrency": "last-write"}, None, (False, False)),
        ({"consistency": "strong"}, None, (False, True)),
        ({"consistency": "eventual"}, None, (False, False)),
        ({"concurrency": "", "consistency": ""}, None, (False, False)),  # empty: not given
        ({"concurrency": None, "consistency": None}, None, (False, False)),
        (None, {"consistency": "strong", "concurrency": "first-write"}, (True, True)),  # request-level
        ({"consistency": "eventual"}, {"consistency": "strong"}, (False, False)),  # the item's own wins
        ({}, {"consistency": None, "concurrency": None}, (False, False)),
        ({"concurrency": "first-write", "color": "red"}, None, (True, False)),  # unknown fields ignored
    ],
)
def test_options(options: Any, defaults: Any, expected: tuple[bool, bool]) -> None:
    assert parse_options(options, defaults) == expected


@pytest.mark.parametrize(
    ("options", "defaults", "said"),
    [
        ("strong", None, "options must be an object"),
        (["strong"], None, "options must be an object"),
        ({"consistency": "sometimes"}, None, "unrecognized consistency model 'sometimes'"),
        ({"concurrency": "second-write"}, None, "unrecognized concurrency model 'second-write'"),
        ({"consistency": 1}, None, "unrecognized consistency model 1"),
        ({"consistency": "Strong"}, None, "unrecognized consistency model 'Strong'"),  # case matters, as in daprd
        (None, {"concurrency": "x"}, "unrecognized concurrency model 'x'"),
    ],
)
def test_bad_options(options: Any, defaults: Any, said: str) -> None:
    with pytest.raises(ApiError) as excinfo:
        parse_options(options, defaults)
    assert excinfo.value.http_status == 400 and excinfo.value.error_code == "ERR_MALFORMED_REQUEST"
    assert said in excinfo.value.message


# -- metadata and etags ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (None, {}),
        ({}, {}),
        ({"ttlInSeconds": "60", "contentType": "application/json"}, {"ttlInSeconds": "60", "contentType": "application/json"}),
        ({"ttlInSeconds": 60}, {"ttlInSeconds": "60"}),  # leniency: numbers as text (daprd: 400)
        ({"ttlInSeconds": 1.5}, {"ttlInSeconds": "1.5"}),
        ({"flag": True, "other": False}, {"flag": "true", "other": "false"}),
        ({"a": None}, {"a": ""}),  # as daprd reads a JSON null into a string
    ],
)
def test_metadata(metadata: Any, expected: dict[str, str]) -> None:
    assert parse_metadata(metadata) == expected


@pytest.mark.parametrize("metadata", ["ttl", ["ttlInSeconds"], 5, {"a": [1]}, {"a": {"b": 1}}])
def test_bad_metadata(metadata: Any) -> None:
    with pytest.raises(ApiError) as excinfo:
        parse_metadata(metadata)
    assert excinfo.value.http_status == 400


@pytest.mark.parametrize(
    ("etag", "expected"),
    [(None, None), ("", None), ("abc", "abc"), ("17", "17"), (17, "17"), (17.0, "17"), (1.5, "1.5")],
)
def test_etag(etag: Any, expected: str | None) -> None:
    assert parse_etag(etag) == expected


@pytest.mark.parametrize("etag", [True, False, ["1"], {"e": 1}])
def test_bad_etag(etag: Any) -> None:
    with pytest.raises(ApiError):
        parse_etag(etag)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"outbox.projection": "true"}, True),
        ({"outbox.projection": "TRUE"}, True),
        ({"outbox.projection": " yes "}, True),
        ({"outbox.projection": "1"}, True),
        ({"outbox.projection": True}, True),
        ({"outbox.projection": "false"}, False),
        ({"outbox.projection": "truth"}, False),
        ({"outbox.projection": ""}, False),
        ({"outboxProjection": "true"}, False),  # only Dapr's name counts
        ({}, False),
        (None, False),
        ("outbox.projection", False),
    ],
)
def test_outbox_projection(metadata: Any, expected: bool) -> None:
    assert is_projection(metadata) is expected


# -- keyPrefix -----------------------------------------------------------------------------


def spec(name: str = "statestore", **metadata: str) -> ComponentSpec:
    return ComponentSpec(name, "state.in-memory", "v1", dict(metadata), Path("statestore.yaml"))


@pytest.mark.parametrize(
    ("metadata", "app_id", "expected"),
    [
        ({}, "orders", "orders||"),
        ({}, None, ""),
        ({"keyPrefix": ""}, "orders", "orders||"),
        ({"keyPrefix": "appid"}, "orders", "orders||"),
        ({"keyPrefix": "AppID"}, "orders", "orders||"),  # daprd lower-cases the value
        ({"keyPrefix": "name"}, "orders", "statestore||"),
        ({"keyPrefix": "Name"}, None, "statestore||"),
        ({"keyPrefix": "none"}, "orders", ""),
        ({"keyPrefix": "namespace"}, "orders", "orders||"),  # no NAMESPACE outside Kubernetes: the app id
        ({"keyPrefix": "namespace"}, None, ""),
        ({"keyPrefix": "shared"}, "orders", "shared||"),
        ({"keyPrefix": "MyApp"}, None, "myapp||"),  # as daprd writes it
    ],
)
def test_key_prefix(metadata: dict[str, str], app_id: str | None, expected: str) -> None:
    assert key_prefix(spec(**metadata), app_id) == expected


@pytest.mark.parametrize(
    ("name", "metadata", "said"),
    [
        ("statestore", {"keyPrefix": "a||b"}, "can't contain '||'"),
        ("a||b", {"keyPrefix": "name"}, "without '||'"),
    ],
)
def test_bad_key_prefix(name: str, metadata: dict[str, str], said: str) -> None:
    with pytest.raises(ComponentError) as excinfo:
        key_prefix(spec(name, **metadata), "orders")
    assert excinfo.value.field == "spec.metadata.keyPrefix" and said in str(excinfo.value)


# -- URLs as daprd reads them ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/v1.0/state/s/k", b"/v1.0/state/s/k"),
        (b"/v1.0/state/s/k/", b"/v1.0/state/s/k"),
        (b"/v1.0//state///s/k", b"/v1.0/state/s/k"),
        (b"//v1.0/state/s/k", b"/v1.0/state/s/k"),
        (b"/v1.0/state/s/./k", b"/v1.0/state/s/k"),
        (b"/v1.0/state/s/x/../k", b"/v1.0/state/s/k"),
        (b"/v1.0/state/s/k/..", b"/v1.0/state/s"),
        (b"/../../v1.0/healthz", b"/v1.0/healthz"),  # .. at the root stays at the root
        (b"/", b"/"),
        (b"/.", b"/"),
        (b"/v1.0/state/s/.hidden", b"/v1.0/state/s/.hidden"),  # only . and .. segments change
        (b"/v1.0/state/s/%2E%2E", b"/v1.0/state/s/%2E%2E"),  # cleaned before decoding, as daprd
        (b"*", b"*"),
    ],
)
def test_clean_path(path: bytes, expected: bytes) -> None:
    assert clean_path(path) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"order", "order"),
        (b"sp+ace", "sp ace"),  # query-unescaping: + is a space
        (b"a%2Bb", "a+b"),
        (b"a%2Fb", "a/b"),
        (b"a%20b%2F%C3%BC", "a b/ü"),
        (b"%25", "%"),
        (b"\xc3\xbc", "ü"),
    ],
)
def test_path_parameter(raw: bytes, expected: str) -> None:
    assert unescape(raw, "the key in the URL") == expected


@pytest.mark.parametrize(("raw", "said"), [(b"a%zz", "two hex digits"), (b"a%", "two hex digits"), (b"%C3%28", "UTF-8")])
def test_bad_path_parameter(raw: bytes, said: str) -> None:
    with pytest.raises(ApiError) as excinfo:
        unescape(raw, "the key in the URL")
    assert excinfo.value.http_status == 400 and said in excinfo.value.message


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"", {}),
        (b"consistency=strong", {"consistency": "strong"}),
        (b"metadata.ttlInSeconds=60&metadata.ttlInSeconds=5", {"metadata.ttlInSeconds": "60"}),  # the first counts, as Go's Get
        (b"k=a+b%2Bc", {"k": "a b+c"}),
        (b"flag&x=", {"flag": "", "x": ""}),
        (b"a=1&&b=%C3%BC", {"a": "1", "b": "ü"}),
        (b"a=1&a=%zz", {"a": "1"}),  # a repeat is not read: its escape does not matter
    ],
)
def test_query_parameters(query: bytes, expected: dict[str, str]) -> None:
    assert query_params(query) == expected


@pytest.mark.parametrize(
    ("query", "said"), [(b"x=%zz", "'x' has a '%'"), (b"x=%C3", "'x' is not valid UTF-8"), (b"%zz=1", "name")]
)
def test_bad_query_parameters(query: bytes, said: str) -> None:
    with pytest.raises(ApiError) as excinfo:
        query_params(query)
    assert excinfo.value.http_status == 400 and said in excinfo.value.message


# -- component names: any valid path segment, as daprd ------------------------------------


COMPONENT = (
    "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: state.in-memory\n  version: v1\n"
)


@pytest.mark.parametrize("name", ["statestore", "my store", "Store_1.v2-x", "ünïcode", "a||b", "-dash", "'quoted'"])
def test_component_names_accepted(tmp_path: Path, name: str) -> None:
    (tmp_path / "c.yaml").write_text(COMPONENT.format(name=repr(name) if "'" not in name else f'"{name}"'))
    loaded = load_components(tmp_path)
    assert not loaded.errors and [s.name for s in loaded.specs] == [name]


@pytest.mark.parametrize("name", [".", "..", "a/b", "a%20b", "/"])
def test_component_names_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "c.yaml").write_text(COMPONENT.format(name=f'"{name}"'))
    loaded = load_components(tmp_path)
    assert not loaded.specs
    (err,) = loaded.errors
    assert err.field == "metadata.name" and "not a valid name" in err.reason
