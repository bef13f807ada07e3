"""Demo clips for benchmarks: synthetic, codec-realistic H.264 files generated once with PyAV.

Contract:

* :func:`demo_clip` returns the path of a demo clip, generating it on first use. ``kind`` picks
  the picture size (``"1080p"`` = 1920x1080, ``"720p"`` = 1280x720); every kind is H.264 High
  (libx264), 30 fps, 60 s, GOP 250 (``keyint=250:min-keyint=250:scenecut=0``), 3 B-frames with
  a normal B-pyramid, crf 23, yuv420p, in an mp4. ``seconds`` and ``size`` override the length
  and the picture size; ``open_gop=True`` makes every I-frame after the first a non-IDR
  recovery point whose leading B-frames reference the previous GOP (x264 ``open-gop``, as in
  broadcast recordings). An override gets its own file name, so a quick run never replaces the
  full clip.
* Files live in ``directory`` (default :func:`default_demo_dir`). Each clip has a JSON sidecar
  holding its generation parameters and the size of the video file; a clip is reused only when
  the sidecar matches both, otherwise it is generated again. The video and the sidecar are each
  written to a temporary name and moved into place with ``os.replace``, so a reader (or a
  concurrent generator) never sees a half-written file.
* Progress goes to stderr while a clip is generated.

The picture is a moving synthetic scene (scrolling gradient, colour bars, moving boxes, a binary
frame counter) plus *temporal* noise: a precomputed noise texture sampled at a fresh random
offset every frame. Jumps between offsets are larger than x264's motion search range, so the
noise cannot be predicted from the previous frame and the encoder must spend bits on it, as it
would on camera grain. Generating a frame costs a few array copies, not a full RNG draw.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

#: Bump when the picture content or encoder settings change: old clips are then regenerated.
GENERATOR_VERSION = 1

KINDS: dict[str, tuple[int, int]] = {"1080p": (1920, 1080), "720p": (1280, 720)}

#: Luma noise amplitude (peak-to-peak, code values). With crf 23 this gives ~10-20 Mbit/s at
#: 1080p and ~10 ms of single-thread decode per 1080p frame, close to ffmpeg's
#: ``testsrc2`` + ``noise=alls=...:allf=t`` clips the peers were measured on (see peers.md).
NOISE_PP = 15
CHROMA_NOISE_PP = 6
PAD = 256  #: extra texture rows/columns: room for scrolling and random noise offsets


@dataclass(frozen=True)
class DemoSpec:
    """Everything that determines a demo clip's bytes (stored in the sidecar)."""

    kind: str
    width: int
    height: int
    seconds: float
    fps: int = 30
    gop: int = 250
    bframes: int = 3
    crf: int = 23
    preset: str = "veryfast"
    pix_fmt: str = "yuv420p"
    noise_pp: int = NOISE_PP
    seed: int = 1234
    open_gop: bool = False
    generator: int = GENERATOR_VERSION

    @property
    def frame_count(self) -> int:
        return max(1, round(self.seconds * self.fps))

    @property
    def x264_params(self) -> str:
        return (f"keyint={self.gop}:min-keyint={self.gop}:scenecut=0:bframes={self.bframes}"
                ":b-pyramid=normal" + (":open-gop=1" if self.open_gop else ""))

    @property
    def filename(self) -> str:
        size = self.kind if KINDS.get(self.kind) == (self.width, self.height) else (
            f"{self.width}x{self.height}")
        secs = f"{self.seconds:g}".replace(".", "_")
        return f"demo-{size}-{secs}s{'-opengop' if self.open_gop else ''}.mp4"


def default_demo_dir() -> Path:
    """``$PHAST_CACHE_DIR/demo``, else ``~/.cache/phast/demo``."""
    env = os.environ.get("PHAST_CACHE_DIR")
    base = Path(env) if env else Path.home() / ".cache" / "phast"
    return base / "demo"


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (W, H); both must be even (yuv420p) and positive."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise ValueError(f"size must look like 1280x720, got {text!r}") from e
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise ValueError(f"size must be positive and even (yuv420p), got {text!r}")
    return w, h


