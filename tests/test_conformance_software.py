"""The built-in software backend passes the conformance suite every plugin runs."""

from __future__ import annotations

from phast.testing import BackendConformance


class TestSoftwareConformance(BackendConformance):
    backend = "software"
    clip_kinds = ("h264", "vp9", "mjpeg", "ffv1_odd", "y4m_420", "y4m_420_odd", "y4m_mono")
