"""``hwbench access``: phast against in-process PyAV, side by side, on the same requests.

Exact access only: clips are opened with ``proxies=False``, so no background proxy building
competes (or is charged to phast); ``hwbench torture`` measures phast as editors run it.

For each clip, in one run (see :func:`bench_clip`):

1. **Index.** phast's first open (index build in a worker, into an empty index store), a reopen
   (on-disk index) and the first frame after the reopen (worker start included); the baseline's
   demux pass. None of these are part of the request timings below.
2. **Random exact access.** ``random`` uniformly random indices (fixed seed), one at a time.
3. **Scrubbing.** ``scrub`` requests along a random walk of +-1..10 frames (same seed and
   sequence for both decoders; see :mod:`hwbench.patterns`).
4. **Sequential playback.** frames ``0..sequential-1`` in order. phast: ``clip.frame(i)``;
   baseline: a plain ``container.decode`` + ``to_ndarray("rgb24")``.
5. **Memory**, in fresh processes (:mod:`hwbench.memprobe`): editor RSS delta and worker
   RSS/USS with 1 and with 4 open clips of the file.

Timed per request: phast ``clip.frame(i)`` + ``release()``; baseline seek + decode +
``to_ndarray``. The two decoders take turns on the same request sequence (one request at a
time for random/scrub, ``sequential_chunk`` frames for sequential), so background load on a
shared machine hits both alike; the other processes' load is reported per phase. CPU is the
whole process tree (editor + workers), user + system: the editor's CPU is measured around each
turn, the workers' CPU over the phase is phast's.
Correctness: every random/scrub result and every ``check_every``-th sequential frame is hashed
(outside the timed region; its CPU is subtracted) and compared between the two decoders;
mismatching frames are arbitrated against a decode from the start (at most ``arbitrate``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phast.power import tree_cpu_seconds

from . import memprobe, patterns, procstats
from .baseline import BaselineMiss, PyAVBaseline, reference_frame
from .procstats import percentile, self_cpu_seconds, system_busy_seconds

PHASES = ("random", "scrub", "sequential")


@dataclass
class AccessConfig:
    """Knobs of one ``hwbench access`` run."""

    seed: int = 1234
    random: int = 100
    scrub: int = 200
    sequential: int = 300
    cache_dir: str | None = None  #: parent of the run's (fresh, temporary) phast index store
    workers: int | None = None  #: phast pool size (None: phast's default)
    threads: int = 0  #: decoder threads for both sides (0 = FFmpeg's automatic choice)
    memory: bool = True
    memory_clips: int = 4
    memory_touch: int = 5  #: random requests per clip before memory is measured
    check_every: int = 10  #: hash every n-th sequential frame
    sequential_chunk: int = 30  #: sequential frames per turn when alternating decoders
    arbitrate: int = 3  #: mismatching frames decoded from the start to find who is right
    progress: bool = True


def _log(cfg: AccessConfig, text: str) -> None:
    if cfg.progress:
        print(text, file=sys.stderr, flush=True)


def digest(a: np.ndarray) -> str:
    """Content hash of an array's bytes (shape and dtype included)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.shape}{a.dtype}".encode())
    h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


# A fetcher gets frame i and returns (pixels, done): done() releases what the call holds.
Fetch = Callable[[int], tuple[np.ndarray, Callable[[], None]]]


@dataclass
class _Side:
    """One decoder's results in one phase."""

    latencies: list[float] = field(default_factory=list)
    digests: list[str | None] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    cpu: float = 0.0  #: process-tree CPU seconds of its requests, hashing excluded


