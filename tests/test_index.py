"""Frame-index rules, serialisation and the on-disk store."""

from __future__ import annotations

import threading
from fractions import Fraction

import numpy as np
import pytest

import phast
from phast.errors import MediaError
from phast.index import (
    DISCARD,
    KEY,
    NOPTS,
    FrameIndex,
    compute_starts,
    display_order_from_pts,
)
from phast.store import Store, source_identity
from tests.reference import reference_frames


def test_display_order_drops_discarded_and_pre_key_packets() -> None:
    pts = np.array([5, 0, 10, 3, 30, 20, 15], np.int64)
    flags = np.array([0, KEY, 0, DISCARD, KEY, 0, 0], np.uint8)
    # packet 0 precedes the first keyframe; packet 3 is discarded (edit list)
    assert display_order_from_pts(pts, flags).tolist() == [1, 2, 6, 5, 4]


def test_display_order_refuses_missing_or_duplicate_pts() -> None:
    flags = np.array([KEY, 0, 0], np.uint8)
    assert display_order_from_pts(np.array([0, NOPTS, 2]), flags) is None
    assert display_order_from_pts(np.array([0, 1, 1]), flags) is None
    assert display_order_from_pts(np.array([0, 1, 2]), np.zeros(3, np.uint8)) is None


def test_leading_pictures_start_at_the_previous_keyframe() -> None:
    # decode order: K0(pts0) P(pts3) B(1) B(2) | K4(pts7, open GOP) L(5) L(6) P(10) B(8) B(9)
    pts = np.array([0, 3, 1, 2, 7, 5, 6, 10, 8, 9], np.int64)
    flags = np.array([KEY, 0, 0, 0, KEY, 0, 0, 0, 0, 0], np.uint8)
    order = display_order_from_pts(pts, flags)
    starts = compute_starts(order, pts, flags)
    by_pts = dict(zip(pts[order].tolist(), starts.tolist(), strict=True))
    assert by_pts[5] == by_pts[6] == 0  # leading pictures of K4 need K0
    assert by_pts[7] == by_pts[8] == by_pts[10] == 4
    assert by_pts[1] == 0


def test_starts_without_timestamps_use_display_rank() -> None:
    pts = np.full(6, NOPTS, np.int64)
    flags = np.array([0, KEY, 0, 0, KEY, 0], np.uint8)
    starts = compute_starts(np.arange(6), pts, flags)
    assert starts.tolist() == [0, 1, 1, 1, 4, 4]


def _index() -> FrameIndex:
    pts = np.array([0, 2, 1, 3], np.int64)
    flags = np.array([KEY, 0, 0, KEY], np.uint8)
    order = display_order_from_pts(pts, flags)
    return FrameIndex(pts, pts - 1, np.arange(4) * 100, flags, order, pts[order],
                      compute_starts(order, pts, flags), Fraction(1, 25), "demux", "container")


def test_roundtrip_and_lookup() -> None:
    idx = _index()
    again = FrameIndex.from_bytes(idx.to_bytes())
    assert again.frame_packet.tolist() == idx.frame_packet.tolist() == [0, 2, 1, 3]
    assert again.time_base == Fraction(1, 25)
    assert again.index_at(0.04) == 1 and again.index_at(0.0399) == 0 and again.index_at(-1) == -1
    assert again.keyframes().tolist() == [0, 3]


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic"])
def test_malformed_bytes_are_refused(damage: str) -> None:
    data = bytearray(_index().to_bytes())
    if damage == "truncate":
        data = data[:-5]
    elif damage == "flip":
        data[-3] ^= 0xFF  # frame_start points past its frame
    else:
        data[0] ^= 1
    with pytest.raises(MediaError):
        FrameIndex.from_bytes(bytes(data))


def test_store_damaged_entry_is_a_miss(tmp_path) -> None:
    store = Store(tmp_path)
    idx = _index()
    store.put_index("id", "software", 0, idx, {"codec": "h264"})
    got = store.get_index("id", "software", 0)
    assert got is not None and got[1] == {"codec": "h264"}
    key = store._index_key("id", "software", 0)
    raw = store._cache.get(key)
    store._cache.set(key, raw[:-1] + bytes([raw[-1] ^ 1]))
    assert store.get_index("id", "software", 0) is None


def test_identity_changes_when_the_file_changes(tmp_path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"a" * 300_000)
    first = source_identity(f)
    f.write_bytes(b"a" * 299_999 + b"b")
    assert source_identity(f) != first


def test_reopen_uses_the_stored_index_without_a_worker(make, cache_dir) -> None:
    path = make("hevc_open_gop")
    with phast.open(path, cache_dir=cache_dir) as clip:
        n = len(clip)
    pool = phast.WorkerPool(max_workers=1)
    try:
        with phast.open(path, cache_dir=cache_dir, pool=pool) as clip:
            assert len(clip) == n
            assert clip.worker_pid is None  # no process needed to open: the index was stored
            assert np.array_equal(clip.frame(n - 1).array, reference_frames(path)[n - 1])
    finally:
        pool.shutdown()


def test_many_clips_share_a_bounded_pool(make, cache_dir) -> None:
    names = ["h264_bpyramid_longgop", "hevc_open_gop", "vp9_altref", "av1", "mpeg2_ts",
             "vfr_mkv"]
    pool = phast.WorkerPool(max_workers=2)
    try:
        clips_ = [phast.open(make(n), cache_dir=cache_dir, pool=pool) for n in names]
        errors: list[str] = []

        def scrub(clip: phast.Clip, ref: list[np.ndarray]) -> None:
            for i in np.random.default_rng(len(ref)).permutation(len(ref))[:25]:
                with clip.frame(int(i)) as f:
                    if not np.array_equal(f.array, ref[i]):
                        errors.append(f"{clip.path} {i}")

        threads = [threading.Thread(target=scrub, args=(c, reference_frames(c.path)))
                   for c in clips_]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        pids = {c.worker_pid for c in clips_}
        assert len(pids) == 2 and None not in pids
        for c in clips_:
            c.close()
    finally:
        pool.shutdown()
