"""Table-driven worker failures: the editor survives, the next request is right, nothing leaks."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import phast
from tests.reference import reference_frames

CLIP = "h264_bpyramid_longgop"
#: (mode, what the supervisor saw)
DEATHS = [
    ("segfault", "SIGSEGV"),
    ("abort", "SIGABRT"),
    ("exit", "exit code 3"),
    ("hang", "sent no"),
    ("memory", ""),
    ("garbage_bytes", ""),
    ("wrong_index", ""),
    ("oversized", ""),
    ("out_of_slot", ""),
    ("wrong_format", ""),
]


def _open(make, cache_dir, pool, crashy, mode: str, at: int, always: bool) -> phast.Clip:
    return phast.open(make(CLIP), cache_dir=cache_dir, pool=pool, backend=crashy,
                      backend_options={"mode": mode, "at": at, "always": always})


@pytest.mark.parametrize(("mode", "seen"), DEATHS)
def test_transient_failure_is_retried_on_a_fresh_worker(mode, seen, make, cache_dir, pool,
                                                        crashy) -> None:
    ref = reference_frames(make(CLIP))
    with _open(make, cache_dir, pool, crashy, mode, at=40, always=False) as clip:
        assert np.array_equal(clip.frame(39).array, ref[39])
        first_pid = clip.worker_pid
        f = clip.frame(40)  # fails once inside the worker, then succeeds on a new one
        assert f.index == 40 and np.array_equal(f.array, ref[40])
        assert clip.worker_pid != first_pid
        worker = pool.workers[0]
        assert worker.restarts == 1
        assert seen in (worker.last_failure or "")
        assert np.array_equal(clip.frame(41).array, ref[41])
        assert not clip.quarantined


@pytest.mark.parametrize(("mode", "seen"), DEATHS)
def test_persistent_failure_quarantines_the_frame(mode, seen, make, cache_dir, pool,
                                                  crashy) -> None:
    ref = reference_frames(make(CLIP))
    with _open(make, cache_dir, pool, crashy, mode, at=12, always=True) as clip:
        with pytest.raises(phast.FrameQuarantined, match="frame 12"):
            clip.frame(12)
        assert clip.quarantined == {12}
        t = time.monotonic()
        with pytest.raises(phast.FrameQuarantined):
            clip.frame(12)  # no third crash: answered without a worker
        assert time.monotonic() - t < 0.5
        for i in (11, 13, 80, 0):
            assert np.array_equal(clip.frame(i).array, ref[i]), i


def test_worker_killed_from_outside_between_requests(make, cache_dir, pool) -> None:
    ref = reference_frames(make(CLIP))
    with phast.open(make(CLIP), cache_dir=cache_dir, pool=pool) as clip:
        assert np.array_equal(clip.frame(50).array, ref[50])
        os.kill(clip.worker_pid, signal.SIGKILL)
        time.sleep(0.2)
        assert np.array_equal(clip.frame(51).array, ref[51])
        assert np.array_equal(clip.frame(49).array, ref[49])


def test_stopped_worker_is_killed_by_the_watchdog(make, cache_dir, pool) -> None:
    ref = reference_frames(make(CLIP))
    with phast.open(make(CLIP), cache_dir=cache_dir, pool=pool) as clip:
        clip.frame(5)
        pid = clip.worker_pid
        os.kill(pid, signal.SIGSTOP)
        assert np.array_equal(clip.frame(70).array, ref[70])
        assert clip.worker_pid != pid
        assert "sent no" in (pool.workers[0].last_failure or "")


def test_frames_held_across_a_crash_stay_valid(make, cache_dir, pool, crashy) -> None:
    ref = reference_frames(make(CLIP))
    with _open(make, cache_dir, pool, crashy, "segfault", at=30, always=False) as clip:
        held = clip.frame(20)
        clip.frame(30)
        assert np.array_equal(held.array, ref[20])
