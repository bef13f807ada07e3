"""Power meters, TDP discovery and the idle baseline (read in the editor, never in workers).

* :func:`open_meter` gives a :class:`Meter`: RAPL package energy through Linux powercap
  (:mod:`phast.power.rapl`), NVIDIA GPU energy through NVML (:mod:`phast.power.nvml`), both
  ("rapl+nvml"), or -- on hosts with neither -- the CPU-time model
  (:mod:`phast.power.cpu`), whose figures are always labelled an estimate.
* :func:`discover_tdp` finds the watts a budget is a share of.
* :func:`measure_baseline` measures the power drawn before work starts, so that a budget
  counts marginal power only.
* :func:`tree_cpu_seconds` counts the CPU time of the editor and its workers from ``/proc``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..errors import InvalidArgument, MeterUnavailable, MissingDependency
from . import rapl
from .base import Baseline, Meter, Sample, measure_baseline
from .cpu import CpuTimeModel, logical_cores, process_cpu_seconds, tree_cpu_seconds
from .nvml import NvmlMeter
from .rapl import RaplMeter
from .tdp import DEFAULT_TDP_W, Tdp, discover_tdp

__all__ = [
    "DEFAULT_TDP_W",
    "METER_KINDS",
    "Baseline",
    "CombinedMeter",
    "CpuTimeModel",
    "Meter",
    "NvmlMeter",
    "RaplMeter",
    "Sample",
    "Tdp",
    "discover_tdp",
    "logical_cores",
    "measure_baseline",
    "open_meter",
    "process_cpu_seconds",
    "tree_cpu_seconds",
]

METER_KINDS = ("auto", "rapl", "nvml", "cpu")


class CombinedMeter:
    """RAPL packages plus NVML GPUs: one energy figure for the host's CPU and GPUs."""

    name = "rapl+nvml"
    estimate = False

    def __init__(self, cpu: RaplMeter, gpu: NvmlMeter) -> None:
        self.cpu, self.gpu = cpu, gpu
        self.label = (cpu.label.removesuffix(")") + "; "
                      + gpu.label.removeprefix("measured ("))

    def read(self) -> Sample:
        a, b = self.cpu.read(), self.gpu.read()
        return Sample(max(a.t, b.t), a.energy_j + b.energy_j, a.cpu_s)

    def utilisation(self) -> dict[str, dict[str, Any] | None]:
        return self.gpu.utilisation()

    def describe(self) -> dict[str, Any]:
        return {"meter": self.name, "meter_label": self.label, "estimate": False,
                "rapl": self.cpu.describe(), "nvml": self.gpu.describe(),
                "tdp_w": self.cpu.tdp_w, "tdp_source": self.cpu.tdp_source}

    def close(self) -> None:
        self.gpu.close()


def open_meter(kind: str = "auto", *, tdp: Tdp | None = None, root_pid: int | None = None,
               powercap_root: str = rapl.POWERCAP_ROOT, nvml: Any = None) -> Meter:
    """Open a power meter watching the process tree of ``root_pid`` (default: this process).

    ``kind``: "rapl", "nvml" or "cpu" force one (raising :class:`~phast.errors.MeterUnavailable`,
    :class:`~phast.errors.MeterPermissionDenied` or :class:`~phast.errors.MissingDependency`
    when it cannot run); "auto" takes RAPL if its counters are readable, plus NVML when an
    NVIDIA GPU is present ("rapl+nvml"), and the CPU-time model when neither is (its
    ``describe()["fallback"]`` says why). ``tdp`` defaults to :func:`discover_tdp`, with the
    GPUs' limits added when the meter includes them. ``nvml`` replaces the ``pynvml`` module.
    """
    if kind not in METER_KINDS:
        raise InvalidArgument(f"unknown meter {kind!r}; expected one of {', '.join(METER_KINDS)}")
    root = os.getpid() if root_pid is None else root_pid
    why: list[str] = []
    zones: tuple[list[rapl.Zone], dict[str, str]] | None = None
    gpu: NvmlMeter | None = None
    if kind in ("auto", "rapl"):
        try:
            zones = rapl.probe(powercap_root)
        except MeterUnavailable as e:
            if kind == "rapl":
                raise
            why.append(f"RAPL: {e}")
    if kind in ("auto", "nvml"):
        try:
            gpu = NvmlMeter(nvml, root_pid=root, cpu=zones is None)
        except (MeterUnavailable, MissingDependency) as e:
            if kind == "nvml":
                raise
            why.append(f"NVML: {e}")
    try:
        tdp = tdp or discover_tdp(powercap_root=powercap_root,
                                  nvml=gpu.nvml if gpu is not None else None)
    except BaseException:
        if gpu is not None:
            gpu.close()
        raise
    if gpu is not None:
        gpu.tdp_w, gpu.tdp_source = tdp.watts, tdp.source
    if zones is not None:
        cpu = RaplMeter(zones[0], skipped=zones[1], tdp_w=tdp.watts, tdp_source=tdp.source,
                        root_pid=root)
        return cpu if gpu is None else CombinedMeter(cpu, gpu)
    if gpu is not None:
        return gpu
    return CpuTimeModel(tdp.watts, root_pid=root, tdp_source=tdp.source, fallback=why)


def read_power(meter: Meter, seconds: float = 1.0) -> float:
    """Mean watts over ``seconds`` (meter read before and after; a CLI convenience)."""
    a = meter.read()
    time.sleep(seconds)
    b = meter.read()
    return (b.energy_j - a.energy_j) / max(b.t - a.t, 1e-9)
