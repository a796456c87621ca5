"""Dapr component files: load and validate them into typed specs, render devinit's templates.

Only ``state.*`` components are devinit's business; other documents found in a folder (Dapr's
own ``pubsub.yaml``, a Resiliency policy, a component scoped to other apps) are skipped, each
with one line in ``LoadResult.notes`` for the server log. A file that fails is reported with
its path, the field and the reason, and the other files still load.

Dapr's samples point their Redis components at ``localhost:6379`` with an empty password
(``dapr init``'s Redis has none). ``KnownRedis`` is the Redis ``devinit init`` runs for this
home: a ``state.redis`` component naming it (same port, a loopback host) with an empty
password gets its password, and a note says so (never the password itself).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from devinit.errors import ComponentError
from devinit.state import STORE_MODULES

#: the state store types devinit serves (state/__init__.py names the module that serves each)
STATE_TYPES = tuple(STORE_MODULES)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
#: host names that mean "this machine" in a redisHost (the Redis init runs is published on 127.0.0.1)
LOOPBACK = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class ComponentSpec:
    """One state store component as declared in a file."""

    name: str
    type: str
    version: str
    metadata: dict[str, str]
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def error(self, item: str, reason: str) -> ComponentError:
        """A ComponentError for metadata item ``item`` of this component."""
        return ComponentError(str(self.path), f"spec.metadata.{item}", reason, self.name)

    # Typed reads of metadata items for the stores' ``from_spec``: an absent or empty item
    # gives the default; a bad one a ComponentError naming the item.

    def required(self, item: str, hint: str) -> str:
        """An item that must be given; ``hint`` says what to give (e.g. an example)."""
        value = self.metadata.get(item, "")
        if not value:
            raise self.error(item, f"missing; {hint}")
        return value

    def integer(self, item: str, default: int) -> int:
        """A whole number."""
        raw = self.metadata.get(item)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise self.error(item, f"{raw!r} is not an integer") from None

    def duration(self, item: str, default: float) -> float:
        """Seconds, from a Go duration ("500ms", "1m30s") or a plain number of seconds."""
        raw = self.metadata.get(item)
        if raw is None or raw == "":
            return default
        try:
            return parse_duration(raw, item)
        except ValueError as e:
            raise self.error(item, str(e)) from None

    def timeout(self, item: str, default: float) -> float:
        """A timeout in seconds; it must be positive (devinit never waits forever on a store)."""
        seconds = self.duration(item, default)
        if seconds <= 0:
            raise self.error(item, f"{self.metadata[item]!r} must be a positive duration, e.g. 2s (devinit never waits forever)")
        return seconds

    def flag(self, item: str) -> bool:
        """A boolean (Dapr's spellings, see ``parse_bool``); absent is false."""
        try:
            return parse_bool(self.metadata.get(item, "false"), item)
        except ValueError as e:
            raise self.error(item, str(e)) from None


@dataclass(frozen=True)
class KnownRedis:
    """The Redis ``devinit init`` runs for a home: its host port and password."""

    port: int
    password: str
    home: str  # for the log line: whose Redis it is

    def __repr__(self) -> str:  # never show the password, even in a traceback
        return f"KnownRedis(port={self.port}, home={self.home!r})"


@dataclass
class LoadResult:
    """What the components folders held: the good specs, the errors by file, and notes for the
    log (documents skipped, a password taken from devinit's Redis)."""

    specs: list[ComponentSpec]
    errors: list[ComponentError]
    notes: list[str] = field(default_factory=list)

    def error_for(self, name: str) -> ComponentError | None:
        """The load error of the component called ``name``, if it failed."""
        for e in self.errors:
            if e.component == name:
                return e
        return None


def parse_duration(text: str | int | float, what: str) -> float:
    """Seconds in a Go duration ("500ms", "1m30s") or a plain number of seconds."""
    s = str(text).strip()
    try:
        return float(s)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"{what}: {text!r} is not a duration (use e.g. 500ms, 2s, 1m)")
    return total


def parse_bool(text: str, what: str) -> bool:
    """Dapr's boolean metadata: true/false, yes/no, 1/0 (any case)."""
    s = str(text).strip().lower()
    if s in ("true", "yes", "1", "on", "y"):
        return True
    if s in ("false", "no", "0", "off", "n", ""):
        return False
    raise ValueError(f"{what}: {text!r} is not a boolean (use true or false)")


