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


def test_campaign_finds_no_wrong_exact_frame(campaign: dict) -> None:
    assert campaign["wrong_exact"] == 0, campaign["findings"]


# The corpus the regression files below were found with: a recipe picks its clips by position
# in the sorted names, so clips added to the corpus later must not shift them.
FOUND_WITH = ("audio_only", "av1", "h264_10bit", "h264_bpyramid_longgop", "h264_nonzero_start",
              "hevc_open_gop", "mjpeg_avi", "mp4_editlist", "mpeg2_ts", "no_timestamps",
              "odd_dims", "odd_dims_h264_444", "res_change", "vfr_mkv", "vp9_altref")
WITH_H264_OPEN_GOP = (*FOUND_WITH, "h264_open_gop")


def _mutated(seed: int, number: int, directory: Path, clip_dir: Path,
             names: tuple[str, ...] = FOUND_WITH) -> Path:
    clips = {name: corpus.make_clip(name, clip_dir) for name in names}
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
def test_damaged_frames_are_exact_or_refused(seed, number, clip, tmp_path, clip_dir,
                                               cache_dir) -> None:
    path = _mutated(seed, number, tmp_path, clip_dir)
    assert clip in path.name
    _exact_or_refused(path, cache_dir)


@pytest.mark.parametrize("order", ["forward", "shuffled"])
def test_damage_frame_threads_decode_otherwise_is_refused(order, tmp_path, clip_dir,
                                                          cache_dir) -> None:
    """HEVC bit flips no decoder reports (no message at any level, no flag) that frame threads
    decode to other pictures than one thread, from frame 21 on (``hwbench fuzz --seed 3``, file
    182): the prefix check compares both decodes and marks the stream damaged; nothing wrong is
    served."""
    path = _mutated(3, 182, tmp_path, clip_dir, WITH_H264_OPEN_GOP)
    assert "hevc_open_gop" in path.name
    exact, refused = _exact_or_refused(path, cache_dir, order)
    assert refused > 0 and exact > 0


def test_frames_a_sequential_decode_drops_are_never_numbered(tmp_path, clip_dir,
                                                             cache_dir) -> None:
    """Packets of a damaged file that no frame comes from: 90 packets demuxed, 74 frames from a
    sequential decode. The demuxer's error messages mark the stream damaged at open, so the clip
    has 74 frames from the first request on; asking past them is a typed error, with or
    without a deadline, and never a frame."""
    path = _mutated(2, 258, tmp_path, clip_dir)
    reference = list(fuzz._sequential_decode(str(path)))
    with phast.open(path, cache_dir=cache_dir, proxies=False) as clip:
        assert len(clip) == len(reference) == 74
        for i in (71, 14):
            try:
                with clip.frame(i) as f:
                    assert np.array_equal(f.array, reference[i])
            except phast.DecodeError:
                pass
        with pytest.raises(phast.FrameOutOfRange):
            clip.frame(74, deadline=0.25)
        with pytest.raises(phast.FrameOutOfRange):
            clip.frame(80)


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
    # ... and in shuffled order a frame past the verified prefix was served from a seek before
    # any decode from the start disagreed: the Matroska demuxer's error messages now mark the
    # stream damaged before anything is served
    (2, 80, "hevc_open_gop", "shuffled"),
    (2, 545, "hevc_open_gop", "shuffled"),
    (3, 95, "hevc_open_gop", "shuffled"),
    (2, 335, "hevc_open_gop", "shuffled"),
    # HEVC indexed by decoding (duplicate timestamps): "Could not find ref with POC" is only
    # logged, which a frame-threaded index pass could not read; a decode from the keyframe after
    # the damage gave other pictures than the sequential decode
    (1, 260, "hevc_open_gop", "shuffled"),
    (1, 320, "hevc_open_gop", "shuffled"),
    # HEVC: a keyframe whose picture depends on parameter sets parsed earlier: a decoder
    # flushed for a seek keeps them, a fresh one does not (damaged streams seek with a fresh one)
    (1, 290, "hevc_open_gop", "forward"),
    # raw H.264 without timestamps, indexed by decoding: "co located POCs unavailable" and
    # "mmco: unref short failure" are only logged
    (1, 114, "no_timestamps", "forward"),
    (1, 249, "no_timestamps", "shuffled"),
    (2, 444, "no_timestamps", "forward"),
    # H.264: a P-frame past the verified prefix concealed by a frame thread, neither raised
    # nor flagged, only logged ("error while decoding MB"), which the worker's log pipe reads
    (2, 93, "h264_bpyramid_longgop", "forward"),
    (2, 93, "h264_bpyramid_longgop", "shuffled"),
])
def test_silent_damage_is_refused_not_served(seed, number, clip, order, tmp_path, clip_dir,
                                             cache_dir) -> None:
    """Damage FFmpeg reports only in its log, or not at all: no EXACT frame that differs from
    the sequential decode, and the frames that would have differed are refused."""
    path = _mutated(seed, number, tmp_path, clip_dir)
    assert clip in path.name
    exact, refused = _exact_or_refused(path, cache_dir, order)
    assert refused > 0 and exact > 0


@pytest.mark.parametrize("name", [n for n in corpus.CLIP_NAMES if n != "audio_only"])
def test_valid_clips_are_not_taken_for_damaged(name, clip_dir) -> None:
    """The checks that find damage (demuxer and decoder error messages, corrupt flags, the
    prefix verification) stay silent on every valid clip: it keeps frame-threaded decoding and
    pays for no second decode."""
    from backends.software import SoftwareBackend

    backend = SoftwareBackend(str(corpus.make_clip(name, clip_dir)), stream=0, options={},
                              progress=lambda: None)
    try:
        index = backend.build_index()
    finally:
        backend.close()
    assert not index.damaged
    assert not any(index.is_damaged(i) for i in range(index.frame_count))
