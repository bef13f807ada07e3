"""``hwbench torture``: requests at a fixed rate, on a fixed schedule, against one open clip.

What a run does (see :func:`run_torture`):

* Request ``k`` is *scheduled* at ``t0 + k / rate`` (absolute times on the monotonic clock, so
  lateness never accumulates into drift). The frame it asks for is the ``k``-th index of the
  pattern (:mod:`hwbench.patterns`): a function of the schedule, as an editor's playhead is a
  function of the clock, not of which earlier requests finished.
* At its scheduled time a request is handed to a request thread, which calls
  ``clip.frame(i, deadline=d)`` with ``d`` the time left until ``scheduled + D`` (``D`` = one
  period unless ``--deadline`` says otherwise): an editor asks for the frame a display slot
  needs by that slot, so a request thread that starts late (a busy machine) passes a shorter
  deadline rather than the late start pushing the answer past the slot. phast answers on time
  with the best quality tier it has -- or ``clip.frame(i)`` (blocking, EXACT)
  with ``--exact`` -- and records the call's latency and the returned quality. At most
  ``max_inflight`` requests are out at once (default 1: an editor that waits for its frame); a
  tick that finds them all busy is *skipped* -- it counts as a request that was neither
  completed nor on time.
* A request is **on time** if it completes within one period (``1 / rate``) of its scheduled
  time. ``on_time`` is the fraction of *all scheduled requests* (skipped ones included).
* After ``duration`` no new request is issued; in-flight ones get ``drain_s`` to finish (late).

Power comes from :mod:`phast.power` (``--meter auto|rapl|nvml|cpu``): RAPL package energy,
NVML GPU energy, or -- on hosts with neither -- the CPU-time model, whose figures are labelled
"estimate (CPU-time model)". Before the clip is opened the meter is sampled for ``--baseline-s``
seconds (default 2; 0 skips) with nothing of ours running: ``baseline_w``. The budget counts
*marginal* power, what the run adds::

    power_w      = meter energy over the run / wall seconds
    marginal_w   = power_w - baseline_w
    budget_share = max(marginal_w, 0) / tdp_w     (compared with --budget, a share of TDP)

``tdp_w`` comes from ``--tdp``, else ``$PHAST_TDP_W``, else RAPL's PL1, else 15 W
(:func:`phast.power.discover_tdp`; ``tdp_source`` says which). phast runs under its governor
(:mod:`phast.governor`) with ``--budget`` (default 0.10; ``off``: ungoverned) on the same TDP;
``phast_budget_share`` is what the governor itself charged the clip over the run.
Independently of the meter, the process tree's CPU time (editor + workers, from ``/proc``) is
*measured*: ``tree_cpu_share = tree CPU s / (wall s x logical cores)``, and the other processes'
load next to it.

Extension point: a :class:`TierPolicy` picks each request's tier before it is issued and hears
its outcome after -- :class:`ExactOnly` always asks for "exact". (phast's own power governor is
:class:`phast.governor.Governor`; it runs inside the system under test.)
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from phast.power import (
    Meter,
    Sample,
    discover_tdp,
    logical_cores,
    measure_baseline,
    open_meter,
    tree_cpu_seconds,
)

from . import chaos as _chaos
from . import patterns, procstats
from .player import ForwardPlayer
from .procstats import percentile, system_busy_seconds


@dataclass(frozen=True)
class Mark:
    """A meter sample with the independent CPU counts taken next to it."""

    sample: Sample
    tree_cpu_s: float  #: process tree (editor + workers), from /proc
    machine_cpu_s: float  #: every process on the machine

    @property
    def t(self) -> float:
        return self.sample.t


def take_mark(meter: Meter) -> Mark:
    return Mark(meter.read(), tree_cpu_seconds(), system_busy_seconds())


# -- the schedule's requests and the tier policy ---------------------------------------------------

@dataclass
class Scheduled:
    """One scheduled request and what happened to it (times are seconds after ``t0``)."""

    k: int
    index: int
    scheduled: float
    tier: str = "exact"
    issued: float | None = None
    done: float | None = None
    latency: float | None = None  #: duration of the clip.frame call
    quality: str | None = None
    shows: int | None = None  #: display index of the picture shown (None: none, a BLANK)
    error: str | None = None
    skipped: bool = False

    def on_time(self, period: float) -> bool:
        return self.done is not None and self.error is None and \
            self.done - self.scheduled <= period


START_LEAD_S = 0.25  # from starting the runner's threads to the first scheduled request
MARK_LEAD_S = 0.02  # the meter is read this long before the first request (a /proc walk)
#: Seconds of deadline a request still gets when its thread starts at or past its slot.
MIN_DEADLINE = 0.001


class TierPolicy(Protocol):
    """Picks the tier each scheduled request asks for."""

    name: str

    def tier(self, request: Scheduled) -> str:
        """The tier to ask for (called at the request's scheduled time)."""
        ...

    def observe(self, request: Scheduled, reading: Mark | None) -> None:
        """Hear a finished request (``reading`` may be None when no meter sample is at hand)."""
        ...


class ExactOnly:
    """Asks for EXACT: phast answers with the best tier it has at each deadline."""

    name = "exact-only"

    def tier(self, request: Scheduled) -> str:
        return "exact"

    def observe(self, request: Scheduled, reading: Mark | None) -> None:
        return None


# -- systems under test -----------------------------------------------------------------------

#: Called with a returned frame's pixels (rgb24, height x width x 3; valid only during the call)
#: before the system lets go of them: how ``hwbench compare`` checks which frame came back.
Look = Callable[[Any], None]


class System(Protocol):
    """A frame source the schedule runs against (phast, or a peer decoder)."""

    width: int
    height: int

    def __len__(self) -> int: ...

    def fetch(self, i: int, deadline: float | None,
              look: Look | None = None) -> str | tuple[str, int | None]:
        """Frame ``i`` (by ``deadline`` seconds when the system honours deadlines); returns
        its quality ("exact", "proxy", "nearest", "blank"), or (quality, the display index
        whose picture it shows: None for a blank), and shows its pixels to ``look``."""
        ...

    def proxy_progress(self) -> list[int] | None: ...

    def close(self) -> None: ...


#: Opens a system: ``(path, cfg, pool)`` -- ``pool`` is a phast WorkerPool for cfg.system "phast".
Opener = Callable[[str, "TortureConfig", Any], System]


# -- the runner -------------------------------------------------------------------------------

@dataclass
class TortureConfig:
    """Knobs of one ``hwbench torture`` run."""

    rate: float = 30.0
    duration: float = 60.0
    pattern: str = "mixed"
    seed: int = 1234
    tdp: float | None = None
    meter: str = "auto"  #: phast.power meter kind: auto, rapl, nvml or cpu
    baseline_s: float = 2.0  #: idle baseline before the clip opens; 0 = none
    budget: float | None = 0.10  #: share of TDP phast may use (its governor); None = ungoverned
    cache_dir: str | None = None  #: phast's store; None: a fresh one, removed after the run
    threads: int = 0
    backend: str = "auto"  #: phast backend name (registry) or "auto"
    workers: int | None = None
    max_inflight: int = 1
    drain_s: float = 10.0
    deadline: float | None = None  #: seconds; None = one period
    exact: bool = False  #: blocking EXACT requests, no deadline
    proxies: bool = True  #: phast builds proxies in the background (as editors run it)
    #: "phast", or an in-process PyAV peer on the same schedule (:data:`hwbench.baseline.PEERS`:
    #: "pyav-player", the player-style baseline, or "pyav-naive", a seek on every request)
    system: str = "phast"
    progress: bool = True
    progress_every: float = 5.0
    chaos: float = 0.0  #: worker faults a minute (SIGKILL/SIGSTOP, :mod:`hwbench.chaos`)
    verify: bool = False  #: check sampled EXACT frames against a sequential decode afterwards
    #: a shared proxy store behind the (fresh) local one (phast.open(shared_store=...))
    shared_store: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _log(cfg: TortureConfig, text: str) -> None:
    if cfg.progress:
        print(text, file=sys.stderr, flush=True)


class _Sampler(threading.Thread):
    """Reads the meter at ``t0 + 1, t0 + 2, ...`` (absolute times) until stopped."""

    def __init__(self, meter: Meter, t0: float, seconds: int) -> None:
        super().__init__(name="hwbench-meter", daemon=True)
        self.meter, self.t0, self.seconds = meter, t0, seconds
        self.readings: list[Mark] = []
        self._halt = threading.Event()

    def run(self) -> None:
        for s in range(1, self.seconds + 1):
            due = self.t0 + s
            # A stop that comes once a reading is due (the run's end, at the last second) still
            # gets that reading: on a busy machine this thread may wake after the runner stops it
            if self._halt.wait(max(0.0, due - time.monotonic())) and time.monotonic() < due:
                return
            self.readings.append(take_mark(self.meter))

    def stop(self) -> None:
        self._halt.set()


def _r6(v: float | None) -> float | None:
    return None if v is None else round(v, 6)


def _ms_stats(values: list[float]) -> dict[str, float | None]:
    ms = [v * 1000 for v in values]
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99),
            "mean": sum(ms) / len(ms) if ms else None, "max": max(ms) if ms else None}


