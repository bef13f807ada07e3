"""Machine and process accounting (busy CPU seconds, memory) and small statistics helpers.

The process tree's CPU time (editor + workers) and the logical core count come from
:mod:`phast.power` (``tree_cpu_seconds``, ``logical_cores``).
"""

from __future__ import annotations

import os
import platform
from typing import Any

import psutil

from phast.power import logical_cores

MB = 1 << 20


def system_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (busy = not idle, not iowait)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def self_cpu_seconds() -> float:
    """User + system CPU seconds of this process alone (all its threads), no descendants."""
    t = psutil.Process().cpu_times()
    return t.user + t.system


def rss_bytes(proc: psutil.Process | None = None) -> int:
    return int((proc or psutil.Process()).memory_info().rss)


def process_memory(proc: psutil.Process) -> dict[str, Any]:
    """RSS and USS (memory only this process holds) in MiB; USS needs /proc/PID/smaps."""
    try:
        full = proc.memory_full_info()
        return {"pid": proc.pid, "rss_mb": full.rss / MB, "uss_mb": full.uss / MB,
                "pss_mb": getattr(full, "pss", 0) / MB}
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
        return {"pid": proc.pid, "rss_mb": None, "uss_mb": None, "pss_mb": None}


def children_memory() -> list[dict[str, Any]]:
    """Memory of every live descendant of this process (phast's workers)."""
    return [process_memory(c) for c in psutil.Process().children(recursive=True)]


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile ``q`` (0-100) of ``values``; None when empty."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def host_info() -> dict[str, Any]:
    """Where the numbers were measured (CPU model, cores, library versions)."""
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores, source = logical_cores()
    info: dict[str, Any] = {"cpu": model, "logical_cores": cores, "cores_source": source,
                            "python": platform.python_version(), "platform": platform.platform(),
                            "loadavg_at_start": list(os.getloadavg())}
    try:
        import av

        info["pyav"] = av.__version__
        ver = av.ffmpeg_version_info
        info["ffmpeg"] = ".".join(map(str, ver)) if isinstance(ver, tuple) else str(ver)
    except ImportError:
        pass
    return info