def demo_spec(kind: str = "1080p", *, seconds: float | None = None,
              size: tuple[int, int] | None = None, open_gop: bool = False) -> DemoSpec:
    """The :class:`DemoSpec` for ``kind`` with optional length and size overrides."""
    if size is None:
        if kind not in KINDS:
            raise ValueError(f"unknown demo clip kind {kind!r}; known: {', '.join(KINDS)}")
        size = KINDS[kind]
    else:
        size = parse_size(f"{size[0]}x{size[1]}")
    secs = 60.0 if seconds is None else float(seconds)
    if not secs > 0:
        raise ValueError("seconds must be positive")
    return DemoSpec(kind=kind, width=size[0], height=size[1], seconds=secs, open_gop=open_gop)


def demo_clip(kind: str = "1080p", directory: str | os.PathLike[str] | None = None, *,
              seconds: float | None = None, size: tuple[int, int] | None = None,
              open_gop: bool = False, progress: bool = True) -> Path:
    """Path of the demo clip ``kind`` in ``directory``, generated first if missing or stale.

    Raises ``ValueError`` for an unknown kind or a bad override.
    """
    spec = demo_spec(kind, seconds=seconds, size=size, open_gop=open_gop)
    folder = Path(directory) if directory is not None else default_demo_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / spec.filename
    sidecar = path.with_suffix(".json")
    if _is_current(path, sidecar, spec):
        return path
    _log(progress, f"hwbench: generating demo clip {path} ({spec.width}x{spec.height}, "
         f"{spec.frame_count} frames); this happens once")
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".mp4")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write_demo(spec, tmp, progress=progress)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared demo clip should be readable
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    meta = {"params": asdict(spec), "bytes": path.stat().st_size}
    _write_atomic(sidecar, json.dumps(meta, indent=2, sort_keys=True).encode())
    return path


def _is_current(path: Path, sidecar: Path, spec: DemoSpec) -> bool:
    try:
        meta = json.loads(sidecar.read_text())
        return bool(meta.get("params") == asdict(spec) and meta.get("bytes") == path.stat().st_size)
    except (OSError, ValueError):
        return False


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _log(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)