def run_torture(path: str, cfg: TortureConfig, *, meter: Meter | None = None,
                policy: TierPolicy | None = None, opener: Opener | None = None,
                look: Callable[[Scheduled], Look | None] | None = None) -> dict[str, Any]:
    """Run the fixed-rate schedule against ``path``; returns a JSON-ready report.

    ``opener`` opens the system under test (default: by ``cfg.system``, "phast" or a PyAV peer
    of :data:`hwbench.baseline.PEERS`);
    ``look(request)`` may return a :data:`Look` that sees that request's pixels.
    ``meter``: default ``phast.power.open_meter(cfg.meter)`` (opened and closed here).
    """
    if not cfg.rate > 0 or not cfg.duration > 0:
        raise ValueError("rate and duration must be positive")
    if cfg.max_inflight < 1:
        raise ValueError("max_inflight must be at least 1")
    if cfg.baseline_s < 0:
        raise ValueError("--baseline-s must be >= 0")
    cores, cores_source = logical_cores()
    own_meter = meter is None
    if meter is None:
        meter = open_meter(cfg.meter, tdp=None if cfg.tdp is None else discover_tdp(cfg.tdp))
    try:
        # Nothing of ours runs yet (no clip, no worker): what the host draws without us.
        baseline = measure_baseline(meter, cfg.baseline_s) if cfg.baseline_s > 0 else None
        return _run(path, cfg, meter, policy or ExactOnly(), cores, cores_source,
                    0.0 if baseline is None else baseline.watts, opener, look)
    finally:
        if own_meter:
            meter.close()


