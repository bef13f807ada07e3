"""The MLT producer ``phast`` (clients/mlt) in the system's melt, against PyAV and against
MLT's own avformat producer through the same command (clients/mlt/melt-phast).

MLT resamples chroma on its way to a yuv420p consumer even for avformat (its output differs
from PyAV in a quarter of the chroma samples of these clips), so the whole picture is compared
with avformat's render and the luma with PyAV's decode. A missing melt, libmlt-dev or compiler
fails these tests: CI installs them (.ci/run).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import psutil
import pytest

from hwbench import mlt

SIZE = (320, 180)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("mlt")
    return {"a": mlt.write_clip(d / "a.mp4", frames=96),
            "b": mlt.write_clip(d / "b.mp4", frames=60, gop=25),
            "long": mlt.write_clip(d / "long.mp4", frames=900, gop=60),
            "phone": mlt.write_clip(d / "phone.mp4", frames=120, ticks=mlt.PHONE_TICKS),
            "p30": mlt.write_profile(d / "p30", SIZE, Fraction(30)), "dir": d}


@pytest.fixture
def env(cache_dir: Path) -> dict[str, str]:
    return {"PHAST_SERVE_COMMAND": f"{sys.executable} -m phast",
            "PHAST_CACHE_DIR": str(cache_dir), "PHAST_PROXIES": "0"}


def _frames(path: Path) -> np.ndarray:
    return mlt.read_yuv420p(path, SIZE)


def test_render_is_avformats_picture_and_pyavs_luma(media, env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    clip = media["a"]
    ours = _frames(mlt.render_raw(f"phast:{clip}", tmp_path / "phast.yuv", env=env))
    theirs = _frames(mlt.render_raw(f"avformat:{clip}", tmp_path / "avformat.yuv", env=env))
    lumas, _ = mlt.reference(clip)
    assert len(ours) == len(theirs) == len(lumas) == 96  # melt's automatic profile agreed
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(mlt.luma(ours, SIZE), np.stack(lumas))
    # a render on three threads (real_time=-3: frames in parallel, none dropped) is a render:
    # EXACT frames from one shared client, the same bytes
    threaded = _frames(mlt.render_raw(f"phast:{clip}", tmp_path / "threads.yuv", env=env,
                                      real_time=-3))
    np.testing.assert_array_equal(threaded, theirs)


def _workers_under(pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in kids:
        try:
            if "phast.worker" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def test_worker_kills_are_invisible_to_melt(media, env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    clip = media["long"]
    theirs = _frames(mlt.render_raw(f"avformat:{clip}", tmp_path / "avformat.yuv", env=env))
    out = tmp_path / "phast.yuv"
    proc = subprocess.Popen([str(mlt.MELT_PHAST), *mlt.raw_args(f"phast:{clip}", out)],
                            env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    kills = 0

    def killer() -> None:
        # SIGKILL only workers up for 1.5 s: the frame being decoded when one dies is retried
        # on a fresh worker, and killing that one too would quarantine the frame (a frame that
        # fails twice: another promise, tested elsewhere).
        nonlocal kills
        while proc.poll() is None:
            time.sleep(0.05)
            if not out.exists() or out.stat().st_size == 0:
                continue  # still opening
            now = time.time()
            for w in _workers_under(proc.pid):
                with contextlib.suppress(psutil.Error):
                    if now - w.create_time() > 1.5:
                        w.send_signal(signal.SIGKILL)
                        kills += 1
                        time.sleep(0.3)
                        break

    thread = threading.Thread(target=killer)
    thread.start()
    _, err = proc.communicate(timeout=600)
    thread.join()
    assert proc.returncode == 0, err[-3000:]
    assert kills >= 2, f"only {kills} workers were killed during the render"
    np.testing.assert_array_equal(_frames(out), theirs)


def test_xml_project_with_cuts(media, env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cuts = [mlt.Cut(media["a"], 10, 40), mlt.Cut(media["b"], 0, 20),
            mlt.Cut(media["a"], 70, 95), mlt.Cut(media["b"], 33, 34)]
    renders = {}
    for service in ("phast", "avformat"):
        project = mlt.write_project(tmp_path / f"{service}.mlt", cuts, service, media["p30"])
        renders[service] = _frames(mlt.render_raw(str(project), tmp_path / f"{service}.yuv",
                                                  env=env))
    np.testing.assert_array_equal(renders["phast"], renders["avformat"])
    refs = {c.path: mlt.reference(c.path)[0] for c in cuts}
    want = [refs[c.path][i] for c in cuts for i in range(c.first, c.last + 1)]
    np.testing.assert_array_equal(mlt.luma(renders["phast"], SIZE), np.stack(want))


def test_vfr_phone_clip_right_where_avformat_is_wrong(media, env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    clip = media["phone"]
    lumas, times = mlt.reference(clip)
    positions = int(times[-1] * 30) + 1
    shown = mlt.shown_at(times, Fraction(30), positions)
    wrong = {}
    for service in ("phast", "avformat"):
        got = mlt.luma(_frames(mlt.render_raw(f"{service}:{clip}", tmp_path / f"{service}.yuv",
                                              profile=media["p30"], env=env)), SIZE)
        assert len(got) >= positions
        wrong[service] = [p for p in range(positions)
                          if not np.array_equal(got[p], lumas[shown[p]])]
    assert wrong["phast"] == []  # every position shows the frame on screen at its time
    assert len(wrong["avformat"]) > positions // 10, wrong  # MLT's own producer does not


def test_player_loop_checks_what_it_shows(media, env) -> None:  # type: ignore[no-untyped-def]
    """hwbench mlt's paced loop: every picture is counted right, wrong or degraded against
    the frame on screen at its position (its luma hash is the Python one)."""
    clip, fps = media["a"], Fraction(30)
    expected = mlt.expected_hashes(clip, fps)
    for service in ("avformat", "phast"):
        r = mlt.play(clip, media["p30"], service, "play", 1.5, expected=expected, fps=fps,
                     env={**env, "PHAST_BUDGET": "off"}, deadline=10.0)
        assert r.shown + r.dropped == r.ticks == 45
        assert r.right + r.wrong + r.degraded == r.shown
        assert r.wrong == 0 and r.right >= 40, r  # a constant-rate clip at the profile's rate
