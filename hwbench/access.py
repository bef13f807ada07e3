"""``hwbench access``: phast against in-process PyAV peers, side by side, on the same requests.

The peers (``baselines``, :mod:`hwbench.baseline`): ``pyav-player`` (the default), a player's
access -- decode forward when the target is ahead within 64 frames, seek otherwise, a cache of
recent frames -- and ``pyav-naive``, a seek to the keyframe on every request (opt-in, labelled).

Exact access only: clips are opened with ``proxies=False``, so no background proxy building
competes (or is charged to phast); ``hwbench torture`` measures phast as editors run it.

For each clip, in one run (see :func:`bench_clip`):

1. **Index.** phast's first open (index build in a worker, into an empty index store), a reopen
   (on-disk index) and the first frame after the reopen (worker start included); the baseline's
   demux pass (each baseline's). None of these are part of the request timings below.
2. **Random exact access.** ``random`` uniformly random indices (fixed seed), one at a time.
3. **Scrubbing.** ``scrub`` requests along a random walk of +-1..10 frames (same seed and
   sequence for both decoders; see :mod:`hwbench.patterns`).
4. **Sequential playback.** frames ``0..sequential-1`` in order. phast: ``clip.frame(i)``;
   the player: its own ``frame(i)`` (it decodes forward); the naive peer, which would seek
   for every frame: a plain ``container.decode`` + ``to_ndarray("rgb24")`` instead.
5. **Memory**, in fresh processes (:mod:`hwbench.memprobe`): editor RSS delta and worker
   RSS/USS with 1 and with 4 open clips of the file, for phast and each baseline.

Timed per request: phast ``clip.frame(i)`` + ``release()``; a baseline's ``frame(i)`` (seek or
not, decode, ``to_ndarray``). The decoders take turns on the same request sequence (one request
at a time for random/scrub, ``sequential_chunk`` frames for sequential; the order alternates),
so background load on a shared machine hits all alike; the other processes' load is reported
per phase. CPU is the whole process tree (editor + workers), user + system: the editor's CPU
is measured around each turn, the workers' CPU over the phase is phast's.
Correctness: every random/scrub result and every ``check_every``-th sequential frame is hashed
(outside the timed region; its CPU is subtracted) and compared between phast and each
baseline; mismatching frames are arbitrated against a decode from the start (at most
``arbitrate``).
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
from .baseline import PEERS, BaselineMiss, PyAVPlayer, open_peer, reference_frame
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
    threads: int = 0  #: decoder threads for every side (0 = FFmpeg's automatic choice)
    #: PyAV peers run next to phast (:data:`hwbench.baseline.PEERS`); ratios are against each
    baselines: tuple[str, ...] = ("pyav-player",)
    memory: bool = True
    memory_clips: int = 4
    memory_touch: int = 5  #: random requests per clip before memory is measured
    check_every: int = 10  #: hash every n-th sequential frame
    sequential_chunk: int = 30  #: sequential frames per turn when alternating decoders
    arbitrate: int = 3  #: mismatching frames decoded from the start to find who is right
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [b for b in self.baselines if b not in PEERS]
        if unknown or not self.baselines:
            raise ValueError(f"unknown baseline(s) {', '.join(unknown) or '(none given)'}; "
                             f"known: {', '.join(PEERS)}")


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


def _baseline_fetch(base: PyAVPlayer) -> Fetch:
    def fetch(i: int) -> tuple[np.ndarray, Callable[[], None]]:
        return base.frame(i), _nothing

    return fetch


def _nothing() -> None:
    return None


class _BaselineSequential:
    """A plain ``container.decode`` as a fetcher: request ``i`` must be the next frame."""

    def __init__(self, base: PyAVPlayer) -> None:
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


def _compare(phase: str, baseline: str, indices: list[int], a: list[str | None],
             b: list[str | None]) -> tuple[int, list[dict[str, Any]]]:
    """(frames compared, mismatches) between phast's digests ``a`` and ``baseline``'s ``b``."""
    compared, bad = 0, []
    for k, (i, x, y) in enumerate(zip(indices, a, b, strict=False)):
        if x is None or y is None:
            continue
        compared += 1
        if x != y:
            bad.append({"phase": phase, "baseline": baseline, "request": k, "index": i})
    return compared, bad


def _arbitrate(path: str, clip: Any, bases: dict[str, PyAVPlayer], index: int) -> dict[str, Any]:
    """Decode frame ``index`` from the start and say which decoders do not match it."""
    ref = digest(reference_frame(path, index))
    with clip.frame(index) as f:
        wrong = [] if digest(f.array) == ref else ["phast"]
    for name, base in bases.items():
        try:
            theirs: str | None = digest(base.frame(index))
        except BaselineMiss:
            theirs = None
        if theirs != ref:
            wrong.append(name)
    return {"index": index, "wrong": wrong,
            "verdict": f"{' and '.join(wrong)} wrong" if wrong else "not reproduced"}


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
    clip = None
    bases: dict[str, PyAVPlayer] = {}
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
        for b in cfg.baselines:
            _log(cfg, f"[{name}] {b}: demux pass")
            bases[b] = open_peer(b, path, threads=cfg.threads)
        out["info"] = _info_dict(info)
        out["index"] = {"phast_first_open_s": first_open, "phast_index_cpu_s": index_cpu,
                        "phast_reopen_s": reopen, "phast_first_frame_after_reopen_s": first_frame,
                        "baseline_demux_pass_s": {b: base.index_s for b, base in bases.items()}}
        problems: list[str] = []
        n = len(clip)
        for b, base in bases.items():
            if len(base) != len(clip):
                problems.append(f"frame count: phast {len(clip)}, {b} {len(base)}")
            n = min(n, len(base))

        # -- request phases ---------------------------------------------------------------------
        plans = {"random": patterns.random_indices(n, cfg.random, cfg.seed),
                 "scrub": patterns.scrub_indices(n, cfg.scrub, cfg.seed + 1),
                 "sequential": list(range(min(cfg.sequential, n)))}
        every = max(1, cfg.check_every)
        results: dict[str, dict[str, Any]] = {"phast": {}, **{b: {} for b in bases}}
        compared, mismatches = 0, []
        for phase in PHASES:
            idx = plans[phase]
            if not idx:
                continue
            _log(cfg, f"[{name}] {phase}: {len(idx)} requests, phast and "
                 f"{', '.join(bases)} taking turns")
            fetchers: dict[str, Fetch] = {"phast": _phast_fetch(clip)}
            plain: list[_BaselineSequential] = []
            for b, base in bases.items():
                if phase == "sequential" and base.naive:
                    # seeking for every frame of a playback is no one's way to play
                    plain.append(_BaselineSequential(base))
                    fetchers[b] = plain[-1]
                else:
                    fetchers[b] = _baseline_fetch(base)
            if phase == "sequential":
                sides, other = _interleaved(idx, fetchers, lambda k: k % every == 0,
                                            cfg.sequential_chunk, "phast", lambda t: _log(cfg, t))
            else:
                sides, other = _interleaved(idx, fetchers, lambda k: True, 1, "phast",
                                            lambda t: _log(cfg, t))
            for seq in plain:
                seq.close()
            for system, side in sides.items():
                results[system][phase] = _summary(side, len(idx), other)
                if system != "phast":
                    results[system][phase]["method"] = (
                        "container.decode" if isinstance(fetchers[system], _BaselineSequential)
                        else "frame(i)")
                    c, bad = _compare(phase, system, idx, sides["phast"].digests, side.digests)
                    compared += c
                    mismatches += bad
        # pts of frame 0 and its pixels, from the reopened clip's first request
        for b, base in bases.items():
            c, bad = _compare("first_frame", b, [0], [first_digest], [digest(base.frame(0))])
            compared += c
            mismatches += bad
            if first_pts != base.pts[0]:
                problems.append(f"frame 0 pts: phast {first_pts}, {b} {base.pts[0]}")
        verdicts = []
        for i in sorted({m["index"] for m in mismatches})[:cfg.arbitrate]:
            _log(cfg, f"[{name}] mismatch at frame {i}: decoding from the start to arbitrate")
            verdicts.append(_arbitrate(path, clip, bases, i))
        out["phast"] = results.pop("phast")
        out["baselines"] = results  # by name, in cfg.baselines' order
        out["players"] = {b: base.stats() for b, base in bases.items()}
        out["correctness"] = {
            "compared": compared, "mismatch_count": len(mismatches), "mismatches": mismatches[:50],
            "arbitration": verdicts, "problems": problems,
            "phast_failures": sum(r["failures"] for r in out["phast"].values()),
            "baseline_failures": {b: sum(r["failures"] for k, r in res.items()
                                         if r.get("method") == "frame(i)")
                                  for b, res in results.items()},
            # a plain container.decode that gave frames out of the index's order
            "baseline_sequential_errors": {
                b: res["sequential"]["failures"] for b, res in results.items()
                if res.get("sequential", {}).get("method") == "container.decode"},
        }
        clip.close()
        clip = None
        for base in bases.values():
            base.close()
        bases.clear()

        # -- memory, in fresh processes -----------------------------------------------------------
        if cfg.memory:
            mem = {}
            for system in ("phast", *cfg.baselines):
                _log(cfg, f"[{name}] memory: {system}, 1 and {cfg.memory_clips} clips")
                mem[system] = memprobe.run_probe({
                    "system": system, "path": path, "clips": cfg.memory_clips,
                    "touch": cfg.memory_touch, "seed": cfg.seed, "cache_dir": store,
                    "threads": cfg.threads, "workers": cfg.workers})
            out["memory"] = mem
        out["ratios"] = {b: _ratios(out["phast"], out["baselines"][b]) for b in cfg.baselines}
    finally:
        if clip is not None:
            clip.close()
        for base in bases.values():
            base.close()
        pool.shutdown()
        shutil.rmtree(store, ignore_errors=True)
    return out


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _ratios(p: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
    """phast / baseline for each headline number (below 1 is better for phast, except fps)."""
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


#: Column width of one value in the printed table.
COL = 13

#: A table row's printer: label, phast's value, each baseline's value, digits.
Row = Callable[[str, "float | None", "dict[str, float | None]", int], None]


def format_table(result: dict[str, Any]) -> str:
    """The compact stdout report: one block per clip; for each baseline its value and the
    ratio phast/baseline."""
    lines = []
    host = result.get("host", {})
    load = host.get("loadavg_at_start") or []
    lines.append(f"host: {host.get('cpu', '?')}, {host.get('logical_cores', '?')} logical cores, "
                 f"PyAV {host.get('pyav', '?')}, FFmpeg {host.get('ffmpeg', '?')}; load average "
                 f"at start {' '.join(f'{v:.2f}' for v in load) or '?'}")
    for c in result["clips"]:
        lines.append("")
        lines += _clip_lines(c)
    return "\n".join(lines)


def _clip_lines(c: dict[str, Any]) -> list[str]:
    info, idx = c["info"], c["index"]
    p, bs = c["phast"], c["baselines"]
    names = list(bs)
    lines = [f"== {c['name']}: {info['width']}x{info['height']} {info['codec']} "
             f"{info['pix_fmt']}, {info['frame_count']} frames, {info['fps']:.3g} fps, "
             f"{info['keyframes']} keyframes (longest GOP {info['max_gop']}) =="]
    demux = ", ".join(f"{b} {v:.2f} s" for b, v in idx["baseline_demux_pass_s"].items())
    lines.append(f"index: phast first open {idx['phast_first_open_s']:.2f} s "
                 f"({idx['phast_index_cpu_s']:.2f} CPU s), reopen from disk "
                 f"{1000 * idx['phast_reopen_s']:.1f} ms, first frame after reopen "
                 f"{1000 * idx['phast_first_frame_after_reopen_s']:.0f} ms; demux pass {demux}")
    head = f"{'':40}{'phast':>10}"
    for b in names:
        head += f"{b:>{COL}}{'phast/' + b.removeprefix('pyav-'):>{COL}}"
    lines.append(head)

    def row(label: str, pv: float | None, bv: dict[str, float | None], digits: int = 1) -> None:
        text = f"{label:40}{_fmt(pv, digits):>10}"
        for b in names:
            text += f"{_fmt(bv.get(b), digits):>{COL}}{_fmt(_div(pv, bv.get(b)), 2):>{COL}}"
        lines.append(text)

    def each(phase: str, key: str) -> dict[str, float | None]:
        return {b: bs[b][phase][key] for b in names}

    for phase in ("random", "scrub"):
        if phase not in p:
            continue
        n = p[phase]["requests"]
        row(f"{phase} p50 ms (n={n})", p[phase]["p50_ms"], each(phase, "p50_ms"))
        row(f"{phase} p95 ms", p[phase]["p95_ms"], each(phase, "p95_ms"))
        row(f"{phase} CPU ms/request (tree)", p[phase]["cpu_ms_per_request"],
            each(phase, "cpu_ms_per_request"))
        row(f"{phase} cores busy", p[phase]["cores_busy"], each(phase, "cores_busy"), 2)
        lines[-1] += f"   other load {p[phase]['other_load_cores']:.2f} cores"
    if "sequential" in p:
        s = p["sequential"]
        row(f"sequential frames/s (n={s['requests']})", s["fps"], each("sequential", "fps"))
        row("sequential CPU ms/frame (tree)", s["cpu_ms_per_request"],
            each("sequential", "cpu_ms_per_request"))
        row("sequential cores busy", s["cores_busy"], each("sequential", "cores_busy"), 2)
        lines[-1] += f"   other load {s['other_load_cores']:.2f} cores"
        plain = [b for b in names if bs[b]["sequential"].get("method") == "container.decode"]
        if plain:
            lines.append(f"  ({', '.join(plain)}: sequential is a plain container.decode)")
    mem = c.get("memory")
    if mem:
        _memory_rows(mem, names, row, lines)
    for b, st in c.get("players", {}).items():
        lines.append(f"{b}: {st['seeks']} seeks, {st['stepped']} frames stepped, "
                     f"{st['hits']} cache hits (reach {st['reach']}, cache "
                     f"{st['cache_frames']} frames)")
    cor = c["correctness"]
    failed = ", ".join(f"{b} {v}" for b, v in cor["baseline_failures"].items())
    seq_err = ", ".join(f"{b} {v}" for b, v in cor["baseline_sequential_errors"].items())
    lines.append(f"correctness: {cor['mismatch_count']} pixel mismatches in {cor['compared']} "
                 f"compared frames; failed requests: phast {cor['phast_failures']}, {failed}"
                 + (f"; sequential-order errors of a plain decode: {seq_err}" if seq_err else ""))
    for m in cor["mismatches"][:10]:
        lines.append(f"  MISMATCH {m['phase']} request {m['request']}: frame {m['index']} "
                     f"(phast vs {m['baseline']})")
    for v in cor["arbitration"]:
        lines.append(f"  frame {v['index']}: {v['verdict']} (vs. a decode from the start)")
    for prob in cor["problems"]:
        lines.append(f"  PROBLEM {prob}")
    return lines


def _memory_rows(mem: dict[str, Any], names: list[str], row: Row, lines: list[str]) -> None:
    for sysname in ("phast", *names):
        if "error" in mem.get(sysname, {}):
            lines.append(f"memory ({sysname}): {mem[sysname]['error'][:300]}")
            return
    pm = mem["phast"]
    for k, ps in enumerate(pm["steps"]):
        n = ps["clips"]
        steps = {b: mem[b]["steps"][k] for b in names if k < len(mem[b]["steps"])}
        row(f"mem {n} clip(s): editor dRSS MB/clip", ps["editor_delta_mb"] / n,
            {b: st["editor_delta_mb"] / n for b, st in steps.items()}, 1)
        row(f"mem {n} clip(s): workers RSS MB, all", ps["workers_rss_mb"], {}, 1)
        lines[-1] += f"   {ps['worker_count']} worker process(es)"
        row(f"mem {n} clip(s): workers USS MB, all", ps["workers_uss_mb"], {}, 1)
        row(f"mem {n} clip(s): total MB (editor+workers)",
            ps["editor_delta_mb"] + ps["workers_uss_mb"],
            {b: st["editor_delta_mb"] for b, st in steps.items()}, 1)
        lines[-1] += "   (editor dRSS + workers USS)"


def write_json(result: dict[str, Any], path: str) -> None:
    Path(path).write_text(json.dumps(result, indent=2, default=str))