def _run(path: str, cfg: TortureConfig, meter: Meter, policy: TierPolicy, cores: int,
         cores_source: str, baseline_w: float, opener: Opener | None,
         look: Callable[[Scheduled], Look | None] | None) -> dict[str, Any]:
    import phast
    from phast.governor import Governor, resolve_budget

    tdp_w = float(meter.describe()["tdp_w"])
    budget = resolve_budget("off" if cfg.budget is None else cfg.budget)
    policy = policy or ExactOnly()
    period = 1.0 / cfg.rate
    n = max(1, round(cfg.rate * cfg.duration))

    pool = None
    if cfg.system == "phast":
        # phast's governor on the run's TDP; its own meter instance (meters keep state)
        gmeter = open_meter(cfg.meter, tdp=discover_tdp(tdp_w))
        pool = phast.WorkerPool(max_workers=cfg.workers, governor=Governor(
            tdp=discover_tdp(tdp_w), meter=gmeter,
            baseline_w=None if gmeter.estimate else baseline_w))
    executor = ThreadPoolExecutor(max_workers=cfg.max_inflight,
                                  thread_name_prefix="hwbench-request")
    free = threading.Semaphore(cfg.max_inflight)
    lock = threading.Lock()
    done_count = 0
    clip: Any = None
    req_deadline = None if cfg.exact else (cfg.deadline or period)
    chaos = _chaos.ChaosRun(pool, cfg) if pool is not None and (cfg.chaos or cfg.verify) \
        else None
    try:
        w0 = time.perf_counter()
        clip = (opener or _open_system)(path, cfg, pool)
        if chaos is not None:
            clip.verifier = chaos.verifier
        open_s = time.perf_counter() - w0
        indices = patterns.pattern_indices(cfg.pattern, len(clip), n, cfg.seed, cfg.rate)
        # Warm-up: the editor has the clip open and on screen before the schedule starts
        # (this also starts the worker when the index came from disk).
        w0 = time.perf_counter()
        clip.fetch(indices[0], None)
        warmup_s = time.perf_counter() - w0
        requests = [Scheduled(k, indices[k], k * period) for k in range(n)]

        def serve(req: Scheduled, t0: float) -> None:
            nonlocal done_count
            try:
                start = time.monotonic()
                req.issued = start - t0
                try:
                    left = None if req_deadline is None else max(
                        MIN_DEADLINE, t0 + req.scheduled + req_deadline - start)
                    got = clip.fetch(req.index, left, None if look is None else look(req))
                    req.quality, req.shows = got if isinstance(got, tuple) else (got, req.index)
                except Exception as e:
                    req.error = f"{type(e).__name__}: {e}"
                end = time.monotonic()
                req.latency, req.done = end - start, end - t0
                policy.observe(req, None)
            finally:
                with lock:
                    done_count += 1
                free.release()

        # Everything the runner itself starts happens before the schedule does, so request 0
        # is not issued late by the runner: threads (the sampler, chaos, the executor's own)
        # in a lead time, the meter read just before t0.
        t0 = time.monotonic() + START_LEAD_S
        sampler = _Sampler(meter, t0, math.ceil(cfg.duration))
        sampler.start()
        if chaos is not None:
            chaos.start()
        for _ in range(cfg.max_inflight):
            executor.submit(time.sleep, 0)
        time.sleep(max(0.0, t0 - MARK_LEAD_S - time.monotonic()))
        start_mark = take_mark(meter)
        spent0 = _spent_j(clip)
        time.sleep(max(0.0, t0 - time.monotonic()))
        next_progress = cfg.progress_every
        for req in requests:
            delay = t0 + req.scheduled - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            req.tier = policy.tier(req)
            if free.acquire(blocking=False):
                executor.submit(serve, req, t0)
            else:
                req.skipped = True
            elapsed = time.monotonic() - t0
            if elapsed >= next_progress:
                next_progress += cfg.progress_every
                _log(cfg, _progress_line(requests[:req.k + 1], elapsed, cfg, period,
                                         start_mark, take_mark(meter)))
        # Let the last period run out, then drain what is still in flight (late by then).
        time.sleep(max(0.0, t0 + cfg.duration - time.monotonic()))
        issued = sum(1 for r in requests if not r.skipped)
        deadline = time.monotonic() + cfg.drain_s
        while time.monotonic() < deadline:
            with lock:
                if done_count >= issued:
                    break
            time.sleep(0.005)
        end_mark = take_mark(meter)
        spent1 = _spent_j(clip)
        sampler.stop()
        sampler.join()
        if chaos is not None:
            chaos.stop()
        with lock:
            drained = done_count >= issued
        report = _report(cfg, requests, period, t0, start_mark, end_mark, sampler.readings,
                         meter, policy, budget, tdp_w, cores, baseline_w,
                         float(getattr(clip, "frame_rate", 0.0)) or cfg.rate)
        if spent0 is not None and spent1 is not None:
            # what phast's governor charged the clip over the run, as a share of TDP
            report["phast_budget_share"] = (spent1 - spent0) / report["wall_s"] / tdp_w
            report["phast_power"] = clip.clip.power
        if req_deadline is not None:
            # How late past its deadline (schedule + deadline) each answer came (negative: early).
            over = [r.done - r.scheduled - req_deadline for r in requests if r.done is not None]
            report["slack_ms"] = _ms_stats(over)
        report.update(clip={"path": str(Path(path).resolve()), "frames": len(clip),
                            "width": clip.width, "height": clip.height,
                            "backend": getattr(clip, "backend", None)},
                      system=cfg.system, deadline_s=req_deadline,
                      proxy_progress=clip.proxy_progress(),
                      store_at_start=getattr(clip, "store_at_start", None),
                      open_s=open_s, warmup_s=warmup_s, drained=drained,
                      logical_cores=cores, cores_source=cores_source, host=procstats.host_info())
        if isinstance(clip, PlayerSystem):
            report["player"] = clip.stats()  # an in-process peer: its seeks, steps, cache hits
        if chaos is not None:
            report["chaos"] = chaos.result  # completed by chaos.after_close() below
        return report
    finally:
        # A call still running after the drain finishes before the system closes: closing an
        # in-process decoder under a running call crashes FFmpeg.
        executor.shutdown(wait=True, cancel_futures=True)
        if clip is not None:
            clip.close()
        if pool is not None:
            pool.shutdown()
        if chaos is not None:
            chaos.after_close(path)


