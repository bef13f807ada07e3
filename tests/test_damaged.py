"""Damaged files found by fuzzing, kept as fixtures (``tests/fixtures/damaged``).

Each file is committed with its recipe (``manifest.json``; ``python -m tests.fixtures.find_damaged
record`` writes both): the bytes are the test's input, not regenerated, since a corpus made by
another encoder build differs. For every file:

* through ``phast.open`` (sandboxed workers), every frame in display order and shuffled is EXACT
  and equal to a single-threaded sequential decode, or refused with ``DecodeError`` -- and
  some of each, so the file keeps testing both;
* the backend's check that finds its damage (``SoftwareBackend.damage``) is still the one that
  does, so a check that stops working fails here rather than waiting for a wrong frame.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import phast
from hwbench import fuzz
from tests.test_avlog import _child

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "damaged"
ALL: list[dict] = json.loads((FIXTURES / "manifest.json").read_text())
#: files whose pictures are damaged (the rest have intact pictures under lying timestamps)
MANIFEST = [e for e in ALL if e["check"] is not None]
MISNUMBERED = [e for e in ALL if e["check"] is None]
BY_NAME = {e["file"]: e for e in ALL}


def _ids(entries: list[dict]) -> list[str]:
    return [e["file"] for e in entries]


def _exact_or_refused(path: Path, cache_dir: Path, order: str) -> tuple[int, int]:
    """Every frame of ``path`` in display order or shuffled (seeks): EXACT and equal to the
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


@pytest.mark.parametrize("entry", ALL, ids=_ids(ALL))
def test_fixture_is_the_recorded_file(entry: dict) -> None:
    data = (FIXTURES / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]


@pytest.mark.parametrize("order", ["forward", "shuffled"])
@pytest.mark.parametrize("entry", MANIFEST, ids=_ids(MANIFEST))
def test_damaged_frames_are_exact_or_refused(entry: dict, order: str, cache_dir: Path) -> None:
    exact, refused = _exact_or_refused(FIXTURES / entry["file"], cache_dir, order)
    assert refused > 0 and exact > 0, (exact, refused)


@pytest.mark.parametrize("entry", MANIFEST, ids=_ids(MANIFEST))
def test_the_check_that_finds_the_damage_still_does(entry: dict) -> None:
    """Decoded in the worker's setting (the log pipe on descriptor 2, frame threads), in
    display order: the damage is found by the recorded check, nothing wrong is served."""
    got = _child(FIXTURES / entry["file"], seed=-1)
    assert got["wrong"] == 0 and got["damaged"], got
    assert got["damage"][0] == entry["check"], (got["damage"], entry["check"])


CONCEALED_ONLY = [e for e in MANIFEST if e["check_without_reports_below_error"] == "decoder-flag"
                  and e["found_by"] == "frame"]


@pytest.mark.parametrize("entry", CONCEALED_ONLY, ids=_ids(CONCEALED_ONLY))
def test_concealment_is_caught_by_the_hold_alone(entry: dict) -> None:
    """H.264 concealing a broken slice logs it at INFO only ("concealing N DC, N AC, N MV
    errors") and flags only the concealed picture, while the B-frames that reference it come
    out first. With the INFO reports ignored, holding each frame until every packet decoded
    before it has come out (``DecodeRun.hold``) still refuses them: the corrupt flag
    is seen before any of them is served. (Both files were served wrong with neither.)"""
    got = _child(FIXTURES / entry["file"], -1, "--no-reports-below-error")
    assert got["wrong"] == 0 and got["refused"] > 0 and got["exact"] > 0, got
    assert got["damage"][0] == "decoder-flag" and got["damage"][2] == "frame", got
    assert got["reindexed"] == 1, got


