"""The benchmark's in-process peers (``hwbench.player``, ``hwbench.baseline``, OpenCV in
``hwbench.compare``).

Real decodes of generated clips, judged against an independent sequential decode
(``tests/reference.py``): a player that decodes forward and caches must return exactly the
frames a plain ``container.decode`` gives, whatever the order of the requests.
"""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest

from hwbench import compare, patterns
from hwbench.baseline import PEERS, PyAVPlayer, naive_pyav, open_peer
from hwbench.cli import DEFAULT_PEERS
from hwbench.player import CACHE_FRAMES, REACH
from tests.reference import reference_frames

HAVE_OPENCV = importlib.util.find_spec("cv2") is not None

#: B-frame pyramid with a long GOP (mp4, edit list), open GOPs (HEVC CRA with RASL pictures,
#: x264 open-gop), hidden VP9 frames, variable frame rate (mkv).
CLIPS = ["h264_bpyramid_longgop", "hevc_open_gop", "h264_open_gop", "vp9_altref", "vfr_mkv"]


def schedule(n: int, seed: int) -> list[int]:
    """An editing session over ``n`` frames: random jumps, a scrub, play, then single steps
    back and forth around the middle (cache hits and short forward decodes)."""
    mid = n // 2
    steps = [mid + d for d in (0, 1, -1, 2, -3, 5, 0, n // 3, -2)]
    return [*patterns.random_indices(n, 25, seed), *patterns.scrub_indices(n, 60, seed + 1),
            *patterns.mixed_indices(n, 150, seed + 2, 30.0),
            *patterns.play_indices(n, 40, start=n - 20),  # plays to the end and loops
            *steps]


@pytest.mark.parametrize("name", CLIPS)
def test_every_frame_the_player_returns_is_the_sequential_decodes(make, name: str) -> None:
    path = str(make(name))
    truth = reference_frames(path)
    indices = schedule(len(truth), seed=len(name))
    with PyAVPlayer(path) as player:
        assert len(player) == len(truth)
        for k, i in enumerate(indices):
            assert np.array_equal(player.frame(i), truth[i]), (name, k, i)
        st = player.stats()
    # it played like a player: most requests neither seeked nor decoded from a keyframe
    assert st["hits"] > 0 and st["seeks"] < len(indices) / 2, st


def test_the_naive_peer_seeks_for_every_request_and_is_exact_too(make) -> None:
    path = str(make("h264_bpyramid_longgop"))
    truth = reference_frames(path)
    indices = [10, 11, 12, 11, 70, 71, 5]
    with naive_pyav(path) as naive:
        assert naive.naive
        for i in indices:
            assert np.array_equal(naive.frame(i), truth[i]), i
        assert naive.stats() == {"reach": 0, "cache_frames": 0, "seeks": len(indices),
                                 "stepped": naive.stepped, "hits": 0}


def test_the_player_seeks_only_behind_or_out_of_reach(make) -> None:
    """MLT's rule (reach 8 here, to fit the clip): forward within reach decodes on, a target
    behind or ``reach`` or more frames ahead seeks; recent frames come from the cache."""
    path = str(make("h264_bpyramid_longgop"))  # 90 frames, keyframes at 0 and 60
    truth = reference_frames(path)
    player = PyAVPlayer(path, reach=8, cache_frames=4)
    try:
        def request(i: int) -> tuple[int, int, int]:
            before = (player.seeks, player.stepped, player.hits)
            assert np.array_equal(player.frame(i), truth[i]), i
            return (player.seeks - before[0], player.stepped - before[1],
                    player.hits - before[2])

        assert request(20) == (1, 21, 0)  # first request: seek to keyframe 0, decode 0..20
        assert request(21) == (0, 1, 0)  # the next frame: one decode, no seek
        assert request(28) == (0, 7, 0)  # 7 ahead, within reach: decoded forward
        assert request(26) == (0, 0, 1)  # just decoded (stepped over, kept): a cache hit
        assert request(36) == (1, 37, 0)  # 8 ahead: out of reach, seeks (keyframe 0 again)
        assert request(31) == (1, 32, 0)  # behind, evicted from the 4-frame cache: seeks
        assert request(35) == (0, 4, 0)
        assert request(62) == (1, 3, 0)  # far ahead: the seek lands on keyframe 60
    finally:
        player.close()
    assert (REACH, CACHE_FRAMES) == (64, 24)  # MLT's reach; the cache a player keeps


def test_returned_frames_are_read_only_and_shared_with_the_cache(make) -> None:
    path = str(make("h264_bpyramid_longgop"))
    with PyAVPlayer(path) as player:
        a = player.frame(3)
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a[0, 0, 0] = 1
        assert player.frame(3) is a  # a cache hit costs no conversion


def test_a_request_out_of_range_is_refused_and_the_player_recovers(make) -> None:
    path = str(make("h264_bpyramid_longgop"))
    truth = reference_frames(path)
    with PyAVPlayer(path) as player:
        with pytest.raises(IndexError):
            player.frame(len(truth))
        assert np.array_equal(player.frame(len(truth) - 1), truth[-1])
        assert np.array_equal(player.frame(0), truth[0])


def test_peers_by_name() -> None:
    assert PEERS == ("pyav-player", "pyav-naive")
    with pytest.raises(ValueError, match="unknown PyAV peer"):
        open_peer("pyav", "unused.mp4")


@pytest.mark.skipif(not HAVE_OPENCV, reason="needs OpenCV (the bench extra)")
@pytest.mark.parametrize("player", [True, False])
def test_the_opencv_peers_return_the_requested_frames(make, player: bool) -> None:
    """OpenCV converts YUV -> RGB with its own rounding: frames are judged as ``hwbench
    compare`` judges them (fingerprints against the sequential decode and its neighbours)."""
    path = str(make("h264_bpyramid_longgop"))  # constant frame rate: OpenCV's seek is exact
    truth = reference_frames(path)
    refs = {i: compare.fingerprint(a) for i, a in enumerate(truth)}
    indices = schedule(len(truth), seed=5)
    cv = compare.OpenCVPlayer(path, len(truth), player=player)
    try:
        for i in indices:
            assert compare.is_frame(compare.fingerprint(cv.frame(i)), i, refs), i
        st = cv.stats()
    finally:
        cv.close()
    if player:
        assert st["hits"] > 0 and st["seeks"] < len(indices) / 2, st
    else:
        assert st["hits"] == 0 and st["seeks"] == len(indices)


def test_peer_labels_say_which_peers_are_naive() -> None:
    for name, label in compare.PEER_LABELS.items():
        assert ("naive" in name) == ("naive" in label), name
        assert ("player" in name) == ("player" in label), name
    assert ",".join(compare.DEFAULT_PEERS) == DEFAULT_PEERS
    assert not any("naive" in p for p in compare.DEFAULT_PEERS)
    assert {"pyav-player", "opencv-player"} <= set(compare.DEFAULT_PEERS)
    assert set(compare.DEFAULT_PEERS) < set(compare.PEERS)


def test_schedule_covers_steps_both_ways() -> None:
    steps = [b - a for a, b in itertools.pairwise(schedule(90, 1))]
    assert any(s == 1 for s in steps) and any(-10 <= s < 0 for s in steps)
    assert any(s >= 20 for s in steps) and any(s < -20 for s in steps)
