"""NVDEC's pictures checked against the software decoder (backends/crosscheck.py), on the CPU.

NVDEC reports no damage, so its backend indexes with the software decoder in the same worker and
compares pictures on a sample. Here the "hardware" decoder is FFmpeg's software one made to lie
(:class:`tests.gpu_standin_backend.LyingDecoder`) in real workers: a lie the sample covers is
caught and from then on the software decoder's pictures are served (exact); one outside it is
not. NVDEC itself (its pictures read back from the device) needs a GPU: ``tests/test_hwbackends``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import phast
from phast import registry
from phast.backends.crosscheck import CHECK_PREFIX
from tests.reference import reference_frames

CLIP = "h264_bpyramid_longgop"  # 90 frames, keyframes at 0 and 60 (frame 60 shows the second)


@pytest.fixture
def lying() -> Iterator[str]:
    registry.register("lying", "tests.gpu_standin_backend:LyingDecoder")
    yield "lying"
    registry.unregister("lying")


def _open(make: Any, cache_dir: Any, pool: Any, lie: list[int]) -> phast.Clip:
    return phast.open(make(CLIP), cache_dir=cache_dir, pool=pool, backend="lying",
                      backend_options={"lie": lie})


def test_a_truthful_decoder_is_served(make, cache_dir, pool, lying) -> None:
    ref = reference_frames(make(CLIP))
    with _open(make, cache_dir, pool, []) as clip:
        assert clip.info.pix_fmt == "yuv420p"  # the source's, from the reference's description
        for i in (70, 3, 60, 89, 0):
            assert np.array_equal(clip.frame(i).array, ref[i]), i


def test_a_lie_in_the_checked_prefix_is_caught(make, cache_dir, pool, lying) -> None:
    """Frame 5 is in the prefix compared before anything is served: the lie is found while
    serving frame 40, and every frame after, frame 5 included, is the software decoder's."""
    ref = reference_frames(make(CLIP))
    assert CHECK_PREFIX > 5
    with _open(make, cache_dir, pool, [5]) as clip:
        assert np.array_equal(clip.frame(40).array, ref[40])
        assert np.array_equal(clip.frame(5).array, ref[5])
        assert np.array_equal(clip.frame(6).array, ref[6])


def test_a_lie_on_a_groups_first_picture_is_caught(make, cache_dir, pool, lying) -> None:
    """Frame 60 is the second group's keyframe picture: compared when a frame of that group is
    first served (here frame 75), after the prefix agreed."""
    ref = reference_frames(make(CLIP))
    with _open(make, cache_dir, pool, [60]) as clip:
        assert np.array_equal(clip.frame(10).array, ref[10])  # the prefix agrees
        assert np.array_equal(clip.frame(75).array, ref[75])
        assert np.array_equal(clip.frame(60).array, ref[60])


def test_a_lie_outside_the_sample_is_served(make, cache_dir, pool, lying) -> None:
    """The check is a sample: frame 40 is neither in the prefix nor a group's first picture,
    so its (lied) picture is served. What that leaves unverified is in docs/architecture.md."""
    ref = reference_frames(make(CLIP))
    with _open(make, cache_dir, pool, [40]) as clip:
        got = clip.frame(40).array
        assert not np.array_equal(got, ref[40])
        assert np.array_equal(clip.frame(41).array, ref[41])