def _interleaved(indices: list[int], fetchers: dict[str, Fetch], check: Callable[[int], bool],
                 chunk: int, owner: str, log: Callable[[str], None] | None = None) -> tuple[
                     dict[str, _Side], float]:
    """Request ``indices`` from every decoder, alternating in chunks of ``chunk`` requests.

    Alternating (rather than running one decoder's whole phase, then the other's) exposes both
    to the same background load on a shared machine. CPU attribution: the editor process's own
    CPU during a decoder's turn is that decoder's (hashing, done outside the timed region on
    this thread, is subtracted); the CPU of child processes (phast's workers) over the whole
    phase goes to ``owner`` -- workers may keep working (read-ahead) during the other's turn.
    Returns the sides and the other processes' load during the phase, in cores.
    """
    sides = {name: _Side() for name in fetchers}
    order = list(fetchers)
    sys0, tree0, wall0 = system_busy_seconds(), tree_cpu_seconds(), time.perf_counter()
    children0 = tree0 - self_cpu_seconds()
    next_log = wall0 + 20
    for c, first in enumerate(range(0, len(indices), chunk)):
        if log is not None and time.perf_counter() >= next_log:
            next_log += 20
            log(f"  {first}/{len(indices)} requests done")
        for name in order if c % 2 == 0 else order[::-1]:
            side, fetch = sides[name], fetchers[name]
            hash_cpu = 0.0
            cpu0 = self_cpu_seconds()
            for k in range(first, min(first + chunk, len(indices))):
                i = indices[k]
                t0 = time.perf_counter()
                try:
                    pixels, done = fetch(i)
                except Exception as e:
                    side.failures.append({"request": k, "index": i,
                                          "error": f"{type(e).__name__}: {e}"})
                    side.digests.append(None)
                    continue
                t1 = time.perf_counter()
                h0 = time.thread_time()
                side.digests.append(digest(pixels) if check(k) else None)
                hash_cpu += time.thread_time() - h0
                t2 = time.perf_counter()
                done()
                side.latencies.append((t1 - t0) + (time.perf_counter() - t2))
            side.cpu += max(self_cpu_seconds() - cpu0 - hash_cpu, 0.0)
    wall = max(time.perf_counter() - wall0, 1e-9)
    tree1 = tree_cpu_seconds()
    sides[owner].cpu += max((tree1 - self_cpu_seconds()) - children0, 0.0)
    other = (system_busy_seconds() - sys0 - (tree1 - tree0)) / wall
    return sides, max(other, 0.0)


def _summary(side: _Side, n: int, other_cores: float) -> dict[str, Any]:
    """Phase statistics of one decoder. ``busy_s`` is the sum of its request latencies."""
    ms = [v * 1000 for v in side.latencies]
    done = len(ms)
    busy = max(sum(side.latencies), 1e-9)
    return {
        "requests": n, "completed": done, "failures": len(side.failures),
        "failure_detail": side.failures[:10],
        "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
        "mean_ms": float(np.mean(ms)) if ms else None, "max_ms": max(ms) if ms else None,
        "busy_s": busy, "cpu_s": side.cpu,
        "cpu_ms_per_request": 1000 * side.cpu / done if done else None,
        "cores_busy": side.cpu / busy, "fps": done / busy,
        "other_load_cores": other_cores,
    }


def _phast_fetch(clip: Any) -> Fetch:
    def fetch(i: int) -> tuple[np.ndarray, Callable[[], None]]:
        f = clip.frame(i)
        return f.array, f.release

    return fetch


def _baseline_fetch(base: PyAVBaseline) -> Fetch:
    def fetch(i: int) -> tuple[np.ndarray, Callable[[], None]]:
        return base.frame(i), _nothing

    return fetch


def _nothing() -> None:
    return None


class _BaselineSequential:
    """A plain ``container.decode`` as a fetcher: request ``i`` must be the next frame."""

    def __init__(self, base: PyAVBaseline) -> None:
        self.base = base
        self.frames: Iterator[tuple[int | None, np.ndarray]] = base.sequential()
        self.next = 0

    def __call__(self, i: int) -> tuple[np.ndarray, Callable[[], None]]:
        if i != self.next:
            raise ValueError(f"sequential baseline asked for {i}, next is {self.next}")
        self.next += 1
        try:
            pts, pixels = next(self.frames)
        except StopIteration:
            raise BaselineMiss(f"the stream ended before frame {i}") from None
        if pts != self.base.pts[i]:
            raise BaselineMiss(f"frame {i}: decode order gave pts {pts}, index {self.base.pts[i]}")
        return pixels, _nothing

    def close(self) -> None:
        self.frames.close()  # type: ignore[attr-defined]


def _compare(phase: str, indices: list[int], a: list[str | None],
             b: list[str | None]) -> tuple[int, list[dict[str, Any]]]:
    """(frames compared, mismatches) between phast's digests ``a`` and the baseline's ``b``."""
    compared, bad = 0, []
    for k, (i, x, y) in enumerate(zip(indices, a, b, strict=False)):
        if x is None or y is None:
            continue
        compared += 1
        if x != y:
            bad.append({"phase": phase, "request": k, "index": i})
    return compared, bad