def test_the_manifest_covers_the_classes_fuzzing_found() -> None:
    """The fixtures keep each way damage is found covered, on frame-threaded decodes too."""
    found = {(e["check"], e["found_by"]) for e in MANIFEST}
    assert {("demuxer", "frame"), ("headers", "frame"), ("decoder-error", "one"),
            ("decoder-log", "one"), ("decoder-log", "frame"), ("prefix-threads", "frame"),
            ("recheck", "frame")} <= found
    assert len(CONCEALED_ONLY) >= 2
    assert any(e["reindexed"] for e in MANIFEST)  # found while serving, not at open


def test_frames_a_sequential_decode_drops_are_never_numbered(cache_dir: Path) -> None:
    """Packets of a damaged file that no frame comes from (46 packets demuxed, 16 frames from a
    sequential decode): the clip has the frames of the sequential decode from the first request
    on; asking past them is a typed error, with or without a deadline, and never a frame."""
    entry = BY_NAME["s3n54-hevc_open_gop.mkv"]
    path = FIXTURES / entry["file"]
    reference = list(fuzz._sequential_decode(str(path)))
    assert entry["packets"] > entry["reference_frames"] == len(reference)
    with phast.open(path, cache_dir=cache_dir, proxies=False) as clip:
        n = len(clip)
        assert n == len(reference)
        for i in (n - 1, n // 2):
            try:
                with clip.frame(i) as f:
                    assert np.array_equal(f.array, reference[i])
            except phast.DecodeError:
                pass
        with pytest.raises(phast.FrameOutOfRange):
            clip.frame(n, deadline=0.25)
        with pytest.raises(phast.FrameOutOfRange):
            clip.frame(entry["packets"] - 1)


SERVED_THEN_FOUND = [e for e in MANIFEST if e["reindexed"] and e["found_by"] == "frame"]


@pytest.mark.parametrize("entry", SERVED_THEN_FOUND, ids=_ids(SERVED_THEN_FOUND))
def test_damage_found_by_read_ahead_reindexes_before_serving(entry: dict) -> None:
    """Read-ahead meets the damage and cannot re-index (nobody is waiting for a reply): the
    backend keeps no stale index of a valid stream for a damaged one; the next request
    re-indexes, and nothing wrong is served."""
    got = _child(FIXTURES / entry["file"], seed=-2)
    assert got["wrong"] == 0 and got["refused"] > 0 and got["reindexed"] == 1, got


@pytest.mark.parametrize("order", ["forward", "shuffled"])
@pytest.mark.parametrize("entry", MISNUMBERED, ids=_ids(MISNUMBERED))
def test_lying_timestamps_number_no_frame_wrong(entry: dict, order: str, cache_dir: Path) -> None:
    """A corrupted container timestamp moves one picture 31 places in timestamp order; the
    pictures themselves are intact. The index comes from a decode (timestamps that reorder
    more than any decoder can are not trusted), so every frame is EXACT and numbered as a
    sequential decode numbers it -- also when the first request seeks past the lie."""
    path = FIXTURES / entry["file"]
    with phast.open(path, cache_dir=cache_dir / "first", proxies=False) as clip:
        assert clip.info.index_method == "decode"  # at open, before any request
    exact, refused = _exact_or_refused(path, cache_dir, order)
    assert refused == 0 and exact == entry["frames"] == entry["reference_frames"]


def test_the_recheck_is_what_refuses_memory_never_written(cache_dir: Path) -> None:
    """Without the second decoder (``backend_options={"recheck": False}``) the HEVC pictures
    that depend on memory the decoder never wrote are served as EXACT and differ from a
    sequential decode: the check is what stands between them and the screen."""
    entry = BY_NAME["s1n2428-hevc_open_gop.mkv"]
    path = FIXTURES / entry["file"]
    reference = list(fuzz._sequential_decode(str(path)))
    wrong = 0
    with phast.open(path, cache_dir=cache_dir, proxies=False,
                    backend_options={"recheck": False}) as clip:
        for i in range(60, 70):  # past the verified prefix, inside the damage
            with clip.frame(i) as f:
                wrong += not np.array_equal(f.array, reference[i])
    assert wrong > 0
