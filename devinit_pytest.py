"""devinit's pytest plugin: a real Dapr state API for the tests of an app (``devinit.testing``).

Installing devinit registers it (the ``pytest11`` entry point ``devinit``; ``-p no:devinit``
turns it off). Fixtures:

- ``devinit_server``: a ``StateServer``, one per session (per worker under pytest-xdist),
  emptied before each test; a test marked ``@pytest.mark.devinit_fresh`` gets one of its own,
  started for it and stopped after it (the marker's keyword arguments ``store``, ``app_id``,
  ``api_token`` change its settings).
- ``dapr_env``: sets ``DAPR_HTTP_PORT``, ``DAPR_GRPC_PORT``, ``DAPR_HTTP_ENDPOINT``,
  ``DAPR_GRPC_ENDPOINT`` (and ``APP_ID``, ``DAPR_API_TOKEN`` when set) for the test, as
  ``devinit run`` sets them for an app, so a ``DaprClient()`` created in the code under test
  connects; gives the variables. The official Python SDK up to 1.18 reads these variables once,
  when ``dapr.conf`` is imported: if it was imported before, its settings are set too (and put
  back after the test), so the order of imports does not matter.
- ``devinit_session_server``: the session's server itself, not emptied, for session-scoped
  fixtures (an app process started once, pointed at it).

Options (each also an ini setting, e.g. ``devinit_store = "sqlite"`` in pyproject's
``[tool.pytest.ini_options]``): ``--devinit-store`` (``in-memory``, ``sqlite``, a ``redis://``
URL, or a folder of component files) and ``--devinit-app-id``.

This module lives outside the devinit package, and imports pytest alone: pytest loads every
installed plugin at the start of every run of every project, before the project's own paths
are set up (its ``pythonpath`` setting, conftest files). Importing devinit here would cost
every run an import, and would fix which devinit the whole run uses (an installed copy rather
than a checkout under test). ``devinit.testing`` is imported when a fixture is first used.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from devinit.testing import StateServer

MARKER = "devinit_fresh"
MARKER_KEYWORDS = ("store", "app_id", "api_token")
#: the variables dapr_env manages: set from the server, or removed when it has no value for one
ENV_NAMES = ("DAPR_HTTP_PORT", "DAPR_GRPC_PORT", "DAPR_HTTP_ENDPOINT", "DAPR_GRPC_ENDPOINT", "APP_ID", "DAPR_API_TOKEN")
#: those the Python SDK keeps in ``dapr.conf.settings``
SDK_NAMES = ("DAPR_HTTP_PORT", "DAPR_GRPC_PORT", "DAPR_HTTP_ENDPOINT", "DAPR_GRPC_ENDPOINT", "DAPR_API_TOKEN")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("devinit", "devinit state server (the devinit_server and dapr_env fixtures)")
    group.addoption(
        "--devinit-store",
        dest="devinit_store",
        default=None,
        metavar="STORE",
        help="store of the devinit_server fixture: in-memory (default), sqlite, a redis:// URL, or a folder of component files",
    )
    group.addoption(
        "--devinit-app-id",
        dest="devinit_app_id",
        default=None,
        metavar="ID",
        help="app id of the devinit_server fixture (keys stored as '<app-id>||<key>'); default: none",
    )
    parser.addini("devinit_store", "store of the devinit_server fixture (as --devinit-store)", default="in-memory")
    parser.addini("devinit_app_id", "app id of the devinit_server fixture (as --devinit-app-id)", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(store=None, app_id=None, api_token=None): give the test a devinit state server of its own "
        "(devinit_server, dapr_env), started for it and stopped after it, instead of the session's",
    )


def _settings(config: pytest.Config) -> dict[str, Any]:
    """The session's server settings: the options, else the ini settings."""
    store = config.getoption("devinit_store") or config.getini("devinit_store") or "in-memory"
    if store not in ("in-memory", "sqlite") and not store.startswith(("redis://", "rediss://")):
        store = Path(config.invocation_params.dir, store)  # a folder, relative to where pytest was started
    return {"store": store, "app_id": config.getoption("devinit_app_id") or config.getini("devinit_app_id") or None}


