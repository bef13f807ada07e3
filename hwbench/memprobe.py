"""Memory probe, run in a fresh process: what opening N clips of one file costs.

``python -m hwbench.memprobe '{json options}'`` prints one JSON object on stdout. A fresh
interpreter is used so that the editor's RSS delta is not blurred by what an earlier benchmark
phase allocated and freed (glibc rarely returns freed heap to the OS).

Options: ``system`` ("phast" or a PyAV peer of :data:`hwbench.baseline.PEERS`), ``path``,
``clips`` (N), ``touch`` (random requests made on each clip after opening, so decoders and
caches hold what they hold in use), ``seed``,
``cache_dir`` (phast index store, normally already holding the index), ``threads``,
``workers`` (phast pool size; None = phast's default).

Result: ``rss0_mb`` (editor RSS after imports) and ``steps``, one per measured clip count
(1 and N): editor RSS/USS, editor RSS delta, and RSS/USS/PSS of each worker process.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from typing import Any

import psutil

from . import patterns, procstats

MB = procstats.MB


def probe(opts: dict[str, Any]) -> dict[str, Any]:
    """Open ``clips`` clips of ``path`` one after another; snapshot memory at 1 and N."""
    system, path, n_clips = opts["system"], opts["path"], int(opts["clips"])
    touch, seed = int(opts.get("touch", 5)), int(opts.get("seed", 1234))
    me = psutil.Process()
    opened: list[Any] = []
    pool = None
    if system == "phast":
        # Import what opening a clip imports before the baseline RSS is taken: module code is a
        # one-time cost of the editor, not of a clip (the pyav side imports av likewise).
        import diskcache  # noqa: F401

        import phast
        import phast.clip
        import phast.store

        pool = phast.WorkerPool(max_workers=opts.get("workers"))

        def open_one() -> Any:
            return phast.open(path, cache_dir=opts.get("cache_dir"), pool=pool, proxies=False,
                              backend_options={"threads": int(opts.get("threads", 0))})

        def request(clip: Any, i: int) -> None:
            with clip.frame(i):
                pass
    elif system.startswith("pyav-"):
        from .baseline import open_peer

        def open_one() -> Any:
            return open_peer(system, path, threads=int(opts.get("threads", 0)))

        def request(clip: Any, i: int) -> None:
            clip.frame(i)
    else:
        raise ValueError(f"unknown system {system!r}")

    gc.collect()
    rss0 = procstats.rss_bytes(me)
    steps = []
    try:
        for n in range(1, n_clips + 1):
            clip = open_one()
            opened.append(clip)
            for i in patterns.random_indices(len(clip), touch, seed + n):
                request(clip, i)
            if n in (1, n_clips):
                gc.collect()
                editor = procstats.process_memory(me)
                workers = procstats.children_memory()
                steps.append({
                    "clips": n,
                    "editor_rss_mb": editor["rss_mb"],
                    "editor_uss_mb": editor["uss_mb"],
                    "editor_delta_mb": (procstats.rss_bytes(me) - rss0) / MB,
                    "workers": workers,
                    "worker_count": len(workers),
                    "workers_rss_mb": sum(w["rss_mb"] or 0 for w in workers),
                    "workers_uss_mb": sum(w["uss_mb"] or 0 for w in workers),
                })
    finally:
        for clip in opened:
            clip.close()
        if pool is not None:
            pool.shutdown()
    return {"system": system, "touch": touch, "rss0_mb": rss0 / MB, "steps": steps}


def run_probe(opts: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    """Run :func:`probe` in a fresh interpreter; returns its result or ``{"error": ...}``."""
    try:
        done = subprocess.run([sys.executable, "-m", "hwbench.memprobe", json.dumps(opts)],
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"system": opts.get("system"), "error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"system": opts.get("system"),
                "error": f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"}
    try:
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"system": opts.get("system"), "error": f"bad output: {done.stdout[-500:]!r}"}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(probe(json.loads(args[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
