"""``hwbench compare``: one request schedule, run against phast and the decoders users would
otherwise call, one after another on the same clip, with every returned frame checked.

What a run does (see :func:`run_compare`):

* Each peer runs ``hwbench torture``'s scheduling loop (:func:`hwbench.torture.run_torture`)
  with the same :class:`~hwbench.torture.TortureConfig` -- pattern, seed, rate, deadline,
  duration -- and the same meter, so the request sequence and every figure's meaning are the
  same. Peers (:data:`PEER_LABELS`): ``phast`` (deadline requests, as ``torture``); the
  in-process players, which decode forward when the target is ahead of the last decoded frame
  by fewer than 64 frames and keep a small cache (:mod:`hwbench.player`): ``pyav-player``
  (:class:`~hwbench.baseline.PyAVPlayer`, the baseline) and ``opencv-player``
  (:class:`OpenCVPlayer`, ``grab`` forward); their naive forms, which seek on every request,
  even for ``i + 1``: ``pyav-naive`` and ``opencv-naive`` (``CAP_PROP_POS_FRAMES`` + ``read``);
  and ``torchcodec`` (``VideoDecoder(seek_mode="exact")``, ``get_frame_at``). A peer whose
  library is not installed is skipped with the reason. Only phast honours deadlines; the peers
  always decode the exact frame they believe is the requested one.
* **Verification.** A frame counts as exact only if it *is* the requested frame. During the
  run every verified request's pixels get a fingerprint: the luma means of a 32 x 18 grid of
  blocks, computed from a strided subsample (~8 x 8 samples per block; about 0.5 ms for a
  1080p frame, inside the measured latency, reported as ``verify_ms``). After all peers ran,
  one sequential PyAV decode from the start (never seeking: the reference, as phast's
  conformance tests use) fingerprints every requested frame and its ``WINDOW`` neighbours on
  each side (its cost is reported as ``reference_s``; it is not charged to any peer). A
  returned frame is the requested frame ``i`` when its fingerprint is closest to frame ``i``'s
  among ``i - WINDOW .. i + WINDOW`` (ties count: identical pictures are the same picture) and
  differs from it by at most ``TOLERANCE`` code values on average (room for another decoder's
  YUV -> RGB rounding; on the demo clips neighbouring frames differ by ~2, frames 10 apart by
  ~20). ``--verify-every N`` checks every N-th request only (the shares are then over that
  sample).
* Figures per peer: ``on_time`` (share of all scheduled requests answered within one period),
  ``exact_share`` (share of verified requests answered with the requested frame at full
  quality), ``exact_on_time`` (both), ``wrong_frames`` (answers that claimed to be exact but
  showed another frame), latency percentiles of the fetch calls, and the meter's
  ``budget_share`` (``torture``'s meter from :mod:`phast.power`: RAPL/NVML, else the CPU-time
  model, an estimate).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import torture
from .player import CACHE_FRAMES, REACH, BaselineMiss, ForwardPlayer
from .torture import Look, Meter, PlayerSystem, Scheduled, System, TortureConfig

#: What each peer is, as tables and the JSON (``peers[name]["label"]``) describe it.
PEER_LABELS = {
    "phast": "deadline requests, quality tiers (EXACT, PROXY, KEYFRAME, BLANK)",
    "pyav-player": f"PyAV as a player: decode forward within {REACH} frames, "
                   f"{CACHE_FRAMES}-frame cache",
    "pyav-naive": "PyAV, naive: a seek to the keyframe on every request",
    "opencv-player": f"OpenCV as a player: grab forward within {REACH} frames, "
                     f"{CACHE_FRAMES}-frame cache",
    "opencv-naive": "OpenCV, naive: a CAP_PROP_POS_FRAMES seek on every request",
    "torchcodec": "VideoDecoder(seek_mode='exact').get_frame_at on every request",
}
PEERS = tuple(PEER_LABELS)
#: Peers run when none are named: phast against the fair (player-style) baselines.
DEFAULT_PEERS = ("phast", "pyav-player", "opencv-player", "torchcodec")
#: Names used before the players existed (both meant the naive peer).
RENAMED = {"pyav": "pyav-player or pyav-naive", "opencv": "opencv-player or opencv-naive"}
GRID = (18, 32)  #: fingerprint blocks (rows, columns)
PRINT_ROWS = 360  #: pictures are subsampled to about this many rows before the block means
WINDOW = 2  #: reference neighbours compared on each side of the requested frame
TOLERANCE = 1.0  #: mean |luma difference| (code values) still counted as the same frame
#: ... for a proxy picture: its own error (area downscale, full-range 4:2:0, JPEG) is ~1.2 on
#: the demo clip; being closer to frame i than to its neighbours is what tells frames apart
PROXY_TOLERANCE = 3.0
NAME_W = 15  #: width of the peer column in the printed table
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def fingerprint(pixels: Any) -> np.ndarray:
    """Luma block means on a :data:`GRID` of an RGB (height x width x 3) picture, float32.

    Any picture size maps to the same grid, so a downscaled proxy compares with a full frame.
    """
    a = np.asarray(pixels)
    gh, gw = GRID
    h, w = a.shape[:2]
    if h < gh or w < gw or a.ndim != 3 or a.shape[2] < 3:
        raise ValueError(f"cannot fingerprint a picture of shape {a.shape}")
    # Block means over (nearly) every pixel, on a picture subsampled to ~360 rows, with block
    # bounds at the same relative positions whatever the size: a 360p proxy and its 1080p frame
    # give the same print but for the proxy's own error (a stride that fits one size but not
    # the other would leave different margins out; sampled points would keep per-pixel noise
    # that area averaging removed from the proxy).
    step = max(1, min(h, w) // PRINT_ROWS)
    # the centre sample of each step x step cell: no half-cell shift against an area average
    sub = a[step // 2::step, step // 2::step, :3]
    sh, sw = sub.shape[:2]
    rows = (np.arange(gh) * sh) // gh
    cols = (np.arange(gw) * sw) // gw
    sums = np.add.reduceat(np.add.reduceat(sub, rows, axis=0, dtype=np.uint32), cols, axis=1)
    counts = np.outer(np.diff([*rows, sh]), np.diff([*cols, sw]))
    return ((sums.astype(np.float32) @ _LUMA) / counts).astype(np.float32)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two fingerprints, in code values."""
    return float(np.abs(a - b).mean())