def _start(tmp: Path, settings: dict[str, Any]) -> StateServer:
    """A started server, or the test fails at setup with the reason (no traceback: it is not the test's)."""
    from devinit.errors import StateServerError
    from devinit.testing import StateServer

    try:
        return StateServer(tmp_dir=tmp, **settings).start()
    except StateServerError as e:
        pytest.fail(f"devinit: {e}", pytrace=False)


@pytest.fixture(scope="session")
def devinit_session_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StateServer]:
    """The session's devinit state server (one per pytest-xdist worker), not emptied between tests."""
    server = _start(tmp_path_factory.mktemp("devinit"), _settings(request.config))
    yield server
    server.stop()


@pytest.fixture
def devinit_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StateServer]:
    """A devinit state server with empty stores: the session's, emptied (keys of every app id),
    or, for a test marked ``devinit_fresh``, one of its own."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        from devinit.errors import StateServerError

        server: StateServer = request.getfixturevalue("devinit_session_server")
        try:
            server.reset()
        except StateServerError as e:
            pytest.fail(f"devinit: the session's state server could not be emptied: {e}", pytrace=False)
        yield server
        return
    unknown = sorted(set(marker.kwargs) - set(MARKER_KEYWORDS))
    if marker.args or unknown:
        given = f"{', '.join(unknown)} given; " if unknown else ""
        pytest.fail(
            f"devinit: @pytest.mark.{MARKER}: {given}it takes the keywords {', '.join(MARKER_KEYWORDS)} only", pytrace=False
        )
    server = _start(tmp_path_factory.mktemp("devinit-fresh"), {**_settings(request.config), **marker.kwargs})
    yield server
    server.stop()


@pytest.fixture
def dapr_env(devinit_server: StateServer) -> Iterator[dict[str, str]]:
    """The DAPR_* variables of ``devinit_server`` set for the test (and the SDK's settings, if it
    read them already); everything is put back after it."""
    values = devinit_server.env()
    saved = {name: os.environ.get(name) for name in ENV_NAMES}
    _set_environ({name: values.get(name) for name in ENV_NAMES})
    settings = _sdk_settings()
    before = _pinned(settings)
    for name in before:  # an SDK that read the environment at import: tell it now
        setattr(settings, name, _sdk_value(name))
    try:
        yield values
    finally:
        _set_environ(saved)
        settings = _sdk_settings()  # imported during the test, perhaps
        for name in _pinned(settings):
            if name in before:
                setattr(settings, name, before[name])
            elif _reads_environment_once(settings):
                setattr(settings, name, _sdk_value(name))  # it read ours: what it would read now
            else:
                delattr(settings, name)  # the test pinned it: back to reading the environment


def _set_environ(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _sdk_settings() -> Any:
    """``dapr.conf.settings`` when the SDK is imported (never imported here: it need not be installed)."""
    conf = sys.modules.get("dapr.conf")
    return getattr(conf, "settings", None)


def _pinned(settings: Any) -> dict[str, Any]:
    """The SDK's settings held on the object itself: every one for an SDK that reads the
    environment at import (up to 1.18), only those assigned in code for one that reads it on
    each use."""
    own = getattr(settings, "__dict__", {}) if settings is not None else {}
    return {name: own[name] for name in SDK_NAMES if name in own}


def _reads_environment_once(settings: Any) -> bool:
    """True for an SDK that copied every setting onto the object at import (up to 1.18)."""
    defaults = sys.modules.get("dapr.conf.global_settings")
    names = [n for n in dir(defaults) if n.isupper()] if defaults is not None else []
    return bool(names) and all(n in vars(settings) for n in names)


def _sdk_value(name: str) -> Any:
    """What the SDK takes for ``name`` from the environment now: the variable as the type of
    its default (the ports are numbers), else the default."""
    default = getattr(sys.modules.get("dapr.conf.global_settings"), name, None)
    raw = os.environ.get(name)
    if not raw:
        return default
    return raw if default is None else type(default)(raw)
