"""Hardware gating for tests marked ``gpu``, ``nvdec`` or ``vaapi``.

Without the hardware they skip; with ``PHAST_REQUIRE_GPU=1`` (a GPU CI runner) a missing device
fails them instead, so a misconfigured runner cannot pass by skipping: both the collection-time
host check below and any skip such a test raises itself (a missing library, no device found)
become failures carrying the reason. Registered from ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

from phast import registry

REQUIRE_ENV = "PHAST_REQUIRE_GPU"
HARDWARE_MARKERS = ("gpu", "nvdec", "vaapi")


def _required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


def _missing(marker: str) -> str | None:
    """Why the hardware for ``marker`` is absent here (cheap checks, no CUDA import)."""
    if marker in ("gpu", "nvdec"):
        return registry.host_check("nvdec")
    if marker == "vaapi":
        return registry.host_check("vaapi")
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    require = _required()
    for item in items:
        for marker in HARDWARE_MARKERS:
            if item.get_closest_marker(marker) is None:
                continue
            why = _missing(marker)
            if why is None:
                continue
            if require:
                item.add_marker(pytest.mark.phast_gpu_missing(why))
            else:
                item.add_marker(pytest.mark.skip(reason=f"needs {marker} hardware: {why}"))
            break


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    mark = item.get_closest_marker("phast_gpu_missing")
    if mark is not None:
        pytest.fail(f"{REQUIRE_ENV}=1 but the hardware is missing: {mark.args[0]}",
                    pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                     pytest.TestReport]:
    report = yield
    if (report.skipped and _required() and not hasattr(report, "wasxfail")
            and any(item.get_closest_marker(m) for m in HARDWARE_MARKERS)):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_ENV}=1 but the hardware test was skipped: {reason}"
    return report


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "phast_gpu_missing(why): internal, set by gpu_gate")
