"""Shared fixtures: generated clips, isolated caches, a watchful worker pool."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import phast
from phast import registry
from phast.testing.conformance import shm_entries, shm_left
from tests import clips

pytest_plugins = ["tests.gpu_gate"]  # PHAST_REQUIRE_GPU=1: hardware skips fail

# Background proxy building is tested where it is the subject (test_tiers.py); elsewhere it would
# only compete for the two cores and for the crash cases' worker.
os.environ.setdefault("PHAST_PROXIES", "0")

SHARED_MEDIA = Path(__file__).resolve().parent.parent.parent / "shared" / "media"


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def make(clip_dir: Path):  # type: ignore[no-untyped-def]
    """``make(name) -> Path`` of a generated clip (generated once per session)."""
    return lambda name: clips.make_clip(name, clip_dir)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    d = tmp_path / "cache"
    d.mkdir()
    return d


def worker_children() -> list[psutil.Process]:
    me = psutil.Process()
    return [p for p in me.children(recursive=True)
            if "phast.worker" in " ".join(p.cmdline() if p.is_running() else [])]


@pytest.fixture
def pool() -> Iterator[phast.WorkerPool]:
    """A private pool with a short watchdog; checks nothing is left behind afterwards.

    Its workers preload no hardware backend on any host (``backends=()``): CPU workers with an
    address-space cap and no device node, so what the tests using it assert about workers (a
    memory blow-up ends at the cap, no device is granted) holds on a GPU host too.
    """
    before = shm_entries()
    p = phast.WorkerPool(max_workers=1, config=phast.WorkerConfig(
        hang_timeout=2.0, idle_timeout=1.0, memory_limit=2 << 30, backends=()))
    yield p
    p.shutdown()
    assert not shm_left(before), "shared-memory segments left in /dev/shm"
    pids = {w.pid for w in p.workers}
    assert not pids - {None}


@pytest.fixture
def crashy() -> Iterator[str]:
    registry.register("crashy", "tests.crashy_backend:CrashyBackend")
    yield "crashy"
    registry.unregister("crashy")