class _PhastSystem:
    """phast as an editor uses it: deadline requests (or blocking EXACT ones)."""

    def __init__(self, path: str, cfg: TortureConfig, pool: Any) -> None:
        import tempfile

        import phast

        # A fresh store unless one is named: a run's tier mix must not depend on what earlier
        # runs left behind (--cache-dir reuses one, e.g. a complete proxy copy).
        self._fresh = None if cfg.cache_dir else tempfile.TemporaryDirectory(prefix="torture-")
        cache_dir = cfg.cache_dir or self._fresh.name  # type: ignore[union-attr]
        self.clip = phast.open(path, cache_dir=cache_dir, pool=pool, proxies=cfg.proxies,
                               backend=cfg.backend, backend_options={"threads": cfg.threads},
                               budget="off" if cfg.budget is None else cfg.budget,
                               shared_store=cfg.shared_store)
        self.width, self.height = self.clip.info.width, self.clip.info.height
        self.backend = self.clip.backend
        self.frame_rate = float(self.clip.info.average_rate or 0)
        #: what the store held when the clip opened (before any building)
        self.store_at_start = {"fresh": self._fresh is not None, "directory": cache_dir,
                               "frames": len(self.clip),
                               "proxies": self.clip.proxies_stored,
                               "shared": cfg.shared_store}

    def __len__(self) -> int:
        return len(self.clip)

    verifier: Any = None  #: set by a chaos run: samples EXACT frames

    def fetch(self, i: int, deadline: float | None,
              look: Look | None = None) -> tuple[str, int | None]:
        with self.clip.frame(i, deadline=deadline) as f:
            shows = None if f.shows < 0 else f.shows
            if self.verifier is not None and shows is not None:
                self.verifier.offer(i, f.array, str(f.quality), shows)
            if look is not None:
                look(f.array)
            return str(f.quality), shows

    def proxy_progress(self) -> list[int] | None:
        p = self.clip.proxy_progress
        return None if p is None else list(p)

    def close(self) -> None:
        self.clip.close()
        if self._fresh is not None:
            self._fresh.cleanup()


