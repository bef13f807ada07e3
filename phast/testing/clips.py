"""Small generated clips for backend conformance tests, and deliberately bad inputs.

Every clip is written on demand (nothing binary lives in a repository): encoded ones with PyAV's
bundled encoders, YUV4MPEG2 (``.y4m``) ones by this module directly (header, ``FRAME`` markers,
planes), so a y4m parser under test shares no code with the file's writer. The pictures are
deterministic: a scrolling gradient, a moving square, a binary frame counter and seeded noise, so
every frame differs from its neighbours and a wrong frame cannot pass for the right one.

:data:`CLIP_KINDS` is the table (adding a kind is adding a row); :func:`make_clip` writes one
kind into a directory once (atomically) and returns its path; :func:`make_bad_input` derives
broken files from a good one. Only stdlib, numpy and PyAV are imported.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = ["BAD_INPUTS", "CLIP_KINDS", "ClipKind", "make_bad_input", "make_clip",
           "synthetic_picture"]


@dataclass(frozen=True)
class ClipKind:
    """Recipe of one generated clip kind.

    ``codec`` is a PyAV encoder name, or ``"y4m"`` for a YUV4MPEG2 file written by this module
    with colourspace tag ``y4m_tag`` (``C420jpeg``...). ``pix_fmt`` is what the encoder (or the
    y4m planes) store. The number of frames a sequential decode yields is not recorded here: ask
    the reference decoder (:mod:`phast.testing.reference`).
    """

    name: str
    suffix: str
    codec: str
    pix_fmt: str
    width: int = 160
    height: int = 96
    frames: int = 30
    rate: Fraction = Fraction(30)
    options: Mapping[str, str] = field(default_factory=dict)
    y4m_tag: str = ""
    full_range: bool = False  #: y4m: ``XCOLORRANGE=FULL`` and full-range samples

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def filename(self) -> str:
        return self.name + self.suffix


def _kinds() -> dict[str, ClipKind]:
    x264 = {"preset": "veryfast", "x264-params": "keyint=12:min-keyint=12:scenecut=0:bframes=2"}
    kinds = [
        # B-frames (decode order differs from display order), 3 GOPs.
        ClipKind("h264", ".mp4", "libx264", "yuv420p", frames=36, options=x264),
        ClipKind("vp9", ".webm", "libvpx-vp9", "yuv420p", frames=30,
                 options={"deadline": "realtime", "cpu-used": "8", "g": "10", "b": "300k"}),
        ClipKind("mjpeg", ".avi", "mjpeg", "yuvj420p", frames=24, options={"qmax": "6"}),
        # Odd sizes: chroma planes are ceil(157/2) x ceil(93/2).
        ClipKind("ffv1_odd", ".mkv", "ffv1", "yuv420p", width=157, height=93, frames=20,
                 options={"g": "8"}),
        ClipKind("y4m_420", ".y4m", "y4m", "yuv420p", frames=24, rate=Fraction(30000, 1001),
                 y4m_tag="420jpeg"),
        ClipKind("y4m_420_odd", ".y4m", "y4m", "yuv420p", width=157, height=93, frames=16,
                 rate=Fraction(25), y4m_tag="420jpeg"),
        ClipKind("y4m_420_full", ".y4m", "y4m", "yuv420p", frames=16, y4m_tag="420mpeg2",
                 full_range=True),
        ClipKind("y4m_422", ".y4m", "y4m", "yuv422p", frames=16, rate=Fraction(24), y4m_tag="422"),
        ClipKind("y4m_444", ".y4m", "y4m", "yuv444p", frames=16, rate=Fraction(50), y4m_tag="444"),
        ClipKind("y4m_mono", ".y4m", "y4m", "gray", frames=16, y4m_tag="mono"),
    ]
    return {k.name: k for k in kinds}


#: Every clip kind, by name.
CLIP_KINDS: Mapping[str, ClipKind] = MappingProxyType(_kinds())

#: Bad inputs :func:`make_bad_input` derives from a good clip.
BAD_INPUTS: tuple[str, ...] = ("text", "garbage", "truncated", "header_only")


# -- picture content -------------------------------------------------------------------------


def synthetic_picture(index: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Frame ``index`` of the synthetic sequence, ``(height, width, 3)`` rgb24."""
    y, x = np.mgrid[0:height, 0:width]
    red = (x * 255 // max(width - 1, 1) + 5 * index) % 256
    green = (y * 255 // max(height - 1, 1) + 3 * index) % 256
    blue = ((x + y) * 2 + 7 * index) % 256
    picture = np.stack([red, green, blue], axis=-1).astype(np.int16)
    side = max(min(width, height) // 4, 4)
    left = (index * 3) % max(width - side, 1)
    top = (height - side) // 2
    picture[top : top + side, left : left + side] = (240, 240, 32)
    for bit in range(min(12, width // 4)):  # the frame number, LSB first, 4x4 cells
        picture[height - 4 :, bit * 4 : bit * 4 + 4] = 255 if (index >> bit) & 1 else 0
    picture += rng.integers(-6, 7, size=picture.shape, dtype=np.int16)
    return np.clip(picture, 0, 255).astype(np.uint8)


def _pictures(kind: ClipKind) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(kind.name.encode()))
    for i in range(kind.frames):
        yield synthetic_picture(i, kind.width, kind.height, rng)


# -- writers ---------------------------------------------------------------------------------


def _write_encoded(kind: ClipKind, path: Path) -> None:
    import av

    # bitexact: no random UIDs or version strings, so a clip is the same bytes on every run.
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as container:
        stream: Any = container.add_stream(kind.codec, rate=kind.rate)  # a VideoStream
        stream.width, stream.height, stream.pix_fmt = kind.width, kind.height, kind.pix_fmt
        stream.codec_context.time_base = 1 / kind.rate
        stream.codec_context.thread_count = 1  # the same bytes on every machine, whatever its cores
        stream.options = dict(kind.options)
        for i, rgb in enumerate(_pictures(kind)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _visible_planes(frame: Any) -> list[bytes]:
    out = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        out.append(np.ascontiguousarray(rows[:, : plane.width]).tobytes())
    return out


def _write_y4m(kind: ClipKind, path: Path) -> None:
    import av

    rate = Fraction(kind.rate)
    header = (f"YUV4MPEG2 W{kind.width} H{kind.height} F{rate.numerator}:{rate.denominator} "
              f"Ip A1:1 C{kind.y4m_tag}")
    if kind.full_range:
        header += " XCOLORRANGE=FULL"
    with open(path, "wb") as f:
        f.write(header.encode() + b"\n")
        for rgb in _pictures(kind):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format=kind.pix_fmt, dst_color_range="JPEG" if kind.full_range else None)
            f.write(b"FRAME\n")
            for plane in _visible_planes(frame):
                f.write(plane)


def _atomic_create(destination: Path, produce: Callable[[Path], None]) -> Path:
    """Run ``produce(tmp)`` then move ``tmp`` onto ``destination``; reuse an existing file."""
    if destination.exists():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{destination.stem}.", suffix=destination.suffix,
                                    dir=destination.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        produce(tmp)
        tmp.chmod(0o644)
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)
    return destination


def make_clip(kind: str | ClipKind, directory: str | os.PathLike[str]) -> Path:
    """Write a clip of ``kind`` (a :data:`CLIP_KINDS` name, or a recipe of your own) into
    ``directory`` once, named after the kind; return its path.

    Safe to call from several processes at once (each writes a temporary file, then renames).
    Raises ``KeyError`` for an unknown kind name.
    """
    spec = CLIP_KINDS[kind] if isinstance(kind, str) else kind
    writer = _write_y4m if spec.codec == "y4m" else _write_encoded
    return _atomic_create(Path(directory) / spec.filename, lambda tmp: writer(spec, tmp))


def make_bad_input(bad: str, good: str | os.PathLike[str]) -> Path:
    """A broken file derived from the good clip ``good``, next to it, with the same suffix.

    * ``text``: a line of text;
    * ``garbage``: 4 KiB of seeded random bytes;
    * ``truncated``: the first 60 % of ``good``'s bytes;
    * ``header_only``: the first 40 bytes of ``good`` (a header cut short).
    """
    source = Path(good)
    data = source.read_bytes()
    contents: dict[str, Callable[[], bytes]] = {
        "text": lambda: b"This is not a video file.\n",
        "garbage": lambda: np.random.default_rng(7).integers(0, 256, 4096, np.uint8).tobytes(),
        "truncated": lambda: data[: len(data) * 6 // 10],
        "header_only": lambda: data[:40],
    }
    content = contents[bad]
    target = source.with_name(f"bad_{bad}_{source.stem}{source.suffix}")

    def write(tmp: Path) -> None:
        tmp.write_bytes(content())

    return _atomic_create(target, write)
