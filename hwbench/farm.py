"""``hwbench farm``: proxies per second against the number of Dask workers, and an editor warm
from the shared store only.

1. For each worker count N (default 1 and 2), ``repeat`` times: a fresh directory store, a
   LocalCluster of N single-threaded worker processes (started and warmed before the clock
   starts: its phast workers are up), then ``phast.farm.build`` of every frame.
   proxies/s = frames built / wall seconds of the build. Measured alongside: the farm's CPU
   per proxy (all its processes) and the cores other processes used meanwhile (on a shared
   machine other work takes cores from the farm), and the load average before the run.
2. ``hwbench torture`` against the last store built, through an editor whose local store is
   empty and that builds nothing (``proxies=False``): PROXY-or-better overall and in the first
   second, the tier mix.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from . import torture


@dataclass
class FarmConfig:
    """Knobs of one ``hwbench farm`` run."""

    workers: tuple[int, ...] = (1, 2)
    repeat: int = 2
    chunk: int | None = None  #: None: phast.farm.DEFAULT_CHUNK
    torture_s: float = 20.0  #: 0: no torture run
    rate: float = 30.0
    pattern: str = "mixed"
    budget: float | None = 0.10
    seed: int = 1234
    progress: bool = True


def _warm(client: Any, path: str) -> None:
    """Every worker imports phast and starts its sandboxed workers before the clock starts."""
    def touch(p: str) -> int:
        from phast.supervisor import default_pool

        pool = default_pool()
        pool.build_worker()
        pool.image_worker()
        pool.prepare_images(60)
        return os.getpid()

    client.run(touch, path)


def build_rate(path: str, workers: int, cfg: FarmConfig, cache_dir: str,
               share: str) -> dict[str, Any]:
    """One farm build of every frame of ``path`` into a fresh store at ``share``."""
    from phast import farm
    from phast.power.cpu import tree_cpu_seconds
    from phast.sharedstore import SharedStore

    from .procstats import system_busy_seconds

    load = os.getloadavg()
    with farm.connect(f"local:{workers}") as client:
        _warm(client, path)
        t, machine, tree = time.monotonic(), system_busy_seconds(), tree_cpu_seconds()
        [report] = farm.build([path], client, SharedStore(share), chunk=cfg.chunk,
                              cache_dir=cache_dir)
        seconds = time.monotonic() - t
        # the farm's own CPU (driver, Dask workers, their sandboxed workers: all descendants)
        # and everyone else's, measured over the build
        cpu = tree_cpu_seconds() - tree
        other = max(0.0, system_busy_seconds() - machine - cpu) / seconds
    return {"workers": workers, "frames": report.built, "failed": len(report.failed),
            "tasks": report.tasks, "seconds": round(seconds, 3),
            "proxies_per_s": round(report.built / seconds, 2),
            "cpu_ms_per_proxy": round(1000 * cpu / max(report.built, 1), 2),
            "other_cores": round(other, 2), "load_before": [round(v, 2) for v in load]}


def run(path: str, cfg: FarmConfig) -> dict[str, Any]:
    """The scaling rows, the best rate per worker count, and the warm torture run."""
    import phast

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hwbench-farm-") as tmp:
        cache_dir = os.path.join(tmp, "driver")
        with phast.open(path, cache_dir=cache_dir, proxies=False):
            pass  # the driver's index, before any clock
        share = ""
        for k in range(cfg.repeat):
            for n in cfg.workers:
                share = os.path.join(tmp, f"share-{n}-{k}")
                row = build_rate(path, n, cfg, cache_dir, share)
                rows.append(row)
                if cfg.progress:
                    print(f"farm: {n} worker(s): {row['frames']} proxies in {row['seconds']} s "
                          f"= {row['proxies_per_s']}/s (load before {row['load_before']})",
                          flush=True)
        best = {n: max(r["proxies_per_s"] for r in rows if r["workers"] == n)
                for n in cfg.workers}
        out: dict[str, Any] = {"clip": path, "rows": rows, "best": best}
        if len(cfg.workers) > 1:
            lo, hi = min(cfg.workers), max(cfg.workers)
            out["speedup"] = round(best[hi] / best[lo], 3)
        if cfg.torture_s > 0:
            tcfg = torture.TortureConfig(rate=cfg.rate, duration=cfg.torture_s,
                                         pattern=cfg.pattern, seed=cfg.seed, budget=cfg.budget,
                                         proxies=False, shared_store=share, baseline_s=0.0,
                                         progress=cfg.progress)
            rep = torture.run_torture(path, tcfg)
            first = rep["series"][0] if rep["series"] else {}
            out["torture"] = {
                "proxy_or_better": rep["proxy_or_better"],
                "first_second_proxy_or_better": first.get("proxy_or_better"),
                "first_second_quality": first.get("quality"),
                "quality_mix": rep.get("quality_mix"), "on_time": rep.get("on_time"),
                "store_at_start": rep.get("store_at_start"),
                "report": torture.format_report(rep)}
    return out


def format_result(out: dict[str, Any]) -> str:
    lines = [f"hwbench farm: {out['clip']}",
             f"{'workers':>7} {'frames':>7} {'tasks':>5} {'seconds':>8} {'proxies/s':>10} "
             f"{'cpu ms/proxy':>12} {'other cores':>11}  load before"]
    for r in out["rows"]:
        lines.append(f"{r['workers']:>7} {r['frames']:>7} {r['tasks']:>5} {r['seconds']:>8.2f} "
                     f"{r['proxies_per_s']:>10.1f} {r['cpu_ms_per_proxy']:>12.2f} "
                     f"{r['other_cores']:>11.2f}  {r['load_before']}")
    if "speedup" in out:
        lines.append(f"speedup (best of each): {out['speedup']:.2f}x")
    t = out.get("torture")
    if t:
        pob, first = t["proxy_or_better"], t["first_second_proxy_or_better"]
        lines.append("editor warm from the shared store only (empty local store, builds "
                     f"nothing): PROXY-or-better {_pct(pob)} overall, {_pct(first)} in the "
                     f"first second {t['first_second_quality']}")
        lines.append(t["report"])
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"
