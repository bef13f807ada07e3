"""Real clips nobody here made (``../shared/media``): sampled random access is exact.

Skipped when the folder is absent (a clone of this repository alone has no shared media).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

import phast
from tests.conftest import SHARED_MEDIA
from tests.reference import reference_count, reference_frames

FILES = sorted(p for p in SHARED_MEDIA.glob("*") if p.suffix != ".md") if SHARED_MEDIA.is_dir() \
    else []
#: Random requests per file: long-GOP 1080p is slow to decode at random on two cores.
SAMPLE = 40

pytestmark = pytest.mark.skipif(not FILES, reason="../shared/media is not present")


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_random_and_backward_access_is_exact(path, cache_dir) -> None:
    ref = reference_frames(path)
    with phast.open(path, cache_dir=cache_dir) as clip:
        assert len(clip) == reference_count(path) == len(ref)
        rng = random.Random(path.name)
        picks = rng.sample(range(len(ref)), min(SAMPLE, len(ref)))
        last = len(ref) - 1
        picks += list(range(last, max(-1, last - 12), -1))  # step backward from the end
        for i in picks:
            with clip.frame(i) as f:
                assert np.array_equal(f.array, ref[i]), f"{path.name}: frame {i}"


@pytest.mark.skipif(not (SHARED_MEDIA / "nasa_13013.mp4").exists(), reason="no nasa clip")
def test_second_video_stream(cache_dir) -> None:
    path = SHARED_MEDIA / "nasa_13013.mp4"
    ref = reference_frames(path, stream_index=1)
    with phast.open(path, stream=1, cache_dir=cache_dir) as clip:
        assert (clip.info.width, clip.info.height) == (ref[0].shape[1], ref[0].shape[0])
        assert len(clip) == len(ref)
        for i in random.Random(5).sample(range(len(ref)), 15):
            assert np.array_equal(clip.frame(i).array, ref[i])
