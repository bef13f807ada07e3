"""Test kit for phast backends: generated clips, a reference decoder, and the conformance suite.

A plugin's whole conformance test is a few lines (pytest and PyAV needed)::

    from phast.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        backend = "mycodec"                       # its entry-point name
        clip_kinds = ("h264", "y4m_420")          # from phast.testing.CLIP_KINDS

See ``docs/plugins.md``. ``phast.testing.clips`` and ``phast.testing.reference`` need only numpy
and PyAV; :class:`BackendConformance` (imported on first use) needs pytest and psutil.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .clips import BAD_INPUTS, CLIP_KINDS, ClipKind, make_bad_input, make_clip
from .reference import native_planes, reference_frames, reference_pix_fmt, reference_pts

if TYPE_CHECKING:
    from .conformance import BackendConformance


def __getattr__(name: str) -> Any:
    if name == "BackendConformance":
        from .conformance import BackendConformance

        return BackendConformance
    raise AttributeError(f"module 'phast.testing' has no attribute {name!r}")


__all__ = ["BAD_INPUTS", "CLIP_KINDS", "BackendConformance", "ClipKind", "make_bad_input",
           "make_clip", "native_planes", "reference_frames", "reference_pix_fmt",
           "reference_pts"]
