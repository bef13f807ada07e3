"""Hardware gating for tests marked ``gpu``, ``nvdec`` or ``vaapi``.

Without the hardware they skip; with ``PHAST_REQUIRE_GPU`` set (a GPU CI runner) a missing device
fails them instead, so a misconfigured runner cannot pass by skipping: both the collection-time
host check below and any skip such a test raises itself (a missing library, no device found)
become failures carrying the reason. Registered from ``tests/conftest.py`` (``pytest_plugins``).

Which markers are required: ``PHAST_REQUIRE_GPU=1`` (or ``true``, ``yes``) means an NVIDIA
runner, ``gpu`` and ``nvdec``; a VAAPI test still skips there, since an NVIDIA host need not
have VAAPI. Otherwise the value names the markers: ``vaapi``, ``nvdec,vaapi``, or ``all``.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

from phast import registry

REQUIRE_ENV = "PHAST_REQUIRE_GPU"
HARDWARE_MARKERS = ("gpu", "nvdec", "vaapi")


#: What ``PHAST_REQUIRE_GPU=1`` requires: the NVIDIA GPU.
NVIDIA_MARKERS = frozenset({"gpu", "nvdec"})


def _required() -> frozenset[str]:
    """The hardware markers whose tests must not skip (see the module docstring)."""
    value = os.environ.get(REQUIRE_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return frozenset()
    if value in ("1", "true", "yes"):
        return NVIDIA_MARKERS
    if value == "all":
        return frozenset(HARDWARE_MARKERS)
    names = frozenset(v.strip() for v in value.split(",") if v.strip())
    unknown = names - set(HARDWARE_MARKERS)
    if unknown:
        raise pytest.UsageError(f"{REQUIRE_ENV}={value}: unknown markers {sorted(unknown)}; "
                                f"use 1, all or some of {', '.join(HARDWARE_MARKERS)}")
    return names


def _setting() -> str:
    return f"{REQUIRE_ENV}={os.environ.get(REQUIRE_ENV, '').strip()}"


def _missing(marker: str) -> str | None:
    """Why the hardware for ``marker`` is absent here (cheap checks, no CUDA import).

    ``gpu`` tests need CuPy and an NVIDIA GPU, not PyNvVideoCodec (the kernel tests);
    ``nvdec`` tests need all of NVDEC's host check.
    """
    if marker == "gpu":
        from importlib.util import find_spec

        if find_spec("cupy") is None:
            return "cupy not installed: pip install cupy-cuda12x"
        for node in ("/dev/nvidiactl", "/dev/nvidia-uvm"):
            if not os.path.exists(node):
                return f"no NVIDIA GPU usable here: {node} does not exist"
        return None
    if marker in ("nvdec", "vaapi"):
        return registry.host_check(marker)
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
            if marker in require:
                item.add_marker(pytest.mark.phast_gpu_missing(why))
            else:
                item.add_marker(pytest.mark.skip(reason=f"needs {marker} hardware: {why}"))
            break


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    mark = item.get_closest_marker("phast_gpu_missing")
    if mark is not None:
        pytest.fail(f"{_setting()} but the hardware is missing: {mark.args[0]}",
                    pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                     pytest.TestReport]:
    report = yield
    if (report.skipped and not hasattr(report, "wasxfail")
            and any(item.get_closest_marker(m) for m in _required())):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"{_setting()} but the hardware test was skipped: {reason}"
    return report


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "phast_gpu_missing(why): internal, set by gpu_gate")
