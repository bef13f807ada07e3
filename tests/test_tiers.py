"""A frame at every deadline: tiers never lie, deadlines hold whatever the worker does."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

import phast
from phast import registry
from phast.kernels.reference import area_downscale
from tests.reference import reference_frames

CLIP = "h264_bpyramid_longgop"  # 160x96, 90 frames, keyframes at 0 and 60
PROXY = (48, 80)  # rows, columns at proxy_height=48
SLACK = 0.25  #: generous bound for a loaded 2-core machine; the benchmark measures the real one
#: A proxy must match the area-downscaled exact frame at least this well. The test clip is tiny
#: (80x48 proxies) and per-pixel noisy, the worst case for 4:2:0 JPEG; 360p proxies of real
#: 1080p footage measure ~38 dB (docs/architecture.md).
PROXY_PSNR = 24.0
#: Deadline of the requests that must be answered from a stored picture while the clip's worker
#: is stopped: the picture is decoded on the image worker within it, which on a loaded shared
#: machine can take longer than a frame period (a BLANK answer then is the tiers working, not
#: the lie this file tests for).
STORED_DEADLINE = 0.5


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture
def slow() -> Iterator[str]:
    registry.register("slow", "tests.crashy_backend:SlowBackend")
    yield "slow"
    registry.unregister("slow")


def _open(make, cache_dir, pool, **kw) -> phast.Clip:
    # Ungoverned: these tests are about which tier answers and whether it is honest. Under a
    # budget the CPU-time model also bills this test process's own work (reference decodes,
    # pytest) to the clip, so a fallback decode may be refused -- honestly, but not what is
    # under test here (tests/test_governor.py covers tiers under a budget).
    kw.setdefault("budget", "off")
    return phast.open(make(CLIP), cache_dir=cache_dir, pool=pool, proxy_height=48, **kw)


def _timed(clip: phast.Clip, i: int, deadline: float) -> tuple[phast.Frame, float]:
    t = time.monotonic()
    f = clip.frame(i, deadline=deadline)
    return f, time.monotonic() - t


def test_exact_when_there_is_time(make, cache_dir, pool) -> None:
    ref = reference_frames(make(CLIP))
    with _open(make, cache_dir, pool, proxies=False) as clip:
        f, took = _timed(clip, 70, 10.0)
        assert f.quality is phast.Quality.EXACT and np.array_equal(f.array, ref[70])
        again, took = _timed(clip, 70, 0.001)  # now from the RAM tier
        assert again.quality is phast.Quality.EXACT and took < 0.05


def test_blank_on_time_while_the_worker_is_stopped(make, cache_dir, pool) -> None:
    """Nothing decoded, nothing stored: a placeholder, on time."""
    with _open(make, cache_dir, pool, proxies=False) as clip:
        assert clip.worker_pid is not None  # it indexed the clip; nothing is in memory
        os.kill(clip.worker_pid, signal.SIGSTOP)
        for i, deadline in ((33, 0.05), (80, 0.02), (5, 0.1)):
            f, took = _timed(clip, i, deadline)
            assert took < deadline + SLACK
            assert f.quality is phast.Quality.BLANK and f.index == i and f.shows == -1
            assert f.array.shape == (*PROXY, 3) and not f.array.any()


def test_nearest_from_ram_while_the_worker_is_stopped(make, cache_dir, pool) -> None:
    """Whatever phast has beats a placeholder: the only picture in memory, however far."""
    ref = reference_frames(make(CLIP))
    with _open(make, cache_dir, pool, proxies=False) as clip:
        clip.frame(85)  # in RAM now; nothing else is
        os.kill(clip.worker_pid, signal.SIGSTOP)
        for i, deadline in ((33, 0.05), (80, 0.02), (5, 0.1)):
            f, took = _timed(clip, i, deadline)
            assert took < deadline + SLACK
            assert f.quality is phast.Quality.NEAREST and f.index == i and f.shows == 85
            assert np.array_equal(f.array, ref[85])  # full size: frame 85 itself, exact
        f, took = _timed(clip, 85, 0.02)
        assert f.quality is phast.Quality.EXACT and np.array_equal(f.array, ref[85])


def test_exact_nearest_from_ram(make, cache_dir, pool) -> None:
    ref = reference_frames(make(CLIP))
    with _open(make, cache_dir, pool, proxies=False) as clip:
        clip.frame(60)
        os.kill(clip.worker_pid, signal.SIGSTOP)
        f, took = _timed(clip, 75, 0.05)
        assert took < 0.05 + SLACK
        assert f.quality is phast.Quality.NEAREST and f.index == 75 and f.shows == 60
        assert np.array_equal(f.array, ref[60])  # full size: the keyframe itself, exact


def test_nearest_from_ram_while_the_store_is_slow(make, cache_dir, pool) -> None:
    """A proxy-store read that outlasts the deadline (a cold disk, a busy machine) does not
    turn a keyframe that memory holds into a BLANK."""
    ref = reference_frames(make(CLIP))
    with _open(make, cache_dir, pool, proxies=False) as clip:
        clip.frame(60)
        store = clip._session.store
        read = store.get_proxy

        def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
            time.sleep(1.0)
            return read(*args, **kwargs)

        store.get_proxy = slow
        os.kill(clip.worker_pid, signal.SIGSTOP)
        f, took = _timed(clip, 75, 0.05)
        assert took < 0.05 + SLACK
        assert f.quality is phast.Quality.NEAREST and f.shows == 60
        assert np.array_equal(f.array, ref[60])


def test_proxy_and_nearest_tiers_do_not_lie(make, cache_dir, pool) -> None:
    ref = reference_frames(make(CLIP))
    with _open(make, cache_dir, pool, proxies=False) as clip:
        built, failed = clip.build_proxies(full=False)  # keyframes only
        assert (built, failed) == (2, 0)
        pool.prepare_images(30)
        os.kill(clip.worker_pid, signal.SIGSTOP)
        # the nearest stored picture, before or after: 75 -> 60, 35 -> 60 (not 0), 20 -> 0
        for i, near in ((75, 60), (35, 60), (20, 0)):
            f, took = _timed(clip, i, STORED_DEADLINE)
            assert took < STORED_DEADLINE + SLACK
            assert f.quality is phast.Quality.NEAREST and f.index == i and f.shows == near
            want = area_downscale(ref[near], *PROXY)
            assert f.array.shape == want.shape and psnr(f.array, want) > PROXY_PSNR
    with _open(make, cache_dir, pool, proxies=False) as clip:
        clip.build_proxies(full=True)
        pool.prepare_images(30)
        clip.frame(0)
        os.kill(clip.worker_pid, signal.SIGSTOP)
        for i in (75, 13, 89):
            f, took = _timed(clip, i, STORED_DEADLINE)
            assert took < STORED_DEADLINE + SLACK
            assert f.quality is phast.Quality.PROXY and f.index == f.shows == i
            right = psnr(f.array, area_downscale(ref[i], *PROXY))
            wrong = psnr(f.array, area_downscale(ref[(i + 10) % 90], *PROXY))
            assert right > PROXY_PSNR and right > wrong + 2, (i, right, wrong)


def test_deadline_holds_while_the_worker_is_killed(make, cache_dir, pool) -> None:
    ref = reference_frames(make(CLIP))
    with _open(make, cache_dir, pool, proxies=False) as clip:
        clip.frame(10)
        os.kill(clip.worker_pid, signal.SIGKILL)
        f, took = _timed(clip, 50, 0.03)
        assert took < 0.03 + SLACK
        assert f.quality in (phast.Quality.EXACT, phast.Quality.NEAREST)
        if f.quality is phast.Quality.EXACT:
            assert np.array_equal(f.array, ref[50])
        else:  # frame 10, in memory, is the nearest picture phast has
            assert f.shows == 10 and np.array_equal(f.array, ref[10])
        assert np.array_equal(clip.frame(51).array, ref[51])  # and the clip recovers


def test_long_seek_refines_later(make, cache_dir, pool, slow) -> None:
    ref = reference_frames(make(CLIP))
    got: list[phast.Frame] = []
    landed = threading.Event()

    def on_exact(frame: phast.Frame) -> None:
        got.append(frame)
        landed.set()

    with _open(make, cache_dir, pool, proxies=False, backend=slow,
               backend_options={"delay": 0.6}) as clip:
        t = time.monotonic()
        req = clip.request(44, deadline=0.05, on_exact=on_exact)
        f = req.frame()
        assert time.monotonic() - t < 0.05 + SLACK
        assert f.quality is phast.Quality.BLANK
        assert landed.wait(10)
        assert got[0].quality is phast.Quality.EXACT and got[0].index == 44
        assert np.array_equal(got[0].array, ref[44])
        assert req.exact.result().index == 44


def test_newer_requests_supersede_queued_ones(make, cache_dir, pool, slow) -> None:
    with _open(make, cache_dir, pool, proxies=False, backend=slow,
               backend_options={"delay": 0.4}) as clip:
        reqs = [clip.request(i, deadline=0.01) for i in range(0, 60, 3)]
        for r in reqs:
            r.frame()
        last = reqs[-1].exact.result(timeout=10)
        assert last.index == 57
        cancelled = sum(r.exact.cancelled() for r in reqs)
        assert cancelled >= len(reqs) - 3  # only what was already running (and the last) ran


def test_blocking_requests_are_never_superseded(make, cache_dir, pool, slow) -> None:
    ref = reference_frames(make(CLIP))
    with _open(make, cache_dir, pool, proxies=False, backend=slow,
               backend_options={"delay": 0.3}) as clip:
        result: list[phast.Frame] = []
        t = threading.Thread(target=lambda: result.append(clip.frame(20)))
        t.start()
        time.sleep(0.05)
        for i in (30, 40, 50):
            clip.request(i, deadline=0.01)
        t.join(20)
        assert np.array_equal(result[0].array, ref[20])


def test_playing_forward_prefetches(make, cache_dir, pool) -> None:
    with _open(make, cache_dir, pool, proxies=False) as clip:
        for i in range(10, 14):
            clip.frame(i, deadline=5.0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and clip._session.ram_get(15, "rgb24") is None:
            time.sleep(0.02)
        assert clip._session.ram_get(15, "rgb24") is not None


def test_background_build_fills_the_store(make, cache_dir, pool) -> None:
    with _open(make, cache_dir, pool, proxies=True) as clip:
        builder = clip._builder
        assert builder is not None and builder.wait(60)
        assert clip.proxy_progress == (90, 90)
    with _open(make, cache_dir, pool, proxies=True) as clip:
        assert clip.proxy_progress == (0, 0)  # nothing left to build: all stored


def test_bad_deadlines(make, cache_dir, pool) -> None:
    with _open(make, cache_dir, pool, proxies=False) as clip:
        for bad in (0, -1, float("inf"), "1", True):
            with pytest.raises(phast.InvalidArgument):
                clip.frame(1, deadline=bad)  # type: ignore[arg-type]


def test_fallback_failures_degrade_and_bugs_are_logged(make, cache_dir, pool, monkeypatch,
                                                       caplog) -> None:
    """A stored picture the image worker cannot turn into a frame is no PROXY: the expected
    failures (phast's errors) go to the next tier quietly; anything else goes there too, but is
    logged, not swallowed."""
    from phast import tiers
    from phast.session import Session

    with _open(make, cache_dir, pool, proxies=False) as clip:
        clip.build_proxies(full=False)  # keyframes 0 and 60
        pool.prepare_images(30)
        s = clip._session
        for error, logged in ((phast.DecodeError("a damaged picture"), False),
                              (RuntimeError("a bug"), True)):
            def fail(*args, error=error, **kwargs):  # type: ignore[no-untyped-def]
                raise error

            monkeypatch.setattr(Session, "run_image", fail)
            s.proxy_ram.clear()
            caplog.clear()
            with caplog.at_level("ERROR", logger="phast.tiers"):
                assert tiers.fallback(s, 60, "rgb24") is None  # no PROXY, no other picture
            assert ("a bug" in caplog.text) is logged, caplog.text