def _component_from_doc(doc: Any, path: Path, app_id: str | None) -> ComponentSpec | str:
    """The spec of a state component, or why this document is skipped (one line for the log)."""
    where = str(path)
    if not isinstance(doc, dict):
        raise ComponentError(where, "(document)", "expected a mapping with apiVersion, kind, metadata and spec")
    if doc.get("kind") != "Component":
        if doc.get("kind") is None:
            raise ComponentError(where, "kind", "missing; a component file says 'kind: Component'")
        meta = doc.get("metadata")
        named = f" {meta['name']!r}" if isinstance(meta, dict) and isinstance(meta.get("name"), str) else ""
        return f"skipped {doc['kind']}{named} in {where}: devinit has no use for it"  # Resiliency, Subscription...
    api = doc.get("apiVersion")
    if api != "dapr.io/v1alpha1":
        raise ComponentError(where, "apiVersion", f"{api!r} is not supported; use dapr.io/v1alpha1")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise ComponentError(where, "metadata.name", "missing; every component needs a name")
    name = meta["name"]
    if name in (".", "..") or "/" in name or "%" in name:  # daprd: any valid path segment name
        raise ComponentError(where, "metadata.name", f"{name!r} is not a valid name (not . or .., and no / or %)")
    scopes = doc.get("scopes")
    if isinstance(scopes, list) and scopes and app_id and app_id not in scopes:
        return f"skipped component {name!r} in {where}: scoped to other apps, not {app_id!r}"  # as in Dapr
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise _named(ComponentError(where, "spec", "missing; it holds type, version and metadata"), name)
    ctype = spec.get("type")
    if not isinstance(ctype, str) or not ctype:
        raise _named(ComponentError(where, "spec.type", "missing; e.g. state.redis or state.sqlite"), name)
    if not ctype.startswith("state."):
        return f"skipped component {name!r} ({ctype}) in {where}: devinit serves state stores only"
    if ctype not in STATE_TYPES:
        raise _named(
            ComponentError(where, "spec.type", f"{ctype!r} is not supported; use one of {', '.join(STATE_TYPES)}"),
            name,
        )
    version = spec.get("version", "v1")
    if str(version) not in ("v1", "v2"):
        raise _named(ComponentError(where, "spec.version", f"{version!r} is not supported; use v1"), name)
    items = spec.get("metadata") or []
    if not isinstance(items, list):
        raise _named(ComponentError(where, "spec.metadata", "must be a list of {name, value} entries"), name)
    values: dict[str, str] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _named(ComponentError(where, f"spec.metadata[{i}]", "each entry needs a name and a value"), name)
        if "secretKeyRef" in item:
            raise _named(
                ComponentError(
                    where,
                    f"spec.metadata.{item['name']}",
                    "secretKeyRef is not supported by devinit; put the value inline (the file is 0600)",
                ),
                name,
            )
        value = item.get("value", "")
        if isinstance(value, (dict, list)):
            raise _named(ComponentError(where, f"spec.metadata.{item['name']}", "value must be a string"), name)
        values[item["name"]] = "" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
    return ComponentSpec(name=name, type=ctype, version=str(version), metadata=values, path=path)


def _named(err: ComponentError, name: str) -> ComponentError:
    err.component = name
    return err


def component_files(folder: Path) -> list[Path]:
    """The component files in ``folder`` (one level deep), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_components(
    folders: Path | Sequence[Path], app_id: str | None = None, known_redis: KnownRedis | None = None
) -> LoadResult:
    """Load every state component in ``folders`` (one folder, or several as ``devinit run -d A
    -d B`` gives them); bad files become errors, not exceptions. A name defined twice, in one
    folder or across them, is an error on the later file."""
    result = LoadResult([], [])
    seen: dict[str, Path] = {}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    files = [p for folder in ([folders] if isinstance(folders, Path) else folders) for p in component_files(folder)]
    for path in files:
        try:
            docs = list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=loader))
        except (OSError, UnicodeDecodeError) as e:
            result.errors.append(ComponentError(str(path), "(file)", f"cannot be read: {e}"))
            continue
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            reason = getattr(e, "problem", None) or str(e)
            result.errors.append(ComponentError(str(path), "(yaml)", f"not valid YAML{where}: {reason}"))
            continue
        for doc in docs:
            if doc is None:
                continue
            try:
                spec = _component_from_doc(doc, path, app_id)
            except ComponentError as e:
                result.errors.append(e)
                continue
            if isinstance(spec, str):
                result.notes.append(spec)
                continue
            if known_redis is not None and names_redis(spec, known_redis.port) and not spec.metadata.get("redisPassword"):
                spec = dataclasses.replace(spec, metadata={**spec.metadata, "redisPassword": known_redis.password})
                result.notes.append(
                    f"component {spec.name!r} in {path}: {spec.metadata['redisHost']} is the Redis that 'devinit init' "
                    f"runs for {known_redis.home}; using its password (the component's is empty)"
                )
            if spec.name in seen:
                result.errors.append(
                    ComponentError(str(path), "metadata.name", f"{spec.name!r} is already defined in {seen[spec.name]}")
                )
                continue
            seen[spec.name] = path
            result.specs.append(spec)
    return result


def names_redis(spec: ComponentSpec, port: int) -> bool:
    """True when ``spec`` is a plain ``state.redis`` component whose ``redisHost`` is a loopback
    name with ``port``: the Redis published there (no Cluster, no Sentinel: those name others)."""
    if spec.type != "state.redis" or spec.metadata.get("redisType", "node") not in ("", "node"):
        return False
    try:
        if parse_bool(spec.metadata.get("failover", "false"), "failover"):
            return False
    except ValueError:
        return False  # the store refuses the value itself, with the reason
    host, sep, port_text = spec.metadata.get("redisHost", "").strip().rpartition(":")
    return bool(sep) and host.strip("[]").lower() in LOOPBACK and port_text == str(port)


def render_template(name: str, **values: str) -> str:
    """Fill ``templates/<name>.yaml``: each ``{{key}}`` becomes ``values[key]`` as a quoted YAML string."""
    text = resources.files("devinit.templates").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    for key, value in values.items():
        # A double-quoted scalar written by YAML's own emitter: exact for any password or path.
        # (json.dumps is not: it writes a character outside the BMP, an emoji in a path, as a
        # surrogate pair, which YAML reads back as two broken characters.)
        scalar = yaml.safe_dump(value, default_style='"', allow_unicode=True, width=float("inf"))
        text = text.replace("{{" + key + "}}", scalar.rstrip("\n"))
    if "{{" in text:
        raise ValueError(f"template {name}: unfilled placeholder in {text!r}")
    return text