class PlayerSystem:
    """An in-process peer (a :class:`~hwbench.player.ForwardPlayer`) as a system: always
    EXACT (or an error), no deadlines, no proxies."""

    def __init__(self, player: ForwardPlayer[Any]) -> None:
        self.player = player
        self.width, self.height = player.width, player.height

    def __len__(self) -> int:
        return len(self.player)

    def fetch(self, i: int, deadline: float | None, look: Look | None = None) -> str:
        pixels = self.player.frame(i)
        if look is not None:
            look(pixels)
        return "exact"

    def proxy_progress(self) -> None:
        return None

    def stats(self) -> dict[str, int]:
        return self.player.stats()

    def close(self) -> None:
        self.player.close()


def _spent_j(system: Any) -> float | None:
    """Joules phast's governor has charged the clip so far (None: not phast, or ungoverned)."""
    if not isinstance(system, _PhastSystem):
        return None
    power = system.clip.power
    return None if power is None else float(power["spent_j"])


def _open_system(path: str, cfg: TortureConfig, pool: Any) -> System:
    if cfg.system == "phast":
        return _PhastSystem(path, cfg, pool)
    from .baseline import PEERS, open_peer

    if cfg.system in PEERS:
        return PlayerSystem(open_peer(cfg.system, path, threads=cfg.threads))
    raise ValueError(f"unknown system {cfg.system!r}")


def _progress_line(done: list[Scheduled], elapsed: float, cfg: TortureConfig, period: float,
                   r0: Mark, r1: Mark) -> str:
    completed = sum(1 for r in done if r.done is not None)
    on_time = sum(1 for r in done if r.on_time(period))
    busy = (r1.tree_cpu_s - r0.tree_cpu_s) / max(r1.t - r0.t, 1e-9)
    return (f"torture: {elapsed:5.1f}/{cfg.duration:g} s  requests {len(done)}  "
            f"completed {completed}  on time {on_time} ({100 * on_time / max(len(done), 1):.0f}%)"
            f"  cpu {busy:.2f} cores")


def _other_load(a: Mark, b: Mark) -> float:
    """Cores busy with other processes between two marks."""
    other = (b.machine_cpu_s - a.machine_cpu_s) - (b.tree_cpu_s - a.tree_cpu_s)
    return max(other, 0.0) / max(b.t - a.t, 1e-9)


