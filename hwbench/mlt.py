"""MLT through phast: clips, ``melt`` renders, XML projects, and ``hwbench mlt``.

Shared by ``tests/test_mlt.py`` (renders compared with PyAV and with MLT's own avformat
producer) and the ``hwbench mlt`` benchmark (realtime playback and seeking in a real MLT
consumer). Every render goes through ``clients/mlt/melt-phast``, the same command for both
producers: only the resource's service differs (``phast:`` or ``avformat:``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MELT_PHAST = ROOT / "clients" / "mlt" / "melt-phast"

#: Intervals between frames of the phone-style clip, in 1/600 s (a phone's mp4 time base):
#: 30 fps with the jitter and dropped frames of a phone camera under load, and a stretch at
#: 60 fps. Average ~33 fps: no constant rate matches it.
PHONE_TICKS = (20, 20, 21, 19, 20, 40, 20, 20, 10, 10, 10, 10, 20, 30, 20, 19, 21, 60)


def write_clip(path: Path, *, frames: int, size: tuple[int, int] = (320, 180),
               ticks: Sequence[int] | None = None, gop: int = 48) -> Path:
    """An H.264 mp4 (B-frames, one encoder thread: the same bytes each time).

    Constant 30 fps unless ``ticks`` gives the intervals (cycled) in a 1/600 time base.
    """
    import av

    from phast.testing.corpus import synthetic_picture

    width, height = size
    rng = np.random.default_rng(15)
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 600 if ticks else 30)
        stream.codec_context.thread_count = 1
        stream.options = {"preset": "veryfast", "x264-params": f"keyint={gop}:scenecut=0:bframes=3"}
        pts = 0
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(synthetic_picture(i, width, height, rng), "rgb24")
            frame.pts = pts
            pts += ticks[i % len(ticks)] if ticks else 1
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def reference(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """Luma planes (the decoder's Y, untouched: ``format="gray"`` would rescale the range)
    and start times (seconds from the first frame) of a sequential decode."""
    import av

    lumas, times = [], []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for f in c.decode(stream):
            plane = f.planes[0]
            rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            lumas.append(rows[:, : plane.width].copy())
            times.append(float(f.pts * stream.time_base))
    return lumas, [t - times[0] for t in times]


def shown_at(times: Sequence[float], fps: Fraction, positions: int) -> list[int]:
    """For each position p of a timeline at ``fps``: the frame on screen at p / fps."""
    out, k = [], 0
    for p in range(positions):
        t = p / fps
        while k + 1 < len(times) and times[k + 1] <= t + 1e-9:
            k += 1
        out.append(k)
    return out


def write_profile(path: Path, size: tuple[int, int], fps: Fraction) -> Path:
    """An MLT profile file: square pixels, progressive, BT.601."""
    w, h = size
    path.write_text(f"description=phast test\nframe_rate_num={fps.numerator}\n"
                    f"frame_rate_den={fps.denominator}\nwidth={w}\nheight={h}\nprogressive=1\n"
                    f"sample_aspect_num=1\nsample_aspect_den=1\ndisplay_aspect_num={w}\n"
                    f"display_aspect_den={h}\ncolorspace=601\n")
    return path


@dataclass(frozen=True)
class Cut:
    path: Path
    first: int  #: MLT in point (frames of the profile)
    last: int  #: MLT out point, inclusive


def write_project(path: Path, cuts: Iterable[Cut], service: str, profile: Path) -> Path:
    """An MLT XML project: one playlist of ``cuts``, every producer of ``service``."""
    prof = dict(line.split("=", 1) for line in profile.read_text().splitlines() if "=" in line)
    lines = ['<?xml version="1.0" encoding="utf-8"?>', '<mlt LC_NUMERIC="C" version="7.12.0">',
             "  <profile " + " ".join(f"{k}={quoteattr(v)}" for k, v in prof.items()
                                      if k != "description") + "/>"]
    entries = []
    for n, cut in enumerate(cuts):
        lines += [f'  <producer id="p{n}">',
                  f'    <property name="resource">{escape(str(cut.path))}</property>',
                  f'    <property name="mlt_service">{service}</property>', "  </producer>"]
        entries.append(f'    <entry producer="p{n}" in="{cut.first}" out="{cut.last}"/>')
    lines += ['  <playlist id="main">', *entries, "  </playlist>",
              '  <tractor id="t"><track producer="main"/></tractor>', "</mlt>"]
    path.write_text("\n".join(lines) + "\n")
    return path


def melt(args: Sequence[str], *, env: dict[str, str] | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``clients/mlt/melt-phast ARGS`` (it builds the module first); raise on failure."""
    out = subprocess.run([str(MELT_PHAST), *args], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, **(env or {})},
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"melt {' '.join(args)} failed ({out.returncode}):\n"
                           f"{out.stderr[-4000:]}")
    return out


def raw_args(source: str, out: Path, profile: Path | None = None) -> list[str]:
    """melt arguments rendering ``source`` (``phast:FILE``, ``avformat:FILE`` or an XML
    project) to raw yuv420p, not in real time (every frame rendered, none dropped)."""
    return [source] + (["-profile", str(profile)] if profile else []) + [
        "-consumer", f"avformat:{out}", "f=rawvideo", "vcodec=rawvideo", "pix_fmt=yuv420p",
        "real_time=0", "an=1"]


def render_raw(source: str, out: Path, *, profile: Path | None = None,
               env: dict[str, str] | None = None) -> Path:
    """:func:`raw_args` run through melt-phast."""
    melt(raw_args(source, out, profile), env=env)
    return out


def read_yuv420p(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Frames of a raw yuv420p file as (n, w*h*3/2) uint8 rows."""
    w, h = size
    data = np.fromfile(path, np.uint8)
    frame = w * h * 3 // 2
    if data.size % frame:
        raise ValueError(f"{path}: {data.size} bytes is not a whole number of frames")
    return data.reshape(-1, frame)


def luma(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    return frames[:, : w * h].reshape(-1, h, w)
