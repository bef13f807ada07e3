"""Hardware gating for tests marked ``gpu``, ``nvdec`` or ``vaapi``.

Without the hardware they skip; with ``PHAST_REQUIRE_GPU=1`` (a GPU CI runner) a missing device
fails them instead, so a misconfigured runner cannot pass by skipping. Registered from
``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import os

import pytest

from phast import registry

REQUIRE_ENV = "PHAST_REQUIRE_GPU"


def _missing(marker: str) -> str | None:
    """Why the hardware for ``marker`` is absent here (cheap checks, no CUDA import)."""
    if marker in ("gpu", "nvdec"):
        return registry.host_check("nvdec")
    if marker == "vaapi":
        return registry.host_check("vaapi")
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    require = os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")
    for item in items:
        for marker in ("gpu", "nvdec", "vaapi"):
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "phast_gpu_missing(why): internal, set by gpu_gate")
