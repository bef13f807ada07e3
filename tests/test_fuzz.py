"""A short fuzz campaign (``hwbench fuzz``); the damaged inputs campaigns found are fixtures
(``tests/test_damaged.py``).

Every mutated file gets a typed error, degraded frames or EXACT frames that equal a
single-threaded sequential decode of the same file; never a hang or an editor crash. The corpus
is made on one encoder thread in a child process per clip, so the campaign mutates the same
files on every machine with the same library builds (``corpus_digest`` in its report).
"""

from __future__ import annotations

import pytest

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
