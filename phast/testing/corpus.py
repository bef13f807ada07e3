"""The test-suite's clip corpus: small synthetic clips of every codec and awkward container, and
broken inputs.

Every clip is produced on demand with PyAV's bundled encoders, so the repository carries no
binary media and needs no ffmpeg command-line tool. Each clip kind exercises one awkward
property of real-world files (B-frame reordering, open GOPs, hidden frames, edit lists,
variable frame rate, mid-stream resolution changes, missing timestamps, ...).

Contract:

* ``CLIPS`` maps a clip name to its :class:`ClipSpec`; ``CLIP_NAMES`` lists the names.
* ``make_clip(name, directory)`` writes the clip into ``directory`` once and returns its path.
  Writing is atomic (temp file + ``os.replace``), so concurrent test workers never observe a
  half-written clip, and an existing file is reused as-is.
* ``make_bad_inputs(directory)`` returns paths to deliberately broken inputs.

The picture content is deterministic (seeded noise on top of a moving gradient, a moving
square and a binary frame counter), so every frame differs from its neighbours and frame
identity can be checked by comparing pixels. The expected number of decoded frames is *not*
recorded here: encoders and muxers may drop or hide frames (see ``mp4_editlist``), so tests
compute it with the reference decoder in ``tests/reference.py``.

Only stdlib, numpy, av and phast.testing are imported, so it is used outside pytest too
(``hwbench fuzz`` mutates these clips); ``tests/clips.py`` re-exports it.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any

import av
import numpy as np

from .clips import synthetic_picture  # the same picture generator

__all__ = [
    "BAD_INPUT_NAMES",
    "CLIPS",
    "CLIP_NAMES",
    "ClipSpec",
    "leading_picture_count",
    "make_bad_inputs",
    "make_clip",
    "mp4_edit_lists",
    "synthetic_picture",
    "vp9_hidden_frame_count",
]

# Writer signature: (spec, destination path) -> None. The destination is a temporary name with
# the clip's final suffix, so muxers that pick behaviour from the extension still work.
Writer = Callable[["ClipSpec", Path], None]

# x265 prints its banner with its own logger, bypassing FFmpeg's (silenced) log callback.
_X265_QUIET = "log-level=error"
# x265 sizes its thread pools and frame threads from the core count: one thread, the same
# bytes on every machine (see _one_thread).
_X265_ONE_THREAD = "pools=none:frame-threads=1"


@dataclass(frozen=True)
class ClipSpec:
    """Recipe and declared properties of one generated clip.

    The encoding fields describe what is *fed* to the encoder; the property fields record what
    the produced file is known to contain (each was verified by inspecting the output with
    PyAV). ``frame_count`` is the number of pictures encoded, which is not necessarily the number
    a sequential decode yields - ask ``tests.reference.reference_count`` for that.
    """

    name: str
    suffix: str  # file extension including the dot; also selects the muxer
    codec: str  # video encoder name; "" for the audio-only clip
    width: int
    height: int
    pix_fmt: str
    frame_count: int
    fps: int = 30
    codec_options: Mapping[str, str] = field(default_factory=dict)
    container_options: Mapping[str, str] = field(default_factory=dict)
    container_format: str | None = None  # force a muxer instead of guessing from ``suffix``
    # Presentation timestamp of the first encoded frame, in frames (1/fps units). Negative values
    # make FFmpeg's mov muxer emit an edit list that trims the leading frames.
    start_frame: int = 0
    writer: Writer | None = None  # None -> the standard constant-frame-rate writer
    # --- declared properties -------------------------------------------------------------------
    has_video: bool = True
    has_bframes: bool = False  # decode order differs from presentation order
    # Keyframes followed, in decode order, by leading pictures that display before them and
    # reference the previous GOP (HEVC CRA + RASL, MPEG-2 open GOPs).
    open_gop: bool = False
    hidden_frames: bool = False  # carries non-displayed frames (VP9 alt-ref in superframes)
    variable_frame_rate: bool = False
    has_edit_list: bool = False  # mp4 elst box present
    trims_frames: bool = False  # edit list hides leading frames (demuxer marks them discard)
    nonzero_start: bool = False  # first presentation timestamp is well above zero
    resolution_change: bool = False  # one stream, two picture sizes
    missing_timestamps: bool = False  # demuxed packets carry no pts
    odd_dimensions: bool = False
    bit_depth: int = 8
    keyframe_interval: int | None = None  # requested GOP length in frames, if fixed
    sizes: tuple[tuple[int, int], ...] = ()  # all (width, height) pairs in the stream

    def __post_init__(self) -> None:
        if not self.sizes:
            object.__setattr__(self, "sizes", ((self.width, self.height),))
        object.__setattr__(self, "codec_options", MappingProxyType(dict(self.codec_options)))
        object.__setattr__(
            self, "container_options", MappingProxyType(dict(self.container_options))
        )

    @property
    def filename(self) -> str:
        return self.name + self.suffix


# --------------------------------------------------------------------------------------------
# Picture content
# --------------------------------------------------------------------------------------------


def _seed(name: str) -> int:
    # crc32 rather than hash(): str hashes are salted per process, we need stable content.
    return zlib.crc32(name.encode())


def _video_frames(
    spec: ClipSpec, count: int, width: int, height: int, first_index: int = 0
) -> Iterator[av.VideoFrame]:
    """Yield ``count`` rgb24 frames (no pts set); the encoder converts to its pix_fmt."""
    rng = np.random.default_rng(_seed(spec.name) + first_index)
    for index in range(first_index, first_index + count):
        yield av.VideoFrame.from_ndarray(
            synthetic_picture(index, width, height, rng), format="rgb24"
        )


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def _open_output(spec: ClipSpec, path: Path) -> av.container.OutputContainer:
    # bitexact: no random Matroska segment/track UIDs and no muxer version strings, so a clip
    # is byte-identical across runs (given the same library builds and CPU count).
    options = {"fflags": "+bitexact", **spec.container_options}
    return av.open(str(path), "w", format=spec.container_format, options=options)


def _add_video_stream(
    container: av.container.OutputContainer, spec: ClipSpec, time_base: Fraction
) -> av.VideoStream:
    stream: Any = container.add_stream(spec.codec, rate=spec.fps)
    stream.width = spec.width
    stream.height = spec.height
    stream.pix_fmt = spec.pix_fmt
    stream.codec_context.time_base = time_base
    _one_thread(stream.codec_context)
    stream.options = dict(spec.codec_options)
    return stream


def _one_thread(encoder: Any) -> None:
    """Encode on one thread: the same bytes on every machine.

    With FFmpeg's default (0: one thread per core) x264 and libvpx pick frame/row threads from
    the core count and the MPEG encoders one slice per thread, so a clip, and every test that
    mutates it, would depend on the machine it was made on. (x265 sizes its own pools: its
    recipes say ``pools=none:frame-threads=1``.)
    """
    encoder.thread_count = 1


def _encode_all(
    container: av.container.OutputContainer,
    stream: av.VideoStream,
    frames: Iterator[av.VideoFrame],
    timestamps: Iterator[int],
) -> None:
    for frame, pts in zip(frames, timestamps, strict=True):
        frame.pts = pts
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))  # flush delayed (reordered / lookahead) frames


def _write_constant_rate(spec: ClipSpec, path: Path) -> None:
    """Constant frame rate: pts = start_frame + i in a 1/fps time base."""
    with _open_output(spec, path) as container:
        stream = _add_video_stream(container, spec, Fraction(1, spec.fps))
        frames = _video_frames(spec, spec.frame_count, spec.width, spec.height)
        timestamps = iter(range(spec.start_frame, spec.start_frame + spec.frame_count))
        _encode_all(container, stream, frames, timestamps)


# Intervals between consecutive frames of the VFR clip, in 1/30 s ticks (cycled).
VFR_TICK_PATTERN = (1, 2, 3)


def _write_variable_rate(spec: ClipSpec, path: Path) -> None:
    """Variable frame rate: frame intervals cycle through VFR_TICK_PATTERN ticks of 1/fps.

    Timestamps are expressed in milliseconds (the Matroska time base), rounded, so intervals
    are 33/34, 67 and 100 ms.
    """
    time_base = Fraction(1, 1000)

    def timestamps() -> Iterator[int]:
        ticks = 0
        for index in range(spec.frame_count):
            yield round(Fraction(ticks, spec.fps) / time_base)
            ticks += VFR_TICK_PATTERN[index % len(VFR_TICK_PATTERN)]

    with _open_output(spec, path) as container:
        stream = _add_video_stream(container, spec, time_base)
        frames = _video_frames(spec, spec.frame_count, spec.width, spec.height)
        _encode_all(container, stream, frames, timestamps())


def _write_svt_av1(spec: ClipSpec, path: Path) -> None:
    """SVT-AV1 prints a banner on stderr through its own logger; SVT_LOG=1 keeps errors only."""
    os.environ.setdefault("SVT_LOG", "1")
    _write_constant_rate(spec, path)


def _write_resolution_change(spec: ClipSpec, path: Path) -> None:
    """One H.264 stream whose picture size changes at the midpoint.

    Each size gets its own encoder context. Global headers are off (the default for a bare
    CodecContext), so every segment starts with an IDR carrying in-band SPS/PPS and a decoder
    can reconfigure on the fly. The packets are muxed into a single MPEG-TS stream, whose
    declared size is the first segment's.
    """
    segments = len(spec.sizes)
    per_segment = spec.frame_count // segments
    time_base = Fraction(1, spec.fps)
    with _open_output(spec, path) as container:
        stream: Any = container.add_mux_stream(
            "h264", rate=spec.fps, width=spec.sizes[0][0], height=spec.sizes[0][1]
        )
        stream.time_base = Fraction(1, 90000)
        for number, (width, height) in enumerate(spec.sizes):
            encoder: Any = av.CodecContext.create(spec.codec, "w")
            encoder.width = width
            encoder.height = height
            encoder.pix_fmt = spec.pix_fmt
            encoder.time_base = time_base
            encoder.framerate = Fraction(spec.fps)
            _one_thread(encoder)
            encoder.options = dict(spec.codec_options)
            first = number * per_segment
            frames = _video_frames(spec, per_segment, width, height, first_index=first)
            for index, frame in enumerate(frames, start=first):
                frame.pts = index
                frame.time_base = time_base
                _mux_foreign_packets(container, stream, encoder.encode(frame), time_base)
            _mux_foreign_packets(container, stream, encoder.encode(None), time_base)


def _mux_foreign_packets(
    container: av.container.OutputContainer,
    stream: av.VideoStream,
    packets: list[av.Packet],
    time_base: Fraction,
) -> None:
    for packet in packets:
        packet.time_base = time_base  # muxing rescales from this to the stream's time base
        packet.stream = stream
        container.mux(packet)


def _write_audio_only(spec: ClipSpec, path: Path) -> None:
    """One second of a stereo AAC tone pair; the file has no video stream at all."""
    sample_rate = 48000
    with _open_output(spec, path) as container:
        stream = container.add_stream("aac", rate=sample_rate, layout="stereo")
        frame_size = stream.codec_context.frame_size or 1024
        t = np.arange(sample_rate, dtype=np.float64) / sample_rate
        tone = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)])
        samples = (0.25 * tone).astype(np.float32)
        for start in range(0, sample_rate, frame_size):
            chunk = np.ascontiguousarray(samples[:, start : start + frame_size])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate = sample_rate
            frame.pts = start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


# --------------------------------------------------------------------------------------------
# Clip table
# --------------------------------------------------------------------------------------------

_SMALL: dict[str, Any] = {"width": 160, "height": 96}
_TS_MUXDELAY = {"max_delay": "700000"}  # microseconds


def _clip_table() -> dict[str, ClipSpec]:
    specs = [
        # Long GOP (2 IDRs in 90 frames) with a B-pyramid: B-frames reference other B-frames,
        # so the reorder depth is 2 and seeking must go back to the first IDR for most frames.
        # faststart puts moov first, so the truncated variant still opens and decodes partly.
        ClipSpec(
            name="h264_bpyramid_longgop",
            suffix=".mp4",
            codec="libx264",
            pix_fmt="yuv420p",
            frame_count=90,
            codec_options={
                "preset": "veryfast",
                "x264-params": "keyint=60:min-keyint=60:scenecut=0:bframes=3:b-pyramid=normal",
            },
            container_options={"movflags": "+faststart"},
            has_bframes=True,
            has_edit_list=True,  # mov muxer's B-frame delay compensation (media_time = 2 frames)
            keyframe_interval=60,
            **_SMALL,
        ),
        # Open GOP: every CRA after the first is followed in decode order by RASL pictures that
        # display *before* it and reference the previous GOP. Starting to decode at such a CRA
        # loses those leading pictures.
        ClipSpec(
            name="hevc_open_gop",
            suffix=".mkv",
            codec="libx265",
            pix_fmt="yuv420p",
            frame_count=96,
            codec_options={
                "preset": "ultrafast",
                "x265-params": (
                    "keyint=24:min-keyint=24:scenecut=0:open-gop=1:bframes=4:b-adapt=0:"
                    + _X265_ONE_THREAD + ":" + _X265_QUIET
                ),
            },
            has_bframes=True,
            open_gop=True,
            keyframe_interval=24,
            **_SMALL,
        ),
        # H.264 open GOP (x264 open-gop: non-IDR I-frames with recovery point SEI, the B-frames
        # after each in decode order display before it). Starting at such an I-frame, the
        # decoder logs errors on a valid stream ("mmco: unref short failure" on the P-frame
        # after it, "Missing reference picture" on the leading B-frames).
        ClipSpec(
            name="h264_open_gop",
            suffix=".mkv",
            codec="libx264",
            pix_fmt="yuv420p",
            frame_count=96,
            codec_options={
                "preset": "veryfast",
                "x264-params": ("keyint=24:min-keyint=24:scenecut=0:open-gop=1:bframes=3:"
                                "b-pyramid=normal"),
            },
            has_bframes=True,
            open_gop=True,
            keyframe_interval=24,
            **_SMALL,
        ),
        # Alt-ref frames are invisible reference frames. libvpx only emits them in one-pass mode
        # with the realtime deadline, a bitrate target and cpu-used >= 5 ("good" one-pass never
        # does; two-pass would need stats plumbing PyAV lacks). The webm muxer's automatic
        # vp9_superframe filter packs each hidden frame with the next shown one, so packets and
        # decoded frames still pair up 1:1; count them with vp9_hidden_frame_count().
        ClipSpec(
            name="vp9_altref",
            suffix=".webm",
            codec="libvpx-vp9",
            pix_fmt="yuv420p",
            frame_count=60,
            codec_options={
                "deadline": "realtime",
                "cpu-used": "8",
                "auto-alt-ref": "1",
                "lag-in-frames": "16",
                "b": "200k",
                "g": "30",
            },
            hidden_frames=True,
            keyframe_interval=30,
            **_SMALL,
        ),
        ClipSpec(
            name="av1",
            suffix=".mkv",
            codec="libsvtav1",
            pix_fmt="yuv420p",
            frame_count=48,
            codec_options={"preset": "12", "crf": "45", "g": "24"},
            writer=_write_svt_av1,
            keyframe_interval=24,
            **_SMALL,
        ),
        # max_delay (what the ffmpeg CLI's -muxdelay sets) shifts TS timestamps by 0.7 s plus the
        # B-frame delay, as in files written by the CLI. MPEG-2 GOPs are open by default: the
        # B-frames after each I-frame in decode order display before it.
        ClipSpec(
            name="mpeg2_ts",
            suffix=".ts",
            codec="mpeg2video",
            pix_fmt="yuv420p",
            frame_count=60,
            fps=25,
            codec_options={"g": "12", "bf": "2", "b": "600k"},
            container_options=_TS_MUXDELAY,
            has_bframes=True,
            open_gop=True,
            nonzero_start=True,
            keyframe_interval=12,
            **_SMALL,
        ),
        ClipSpec(
            name="mjpeg_avi",
            suffix=".avi",
            codec="mjpeg",
            pix_fmt="yuvj420p",
            frame_count=40,
            codec_options={"qmax": "6"},
            keyframe_interval=1,
            **_SMALL,
        ),
        ClipSpec(
            name="vfr_mkv",
            suffix=".mkv",
            codec="libx264",
            pix_fmt="yuv420p",
            frame_count=60,
            codec_options={"preset": "veryfast", "x264-params": "keyint=30:scenecut=0"},
            writer=_write_variable_rate,
            has_bframes=True,
            variable_frame_rate=True,
            keyframe_interval=30,
            **_SMALL,
        ),
        # pts start at -5 frames: the mov muxer writes an elst whose media_time skips them, so
        # the demuxer flags the first 5 frames' packets as discard and a sequential decode
        # yields 5 frames fewer than were encoded (first shown pts is 0). moov is at the end.
        ClipSpec(
            name="mp4_editlist",
            suffix=".mp4",
            codec="libx264",
            pix_fmt="yuv420p",
            frame_count=45,
            start_frame=-5,
            codec_options={
                "preset": "veryfast",
                "x264-params": "keyint=30:scenecut=0:bframes=2",
            },
            has_bframes=True,
            has_edit_list=True,
            trims_frames=True,
            keyframe_interval=30,
            **_SMALL,
        ),
        # FFV1 accepts odd sizes in 4:2:0 (chroma planes are ceil(157/2) x ceil(93/2) = 79x47);
        # libx264 would need 4:4:4 for odd sizes, see odd_dims_h264_444.
        ClipSpec(
            name="odd_dims",
            suffix=".mkv",
            codec="ffv1",
            pix_fmt="yuv420p",
            width=157,
            height=93,
            frame_count=30,
            # FFV1 frames are all intra-coded, but only every g-th resets the entropy-coder
            # state and is flagged key; the others cannot be decoded on their own.
            codec_options={"g": "12"},
            odd_dimensions=True,
            keyframe_interval=12,
        ),
        ClipSpec(
            name="odd_dims_h264_444",
            suffix=".mkv",
            codec="libx264",
            pix_fmt="yuv444p",
            width=157,
            height=93,
            frame_count=30,
            codec_options={"preset": "veryfast", "x264-params": "keyint=15:scenecut=0"},
            has_bframes=True,
            odd_dimensions=True,
            keyframe_interval=15,
        ),
        ClipSpec(
            name="h264_10bit",
            suffix=".mkv",
            codec="libx264",
            pix_fmt="yuv420p10le",
            frame_count=40,
            codec_options={"preset": "veryfast", "x264-params": "keyint=20:scenecut=0"},
            has_bframes=True,
            bit_depth=10,
            keyframe_interval=20,
            **_SMALL,
        ),
        # First pts = 60 frames = 2.0 s (Matroska stores it as 2000 ms).
        ClipSpec(
            name="h264_nonzero_start",
            suffix=".mkv",
            codec="libx264",
            pix_fmt="yuv420p",
            frame_count=45,
            start_frame=60,
            codec_options={"preset": "veryfast", "x264-params": "keyint=30:scenecut=0"},
            has_bframes=True,
            nonzero_start=True,
            keyframe_interval=30,
            **_SMALL,
        ),
        ClipSpec(
            name="res_change",
            suffix=".ts",
            codec="libx264",
            pix_fmt="yuv420p",
            frame_count=60,
            codec_options={"preset": "veryfast", "x264-params": "keyint=30:scenecut=0"},
            container_options=_TS_MUXDELAY,
            writer=_write_resolution_change,
            has_bframes=True,
            nonzero_start=True,  # MPEG-TS max_delay
            resolution_change=True,
            keyframe_interval=30,
            sizes=((160, 96), (128, 72)),
            **_SMALL,
        ),
        # Raw Annex-B: no container timestamps at all. PyAV yields packets with pts and dts None
        # and decoded frames with pts None (frame.duration is still filled in). The raw h264
        # demuxer reports average_rate 25 whatever the real rate (30) is.
        ClipSpec(
            name="no_timestamps",
            suffix=".h264",
            codec="libx264",
            pix_fmt="yuv420p",
            frame_count=40,
            container_format="h264",
            codec_options={"preset": "veryfast", "x264-params": "keyint=20:scenecut=0"},
            has_bframes=True,
            missing_timestamps=True,
            keyframe_interval=20,
            **_SMALL,
        ),
        ClipSpec(
            name="audio_only",
            suffix=".m4a",
            codec="",
            pix_fmt="",
            width=0,
            height=0,
            frame_count=0,
            writer=_write_audio_only,
            has_video=False,
        ),
    ]
    return {spec.name: spec for spec in specs}


CLIPS: Mapping[str, ClipSpec] = MappingProxyType(_clip_table())
CLIP_NAMES: tuple[str, ...] = tuple(CLIPS)


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def _atomic_create(destination: Path, produce: Callable[[Path], None]) -> Path:
    """Run ``produce(tmp)`` and move ``tmp`` onto ``destination``; reuse it if it exists.

    The temporary file lives in the same directory (so ``os.replace`` is atomic) and keeps the
    final suffix (muxers guess the format from it).
    """
    if destination.exists():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(
        prefix=f".{destination.stem}.", suffix=destination.suffix, dir=destination.parent
    )
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        produce(tmp)
        tmp.chmod(0o644)  # mkstemp creates 0600; give the clip ordinary file permissions
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)
    return destination


def make_clip(name: str, directory: Path) -> Path:
    """Write clip ``name`` into ``directory`` (once) and return its path.

    Raises ``KeyError`` for an unknown name. Safe to call concurrently from several processes:
    each writes its own temporary file and the last ``os.replace`` wins with identical content.
    """
    spec = CLIPS[name]
    return _atomic_create(Path(directory) / spec.filename, lambda tmp: _write_in_child(name, tmp))


def _write_in_child(name: str, path: Path) -> None:
    """Run clip ``name``'s writer in a fresh interpreter.

    Encoders leave state behind in a process: after SVT-AV1 has run, x264 with one thread makes
    other bytes, and other bytes on each run. A clip made in its own process depends only on its
    recipe and the library builds, never on which clips were made before it.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-m", "phast.testing.corpus", name, str(path)],
                         env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"making clip {name!r} failed:\n{out.stderr[-4000:]}")


