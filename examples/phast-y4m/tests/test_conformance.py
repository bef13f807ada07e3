"""phast's conformance suite, run against this backend: the whole of it is these lines."""

from __future__ import annotations

from phast.testing import BackendConformance


class TestY4MConformance(BackendConformance):
    backend = "y4m"  # the entry point's name
    clip_kinds = ("y4m_420", "y4m_420_odd", "y4m_420_full", "y4m_422", "y4m_444", "y4m_mono")