def _report(cfg: TortureConfig, requests: list[Scheduled], period: float, t0: float,
            r0: Mark, r1: Mark, samples: list[Mark], meter: Meter, policy: TierPolicy,
            budget: float | None, tdp_w: float, cores: int,
            baseline_w: float, frame_rate: float) -> dict[str, Any]:
    desc = meter.describe()
    wall = max(r1.t - t0, 1e-9)
    cpu = r1.tree_cpu_s - r0.tree_cpu_s
    power_w = (r1.sample.energy_j - r0.sample.energy_j) / wall
    marginal_w = power_w - baseline_w
    completed = [r for r in requests if r.done is not None and r.error is None]
    on_time = [r for r in requests if r.on_time(period)]
    qualities = Counter(r.quality for r in completed)
    series = []
    marks = [r0, *samples]
    for s in range(math.ceil(cfg.duration)):
        in_sec = [r for r in requests if s <= r.scheduled < s + 1]
        row: dict[str, Any] = {
            "t": s, "requests": len(in_sec),
            "issued": sum(1 for r in in_sec if not r.skipped),
            "completed": sum(1 for r in in_sec if r.done is not None and r.error is None),
            "on_time": sum(1 for r in in_sec if r.on_time(period)),
            "skipped": sum(1 for r in in_sec if r.skipped),
            "quality": dict(Counter(r.quality for r in in_sec
                                    if r.done is not None and r.error is None)),
            "proxy_or_better": _proxy_or_better(in_sec),
            "blank": sum(1 for r in in_sec if r.quality == "blank"),
            "distance_s": _distance_stats(in_sec, frame_rate),
        }
        if s + 1 < len(marks):
            a, b = marks[s], marks[s + 1]
            row["cpu_s"] = b.tree_cpu_s - a.tree_cpu_s
            row["power_w"] = (b.sample.energy_j - a.sample.energy_j) / max(b.t - a.t, 1e-9)
            row["other_load_cores"] = _other_load(a, b)
        else:  # not sampled: never made up
            row["cpu_s"] = row["power_w"] = row["other_load_cores"] = None
        series.append(row)
    return {
        "tool": "hwbench torture",
        "config": {k: v for k, v in asdict(cfg).items() if k != "extra"},
        "pattern": cfg.pattern, "rate_hz": cfg.rate, "period_ms": 1000 * period,
        "duration_s": cfg.duration, "wall_s": wall,
        "requests": len(requests),
        "issued": sum(1 for r in requests if not r.skipped),
        "skipped": sum(1 for r in requests if r.skipped),
        "completed": len(completed),
        "failed": sum(1 for r in requests if r.error is not None),
        "on_time_count": len(on_time),
        "on_time": len(on_time) / len(requests),
        "quality_mix": {q: c / len(completed) for q, c in qualities.items()} if completed else {},
        "quality_counts": dict(qualities),
        # share of *all scheduled* requests answered EXACT or PROXY (the picture asked for)
        "proxy_or_better": _proxy_or_better(requests),
        # share of BLANK answers among the requests scheduled after the first 1 and 2 s
        "blank_after": {f"{s}s": _share(r.quality == "blank" for r in requests
                                        if r.scheduled >= s) for s in (1, 2)},
        # how far the picture shown is from the one asked for: |shows - index| in frames, and
        # in seconds at the clip's average frame rate (answers that showed a picture)
        "distance_frames": _stats([abs(r.shows - r.index) for r in completed
                                   if r.shows is not None]),
        "distance_s": _distance_stats(requests, frame_rate),
        "frame_rate": frame_rate,
        "tiers": (["exact"] if cfg.exact or cfg.system != "phast"
                  else ["exact", "proxy", "nearest", "blank"]),
        "tier_policy": policy.name,
        "latency_ms": _ms_stats([r.latency for r in completed if r.latency is not None]),
        "response_ms": _ms_stats([r.done - r.scheduled for r in completed
                                  if r.done is not None]),
        # measured from /proc, independently of the meter
        "cpu_s": cpu, "tree_cpu_share": cpu / (wall * cores),
        "other_load_cores": _other_load(r0, r1),
        **desc,
        "power_w": power_w, "baseline_w": baseline_w, "marginal_w": marginal_w,
        "budget": budget, "budget_w": None if budget is None else budget * tdp_w,
        # the budget counts what the run adds: marginal power as a share of TDP (noise below 0
        # counts as 0)
        "budget_share": max(marginal_w, 0.0) / tdp_w,
        "within_budget": None if budget is None else max(marginal_w, 0.0) / tdp_w <= budget,
        **({"estimate_note": f"power figures are an {desc['meter_label']}, not a measurement"}
           if meter.estimate else {}),
        "errors": sorted({r.error for r in requests if r.error})[:10],
        "series": series,
        # one row per scheduled request: k, index, scheduled/issued/done (s after t0),
        # call latency (s), quality, skipped, shows
        "request_log": [[r.k, r.index, round(r.scheduled, 6), _r6(r.issued), _r6(r.done),
                         _r6(r.latency), r.quality, r.skipped, r.shows] for r in requests],
    }