def _write(name: str, path: Path) -> None:
    spec = CLIPS[name]
    (spec.writer or _write_constant_rate)(spec, path)


BAD_INPUT_NAMES = ("empty", "text", "truncated", "bitflips", "missing")


def make_bad_inputs(directory: Path) -> dict[str, Path]:
    """Create deliberately broken inputs in ``directory`` and return ``{kind: path}``.

    * ``empty``: a 0-byte ``.mp4``.
    * ``text``: a text file named ``.mp4``.
    * ``truncated``: ``h264_bpyramid_longgop`` cut at 60 % of its bytes. Its moov box comes
      first (faststart), so the file opens and the tail of the packets is missing.
    * ``bitflips``: a copy of ``h264_bpyramid_longgop`` with 20 bytes in its second half XORed
      with random non-zero values (seeded, so reproducible).
    * ``missing``: a path that does not exist (nothing is created).
    """
    directory = Path(directory)
    source = make_clip("h264_bpyramid_longgop", directory)
    original = source.read_bytes()

    def flipped() -> bytes:
        rng = np.random.default_rng(_seed("bitflips"))
        data = bytearray(original)
        half = len(data) // 2
        offsets = rng.choice(np.arange(half, len(data)), size=20, replace=False)
        for offset in offsets:
            data[offset] ^= int(rng.integers(1, 256))
        return bytes(data)

    contents: dict[str, Callable[[], bytes]] = {
        "empty": lambda: b"",
        "text": lambda: b"This is not a video file.\nJust some text.\n",
        "truncated": lambda: original[: math.floor(len(original) * 0.6)],
        "bitflips": flipped,
    }
    paths: dict[str, Path] = {}
    for kind, content in contents.items():
        target = directory / f"bad_{kind}.mp4"

        def write(tmp: Path, c: Callable[[], bytes] = content) -> None:
            tmp.write_bytes(c())

        paths[kind] = _atomic_create(target, write)
    paths["missing"] = directory / "bad_missing_does_not_exist.mp4"
    return paths


