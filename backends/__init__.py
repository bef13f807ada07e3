"""Decoding backends (installed as ``phast.backends``).

A backend is a :class:`~phast.backends.base.Backend` subclass, found by name through the registry
(:mod:`phast.registry`): the built-in table plus the entry-point group ``phast.backends``.
Backends only ever run inside sandboxed worker processes.
"""

from .base import Backend, DecodedFrame, PlaneLayout, ProbeResult, SlotTooSmall

__all__ = ["Backend", "DecodedFrame", "PlaneLayout", "ProbeResult", "SlotTooSmall"]
