"""Backend registry: a read-only built-in table plus the ``phast.backends`` entry-point group.

Entries are ``"module:Class"`` strings, resolved lazily: the editor process never imports a
backend module (its libraries load only inside workers, through :func:`load`). A third-party
distribution registers::

    [project.entry-points."phast.backends"]
    mycodec = "mycodec_phast:MyBackend"

and is then opened with ``phast.open(path, backend="mycodec")``. ``PHAST_NO_PLUGINS=1`` disables
entry-point discovery (built-ins and run-time registrations only).

A broken plugin never breaks ``import phast`` or another backend: discovery reads metadata only
(a malformed entry is listed as it is and fails when used, with its name); importing and probing
happen in a child process (``phast backends``) or a worker (``phast.open``), where failures
become :class:`~phast.errors.BackendUnavailable` naming the backend's module.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from .errors import BackendNotFound, BackendUnavailable, InvalidArgument, MissingDependency

if TYPE_CHECKING:
    from phast.backends.base import Backend

log = logging.getLogger(__name__)

#: The entry-point group third-party backends register under.
ENTRY_POINT_GROUP = "phast.backends"
#: Environment switch: a true value ("1", "yes", "true") disables entry-point discovery.
NO_PLUGINS_ENV = "PHAST_NO_PLUGINS"

#: Built-in backends, by name.
BUILTIN: Mapping[str, str] = MappingProxyType({
    "software": "phast.backends.software:SoftwareBackend",
    "vaapi": "phast.backends.vaapi:VaapiBackend",
    "nvdec": "phast.backends.nvdec:NvdecBackend",
})

#: Order ``backend="auto"`` tries: hardware first. Each one skipped is recorded with its reason
#: (``Clip.backend_status``). Plugins are chosen by name: a plugin joins ``auto`` only when a row
#: is added here.
AUTO_ORDER: tuple[str, ...] = ("nvdec", "vaapi", "software")


def host_check(name: str) -> str | None:
    """Why built-in hardware backend ``name`` cannot run on this host, from cheap facts only.

    Runs in the editor, so it imports nothing: it looks for the libraries' import specs
    (:func:`importlib.util.find_spec`) and the device nodes. None means "maybe": the backend's
    own probe, in a worker, has the last word (it imports the libraries and opens the device).
    """
    import glob
    from importlib.util import find_spec

    if name == "nvdec":
        missing = [m for m in ("PyNvVideoCodec", "cupy") if find_spec(m) is None]
        if missing:
            return (f"{' and '.join(missing)} not installed: pip install 'phast[nvdec]' "
                    "(PyNvVideoCodec and cupy-cuda12x)")
        if not os.path.exists("/dev/nvidiactl"):
            return "no NVIDIA GPU: /dev/nvidiactl does not exist (no driver loaded)"
        if not os.path.exists("/dev/nvidia-uvm"):
            # CUDA creates it on first use by running nvidia-modprobe, which a sandboxed worker
            # cannot (no exec, no new device nodes): it must exist before workers start.
            return ("/dev/nvidia-uvm does not exist: CUDA needs it and a sandboxed worker cannot "
                    "create it; run `nvidia-modprobe -u -c=0` (or any CUDA program) once")
    elif name == "vaapi" and not glob.glob("/dev/dri/renderD*"):
        return ("no VAAPI device: no /dev/dri/renderD* render node (a GPU with a VAAPI driver, "
                "e.g. intel-media-va-driver or mesa-va-drivers, is needed)")
    return None


def host_hardware_specs() -> tuple[str, ...]:
    """Specs of the built-in hardware backends this host may run (:func:`host_check` passes).

    The default :class:`~phast.supervisor.WorkerConfig` names them, so workers import them and
    grant their device nodes before confining themselves, and ``backend="auto"`` can select
    them without the caller configuring a pool. Empty on a host without GPU devices or libraries.
    """
    return tuple(BUILTIN[n] for n in AUTO_ORDER if n != "software" and host_check(n) is None)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

_registered: dict[str, str] = {}

Origin = Literal["built-in", "plugin", "registered"]


@dataclass(frozen=True)
class BackendEntry:
    """One known backend: its name, ``"module:Class"`` spec and where it comes from."""

    name: str
    spec: str
    origin: Origin
    distribution: str | None = None  #: the installed distribution providing a plugin

    @property
    def module(self) -> str:
        return self.spec.partition(":")[0]


def register(name: str, spec: str) -> None:
    """Register a backend at run time (``spec`` = ``"module:Class"``, importable by workers).

    Workers import ``spec`` with the editor's ``sys.path``, so a module on that path works.
    Raises :class:`~phast.errors.InvalidArgument` for a malformed name or spec.
    """
    if not _NAME.match(name) or name == "auto":
        raise InvalidArgument(f"backend name must be 1-64 letters, digits, '_', '.', '-' and not "
                         f"'auto'; got {name!r}")
    if not _SPEC.match(spec):
        raise InvalidArgument(f"backend spec must be 'module:Class', got {spec!r}")
    _registered[name] = spec


def unregister(name: str) -> None:
    _registered.pop(name, None)


def plugins_disabled() -> bool:
    return os.environ.get(NO_PLUGINS_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _plugin_entries() -> dict[str, BackendEntry]:
    if plugins_disabled():
        return {}
    found: dict[str, BackendEntry] = {}
    try:
        eps = list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception as e:  # unreadable distribution metadata must not break phast
        log.warning("cannot read %r entry points: %s", ENTRY_POINT_GROUP, e)
        return found
    for ep in eps:
        dist = getattr(getattr(ep, "dist", None), "name", None)
        entry = BackendEntry(ep.name, ep.value, "plugin", dist)
        prior = found.get(ep.name)
        if prior is None:
            found[ep.name] = entry
        elif prior.spec != entry.spec:
            log.warning("backend %r is provided by %s (%s) and %s (%s); using the first",
                        ep.name, prior.distribution, prior.spec, dist, ep.value)
    return found


def plugins() -> dict[str, str]:
    """Entry-point backends (name -> spec); empty when disabled by ``PHAST_NO_PLUGINS``.

    Reads installed metadata only: nothing is imported. A malformed value is listed as it is;
    :func:`load` reports it when the backend is used.
    """
    return {name: e.spec for name, e in _plugin_entries().items()}


def entries() -> dict[str, BackendEntry]:
    """Every known backend by name, with its origin (built-ins win over plugins of the same
    name, and run-time registrations over plugins)."""
    table = dict(_plugin_entries())
    table.update({n: BackendEntry(n, s, "registered") for n, s in _registered.items()})
    table.update({n: BackendEntry(n, s, "built-in") for n, s in BUILTIN.items()})
    return table


def available() -> dict[str, str]:
    """Every known backend name -> spec (built-ins win over plugins of the same name)."""
    return {name: e.spec for name, e in entries().items()}


def resolve(name: str) -> list[tuple[str, str]]:
    """Candidates to try for ``backend=name``: one entry, or the auto order."""
    table = available()
    if name == "auto":
        return [(n, table[n]) for n in AUTO_ORDER if n in table]
    if name not in table:
        raise BackendNotFound(f"unknown backend {name!r}; known: {', '.join(sorted(table))}")
    return [(name, table[name])]


# -- loading (workers and test suites only: never in the editor) -----------------------------

_probed: dict[str, tuple[bool, str]] = {}


def load(spec: str, *, probe: bool = False) -> type[Backend]:
    """Import the backend class ``spec`` names; with ``probe=True`` also require its probe.

    Runs where backend code may run: in a worker (``phast.open``), a probe child process, or a
    plugin's test suite. Raises :class:`~phast.errors.BackendUnavailable` naming the spec and
    the module when the spec is malformed, the module cannot be imported, the attribute is
    missing or is not a :class:`~phast.backends.base.Backend` subclass, or (``probe=True``) the
    probe says it cannot run here or raises. :class:`~phast.errors.MissingDependency` raised by
    the module itself passes through: it already names the fix. The probe runs once per spec
    and process.
    """
    from phast.backends.base import Backend

    module_name, _, qualname = spec.partition(":")
    if not _SPEC.match(spec):
        raise BackendUnavailable(f"backend spec {spec!r} is not 'module:Class'")
    try:
        obj: object = importlib.import_module(module_name)
    except MissingDependency:
        raise
    except (Exception, SystemExit) as e:
        raise BackendUnavailable(
            f"backend {spec!r}: cannot import module {module_name!r} ({type(e).__name__}: {e}); "
            "is its distribution installed in the Python environment phast runs in?") from e
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError as e:
        raise BackendUnavailable(f"backend {spec!r}: module {module_name!r} has no "
                                 f"{qualname!r}") from e
    if not (isinstance(obj, type) and issubclass(obj, Backend)):
        raise BackendUnavailable(f"backend {spec!r} is not a phast.backends.base.Backend "
                                 "subclass")
    if probe:
        _require_probe(spec, obj)
    return obj


def _require_probe(spec: str, cls: type[Backend]) -> None:
    if spec not in _probed:
        try:
            result = cls.probe()
            _probed[spec] = (result.available is True, str(result.reason or "no reason given"))
        except Exception as e:
            _probed[spec] = (False, f"its probe raised {type(e).__name__}: {e}")
    ok, reason = _probed[spec]
    if not ok:
        raise BackendUnavailable(f"backend {spec!r} cannot run here: {reason}")


__all__ = ["AUTO_ORDER", "BUILTIN", "ENTRY_POINT_GROUP", "NO_PLUGINS_ENV", "BackendEntry",
           "available", "entries", "host_check", "host_hardware_specs", "load", "plugins",
           "plugins_disabled", "register", "resolve", "unregister"]