def format_report(rep: dict[str, Any], step: int = 5) -> str:
    """Compact stdout summary; the series is printed in ``step``-second buckets."""
    lat, resp = rep["latency_ms"], rep["response_ms"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    c = rep["clip"]
    dl = ("none (blocking EXACT)" if rep["deadline_s"] is None
          else f"{1e3 * rep['deadline_s']:.1f} ms")
    lines = [
        f"torture [{rep['system']}{'/' + c['backend'] if c.get('backend') else ''}]: "
        f"{Path(c['path']).name} ({c['width']}x{c['height']}, "
        f"{c['frames']} frames), pattern {rep['pattern']}, {rep['rate_hz']:g} Hz for "
        f"{rep['duration_s']:g} s (period {rep['period_ms']:.1f} ms), deadline {dl}, "
        f"max in flight {rep['config']['max_inflight']}",
        f"open {rep['open_s']:.2f} s, warm-up frame {1000 * rep['warmup_s']:.0f} ms "
        f"(both before the schedule)",
        f"requests {rep['requests']}: issued {rep['issued']}, skipped (busy) {rep['skipped']}, "
        f"completed {rep['completed']}, failed {rep['failed']}, on time {rep['on_time_count']} "
        f"= {100 * rep['on_time']:.1f}%",
        f"latency ms (clip.frame call): p50 {ms(lat['p50'])}  p95 {ms(lat['p95'])}  "
        f"p99 {ms(lat['p99'])}  max {ms(lat['max'])}",
        f"response ms (completion - schedule): p50 {ms(resp['p50'])}  p95 {ms(resp['p95'])}  "
        f"p99 {ms(resp['p99'])}",
        *([_store_line(rep["store_at_start"])] if rep.get("store_at_start") else []),
        f"PROXY or better (the picture asked for, any size): "
        f"{100 * (rep.get('proxy_or_better') or 0):.1f}% of requests; "
        "quality mix: " + (", ".join(f"{k} {100 * v:.0f}%" for k, v in
                                     rep["quality_mix"].items()) or "-"),
        f"BLANK after the first 1 s / 2 s: {_pct(rep['blank_after']['1s'])} / "
        f"{_pct(rep['blank_after']['2s'])}; distance of the picture shown from the one asked "
        f"for: p50 {_sec(rep['distance_s']['p50'])}, p95 {_sec(rep['distance_s']['p95'])}, "
        f"max {_sec(rep['distance_s']['max'])}",
        *([_chaos.format_line(rep["chaos"])] if "chaos" in rep else []),
        *([f"player: {rep['player']['seeks']} seeks, {rep['player']['stepped']} frames stepped, "
           f"{rep['player']['hits']} cache hits (reach {rep['player']['reach']}, cache "
           f"{rep['player']['cache_frames']} frames)"] if rep.get("player") else []),
        *([f"past the deadline, ms (completion - schedule - deadline; negative = early): "
           f"p50 {ms(rep['slack_ms']['p50'])}  p95 {ms(rep['slack_ms']['p95'])}  "
           f"p99 {ms(rep['slack_ms']['p99'])}  max {ms(rep['slack_ms']['max'])}"]
          if "slack_ms" in rep else []),
        f"CPU (editor + workers, measured): {rep['cpu_s']:.2f} s over {rep['wall_s']:.1f} s wall"
        f" on {rep['logical_cores']} logical cores = tree_cpu_share "
        f"{100 * rep['tree_cpu_share']:.1f}%",
        f"power, {rep['meter_label']}: {rep['power_w']:.2f} W - idle baseline "
        f"{rep['baseline_w']:.2f} W = marginal {rep['marginal_w']:.2f} W; tdp {rep['tdp_w']:g} W "
        f"[{rep['tdp_source']}] -> budget_share {100 * rep['budget_share']:.1f}% of TDP "
        f"(budget: {_budget(rep)})"
        + (f"; phast's own accounting: {100 * rep['phast_budget_share']:.1f}%"
           if rep.get("phast_budget_share") is not None else ""),
        *([f"model: {rep['model']}"] if "model" in rep else []),
        f"other processes on this machine (measured): {_cores(rep.get('other_load_cores'))} "
        f"cores on average",
        f"{'t (s)':>8}{'requests':>10}{'on time':>9}{'skipped':>9}{'cpu s':>8}{'W':>8}"
        f"{'other cores':>13}{'dist p50/p95 s':>16}  tier mix (exact/proxy/nearest/blank %)",
    ]
    series = rep["series"]
    for i in range(0, len(series), step):
        chunk = series[i:i + step]
        cpu_vals = [r["cpu_s"] for r in chunk]
        known = None not in cpu_vals
        cpu = sum(v for v in cpu_vals if v is not None) if known else None
        watts = [r["power_w"] for r in chunk]
        est = sum(v for v in watts if v is not None) / len(watts) if known else None
        lines.append(f"{chunk[0]['t']:>3}-{chunk[-1]['t'] + 1:<4}"
                     f"{sum(r['requests'] for r in chunk):>10}"
                     f"{sum(r['on_time'] for r in chunk):>9}"
                     f"{sum(r['skipped'] for r in chunk):>9}"
                     f"{'-' if cpu is None else f'{cpu:.2f}':>8}"
                     f"{'-' if est is None else f'{est:.2f}':>8}"
                     f"{_cores(_mean([r.get('other_load_cores') for r in chunk])):>13}"
                     f"{_window_distance(rep, chunk):>16}"
                     f"  {_mix(chunk)}")
    return "\n".join(lines)


def _share(flags: Any) -> float | None:
    values = list(flags)
    return sum(values) / len(values) if values else None


def _stats(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95),
            "mean": sum(values) / len(values) if values else None,
            "max": max(values) if values else None, "count": len(values)}


