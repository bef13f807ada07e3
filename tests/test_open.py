"""Opening: registry through entry points, metadata, worker start-up failures."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

import phast
from phast import registry
from tests.reference import reference_frames


def test_software_backend_comes_through_the_entry_point_group() -> None:
    assert registry.plugins().get("software") == "phast.backends.software:SoftwareBackend"
    assert registry.resolve("auto")[-1][0] == "software"  # the last resort after hardware


def test_plugins_can_be_disabled(monkeypatch) -> None:
    monkeypatch.setenv("PHAST_NO_PLUGINS", "1")
    assert registry.plugins() == {}
    assert "software" in registry.available()  # built-ins stay


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("rot") / "rotated.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.set_display_rotation(90)
        rng = np.random.default_rng(0)
        for _ in range(10):
            img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def test_rotation_is_metadata_only(rotated, cache_dir) -> None:
    ref = reference_frames(rotated)
    with phast.open(rotated, cache_dir=cache_dir) as clip:
        assert abs(clip.info.rotation) == 90
        f = clip.frame(4)
        assert f.array.shape == (48, 64, 3)  # coded orientation: the editor applies rotation
        assert np.array_equal(f.array, ref[4])


def test_info_fields(make, cache_dir) -> None:
    with phast.open(make("h264_bpyramid_longgop"), cache_dir=cache_dir) as clip:
        info = clip.info
        assert (info.width, info.height, info.codec, info.pix_fmt) == (160, 96, "h264", "yuv420p")
        assert info.frame_count == len(clip) == 90
        assert info.average_rate == Fraction(30) and not info.is_vfr
        assert info.duration == pytest.approx(3.0)
        assert info.keyframes == (0, 60) and info.keyframe_interval == (60, 60.0, 60)
        assert info.time_base == Fraction(1, 15360)
        assert clip.backend == "software"
        assert info.index_method == "demux" and info.timestamps == "container"


def test_worker_that_never_says_ready(make, cache_dir) -> None:
    pool = phast.WorkerPool(max_workers=1, config=phast.WorkerConfig(start_timeout=0.001))
    try:
        with pytest.raises(phast.WorkerStartError, match="did not start"):
            phast.open(make("vp9_altref"), cache_dir=cache_dir, pool=pool)
    finally:
        pool.shutdown()