def mp4_edit_lists(path: Path) -> list[list[tuple[int, int, float]]]:
    """Parse the edit lists of an ISO-BMFF file: one list per trak that has an ``elst`` box.

    Each entry is ``(segment_duration, media_time, media_rate)``; ``segment_duration`` is in
    movie timescale units, ``media_time`` in the track's media timescale (-1 = empty edit).
    A tiny independent parser so tests can assert an edit list exists without trusting FFmpeg.
    """
    data = Path(path).read_bytes()
    found: list[list[tuple[int, int, float]]] = []

    def walk(start: int, end: int) -> None:
        offset = start
        while offset + 8 <= end:
            size, kind = struct.unpack_from(">I4s", data, offset)
            header = 8
            if size == 1:
                (size,) = struct.unpack_from(">Q", data, offset + 8)
                header = 16
            elif size == 0:
                size = end - offset
            if size < header:
                return  # corrupt box; stop rather than loop forever
            body, box_end = offset + header, min(offset + size, end)
            if kind in (b"moov", b"trak", b"edts"):
                walk(body, box_end)
            elif kind == b"elst":
                found.append(_parse_elst(data, body))
            offset += size

    walk(0, len(data))
    return found


def _parse_elst(data: bytes, body: int) -> list[tuple[int, int, float]]:
    version = data[body]
    (count,) = struct.unpack_from(">I", data, body + 4)
    entry_format = ">Qqhh" if version == 1 else ">Iihh"
    entry_size = struct.calcsize(entry_format)
    entries = []
    for number in range(count):
        duration, media_time, rate_int, rate_frac = struct.unpack_from(
            entry_format, data, body + 8 + number * entry_size
        )
        entries.append((duration, media_time, rate_int + rate_frac / 65536))
    return entries