def _arbitrate(path: str, clip: Any, base: PyAVBaseline, index: int) -> dict[str, Any]:
    """Decode frame ``index`` from the start and say which decoder matches it."""
    ref = digest(reference_frame(path, index))
    with clip.frame(index) as f:
        ours = digest(f.array)
    try:
        theirs: str | None = digest(base.frame(index))
    except BaselineMiss:
        theirs = None
    verdict = ("baseline wrong" if ours == ref and theirs != ref else
               "phast wrong" if theirs == ref and ours != ref else
               "both wrong" if ours != ref and theirs != ref else "not reproduced")
    return {"index": index, "verdict": verdict}


def _info_dict(info: Any) -> dict[str, Any]:
    keys = info.keyframes
    gaps = np.diff(np.array([*keys, info.frame_count])) if keys else np.array([info.frame_count])
    return {"width": info.width, "height": info.height, "codec": info.codec,
            "pix_fmt": info.pix_fmt, "frame_count": info.frame_count,
            "fps": float(info.average_rate), "duration_s": info.duration,
            "keyframes": len(keys), "max_gop": int(gaps.max()), "is_vfr": info.is_vfr,
            "index_method": info.index_method}


def bench_clip(path: str, cfg: AccessConfig) -> dict[str, Any]:
    """Benchmark one clip (see the module docstring); returns a JSON-ready dict."""
    import phast

    path = str(Path(path).resolve())
    name = Path(path).name
    store = tempfile.mkdtemp(prefix="hwbench-index-", dir=cfg.cache_dir)
    pool = phast.WorkerPool(max_workers=cfg.workers)
    opts = {"threads": cfg.threads}
    out: dict[str, Any] = {"path": path, "name": name}
    clip = base = None
    try:
        # -- index (warm-up, not part of request timings) ----------------------------------
        _log(cfg, f"[{name}] phast: first open (index build)")
        c0, w0 = tree_cpu_seconds(), time.perf_counter()
        clip = phast.open(path, cache_dir=store, backend_options=opts, pool=pool, proxies=False)
        first_open = time.perf_counter() - w0
        index_cpu = tree_cpu_seconds() - c0
        info = clip.info
        clip.close()
        w0 = time.perf_counter()
        clip = phast.open(path, cache_dir=store, backend_options=opts, pool=pool, proxies=False)
        reopen = time.perf_counter() - w0
        w0 = time.perf_counter()
        with clip.frame(0) as f0:
            first_frame = time.perf_counter() - w0
            first_digest, first_pts = digest(f0.array), f0.pts
        _log(cfg, f"[{name}] baseline: demux pass")
        base = PyAVBaseline(path, threads=cfg.threads)
        out["info"] = _info_dict(info)
        out["index"] = {"phast_first_open_s": first_open, "phast_index_cpu_s": index_cpu,
                        "phast_reopen_s": reopen, "phast_first_frame_after_reopen_s": first_frame,
                        "baseline_demux_pass_s": base.index_s}
        problems: list[str] = []
        if len(base) != len(clip):
            problems.append(f"frame count: phast {len(clip)}, baseline {len(base)}")
        n = min(len(base), len(clip))

        # -- request phases ---------------------------------------------------------------------
        plans = {"random": patterns.random_indices(n, cfg.random, cfg.seed),
                 "scrub": patterns.scrub_indices(n, cfg.scrub, cfg.seed + 1),
                 "sequential": list(range(min(cfg.sequential, n)))}
        every = max(1, cfg.check_every)
        phast_res: dict[str, Any] = {}
        base_res: dict[str, Any] = {}
        compared, mismatches = 0, []
        for phase in PHASES:
            idx = plans[phase]
            if not idx:
                continue
            _log(cfg, f"[{name}] {phase}: {len(idx)} requests, phast and baseline alternating")
            if phase == "sequential":
                seq = _BaselineSequential(base)
                fetchers: dict[str, Fetch] = {"phast": _phast_fetch(clip), "baseline": seq}
                sides, other = _interleaved(idx, fetchers, lambda k: k % every == 0,
                                            cfg.sequential_chunk, "phast", lambda t: _log(cfg, t))
                seq.close()
            else:
                fetchers = {"phast": _phast_fetch(clip), "baseline": _baseline_fetch(base)}
                sides, other = _interleaved(idx, fetchers, lambda k: True, 1, "phast",
                                            lambda t: _log(cfg, t))
            phast_res[phase] = _summary(sides["phast"], len(idx), other)
            base_res[phase] = _summary(sides["baseline"], len(idx), other)
            c, bad = _compare(phase, idx, sides["phast"].digests, sides["baseline"].digests)
            compared += c
            mismatches += bad
        # pts of frame 0 and its pixels, from the reopened clip's first request
        c, bad = _compare("first_frame", [0], [first_digest], [digest(base.frame(0))])
        compared += c
        mismatches += bad
        if first_pts != base.pts[0]:
            problems.append(f"frame 0 pts: phast {first_pts}, baseline {base.pts[0]}")
        verdicts = []
        for i in sorted({m["index"] for m in mismatches})[:cfg.arbitrate]:
            _log(cfg, f"[{name}] mismatch at frame {i}: decoding from the start to arbitrate")
            verdicts.append(_arbitrate(path, clip, base, i))
        out["phast"], out["baseline"] = phast_res, base_res
        out["correctness"] = {
            "compared": compared, "mismatch_count": len(mismatches), "mismatches": mismatches[:50],
            "arbitration": verdicts, "problems": problems,
            "phast_failures": sum(r["failures"] for r in phast_res.values()),
            "baseline_failures": sum(r["failures"] for k, r in base_res.items()
                                     if k != "sequential"),
            "baseline_sequential_errors": base_res.get("sequential", {}).get("failures", 0),
        }
        clip.close()
        base.close()
        clip = base = None

        # -- memory, in fresh processes -----------------------------------------------------------
        if cfg.memory:
            mem = {}
            for system in ("phast", "pyav"):
                _log(cfg, f"[{name}] memory: {system}, 1 and {cfg.memory_clips} clips")
                mem[system] = memprobe.run_probe({
                    "system": system, "path": path, "clips": cfg.memory_clips,
                    "touch": cfg.memory_touch, "seed": cfg.seed, "cache_dir": store,
                    "threads": cfg.threads, "workers": cfg.workers})
            out["memory"] = mem
        out["ratios"] = _ratios(out)
    finally:
        if clip is not None:
            clip.close()
        if base is not None:
            base.close()
        pool.shutdown()
        shutil.rmtree(store, ignore_errors=True)
    return out


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _ratios(r: dict[str, Any]) -> dict[str, float | None]:
    """phast / baseline for each headline number (below 1 is better for phast, except fps)."""
    p, b = r["phast"], r["baseline"]
    out: dict[str, float | None] = {}
    for phase in ("random", "scrub"):
        if phase in p:
            for key in ("p50_ms", "p95_ms", "cpu_ms_per_request"):
                out[f"{phase}_{key}"] = _div(p[phase][key], b[phase][key])
    if "sequential" in p:
        out["sequential_fps"] = _div(p["sequential"]["fps"], b["sequential"]["fps"])
        out["sequential_cpu_ms_per_request"] = _div(p["sequential"]["cpu_ms_per_request"],
                                                     b["sequential"]["cpu_ms_per_request"])
    return out


