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
    """An MLT profile file: square pixels, progressive, and the colour space MLT assumes for
    an unlabelled stream of that size (BT.709 above 750 000 pixels, else BT.601). With another
    one, avformat converts the YUV matrix in the producer and phast leaves it to MLT."""
    w, h = size
    colorspace = 709 if w * h > 750000 else 601
    path.write_text(f"description=phast test\nframe_rate_num={fps.numerator}\n"
                    f"frame_rate_den={fps.denominator}\nwidth={w}\nheight={h}\nprogressive=1\n"
                    f"sample_aspect_num=1\nsample_aspect_den=1\ndisplay_aspect_num={w}\n"
                    f"display_aspect_den={h}\ncolorspace={colorspace}\n")
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


def raw_args(source: str, out: Path, profile: Path | None = None,
             real_time: int = 0) -> list[str]:
    """melt arguments rendering ``source`` (``phast:FILE``, ``avformat:FILE`` or an XML
    project) to raw yuv420p, never dropping a frame (``real_time`` 0, or -N: N threads)."""
    return [source] + (["-profile", str(profile)] if profile else []) + [
        "-consumer", f"avformat:{out}", "f=rawvideo", "vcodec=rawvideo", "pix_fmt=yuv420p",
        f"real_time={real_time}", "an=1"]


def render_raw(source: str, out: Path, *, profile: Path | None = None,
               env: dict[str, str] | None = None, real_time: int = 0) -> Path:
    """:func:`raw_args` run through melt-phast."""
    melt(raw_args(source, out, profile, real_time), env=env)
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


# -- hwbench mlt: realtime playback and seeking in a paced MLT player loop ---------------------


def luma_hash(luma_plane: np.ndarray) -> int:
    """mltplay's hash of a picture's luma: sum of y[i] * ((i * 2654435761 mod 2^32) | 1)."""
    y = np.ascontiguousarray(luma_plane).ravel().astype(np.uint64)
    i = np.arange(y.size, dtype=np.uint64)
    weights = ((i * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)) | np.uint64(1)
    with np.errstate(over="ignore"):
        return int((y * weights).sum(dtype=np.uint64))


@dataclass
class PlayResult:
    """One mltplay run: what a realtime player showed, and what it cost."""

    service: str
    mode: str
    ticks: int
    shown: int
    late: int  #: pictures that took longer than a frame period
    dropped: int  #: periods that went by without a picture (a late one before them)
    right: int  #: pictures of the frame on screen at their position's time
    wrong: int  #: pictures presented as that frame (avformat; phast EXACT) that are another
    degraded: int  #: pictures phast labelled PROXY, NEAREST or BLANK
    cpu_s: float  #: this player and its children (phast serve, its workers)
    wall_s: float

    @property
    def cpu_share(self) -> float:
        """Share of one core."""
        return self.cpu_s / self.wall_s if self.wall_s else 0.0


def build_player() -> Path:
    """clients/mlt's module folder and mltplay (make); the build folder."""
    build = Path(os.environ.get("PHAST_MLT_BUILD", ROOT / "clients" / "mlt" / "build"))
    subprocess.run(["make", "-s", "-C", str(MELT_PHAST.parent), f"BUILD={build}"], check=True)
    return build


def play(clip: Path, profile: Path, service: str, mode: str, seconds: float, *,
         expected: Sequence[int], fps: Fraction, env: dict[str, str] | None = None,
         deadline: float | None = None) -> PlayResult:
    """Run mltplay on ``service:clip``; ``expected[p]`` is the luma hash of the frame on
    screen at position p."""
    build = build_player()
    run_env = {**os.environ, "MLT_REPOSITORY": str(build / "modules"), **(env or {})}
    run_env.setdefault("MLT_DATA", subprocess.run(
        ["pkg-config", "--variable=mltdatadir", "mlt-framework-7"], capture_output=True,
        text=True, check=True).stdout.strip())
    args = [str(build / "mltplay"), str(profile), f"{service}:{clip}", mode, str(seconds)]
    if deadline is not None:
        args.append(str(deadline))
    out = subprocess.run(args, capture_output=True, text=True, env=run_env, check=True,
                         timeout=seconds * 10 + 120)
    right = wrong = degraded = 0
    total: dict[str, float] = {}
    for line in out.stdout.splitlines():
        if line.startswith("TOTAL"):
            total = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
            continue
        pos, _us, digest, tier, *_ = line.split()
        if tier not in ("-", "exact"):
            degraded += 1
        elif int(pos) < len(expected) and int(digest, 16) == expected[int(pos)]:
            right += 1
        else:
            wrong += 1
    return PlayResult(service, mode, int(seconds * float(fps)), int(total["shown"]),
                      int(total["late"]), int(total["dropped"]), right, wrong, degraded,
                      total["cpu_self"] + total["cpu_children"], total["wall"])


def expected_hashes(clip: Path, fps: Fraction) -> list[int]:
    """Luma hash of the frame on screen at each position of a timeline at ``fps``."""
    lumas, times = reference(clip)
    positions = int(times[-1] * fps) + 1
    hashes = [luma_hash(y) for y in lumas]
    return [hashes[k] for k in shown_at(times, fps, positions)]


#: (label, MLT service, environment of its run): MLT's producer, phast at its default power
#: budget (10% of TDP), and phast ungoverned (avformat has no budget either).
SERVICES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("avformat", "avformat", {}),
    ("phast", "phast", {}),
    ("phast budget=off", "phast", {"PHAST_BUDGET": "off"}),
)


def bench(workdir: Path, *, seconds: float = 20.0, size: tuple[int, int] = (1280, 720),
          modes: Sequence[str] = ("play", "seek"),
          env: dict[str, str] | None = None) -> list[PlayResult]:
    """``hwbench mlt``: a constant-rate clip (GOP 120) and a phone-style VFR clip of
    ``seconds`` at ``size``, each played and sought at 30 fps through each of
    :data:`SERVICES`."""
    workdir.mkdir(parents=True, exist_ok=True)
    fps = Fraction(30)
    profile = write_profile(workdir / f"p30_{size[0]}x{size[1]}", size, fps)
    frames = int(seconds * 30)
    clips = {
        "cfr": workdir / f"cfr_{size[0]}x{size[1]}_{frames}.mp4",
        "vfr": workdir / f"vfr_{size[0]}x{size[1]}_{frames}.mp4",
    }
    if not clips["cfr"].exists():
        write_clip(clips["cfr"], frames=frames, size=size, gop=120)
    if not clips["vfr"].exists():
        write_clip(clips["vfr"], frames=frames, size=size, gop=120, ticks=PHONE_TICKS)
    results = []
    for kind, clip in clips.items():
        expected = expected_hashes(clip, fps)
        for label, service, extra in SERVICES:
            for mode in modes:
                r = play(clip, profile, service, mode, seconds * 0.9, expected=expected,
                         fps=fps, env={**(env or {}), **extra})
                r.mode, r.service = f"{kind} {mode}", label
                results.append(r)
    return results


def table(results: Sequence[PlayResult]) -> str:
    """The benchmark's table (markdown)."""
    rows = ["| clip, pattern | producer | shown | late | dropped | right | wrong "
            "| PROXY/NEAREST/BLANK | CPU (share of a core) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r.mode} | {r.service} | {r.shown}/{r.ticks} | {r.late} | {r.dropped} "
                    f"| {r.right} | {r.wrong} | {r.degraded} | {r.cpu_share:.2f} |")
    return "\n".join(rows)
