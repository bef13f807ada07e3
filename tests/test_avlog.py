"""FFmpeg's error messages read through the worker's log pipe (phast.avlog).

Frame threads conceal damage that they neither raise nor flag; their messages are the signal,
and only FFmpeg's own log callback (no GIL) can carry them out of those threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from phast.avlog import LogPipe, Message
from phast.testing import corpus

ROOT = Path(__file__).resolve().parent.parent


def test_pipe_reads_ffmpeg_lines_and_skips_others() -> None:
    r, w = os.pipe2(os.O_NONBLOCK)
    try:
        pipe = LogPipe(r)
        os.write(w, b"[h264 @ 0x55d0c1a2b3c0] error while decoding MB 1 5, bytestream 111\n"
                    b"Traceback (most recent call last):\n"
                    b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x1f] stream 0, offset 0x30: partial file\n"
                    b"[hevc @ 0xab] Could not find ")
        assert pipe.read() == [
            Message("h264", "error while decoding MB 1 5, bytestream 111"),
            Message("mov,mp4,m4a,3gp,3g2,mj2", "stream 0, offset 0x30: partial file"),
        ]
        os.write(w, b"ref with POC 7\n")  # the line being written completes later
        assert pipe.read() == [Message("hevc", "Could not find ref with POC 7")]
        assert pipe.read() == []
    finally:
        os.close(r)
        os.close(w)


def _child(path: Path, seed: int, *flags: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "tests.avlog_child", str(path), str(seed), *flags],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", [n for n in corpus.CLIP_NAMES
                                  if n not in ("audio_only", "h264_open_gop")])
def test_valid_clips_keep_frame_threads(name, make) -> None:
    """Valid streams log nothing at random access: frame threads stay, every frame exact."""
    got = _child(make(name), seed=7)
    assert got["exact"] == got["frames"] and got["wrong"] == 0, got
    assert got["frame_threads"] and not got["damaged"], got


def test_open_gop_h264_harmless_message_after_a_seek(make) -> None:
    """A valid open-GOP H.264 stream logs "mmco: unref short failure" when decoding starts at
    an I-frame after the first: harmless (a release of a picture the decode never had). Every
    frame is exact, from its own keyframe, on frame threads; the stream is not damaged."""
    got = _child(make("h264_open_gop"), seed=7)
    assert got["exact"] == got["frames"] == 96 and got["wrong"] == 0, got
    assert got["frame_threads"] and not got["damaged"], got
    # the message was read and found harmless: no frame had to come from an earlier keyframe
    assert got["harmless"] > 0 and got["redirected"] == 0, got


@pytest.fixture(scope="module")
def missing_references(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Open-GOP H.264 whose leading B-frames log "Missing reference picture" when decoding
    starts at their I-frame (a full-noise picture every 37 frames shapes the references)."""
    import av
    import numpy as np

    path = tmp_path_factory.mktemp("opengop") / "missing_refs.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.thread_count = 1  # x264's threads shape its output: the same bytes
        stream.options = {"x264-params": "open-gop=1:keyint=30:min-keyint=30:bframes=3:"
                          "b-pyramid=normal:scenecut=0"}
        rng = np.random.default_rng(0)
        for i in range(150):
            img = np.zeros((240, 320, 3), np.uint8)
            img[:, :, 0] = (np.arange(320)[None, :] + i * 3) % 256
            img[(i * 2) % 240:(i * 2) % 240 + 20, :, 1] = 200
            if i % 37 == 0:
                img[:, :, 2] = rng.integers(0, 255, (240, 320))
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, "rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_missing_references_after_a_seek_send_frames_to_an_earlier_keyframe(
        missing_references) -> None:
    """Messages that may concern a trailing picture are not excused: the frames of that group
    come from the keyframe before, and all are exact."""
    got = _child(missing_references, seed=7)
    assert got["exact"] == got["frames"] == 150 and got["wrong"] == 0, got
    assert got["redirected"] > 0 and got["frame_threads"] and not got["damaged"], got