def is_frame(got: np.ndarray, i: int, refs: dict[int, np.ndarray], *,
             tolerance: float = TOLERANCE) -> bool:
    """Whether the fingerprint ``got`` shows frame ``i``, judged against the reference prints
    of ``i`` and its neighbours (see the module docstring). False when the reference decode
    never reached frame ``i``. ``tolerance``: :data:`PROXY_TOLERANCE` for proxy pictures."""
    if i not in refs:
        return False
    own = distance(got, refs[i])
    if own > tolerance:
        return False
    return all(own <= distance(got, ref) for j, ref in refs.items()
               if j != i and abs(j - i) <= WINDOW)


class Prints:
    """Fingerprints of one peer's returned frames, by request number ``k``."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.by_request: dict[int, np.ndarray] = {}
        self.seconds = 0.0
        self._lock = threading.Lock()

    def look(self, req: Scheduled) -> Look | None:
        if req.k % self.every:
            return None

        def see(pixels: Any) -> None:
            t0 = time.perf_counter()
            fp = fingerprint(pixels)
            with self._lock:
                self.by_request[req.k] = fp
                self.seconds += time.perf_counter() - t0

        return see


def reference_prints(path: str, wanted: set[int]) -> tuple[dict[int, np.ndarray], int]:
    """Fingerprints of the ``wanted`` frames from a sequential decode from the start (no
    seeking), and how many frames were decoded (the decode stops after the last wanted)."""
    import av

    prints: dict[int, np.ndarray] = {}
    last = max(wanted, default=-1)
    n = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        for n, frame in enumerate(container.decode(stream), start=1):
            if n - 1 in wanted:
                prints[n - 1] = fingerprint(frame.to_ndarray(format="rgb24"))
            if n - 1 >= last:
                break
    return prints, n


# -- peers ------------------------------------------------------------------------------------

class OpenCVPlayer(ForwardPlayer[None]):
    """OpenCV ``VideoCapture`` under a :class:`~hwbench.player.ForwardPlayer` policy.

    A seek is ``CAP_PROP_POS_FRAMES`` (OpenCV decodes from the keyframe before it up to the
    frame); a step is ``grab()``; only the requested frame is converted (``retrieve()``: BGR,
    shown as RGB). ``opencv-player`` grabs forward when the target is ahead within
    :data:`~hwbench.player.REACH` frames and caches delivered frames; ``opencv-naive`` seeks on
    every request. OpenCV maps the frame number to a time with the container's frame rate, so
    on a variable-frame-rate file it can return another frame: verification catches that.
    """

    def __init__(self, path: str, frames: int, *, threads: int = 0, player: bool = True) -> None:
        import cv2

        super().__init__(reach=REACH if player else 0, cache_frames=CACHE_FRAMES if player else 0)
        self._cv2 = cv2
        self.cap = cv2.VideoCapture(path)
        if not self.cap.isOpened():
            raise ValueError(f"OpenCV cannot open {path}")
        if threads:
            self.cap.set(cv2.CAP_PROP_N_THREADS, threads)
        self.frames = frames
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def __len__(self) -> int:
        return self.frames

    def _seek(self, i: int) -> int | None:
        self.cap.set(self._cv2.CAP_PROP_POS_FRAMES, i)
        return i - 1  # OpenCV's word: the next grab is frame i

    def _step(self) -> tuple[int, None]:
        index = 0 if self._pos is None else self._pos + 1
        if not self.cap.grab():
            raise BaselineMiss(f"OpenCV grabbed no frame at {index}")
        return index, None

    def _convert(self, raw: None) -> np.ndarray:
        ok, bgr = self.cap.retrieve()
        if not ok:
            raise BaselineMiss("OpenCV retrieved no picture")
        return np.asarray(bgr)[:, :, ::-1]

    def close(self) -> None:
        self._cache.clear()
        self.cap.release()


class TorchCodecSystem:
    """torchcodec ``VideoDecoder(seek_mode="exact")`` and ``get_frame_at`` (CPU)."""

    def __init__(self, path: str, cfg: TortureConfig, pool: Any, frames: int) -> None:
        from torchcodec.decoders import VideoDecoder

        self.dec = VideoDecoder(path, seek_mode="exact", num_ffmpeg_threads=cfg.threads)
        self.frames = frames
        self.width = int(self.dec.metadata.width or 0)
        self.height = int(self.dec.metadata.height or 0)

    def __len__(self) -> int:
        return self.frames

    def fetch(self, i: int, deadline: float | None, look: Look | None = None) -> str:
        data = self.dec.get_frame_at(i).data  # uint8 tensor, channels x height x width
        if look is not None:
            look(data.permute(1, 2, 0).numpy())
        return "exact"

    def proxy_progress(self) -> None:
        return None

    def close(self) -> None:
        self.dec = None


def _version(module: str) -> str:
    mod = __import__(module)
    return str(getattr(mod, "__version__", "?"))


def unknown_peer(name: str) -> str:
    """Why ``name`` is not a peer, and what it might have meant."""
    hint = f"; now {RENAMED[name]}" if name in RENAMED else ""
    return f"unknown peer{hint} (known: {', '.join(PEERS)})"


def peer_status(name: str) -> tuple[str | None, str]:
    """(version, "") when ``name`` can run here, else (None, why not)."""
    if name not in PEERS:
        return None, unknown_peer(name)
    module = {"phast": "phast", "pyav": "av", "opencv": "cv2",
              "torchcodec": "torchcodec"}[name.split("-")[0]]
    try:
        if name == "torchcodec":
            from torchcodec.decoders import VideoDecoder  # noqa: F401  (loads FFmpeg libraries)
        return _version(module), ""
    except Exception as e:  # ImportError, or OSError/RuntimeError for missing FFmpeg libraries
        hint = {"opencv": "pip install 'phast[bench]'",
                "torchcodec": "pip install 'phast[bench-torch]' and apt-get install ffmpeg"}
        return None, (f"not installed ({type(e).__name__}: {e}); "
                      f"{hint.get(name.split('-')[0], '')}").rstrip("; ")


def demux_frame_count(path: str) -> int:
    """Timestamped video packets of the first video stream (one per frame)."""
    from .baseline import naive_pyav

    with naive_pyav(path) as base:
        return len(base)


# -- the run ----------------------------------------------------------------------------------

#: A system for the compare run that is not a built-in peer: ``(path, cfg, pool, frames)``.
PeerOpener = Callable[[str, TortureConfig, Any, int], System]


def _opener(name: str, frames: int, extra: dict[str, PeerOpener]) -> torture.Opener | None:
    factory: PeerOpener
    if name in extra:
        factory = extra[name]
    elif name in ("opencv-player", "opencv-naive"):
        def open_cv(path: str, cfg: TortureConfig, pool: Any, frames: int) -> System:
            return PlayerSystem(OpenCVPlayer(path, frames, threads=cfg.threads,
                                             player=name == "opencv-player"))

        factory = open_cv
    elif name == "torchcodec":
        factory = TorchCodecSystem
    else:
        return None  # phast and the PyAV peers: torture's own systems

    def open_(path: str, cfg: TortureConfig, pool: Any) -> System:
        return factory(path, cfg, pool, frames)

    return open_


def run_compare(path: str, cfg: TortureConfig, peers: list[str], *,
                meter_factory: Callable[[], Meter] | None = None, verify_every: int = 1,
                extra_peers: dict[str, PeerOpener] | None = None) -> dict[str, Any]:
    """Run ``cfg``'s schedule against each peer in turn; returns a JSON-ready report.

    ``meter_factory`` makes each run's meter (default: torture's, ``phast.power`` auto).
    ``extra_peers`` adds systems by name (e.g. a test's deliberately wrong decoder).
    """
    if verify_every < 1:
        raise ValueError("--verify-every must be at least 1")
    extra = extra_peers or {}
    frames = demux_frame_count(path)
    runs: dict[str, dict[str, Any]] = {}
    prints: dict[str, Prints] = {}
    skipped: dict[str, str] = {}
    for name in peers:
        version, why = ("test", "") if name in extra else peer_status(name)
        if version is None:
            skipped[name] = why
            if cfg.progress:
                print(f"compare: skipping {name}: {why}", file=sys.stderr, flush=True)
            continue
        if cfg.progress:
            print(f"compare: {name} ({version})", file=sys.stderr, flush=True)
        pcfg = dataclasses.replace(cfg, system=name)
        prints[name] = Prints(verify_every)
        meter = meter_factory() if meter_factory else None
        try:
            rep = torture.run_torture(path, pcfg, meter=meter,
                                      opener=_opener(name, frames, extra),
                                      look=prints[name].look)
        except Exception as e:
            skipped[name] = f"failed: {type(e).__name__}: {e}"
            del prints[name]
            continue
        rep["peer_version"] = version
        rep["peer_label"] = PEER_LABELS.get(name, "test peer" if name in extra else name)
        runs[name] = rep

    t0, c0 = time.perf_counter(), time.process_time()
    wanted: set[int] = set()
    for name, rep in runs.items():
        for k in prints[name].by_request:
            row = rep["request_log"][k]
            for i in {row[1], *(row[8:9] if len(row) > 8 and row[8] is not None else [])}:
                wanted.update(range(max(0, i - WINDOW), i + WINDOW + 1))
    refs, decoded = reference_prints(path, wanted)
    reference = {"method": "sequential PyAV decode from the start, luma block fingerprints",
                 "grid": list(GRID), "window": WINDOW, "tolerance": TOLERANCE,
                 "frames_fingerprinted": len(refs), "frames_decoded": decoded,
                 "reference_s": time.perf_counter() - t0,
                 "reference_cpu_s": time.process_time() - c0, "verify_every": verify_every}

    schedules = {name: [row[1] for row in rep["request_log"]] for name, rep in runs.items()}
    first = next(iter(schedules.values()), None)
    rows = {name: _peer_row(rep, prints[name], refs) for name, rep in runs.items()}
    any_rep = next(iter(runs.values()), {})
    return {
        "tool": "hwbench compare",
        "clip": {"path": str(Path(path).resolve()), "frames": frames,
                 "width": any_rep.get("clip", {}).get("width"),
                 "height": any_rep.get("clip", {}).get("height")},
        "config": {k: v for k, v in dataclasses.asdict(cfg).items()
                   if k not in ("extra", "system")},
        "pattern": cfg.pattern, "rate_hz": cfg.rate, "duration_s": cfg.duration,
        "period_ms": 1000 / cfg.rate,
        "same_schedule": all(s == first for s in schedules.values()),
        "peers": rows, "skipped": skipped, "verification": reference,
        "meter": any_rep.get("meter"), "meter_label": any_rep.get("meter_label"),
        "tdp_w": any_rep.get("tdp_w"), "tdp_source": any_rep.get("tdp_source"),
        "budget": any_rep.get("budget"), "budget_w": any_rep.get("budget_w"),
        "baseline_w": any_rep.get("baseline_w"),
        "host": any_rep.get("host"),
        # per-peer torture reports without their request logs, for the report's plots
        "runs": {name: {k: v for k, v in rep.items() if k != "request_log"}
                 for name, rep in runs.items()},
        "latencies_ms": {name: [1000 * row[5] for row in rep["request_log"]
                                if row[5] is not None] for name, rep in runs.items()},
    }


def _peer_row(rep: dict[str, Any], prints: Prints, refs: dict[int, np.ndarray]) -> dict[str, Any]:
    period = rep["period_ms"] / 1000
    sampled = [row for row in rep["request_log"] if row[0] % prints.every == 0]
    exact = exact_on_time = wrong = checked = proxy = wrong_pictures = 0
    for k, i, scheduled, _issued, done, _lat, quality, _skipped, *rest in sampled:
        got = prints.by_request.get(k)
        if got is None:
            continue  # skipped, failed, or the deadline passed before any picture came back
        checked += 1
        shows = rest[0] if rest and rest[0] is not None else i
        right = is_frame(got, i, refs)
        if quality == "exact":
            if right:
                exact += 1
                exact_on_time += done is not None and done - scheduled <= period
            else:
                wrong += 1
        elif quality == "proxy":
            right = is_frame(got, i, refs, tolerance=PROXY_TOLERANCE)
            proxy += right
            wrong_pictures += not right
        elif quality == "nearest" and shows in refs:  # the picture is the frame it names
            wrong_pictures += not is_frame(got, shows, refs, tolerance=PROXY_TOLERANCE)
    n = max(len(sampled), 1)
    return {
        "version": rep.get("peer_version"), "label": rep.get("peer_label"),
        "player": rep.get("player"),  # an in-process player's seeks, steps and cache hits
        "requests": rep["requests"], "completed": rep["completed"], "skipped": rep["skipped"],
        "failed": rep["failed"], "on_time": rep["on_time"],
        "verified_requests": len(sampled), "pictures_checked": checked,
        "exact_share": exact / n, "exact_on_time": exact_on_time / n,
        "wrong_frames": wrong, "proxy_share": proxy / n,
        "proxy_or_better": (exact + proxy) / n, "wrong_pictures": wrong_pictures,
        "blank_after": rep.get("blank_after"), "distance_s": rep.get("distance_s"),
        "quality_mix": rep["quality_mix"],
        "latency_ms": rep["latency_ms"], "response_ms": rep["response_ms"],
        "verify_ms": 1000 * prints.seconds / max(len(prints.by_request), 1),
        "cpu_share": rep["tree_cpu_share"], "power_w": rep["power_w"],
        "marginal_w": rep["marginal_w"], "phast_budget_share": rep.get("phast_budget_share"),
        "budget_share": rep["budget_share"], "other_load_cores": rep["other_load_cores"],
        "open_s": rep["open_s"], "warmup_s": rep["warmup_s"], "errors": rep["errors"],
    }


def format_table(rep: dict[str, Any]) -> str:
    """The printed comparison: one row per peer."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    c, ver = rep["clip"], rep["verification"]
    lines = [
        f"compare: {Path(c['path']).name} ({c['width']}x{c['height']}, {c['frames']} frames), "
        f"pattern {rep['pattern']}, {rep['rate_hz']:g} Hz for {rep['duration_s']:g} s "
        f"(period {rep['period_ms']:.1f} ms), seed {rep['config']['seed']}"
        + ("" if rep["same_schedule"] else "  WARNING: peers saw different schedules"),
        f"{'peer':<{NAME_W}}{'on time':>9}{'exact':>9}{'exact+ot':>10}{'proxy+':>8}"
        f"{'blank>1s':>9}{'dist p50/p95 s':>15}{'wrong':>7}"
        f"{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'cpu':>8}{'budget':>8}{'other':>7}",
    ]
    for name, r in rep["peers"].items():
        lat = r["latency_ms"]
        lines.append(
            f"{name:<{NAME_W}}{pct(r['on_time']):>9}{pct(r['exact_share']):>9}"
            f"{pct(r['exact_on_time']):>10}{pct(r['proxy_or_better']):>8}"
            f"{pct((r.get('blank_after') or {}).get('1s')):>9}{_distance(r):>15}"
            f"{r['wrong_frames'] + r['wrong_pictures']:>7}{ms(lat['p50']):>8}"
            f"{ms(lat['p95']):>8}{ms(lat['p99']):>8}{pct(r['cpu_share']):>8}"
            f"{pct(r['budget_share']):>8}{torture._cores(r['other_load_cores']):>7}")
    for name, why in rep["skipped"].items():
        lines.append(f"{name:<{NAME_W}}skipped: {why}")
    if not rep["peers"]:
        return "\n".join(lines)
    lines += [f"  {name}: {r['label'] or name}" + _player_note(r)
              for name, r in rep["peers"].items()]
    lines += [
        "exact: the requested frame at full quality, checked against a sequential reference "
        f"decode ({ver['frames_fingerprinted']} frames fingerprinted in "
        f"{ver['reference_s']:.1f} s, after the runs); exact+ot: exact and on time; proxy+: "
        "the requested frame at any size (EXACT or a checked PROXY); blank>1s: BLANK answers "
        "after the first second; dist: how far the picture shown is from the one asked for; "
        "wrong: claimed exact or proxy of a frame, or a nearest picture, that showed another "
        "frame; other: other processes' load, cores",
        f"budget: marginal power over an idle baseline of {rep['baseline_w']:.2f} W, as a share "
        f"of TDP {rep['tdp_w']:g} W [{rep['tdp_source']}], {rep['meter_label']}; phast ran "
        f"under its governor with budget {torture._budget(rep)}",
    ]
    return "\n".join(lines)


def _distance(row: dict[str, Any]) -> str:
    d = row.get("distance_s") or {}
    if d.get("p50") is None:
        return "-"
    return f"{d['p50']:.2f}/{d['p95']:.2f}"


def _player_note(row: dict[str, Any]) -> str:
    p = row.get("player")
    if not p:
        return ""
    return f" ({p['seeks']} seeks, {p['stepped']} frames stepped, {p['hits']} cache hits)"


def write_json(rep: dict[str, Any], path: str) -> None:
    Path(path).write_text(json.dumps(rep, indent=2, default=str))
