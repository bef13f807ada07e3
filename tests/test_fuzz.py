"""A short fuzz campaign (``hwbench fuzz``) and the damaged inputs it found, as regressions.

Every mutated file gets a typed error, degraded frames or EXACT frames that equal a
single-threaded sequential decode of the same file; never a hang or an editor crash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import phast
from hwbench import fuzz
from phast.testing import corpus


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("fuzz")
    cfg = fuzz.FuzzConfig(budget_s=60, seed=3, work_dir=str(work), out=str(work / "out"),
                          progress=False)
    return fuzz.run_campaign(cfg)


def test_campaign_breaks_no_promise(campaign: dict) -> None:
    assert campaign["hangs"] == 0, campaign["findings"]
    assert campaign["editor_crashes"] == 0, campaign["findings"]
    assert campaign["untyped_errors"] == {}, campaign["findings"]
    assert campaign["wrong_index"] == 0, campaign["findings"]
    assert campaign["reference_failures"] == 0


def test_campaign_covers_every_codec(campaign: dict) -> None:
    assert campaign["files"] >= 60
    assert set(campaign["files_by_clip"]) == set(corpus.CLIP_NAMES)
    assert set(campaign["mutations"]) == set(fuzz.MUTATORS)
    assert campaign["exact_checked"] > 50 and campaign["opened"] > 30
    assert sum(campaign["open_failed_typed"].values()) > 0  # some mutations must be fatal


@pytest.mark.xfail(reason="damage that FFmpeg only logs from frame threads (a decode-built index "
                   "of a stream without timestamps), and frames dropped by a sequential decode "
                   "in GOPs a seek never decodes, can still give wrong EXACT frames",
                   strict=False)
def test_campaign_finds_no_wrong_exact_frame(campaign: dict) -> None:
    assert campaign["wrong_exact"] == 0, campaign["findings"]


def _mutated(seed: int, number: int, directory: Path) -> Path:
    clips = {name: corpus.make_clip(name, directory) for name in corpus.CLIP_NAMES}
    recipe = fuzz._recipe(fuzz.FuzzConfig(seed=seed), number, sorted(clips))
    return fuzz.build_file(recipe, clips, directory)


def _exact_or_refused(path: Path, cache_dir: Path, order: str = "forward") -> tuple[int, int]:
    """Every frame of ``path``, in display order or shuffled (seeks): EXACT and equal to the
    reference, or DecodeError. Returns (exact, refused)."""
    reference = list(fuzz._sequential_decode(str(path)))
    exact = refused = 0
    with phast.open(path, cache_dir=cache_dir, proxies=False) as clip:
        indices = np.arange(len(clip))
        if order == "shuffled":
            indices = np.random.default_rng(5).permutation(indices)
        for i in indices.tolist():
            try:
                with clip.frame(i) as f:
                    assert i < len(reference) and np.array_equal(f.array, reference[i]), i
                    exact += 1
            except phast.DecodeError:
                refused += 1
    return exact, refused


@pytest.mark.parametrize(("seed", "number", "clip"), [
    # a concealed IDR: slice threads hid the error and gave core-count-dependent pixels
    (1, 94, "h264_nonzero_start"),
    # the last frame concealed: frame threads did not always flag it corrupt
    (1, 56, "odd_dims_h264_444"),
])
def test_damaged_frames_are_exact_or_refused(seed, number, clip, tmp_path, cache_dir) -> None:
    path = _mutated(seed, number, tmp_path)
    assert clip in path.name
    _exact_or_refused(path, cache_dir)


def test_frame_lost_by_reindexing_is_a_typed_error(tmp_path, cache_dir) -> None:
    """A deadline request for a frame that a re-index (found damage) removed: typed error."""
    path = _mutated(2, 258, tmp_path)  # 90 frames by demux, 74 by a sequential decode
    with phast.open(path, cache_dir=cache_dir, proxies=False) as clip:
        n = len(clip)
        clip.frame(71)
        clip.frame(14)
        with pytest.raises((phast.FrameOutOfRange, phast.DecodeError)):
            for i in range(74, n):
                clip.frame(i, deadline=0.25)


@pytest.mark.parametrize(("seed", "number", "clip", "order"), [
    # FFV1: slice CRC mismatches are concealed from the previous picture and only logged (no
    # exception, no corrupt flag); after a seek the previous picture is another one
    (2, 25, "odd_dims", "shuffled"),
    # MJPEG: undecodable blocks keep what the recycled buffer held, only logged
    (2, 66, "mjpeg_avi", "forward"),
    (2, 96, "mjpeg_avi", "shuffled"),
    # HEVC: bit flips the decoder does not notice leave parts of pictures unwritten, so their
    # pixels depend on which earlier frames are still held (no log, no flag, no error)
    (2, 245, "hevc_open_gop", "forward"),
    # HEVC: the demux index (87 frames) is verified, then a decode from the start gives 84
    (2, 80, "hevc_open_gop", "forward"),
])
def test_silent_damage_is_refused_not_served(seed, number, clip, order, tmp_path,
                                             cache_dir) -> None:
    """Damage FFmpeg reports only in its log, or not at all: no EXACT frame that differs from
    the sequential decode, and the frames that would have differed are refused."""
    path = _mutated(seed, number, tmp_path)
    assert clip in path.name
    exact, refused = _exact_or_refused(path, cache_dir, order)
    assert refused > 0 and exact > 0
