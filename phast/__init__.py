"""phast: sandboxed, exact, on-time random frame access for video editors.

``import phast`` is light: PyAV, diskcache and the worker machinery load on first use.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .errors import *  # noqa: F403 -- the exception hierarchy is part of the public API
from .errors import PhastError
from .types import OUTPUT_FORMATS, ClipInfo, Quality, StreamInfo

if TYPE_CHECKING:
    from .clip import Clip, open
    from .frame import Frame
    from .supervisor import WorkerConfig, WorkerPool

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = {
    "open": ("phast.clip", "open"),
    "Clip": ("phast.clip", "Clip"),
    "Frame": ("phast.frame", "Frame"),
    "WorkerPool": ("phast.supervisor", "WorkerPool"),
    "WorkerConfig": ("phast.supervisor", "WorkerConfig"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'phast' has no attribute {name!r}")


__all__ = ["OUTPUT_FORMATS", "Clip", "ClipInfo", "Frame", "PhastError", "Quality", "StreamInfo",
           "WorkerConfig", "WorkerPool", "open"]