def vp9_hidden_frame_count(path: Path) -> int:
    """Count hidden (non-shown) VP9 frames in the first video stream, packed in superframes.

    A superframe ends with an index whose first and last bytes are the same marker byte
    ``0b110mmnnn`` (frame count ``nnn + 1``, size field width ``mm + 1``). libvpx puts the
    hidden frames first and the one shown frame last, so each superframe hides ``nnn`` frames.
    """
    count = 0
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            data = bytes(packet)
            if not data or data[-1] & 0xE0 != 0xC0:
                continue
            marker = data[-1]
            frames = (marker & 7) + 1
            size_bytes = ((marker >> 3) & 3) + 1
            index_size = 2 + size_bytes * frames
            if len(data) >= index_size and data[-index_size] == marker:
                count += frames - 1
    return count


def leading_picture_count(path: Path) -> int:
    """Count packets that follow a non-first keyframe in decode order but display before it.

    These are the RASL/open-GOP leading pictures a decoder starting at that keyframe cannot
    reconstruct. Packets without pts are ignored.
    """
    leading = 0
    keyframe_pts: int | None = None
    seen_keyframes = 0
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            if not packet.size:
                continue  # the demuxer's final flush packet
            if packet.is_keyframe:
                seen_keyframes += 1
                keyframe_pts = packet.pts
            elif (
                seen_keyframes > 1
                and keyframe_pts is not None
                and packet.pts is not None
                and packet.pts < keyframe_pts
            ):
                leading += 1
    return leading


if __name__ == "__main__":  # the child of _write_in_child: NAME PATH
    _write(sys.argv[1], Path(sys.argv[2]))
