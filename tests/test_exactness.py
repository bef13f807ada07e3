"""Every frame, in shuffled order, equals a plain sequential decode bit for bit."""

from __future__ import annotations

import random

import numpy as np
import pytest

import phast
from tests import clips
from tests.reference import reference_count, reference_frames, reference_pts

VIDEO_CLIPS = [n for n in clips.CLIP_NAMES if clips.CLIPS[n].has_video]


@pytest.mark.parametrize("name", VIDEO_CLIPS)
def test_every_frame_shuffled_rgb24(name: str, make, cache_dir) -> None:
    path = make(name)
    ref = reference_frames(path)
    with phast.open(path, cache_dir=cache_dir) as clip:
        assert clip.info.frame_count == reference_count(path) == len(ref)
        order = list(range(len(ref)))
        random.Random(7).shuffle(order)
        for i in order:
            with clip.frame(i) as f:
                assert f.index == i
                assert f.quality is phast.Quality.EXACT
                assert f.array.shape == ref[i].shape, i
                assert np.array_equal(f.array, ref[i]), f"{name}: frame {i} differs"


@pytest.mark.parametrize("name", VIDEO_CLIPS)
@pytest.mark.parametrize("keep_bytes", [0, 400_000])
def test_nonref_skipping_and_small_keep(name: str, keep_bytes: int, make, cache_dir) -> None:
    """Small kept-frame budgets make long seeks skip non-reference frames: still exact."""
    path = make(name)
    ref = reference_frames(path)
    with phast.open(path, cache_dir=cache_dir, backend_options={"keep_bytes": keep_bytes}) as clip:
        order = list(range(len(ref)))
        random.Random(5).shuffle(order)
        order += list(range(len(ref) - 1, -1, -3))  # backward steps past the kept window
        for i in order:
            with clip.frame(i) as f:
                assert np.array_equal(f.array, ref[i]), f"{name}: frame {i} differs"


@pytest.mark.parametrize("name", VIDEO_CLIPS)
def test_every_frame_native_planes(name: str, make, cache_dir) -> None:
    path = make(name)
    ref = reference_frames(path, format="native")
    with phast.open(path, cache_dir=cache_dir) as clip:
        order = list(range(len(ref)))
        random.Random(11).shuffle(order)
        for i in order:
            with clip.frame(i, format="native") as f:
                assert len(f.planes) == len(ref[i])
                for got, want in zip(f.planes, ref[i], strict=True):
                    raw = np.ascontiguousarray(got).view(np.uint8).reshape(want.shape)
                    assert np.array_equal(raw, want), f"{name}: frame {i} plane differs"


@pytest.mark.parametrize("name", VIDEO_CLIPS)
def test_timestamps_and_frame_at(name: str, make, cache_dir) -> None:
    path = make(name)
    pts = reference_pts(path)
    with phast.open(path, cache_dir=cache_dir) as clip:
        info = clip.info
        if info.timestamps == "container":
            assert [clip.frame(i).pts for i in range(len(pts))] == pts
        times = [clip.frame(i).time for i in range(len(clip))]
        assert times == sorted(times)
        for i in random.Random(3).sample(range(len(clip)), min(8, len(clip))):
            assert clip.frame_at(times[i]).index == i
            if i + 1 < len(clip) and times[i + 1] > times[i]:
                mid = (times[i] + times[i + 1]) / 2
                assert clip.frame_at(mid).index == i
        assert info.start_time == times[0]
        with pytest.raises(phast.FrameOutOfRange):
            clip.frame_at(times[0] - 1.0)
        with pytest.raises(phast.FrameOutOfRange):
            clip.frame_at(times[-1] + 3600)


def test_properties_the_corpus_claims(make, cache_dir) -> None:
    """The generated clips really have the features the exactness tests rely on."""
    with phast.open(make("vfr_mkv"), cache_dir=cache_dir) as clip:
        assert clip.info.is_vfr
    with phast.open(make("h264_bpyramid_longgop"), cache_dir=cache_dir) as clip:
        assert not clip.info.is_vfr
        assert len(clip.info.keyframes) == 2
    with phast.open(make("h264_nonzero_start"), cache_dir=cache_dir) as clip:
        assert clip.info.start_time == pytest.approx(2.0)
    with phast.open(make("no_timestamps"), cache_dir=cache_dir) as clip:
        assert clip.info.timestamps == "synthesized"
    with phast.open(make("res_change"), cache_dir=cache_dir) as clip:
        sizes = {clip.frame(i).array.shape[:2] for i in range(len(clip))}
        assert sizes == {(96, 160), (72, 128)}
    with phast.open(make("h264_10bit"), cache_dir=cache_dir) as clip:
        assert clip.info.bit_depth == 10
        f = clip.frame(3, format="native")
        assert f.planes[0].dtype == np.dtype("<u2") and f.pix_fmt == "yuv420p10le"
    assert clips.leading_picture_count(make("hevc_open_gop")) > 0
    assert clips.mp4_edit_lists(make("mp4_editlist"))
