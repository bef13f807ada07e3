"""Process-tree accounting (CPU seconds, memory) and small statistics helpers.

"Process tree" means this (editor) process plus every descendant: phast's workers are children
of the editor. CPU time of descendants that already exited and were reaped is included through
the editor's ``children_user``/``children_system`` counters, so a worker that retires during a
measurement does not make CPU time vanish.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import psutil

MB = 1 << 20


def tree_cpu_seconds(root: psutil.Process | None = None) -> float:
    """User + system CPU seconds used so far by ``root`` (default: this process) and all its
    descendants, live or reaped."""
    proc = root or psutil.Process()
    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in proc.children(recursive=True):
        try:
            ct = child.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # gone between listing and reading: its time moves to children_* later
        total += ct.user + ct.system
    return total


def system_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (busy = not idle, not iowait)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def self_cpu_seconds() -> float:
    """User + system CPU seconds of this process alone (all its threads), no descendants."""
    t = psutil.Process().cpu_times()
    return t.user + t.system


def logical_cores() -> tuple[int, str]:
    """Logical cores this process may run on, and where the number came from."""
    try:
        return len(os.sched_getaffinity(0)), "sched_getaffinity"
    except (AttributeError, OSError):
        return psutil.cpu_count(logical=True) or 1, "psutil.cpu_count"


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
