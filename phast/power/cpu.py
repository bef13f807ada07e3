"""Process-tree CPU time from ``/proc``, and the CPU-time power model built on it.

The model is for hosts with neither RAPL nor NVML: it knows nothing of power and says so in its
label ("estimate (CPU-time model)")::

    energy_j = tree CPU seconds / logical cores x tdp_w

i.e. a fully busy package draws its TDP and an idle one nothing (idle and uncore power,
frequency scaling and other processes are ignored).
"""

from __future__ import annotations

import os
import time
from typing import Any

from .base import Sample

MODEL_TEXT = ("energy_j = process-tree CPU s / logical cores x tdp_w "
              "(a fully busy package draws its TDP; idle, uncore and other processes ignored)")

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """Fields of ``/proc/<pid>/stat`` after the command name (field 3, ``state``, is [0])."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError) as e:
        raise ProcessLookupError(f"no process {pid}") from e
    # The name (field 2) is in parentheses and may itself hold spaces and ')'.
    return raw[raw.rindex(")") + 2:].split()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads, live or exited).

    Raises :class:`ProcessLookupError` when the process is gone.
    """
    f = _stat_fields(pid)
    return (int(f[11]) + int(f[12])) / _TICK  # utime, stime (fields 14, 15)


def _scan() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, utime + stime + cutime + cstime in seconds) of every process."""
    out: dict[int, tuple[int, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            f = _stat_fields(int(name))
        except (ProcessLookupError, PermissionError):
            continue  # exited between listing and reading
        out[int(name)] = (int(f[1]), sum(int(v) for v in f[11:15]) / _TICK)
    return out


def tree_cpu_seconds(root_pid: int | None = None) -> float:
    """CPU seconds used so far by ``root_pid`` (default: this process) and its descendants.

    For every live process of the tree it adds ``utime + stime`` (its own threads) and
    ``cutime + cstime`` (the children it has *waited for*, with their own waited-for
    descendants). A worker that exits and is reaped during a measurement thus keeps counting,
    through its parent. Use differences: the absolute value also holds children reaped before
    the measurement began. Not counted: descendants orphaned to another reaper (init, a
    subreaper) once they exit, and children of a process that ignores ``SIGCHLD`` (the kernel
    reaps those without adding their time anywhere). Raises :class:`ProcessLookupError` when
    the root is gone.
    """
    root = os.getpid() if root_pid is None else root_pid
    procs = _scan()
    if root not in procs:
        raise ProcessLookupError(f"no process {root}")
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += procs[pid][1]
        todo.extend(children.get(pid, ()))
    return total


def tree_cpu_or_none(root_pid: int) -> float | None:
    """:func:`tree_cpu_seconds`, or None once the root is gone (for :attr:`Sample.cpu_s`)."""
    try:
        return tree_cpu_seconds(root_pid)
    except ProcessLookupError:
        return None


def logical_cores() -> tuple[int, str]:
    """Logical cores this process may run on, and where the number came from."""
    try:
        return len(os.sched_getaffinity(0)), "sched_getaffinity"
    except (AttributeError, OSError):
        return os.cpu_count() or 1, "os.cpu_count"


class CpuTimeModel:
    """Energy estimated from process-tree CPU time (see the module docstring)."""

    name = "cpu-time-model"
    estimate = True
    label = "estimate (CPU-time model)"

    def __init__(self, tdp_w: float, *, root_pid: int | None = None,
                 cores: int | None = None, tdp_source: str = "",
                 fallback: list[str] | None = None) -> None:
        self.tdp_w, self.tdp_source = tdp_w, tdp_source
        self.fallback = list(fallback or [])  #: why no measuring meter was used (auto)
        self.root_pid = os.getpid() if root_pid is None else root_pid
        self.cores, self.cores_source = ((cores, "argument") if cores else logical_cores())
        self._cpu0 = tree_cpu_seconds(self.root_pid)

    def read(self) -> Sample:
        cpu = tree_cpu_seconds(self.root_pid)
        return Sample(time.monotonic(), (cpu - self._cpu0) / self.cores * self.tdp_w, cpu)

    def describe(self) -> dict[str, Any]:
        return {"meter": self.name, "meter_label": self.label, "estimate": True,
                "model": MODEL_TEXT, "tdp_w": self.tdp_w, "tdp_source": self.tdp_source,
                "logical_cores": self.cores, "cores_source": self.cores_source,
                "root_pid": self.root_pid, "fallback": self.fallback}

    def close(self) -> None:
        return None