def run(paths: list[str], cfg: AccessConfig) -> dict[str, Any]:
    """Benchmark every clip in ``paths``; the full JSON-ready result."""
    return {"tool": "hwbench access", "host": procstats.host_info(), "config": asdict(cfg),
            "clips": [bench_clip(p, cfg) for p in paths]}


# -- printing ---------------------------------------------------------------------------------

def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """The compact stdout report: one block per clip, ratio column phast/baseline."""
    lines = []
    host = result.get("host", {})
    load = host.get("loadavg_at_start") or []
    lines.append(f"host: {host.get('cpu', '?')}, {host.get('logical_cores', '?')} logical cores, "
                 f"PyAV {host.get('pyav', '?')}, FFmpeg {host.get('ffmpeg', '?')}; load average "
                 f"at start {' '.join(f'{v:.2f}' for v in load) or '?'}")
    for c in result["clips"]:
        info, idx = c["info"], c["index"]
        lines.append("")
        lines.append(f"== {c['name']}: {info['width']}x{info['height']} {info['codec']} "
                     f"{info['pix_fmt']}, {info['frame_count']} frames, {info['fps']:.3g} fps, "
                     f"{info['keyframes']} keyframes (longest GOP {info['max_gop']}) ==")
        lines.append(f"index: phast first open {idx['phast_first_open_s']:.2f} s "
                     f"({idx['phast_index_cpu_s']:.2f} CPU s), reopen from disk "
                     f"{1000 * idx['phast_reopen_s']:.1f} ms, first frame after reopen "
                     f"{1000 * idx['phast_first_frame_after_reopen_s']:.0f} ms; "
                     f"baseline demux pass {idx['baseline_demux_pass_s']:.2f} s")
        head = f"{'':40}{'phast':>10}{'baseline':>10}{'phast/base':>12}"
        lines.append(head)
        p, b = c["phast"], c["baseline"]

        def row(label: str, pv: float | None, bv: float | None, digits: int = 1) -> None:
            ratio = _div(pv, bv)
            lines.append(f"{label:40}{_fmt(pv, digits):>10}{_fmt(bv, digits):>10}"
                         f"{_fmt(ratio, 2):>12}")

        for phase in ("random", "scrub"):
            if phase not in p:
                continue
            n = p[phase]["requests"]
            row(f"{phase} p50 ms (n={n})", p[phase]["p50_ms"], b[phase]["p50_ms"])
            row(f"{phase} p95 ms", p[phase]["p95_ms"], b[phase]["p95_ms"])
            row(f"{phase} CPU ms/request (tree)", p[phase]["cpu_ms_per_request"],
                b[phase]["cpu_ms_per_request"])
            row(f"{phase} CPU s total / cores busy", p[phase]["cpu_s"], b[phase]["cpu_s"], 2)
            lines[-1] += (f"   busy {p[phase]['cores_busy']:.2f} / "
                          f"{b[phase]['cores_busy']:.2f}, other load "
                          f"{p[phase]['other_load_cores']:.2f} cores")
        if "sequential" in p:
            s, bs = p["sequential"], b["sequential"]
            row(f"sequential frames/s (n={s['requests']})", s["fps"], bs["fps"])
            row("sequential CPU ms/frame (tree)", s["cpu_ms_per_request"],
                bs["cpu_ms_per_request"])
            lines[-1] += (f"   busy {s['cores_busy']:.2f} / {bs['cores_busy']:.2f}, other load "
                          f"{s['other_load_cores']:.2f} cores")
        mem = c.get("memory")
        if mem:
            _memory_rows(mem, row, lines)
        cor = c["correctness"]
        note = (f"correctness: {cor['mismatch_count']} pixel mismatches in {cor['compared']} "
                f"compared frames; failed requests: phast {cor['phast_failures']}, baseline "
                f"{cor['baseline_failures']}; baseline sequential-order errors "
                f"{cor['baseline_sequential_errors']}")
        lines.append(note)
        for m in cor["mismatches"][:10]:
            lines.append(f"  MISMATCH {m['phase']} request {m['request']}: frame {m['index']}")
        for v in cor["arbitration"]:
            lines.append(f"  frame {v['index']}: {v['verdict']} (vs. a decode from the start)")
        for prob in cor["problems"]:
            lines.append(f"  PROBLEM {prob}")
    return "\n".join(lines)