def _distance_stats(requests: list[Scheduled], frame_rate: float) -> dict[str, float | None]:
    """|shows - index| in seconds of the answers that showed a picture."""
    return _stats([abs(r.shows - r.index) / frame_rate for r in requests
                   if r.done is not None and r.error is None and r.shows is not None])


def _proxy_or_better(requests: list[Scheduled]) -> float | None:
    if not requests:
        return None
    good = sum(1 for r in requests if r.error is None and r.quality in ("exact", "proxy"))
    return good / len(requests)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _sec(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def _store_line(store: dict[str, Any]) -> str:
    kind = "a fresh store" if store["fresh"] else f"store {store['directory']}"
    if store.get("shared"):
        kind += f" + shared store {store['shared']}"
    return (f"store at start: {kind}, {store['proxies']} of {store['frames']} frames with a "
            "proxy")


def _budget(rep: dict[str, Any]) -> str:
    b = rep["budget"]
    return "off (ungoverned)" if b is None else f"{100 * b:g}% = {rep['budget_w']:.2f} W"


def _mix(chunk: list[dict[str, Any]]) -> str:
    counts: Counter[str] = Counter()
    for row in chunk:
        counts.update(row.get("quality") or {})
    total = sum(counts.values())
    if not total:
        return "-"
    return "/".join(f"{100 * counts[q] / total:.0f}" for q in ("exact", "proxy", "nearest",
                                                             "blank"))


def _window_distance(rep: dict[str, Any], chunk: list[dict[str, Any]]) -> str:
    """p50/p95 distance of a window, from the request log (the series keeps per-second ones)."""
    lo, hi = chunk[0]["t"], chunk[-1]["t"] + 1
    rate = rep.get("frame_rate") or rep["rate_hz"]
    d = [abs(row[8] - row[1]) / rate for row in rep.get("request_log", [])
         if lo <= row[2] < hi and len(row) > 8 and row[8] is not None]
    if not d:
        return "-"
    return f"{percentile(d, 50):.2f}/{percentile(d, 95):.2f}"


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known and len(known) == len(values) else None


def _cores(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def write_json(rep: dict[str, Any], path: str) -> None:
    Path(path).write_text(json.dumps(rep, indent=2, default=str))
