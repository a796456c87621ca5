"""State stores: the contract (``base``) and one module per store type.

``STORE_MODULES`` names, for each component type, the module whose store serves it; the module
is imported on first use (the CLI stays fast when Redis or psycopg are not in use), and its
store class registers the types it declares (``Store.component_types``). ``create_store`` then
hands the spec to that class's ``from_spec``, which reads the store's own metadata.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from devinit.errors import ComponentError

if TYPE_CHECKING:  # at run time components.py imports this module (STORE_MODULES)
    from devinit.components import ComponentSpec
    from devinit.state.base import Store

#: component type -> the module that serves it
STORE_MODULES = {
    "state.redis": "devinit.state.redis",
    "state.sqlite": "devinit.state.sqlite",
    "state.in-memory": "devinit.state.memory",
    "state.postgresql": "devinit.state.postgres",
}

#: what to install for a store whose module needs an optional package
_EXTRAS = {"state.postgresql": "pip install 'devinit[postgres]'"}


def store_class(component_type: str) -> type[Store]:
    """The store class serving ``component_type`` (its module imported now, once)."""
    from devinit.state.base import Store

    module = STORE_MODULES.get(component_type)
    if module is None:
        raise KeyError(f"{component_type} is not a state store type devinit serves")
    importlib.import_module(module)
    return Store.registered(component_type)


def create_store(spec: ComponentSpec) -> Store:
    """Build the store ``spec`` declares; raise ``ComponentError`` naming the bad field."""
    try:
        cls = store_class(spec.type)
    except KeyError:
        raise ComponentError(str(spec.path), "spec.type", f"{spec.type} is not supported yet", spec.name) from None
    except ImportError as e:
        how = _EXTRAS.get(spec.type, "reinstall devinit")
        raise ComponentError(
            str(spec.path), "spec.type", f"{spec.type} needs the package {e.name or e}: {how}", spec.name
        ) from None
    return cls.from_spec(spec)


def default_ttl(spec: ComponentSpec) -> int | None:
    """The component-level ``ttlInSeconds`` (applies to writes that give none); the request rule."""
    from devinit.state.base import ttl_seconds

    raw = spec.metadata.get("ttlInSeconds")
    if raw is None or raw == "":
        return None
    try:
        return ttl_seconds(raw)
    except ValueError as e:
        raise spec.error("ttlInSeconds", str(e)) from None