def _memory_rows(mem: dict[str, Any], row: Callable[..., None], lines: list[str]) -> None:
    pm, bm = mem.get("phast", {}), mem.get("pyav", {})
    for sysname, m in (("phast", pm), ("pyav", bm)):
        if "error" in m:
            lines.append(f"memory ({sysname}): {m['error'][:300]}")
    if "error" in pm or "error" in bm:
        return
    for ps, bs in zip(pm["steps"], bm["steps"], strict=False):
        n = ps["clips"]
        row(f"mem {n} clip(s): editor dRSS MB/clip", ps["editor_delta_mb"] / n,
            bs["editor_delta_mb"] / n)
        row(f"mem {n} clip(s): workers RSS MB, all", ps["workers_rss_mb"], None)
        lines[-1] += f"   {ps['worker_count']} worker process(es)"
        row(f"mem {n} clip(s): workers USS MB, all", ps["workers_uss_mb"], None)
        row(f"mem {n} clip(s): total MB (editor+workers)", ps["editor_delta_mb"] +
            ps["workers_uss_mb"], bs["editor_delta_mb"])
        lines[-1] += "   (editor dRSS + workers USS)"


def write_json(result: dict[str, Any], path: str) -> None:
    Path(path).write_text(json.dumps(result, indent=2, default=str))
