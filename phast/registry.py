"""Backend registry: a read-only built-in table plus the ``phast.backends`` entry-point group.

Entries are ``"module:Class"`` strings, resolved lazily: the editor process never imports a
backend module (its libraries load only inside workers). A third-party distribution registers::

    [project.entry-points."phast.backends"]
    mycodec = "mycodec_phast:MyBackend"

``PHAST_NO_PLUGINS=1`` disables entry-point discovery (built-ins only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import entry_points
from types import MappingProxyType

from .errors import BackendNotFound

#: Built-in backends, by name.
BUILTIN: Mapping[str, str] = MappingProxyType({
    "software": "phast.backends.software:SoftwareBackend",
})

#: Order ``backend="auto"`` tries (hardware first once hardware backends exist).
AUTO_ORDER: tuple[str, ...] = ("software",)

_registered: dict[str, str] = {}


def register(name: str, spec: str) -> None:
    """Register a backend at run time (``spec`` = ``"module:Class"``, importable by workers)."""
    if ":" not in spec:
        raise ValueError(f"backend spec must be 'module:Class', got {spec!r}")
    _registered[name] = spec


def unregister(name: str) -> None:
    _registered.pop(name, None)


def plugins() -> dict[str, str]:
    """Entry-point backends (name -> spec); empty when disabled by ``PHAST_NO_PLUGINS``."""
    if os.environ.get("PHAST_NO_PLUGINS"):
        return {}
    found: dict[str, str] = {}
    for ep in entry_points(group="phast.backends"):
        found.setdefault(ep.name, ep.value)
    return found


def available() -> dict[str, str]:
    """Every known backend name -> spec (built-ins win over plugins of the same name)."""
    return {**plugins(), **_registered, **BUILTIN}


def resolve(name: str) -> list[tuple[str, str]]:
    """Candidates to try for ``backend=name``: one entry, or the auto order."""
    table = available()
    if name == "auto":
        return [(n, table[n]) for n in AUTO_ORDER if n in table]
    if name not in table:
        raise BackendNotFound(f"unknown backend {name!r}; known: {', '.join(sorted(table))}")
    return [(name, table[name])]
