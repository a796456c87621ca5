"""Dapr's Multi-App Run template (``dapr run -f``), read as dapr/cli reads it (pkg/runfileconfig).

    version: 1
    common:                      # settings every app gets unless it has its own
      resourcesPath: ./resources
      env: {DEBUG: "true"}
    apps:
      - appID: orders            # default: the name of appDirPath's folder
        appDirPath: ./orders     # required; the app runs there
        command: ["python3", "app.py"]
        daprHTTPPort: 3500       # default: a free port (daprGRPCPort too)
        env: {STORE: statestore}

Paths: ``~/`` is the home folder (not on Windows); ``common``'s paths and ``appDirPath`` are
relative to the template's folder, an app's other paths to its ``appDirPath``; every path
must be an existing folder. An app's components come from its own ``resourcesPath(s)``, else
``<appDirPath>/.dapr/resources`` when that folder exists, else ``common``'s, else devinit's
home. ``env``: an app's entries win over ``common``'s, and both over the ``DAPR_*`` variables.
Log destinations: ``appLogDestination`` (default ``fileAndConsole``) and
``daprdLogDestination`` (the server's log; default ``file``), each ``console``, ``file`` or
``fileAndConsole``; files go to ``<appDirPath>/.dapr/logs/<appID>_app_<time>.log`` and
``..._daprd_<time>.log`` as Dapr names them.

A field devinit has no use for (``appProtocol``, ``configFilePath``, ...) and a field Dapr does
not know either get one note each; a malformed file is a ``RunFileError`` naming the field and
the reason.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devinit.errors import UsageError
from devinit.run import LOG_DESTINATIONS, AppSpec, check_app_id
from devinit.runflags import server_log_level

DEFAULT_NAME = "dapr.yaml"

# Fields of dapr/cli's SharedRunConfig (common and apps) and RunConfig + App (apps only) that
# devinit reads; the others Dapr knows are accepted and noted as ignored.
_SHARED_USED = {"resourcesPath", "resourcesPaths", "env", "logLevel", "appLogDestination", "daprdLogDestination"}
_SHARED_IGNORED = {
    "configFilePath",
    "appProtocol",
    "apiListenAddresses",
    "enableProfiling",
    "appMaxConcurrency",
    "placementHostAddress",
    "appSSL",
    "maxBodySize",
    "readBufferSize",
    "enableAppHealthCheck",
    "appHealthCheckPath",
    "appHealthProbeInterval",
    "appHealthProbeTimeout",
    "appHealthThreshold",
    "enableApiLogging",
    "runtimePath",
    "schedulerHostAddress",
}
_APP_USED = _SHARED_USED | {"appID", "appDirPath", "command", "appPort", "daprHTTPPort", "daprGRPCPort"}
_APP_IGNORED = _SHARED_IGNORED | {
    "appChannelAddress",
    "profilePort",
    "metricsPort",
    "unixDomainSocket",
    "daprInternalGRPCPort",
    "containerImage",
    "containerImagePullPolicy",
    "createService",
}
_TOP = {"version", "name", "common", "apps"}


class RunFileError(UsageError):
    """A Multi-App Run template that cannot be used: the file, the field and the reason."""

    def __init__(self, where: str, field: str, reason: str) -> None:
        super().__init__(f"{where}: {field}: {reason}")


@dataclass
class RunFile:
    """A template read and resolved: the apps to run, and notes about fields ignored."""

    path: Path | None  # None: read from stdin
    name: str
    apps: list[AppSpec]
    notes: list[str] = field(default_factory=list)


def find(target: str) -> Path | None:
    """The template named by ``-f``: a YAML file, or ``dapr.yaml`` in a folder; None for ``-``."""
    if target == "-":
        return None
    path = Path(target).expanduser()
    if path.is_dir():
        found = path / DEFAULT_NAME
        if not found.is_file():
            raise UsageError(
                f"{path} has no {DEFAULT_NAME}. Pass the template file itself, or a folder that holds {DEFAULT_NAME}"
            )
        return found.resolve()
    if not path.exists():
        raise UsageError(f"the run file {path} does not exist. Pass a {DEFAULT_NAME} file, or a folder that holds one")
    if path.suffix not in (".yaml", ".yml"):
        raise UsageError(f"the run file {path} is not a YAML file (.yaml or .yml)")
    return path.resolve()


def load(target: str, default_resources: Path, read_stdin: Callable[[], str] | None = None) -> RunFile:
    """Read and resolve the template ``target`` (see ``find``); ``default_resources`` is
    devinit's components folder, for apps that name none."""
    import yaml

    path = find(target)
    where = str(path) if path else "<stdin>"
    try:
        text = path.read_text(encoding="utf-8") if path else (read_stdin or sys.stdin.read)()
    except (OSError, UnicodeDecodeError) as e:
        raise RunFileError(where, "(file)", f"cannot be read: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RunFileError(where, "(yaml)", f"not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    base = path.parent if path else Path.cwd()
    return _parse(doc, where, base, default_resources, path)


def _parse(doc: Any, where: str, base: Path, default_resources: Path, path: Path | None) -> RunFile:
    if not isinstance(doc, dict):
        raise RunFileError(where, "(document)", "expected a mapping with version, common and apps")
    notes: list[str] = []
    for key in doc:
        if key not in _TOP:
            notes.append(f"{where}: {key}: unknown field, ignored")
    version = doc.get("version")
    if version in (None, 0):
        raise RunFileError(where, "version", "required (write 'version: 1')")
    if not isinstance(version, int) or isinstance(version, bool):
        raise RunFileError(where, "version", f"{version!r} is not a number (write 'version: 1')")
    name = doc.get("name") or ""
    if not isinstance(name, str):
        raise RunFileError(where, "name", f"{name!r} is not a string")
    common = doc.get("common") or {}
    if not isinstance(common, dict):
        raise RunFileError(where, "common", "must be a mapping of settings every app shares")
    _note_fields(common, "common", _SHARED_USED, _SHARED_IGNORED, where, notes)
    c = _Fields(common, "common", where)
    common_resources = c.paths(base)
    common_env = c.env()
    apps_doc = doc.get("apps")
    if not isinstance(apps_doc, list) or not apps_doc:
        raise RunFileError(where, "apps", "required: a list of apps, each with at least appDirPath")
    apps: list[AppSpec] = []
    seen: dict[str, str] = {}
    for i, app_doc in enumerate(apps_doc):
        at = f"apps[{i}]"
        if not isinstance(app_doc, dict):
            raise RunFileError(where, at, "must be a mapping with appDirPath, command, ...")
        _note_fields(app_doc, at, _APP_USED, _APP_IGNORED, where, notes)
        a = _Fields(app_doc, at, where)
        app_dir_text = a.string("appDirPath")
        if not app_dir_text:
            raise RunFileError(where, f"{at}.appDirPath", "required: the app's folder (relative to the template's)")
        app_dir = _resolve(base, app_dir_text, where, f"{at}.appDirPath")
        app_id = a.string("appID") or app_dir.name
        try:
            check_app_id(app_id, "appID")
        except UsageError as e:
            raise RunFileError(where, f"{at}.appID", str(e).partition(": ")[2]) from None
        if app_id in seen:
            raise RunFileError(where, f"{at}.appID", f"{app_id!r} is also the id of {seen[app_id]}; app ids must differ")
        seen[app_id] = at
        resources = a.paths(app_dir)
        if not resources:
            local = app_dir / ".dapr" / "resources"
            resources = [local] if local.is_dir() else (common_resources or [default_resources])
        env = {**common_env, **a.env()}
        level = a.string("logLevel") or c.string("logLevel") or "info"
        try:
            log_level = server_log_level(level)
        except ValueError as e:
            field_name = f"{at}.logLevel" if a.string("logLevel") else "common.logLevel"
            raise RunFileError(where, field_name, str(e)) from None
        apps.append(
            AppSpec(
                app_id=app_id,
                command=a.command(),
                cwd=app_dir,
                resources=resources,
                env=env,
                http_port=a.port("daprHTTPPort"),
                grpc_port=a.port("daprGRPCPort"),
                app_port=a.port("appPort"),
                log_level=log_level,
                app_log=a.destination("appLogDestination", c, "fileAndConsole"),
                server_log=a.destination("daprdLogDestination", c, "file"),
            )
        )
    return RunFile(path, name, apps, notes)


def _note_fields(doc: dict[str, Any], at: str, used: set[str], ignored: set[str], where: str, notes: list[str]) -> None:
    for key in doc:
        if key in used:
            continue
        if key in ignored:
            notes.append(f"{where}: {at}.{key}: ignored (devinit runs no daprd: only the state API is served)")
        else:
            notes.append(f"{where}: {at}.{key}: unknown field, ignored")


def _resolve(base: Path, text: str, where: str, field_name: str) -> Path:
    """A folder's path as Dapr resolves it: ``~/`` is home (not on Windows), relative is to
    ``base``; it must exist and be a folder (every path devinit reads from the template is one:
    an app's folder, a resources folder)."""
    if text.startswith("~/") and sys.platform != "win32":
        text = str(Path.home() / text[2:])
    path = Path(text) if os.path.isabs(text) else base / os.path.normpath(text)
    if not path.exists():
        raise RunFileError(where, field_name, f"{path} does not exist")
    if not path.is_dir():
        raise RunFileError(where, field_name, f"{path} is a file, not a folder")
    return path.resolve()


class _Fields:
    """Typed reads of one mapping of the template; errors name the field."""

    def __init__(self, doc: dict[str, Any], at: str, where: str) -> None:
        self.doc = doc
        self.at = at
        self.where = where

    def _error(self, key: str, reason: str) -> RunFileError:
        return RunFileError(self.where, f"{self.at}.{key}", reason)

    def string(self, key: str) -> str:
        value = self.doc.get(key)
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            raise self._error(key, "must be a string")
        return _text(value).strip()

    def port(self, key: str) -> int | None:
        value = self.doc.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().lstrip("-").isdigit():
            raise self._error(key, f"{value!r} is not a port number (1-65535)")
        port = int(value)
        if port <= 0:
            return None  # Dapr's -1 (and 0): choose one
        if port > 65535:
            raise self._error(key, f"{port} is not a port number (1-65535)")
        return port

    def env(self) -> dict[str, str]:
        value = self.doc.get("env")
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._error("env", "must be a mapping of names to values, e.g. {DEBUG: 'true'}")
        out: dict[str, str] = {}
        for k, v in value.items():
            if isinstance(v, (dict, list)):
                raise self._error(f"env.{k}", "must be a string, a number or a boolean")
            out[str(k)] = "" if v is None else _text(v)
        return out

    def command(self) -> list[str]:
        value = self.doc.get("command")
        if value is None:
            return []
        if not isinstance(value, list) or any(isinstance(x, (dict, list)) or x is None for x in value):
            raise self._error("command", 'must be a list of strings, e.g. ["python3", "app.py"]')
        return [_text(x) for x in value]

    def paths(self, base: Path) -> list[Path]:
        """``resourcesPaths`` then ``resourcesPath`` (Dapr merges them in that order), resolved."""
        many = self.doc.get("resourcesPaths")
        if many is not None and (not isinstance(many, list) or any(not isinstance(x, str) for x in many)):
            raise self._error("resourcesPaths", "must be a list of folder paths")
        out = [_resolve(base, p, self.where, f"{self.at}.resourcesPaths[{i}]") for i, p in enumerate(many or []) if p.strip()]
        one = self.string("resourcesPath")
        if one:
            out.append(_resolve(base, one, self.where, f"{self.at}.resourcesPath"))
        return out

    def destination(self, key: str, common: _Fields, default: str) -> str:
        value = self.string(key)
        owner = self
        if not value:
            value, owner = common.string(key), common
        if not value:
            return default
        if value not in LOG_DESTINATIONS:
            raise owner._error(key, f"{value!r} is not valid; use one of {', '.join(LOG_DESTINATIONS)}")
        return value


def _text(value: Any) -> str:
    """A YAML scalar as Go's yaml.v2 reads it into a string: booleans lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
