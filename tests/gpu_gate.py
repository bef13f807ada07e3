"""``PHAST_REQUIRE_GPU=1`` turns skipped hardware tests into failures.

A test marked ``gpu``, ``nvdec`` or ``vaapi`` skips itself when its hardware or library is
missing. On a machine that is meant to have them (a GPU CI runner), set ``PHAST_REQUIRE_GPU=1``:
such a skip is then reported as a failure with the skip's reason, so a broken driver or a
missing extra cannot pass as green. Loaded by ``tests/conftest.py``.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

HARDWARE_MARKERS = ("gpu", "nvdec", "vaapi")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                     pytest.TestReport]:
    report = yield
    if (report.skipped and os.environ.get("PHAST_REQUIRE_GPU") == "1"
            and not hasattr(report, "wasxfail")
            and any(item.get_closest_marker(m) for m in HARDWARE_MARKERS)):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"PHAST_REQUIRE_GPU=1 but the hardware test was skipped: {reason}"
    return report