class _Scene:
    """Precomputed textures; :meth:`frame` assembles one yuv420p picture from slices of them."""

    def __init__(self, spec: DemoSpec) -> None:
        w, h = spec.width, spec.height
        self.w, self.h = w, h
        self.rng = np.random.default_rng(spec.seed)
        # Base luma leaves headroom for the noise, so base + noise never wraps (pure uint8 add).
        top = 255 - spec.noise_pp
        ys = np.arange(h + PAD, dtype=np.int32)[:, None]
        xs = np.arange(w + PAD, dtype=np.int32)[None, :]
        # Scrolling gradient with a sharp wrap (like testsrc2's sweep) and fine stripes.
        grad = (xs * 3 * 256 // (w + PAD) + ys * 256 // (h + PAD)) % 256
        stripes = ((xs // 24 + ys // 24) % 2) * 24
        self.luma = ((grad * 3 // 4 + stripes) * top // 255).astype(np.uint8)
        hc, wc = h // 2 + PAD // 2, w // 2 + PAD // 2
        cy = np.arange(hc, dtype=np.int32)[:, None]
        cx = np.arange(wc, dtype=np.int32)[None, :]
        bars = (cx * 7 // wc) % 7  # seven vertical colour bars
        self.u = (64 + bars * 20 + cy * 32 // hc).astype(np.uint8)
        self.v = (200 - bars * 18 + cx * 16 // wc - cy * 24 // hc).astype(np.uint8)
        self.noise = self.rng.integers(0, spec.noise_pp + 1, size=(h + PAD, w + PAD),
                                       dtype=np.uint8)
        self.cnoise = self.rng.integers(0, CHROMA_NOISE_PP + 1, size=(hc, wc), dtype=np.uint8)
        self.buf = np.empty((h * 3 // 2, w), np.uint8)
        self.base = np.empty((h, w), np.uint8)
        side = max(h // 6, 4)
        # (size, velocity x, velocity y, luma, u, v) of the moving boxes
        self.boxes = [(side, 7, 3, top - 20, 90, 230), (side // 2, -11, 5, 40, 200, 60),
                      (side * 2 // 3, 4, -6, top // 2, 30, 120)]

    def frame(self, i: int) -> np.ndarray:
        w, h, rng = self.w, self.h, self.rng
        oy, ox = (2 * i) % PAD, (3 * i) % PAD
        base = self.base
        np.copyto(base, self.luma[oy:oy + h, ox:ox + w])
        for n, (side, vx, vy, yv, _u, _v) in enumerate(self.boxes):
            x, y = _bounce(i * vx + n * 97, w - side), _bounce(i * vy + n * 53, h - side)
            base[y:y + side, x:x + side] = yv
        cell = max(h // 60, 2)
        for bit in range(min(16, w // cell)):  # binary frame counter, bottom left
            base[h - cell:h, bit * cell:(bit + 1) * cell] = 235 - 200 * ((i >> bit) & 1) - 20
        # Temporal noise: a random texture offset per frame (beyond motion-search reach).
        ny, nx = int(rng.integers(PAD)), int(rng.integers(PAD))
        np.add(base, self.noise[ny:ny + h, nx:nx + w], out=self.buf[:h])
        q = (h // 2) * (w // 2)
        u = self.buf[h:].reshape(-1)[:q].reshape(h // 2, w // 2)
        v = self.buf[h:].reshape(-1)[q:].reshape(h // 2, w // 2)
        cy, cx = oy // 2, ox // 2
        np.copyto(u, self.u[cy:cy + h // 2, cx:cx + w // 2])
        np.copyto(v, self.v[cy:cy + h // 2, cx:cx + w // 2])
        for n, (side, vx, vy, _y, uv, vv) in enumerate(self.boxes):
            x, y = _bounce(i * vx + n * 97, w - side) // 2, _bounce(i * vy + n * 53, h - side) // 2
            u[y:y + side // 2, x:x + side // 2] = uv
            v[y:y + side // 2, x:x + side // 2] = vv
        ny, nx = int(rng.integers(PAD // 2)), int(rng.integers(PAD // 2))
        np.add(u, self.cnoise[ny:ny + h // 2, nx:nx + w // 2], out=u)
        return self.buf


def _bounce(pos: int, span: int) -> int:
    """Position bouncing between 0 and ``span`` (a triangle wave)."""
    if span <= 0:
        return 0
    p = pos % (2 * span)
    return p if p <= span else 2 * span - p


def write_demo(spec: DemoSpec, path: Path, *, progress: bool = True) -> None:
    """Encode the demo clip described by ``spec`` into ``path`` (overwritten)."""
    import av  # heavy: only when a clip is actually generated

    scene = _Scene(spec)
    n = spec.frame_count
    started = last = time.monotonic()
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, spec.pix_fmt
        stream.codec_context.time_base = Fraction(1, spec.fps)
        stream.options = {"crf": str(spec.crf), "preset": spec.preset,
                          "x264-params": spec.x264_params}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(scene.frame(i), format=spec.pix_fmt)
            frame.pts = i
            container.mux(stream.encode(frame))
            now = time.monotonic()
            if progress and (now - last >= 3 or i == n - 1):
                last = now
                rate = (i + 1) / max(now - started, 1e-9)
                _log(True, f"  demo {spec.filename}: {i + 1}/{n} frames "
                     f"({100 * (i + 1) / n:.0f}%), {rate:.1f} fps, "
                     f"ETA {(n - i - 1) / rate:.0f} s")
        container.mux(stream.encode(None))  # flush the lookahead and B-frame delay


def describe(path: Path) -> dict[str, Any]:
    """The sidecar of a generated clip (empty if there is none)."""
    try:
        return dict(json.loads(path.with_suffix(".json").read_text()))
    except (OSError, ValueError):
        return {}
