"""Bad input gets a typed error or the frames that can be decoded: never a hang, a crash of the
caller, or a wrong frame labelled EXACT."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

import phast
from tests import clips


def tolerant_reference(path: Path) -> list[np.ndarray]:
    """Sequential decode that skips packets the decoder rejects (as the ffmpeg CLI does)."""
    out = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for packet in c.demux(stream):
            try:
                frames = stream.codec_context.decode(packet if packet.size else None)
            except av.FFmpegError:
                continue
            out += [f.to_ndarray(format="rgb24") for f in frames]
    return out


@pytest.fixture(scope="module")
def bad(tmp_path_factory):  # type: ignore[no-untyped-def]
    return clips.make_bad_inputs(tmp_path_factory.mktemp("bad"))


def test_missing_file(bad, cache_dir) -> None:
    with pytest.raises(phast.SourceNotFound) as e:
        phast.open(bad["missing"], cache_dir=cache_dir)
    assert isinstance(e.value, FileNotFoundError)


@pytest.mark.parametrize("name", ["empty", "text"])
def test_not_a_video(name, bad, cache_dir) -> None:
    with pytest.raises(phast.MediaError) as e:
        phast.open(bad[name], cache_dir=cache_dir)
    assert isinstance(e.value, ValueError)


def test_directory(tmp_path, cache_dir) -> None:
    with pytest.raises(phast.MediaError, match="not a regular file"):
        phast.open(tmp_path, cache_dir=cache_dir)


def test_audio_only(make, cache_dir) -> None:
    with pytest.raises(phast.NoVideoStream, match="0 video stream"):
        phast.open(make("audio_only"), cache_dir=cache_dir)


def test_stream_that_does_not_exist(make, cache_dir) -> None:
    with pytest.raises(phast.NoVideoStream):
        phast.open(make("vp9_altref"), stream=3, cache_dir=cache_dir)


@pytest.mark.parametrize("name", ["truncated", "bitflips"])
def test_damaged_file_gives_exact_frames_or_typed_errors(name, bad, cache_dir) -> None:
    ref = tolerant_reference(bad[name])
    with phast.open(bad[name], cache_dir=cache_dir) as clip:
        assert len(clip) == len(ref)
        got = 0
        for i in reversed(range(len(clip))):  # backwards: the hardest order for a decoder
            try:
                with clip.frame(i) as f:
                    assert np.array_equal(f.array, ref[i]), f"frame {i} labelled EXACT is wrong"
                    got += 1
            except phast.DecodeError:
                pass
        assert got > 0


def test_bad_arguments(make, cache_dir) -> None:
    path = make("vp9_altref")
    with pytest.raises(phast.InvalidArgument):
        phast.open(123, cache_dir=cache_dir)  # type: ignore[arg-type]
    with pytest.raises(phast.InvalidArgument):
        phast.open(path, stream=-1, cache_dir=cache_dir)
    with pytest.raises(phast.InvalidArgument):
        phast.open(path, backend_options={"x": object()}, cache_dir=cache_dir)
    with pytest.raises(phast.BackendNotFound, match="software"):
        phast.open(path, backend="no-such-backend", cache_dir=cache_dir)
    with phast.open(path, cache_dir=cache_dir) as clip:
        n = len(clip)
        with pytest.raises(phast.FrameOutOfRange):
            clip.frame(n)
        with pytest.raises(phast.FrameOutOfRange):
            clip.frame(-n - 1)
        assert clip.frame(-1).index == n - 1
        with pytest.raises(phast.InvalidArgument):
            clip.frame(1.5)  # type: ignore[arg-type]
        with pytest.raises(phast.InvalidArgument):
            clip.frame(True)  # type: ignore[arg-type]
        with pytest.raises(phast.InvalidArgument, match="format"):
            clip.frame(0, format="yuv9000")  # type: ignore[arg-type]
        with pytest.raises(phast.InvalidArgument):
            clip.frame_at(float("nan"))
        with pytest.raises(phast.InvalidArgument):
            clip.frame_at("1.0")  # type: ignore[arg-type]
        assert clip.frame(np.int64(2)).index == 2
    with pytest.raises(phast.ClipClosed):
        clip.frame(0)


def test_file_rewritten_in_place_is_reindexed(make, tmp_path, cache_dir) -> None:
    target = tmp_path / "clip.mp4"
    target.write_bytes(make("h264_bpyramid_longgop").read_bytes())
    with phast.open(target, cache_dir=cache_dir) as clip:
        assert len(clip) == 90
    target.write_bytes(make("mp4_editlist").read_bytes())
    with phast.open(target, cache_dir=cache_dir) as clip:
        assert len(clip) == 40
        assert np.array_equal(clip.frame(5).array, tolerant_reference(target)[5])
