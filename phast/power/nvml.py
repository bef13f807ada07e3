"""NVIDIA GPU energy through NVML (``nvidia-ml-py``, module ``pynvml``; extra ``nvml``).

Per GPU, energy comes from the driver's total-energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, mJ, Volta and later) when the device has one; else
the board power (``nvmlDeviceGetPowerUsage``, mW) is integrated over the meter's reads
(trapezoids), which is only as good as the read rate -- ``describe()`` says which per GPU.
The enforced power limit (``nvmlDeviceGetEnforcedPowerLimit``) is the GPU's share of the TDP;
decoder utilisation (``nvmlDeviceGetDecoderUtilization``) tells how busy NVDEC is.

``pynvml`` is imported only here, when a meter is opened; every function takes the module as
an argument so that a stand-in can be passed where no GPU is present.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..errors import MeterUnavailable, MissingDependency
from .base import Sample
from .cpu import tree_cpu_or_none


def load_nvml(nvml: Any = None) -> Any:
    """``nvml`` if given, else the ``pynvml`` module (raises naming the extra when missing)."""
    if nvml is not None:
        return nvml
    try:
        import pynvml
    except ImportError as e:
        raise MissingDependency("GPU power metering needs NVML: pip install 'phast[nvml]' "
                                "(nvidia-ml-py)") from e
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Gpu:
    """One device's cumulative energy, by counter or by integrating power over reads."""

    def __init__(self, nvml: Any, index: int) -> None:
        self.nvml, self.index = nvml, index
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.name = _text(nvml.nvmlDeviceGetName(self.handle))
        self.t = time.monotonic()
        try:
            self.counter0: int | None = nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except nvml.NVMLError:
            self.counter0 = None  # no energy counter (pre-Volta, some boards): integrate power
            self.power_w = nvml.nvmlDeviceGetPowerUsage(self.handle) / 1e3
        self.energy_j = 0.0

    @property
    def method(self) -> str:
        return ("energy counter" if self.counter0 is not None
                else "power integrated over reads")

    def update(self, t: float) -> float:
        if self.counter0 is not None:
            now = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self.energy_j = (now - self.counter0) / 1e3
        else:
            power = self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1e3
            self.energy_j += (self.power_w + power) / 2 * (t - self.t)
            self.power_w = power
        self.t = t
        return self.energy_j

    def limit_w(self) -> float | None:
        try:
            return float(self.nvml.nvmlDeviceGetEnforcedPowerLimit(self.handle)) / 1e3
        except self.nvml.NVMLError:
            return None

    def decoder(self) -> dict[str, Any] | None:
        try:
            util, period_us = self.nvml.nvmlDeviceGetDecoderUtilization(self.handle)
        except self.nvml.NVMLError:
            return None
        return {"decoder_pct": util, "sampling_period_us": period_us}


def _start(nvml: Any) -> int:
    """nvmlInit and the GPU count; raises :class:`MeterUnavailable` (shut down again) if none."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        raise MeterUnavailable(f"NVML did not start (no NVIDIA driver?): {e}") from e
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except nvml.NVMLError as e:
        nvml.nvmlShutdown()
        raise MeterUnavailable(f"NVML cannot count GPUs: {e}") from e
    if count == 0:
        nvml.nvmlShutdown()
        raise MeterUnavailable("NVML sees no NVIDIA GPU")
    return count


def power_limits(nvml: Any) -> dict[str, float]:
    """Enforced power limit in watts per GPU ("gpu0", ...); GPUs that do not say are left out."""
    count = _start(nvml)
    try:
        limits = {}
        for i in range(count):
            w = _Gpu(nvml, i).limit_w()
            if w:
                limits[f"gpu{i}"] = w
        return limits
    finally:
        nvml.nvmlShutdown()


class NvmlMeter:
    """Sum of every GPU's energy since the meter was opened."""

    name = "nvml"
    estimate = False

    def __init__(self, nvml: Any = None, *, tdp_w: float | None = None, tdp_source: str = "",
                 root_pid: int | None = None, cpu: bool = True) -> None:
        self.nvml = load_nvml(nvml)
        count = _start(self.nvml)
        try:
            self.gpus = [_Gpu(self.nvml, i) for i in range(count)]
        except self.nvml.NVMLError as e:
            self.nvml.nvmlShutdown()
            raise MeterUnavailable(f"NVML failed while opening the GPUs: {e}") from e
        self.tdp_w, self.tdp_source = tdp_w, tdp_source
        self.root_pid = os.getpid() if root_pid is None else root_pid
        self._cpu, self._closed = cpu, False
        self.label = "measured (NVML: " + ", ".join(
            f"GPU {g.index} {g.method}" for g in self.gpus) + ")"

    def read(self) -> Sample:
        t = time.monotonic()
        try:
            energy = sum(g.update(t) for g in self.gpus)
        except self.nvml.NVMLError as e:
            raise MeterUnavailable(f"NVML read failed: {e}") from e
        return Sample(t, energy, tree_cpu_or_none(self.root_pid) if self._cpu else None)

    def utilisation(self) -> dict[str, dict[str, Any] | None]:
        """Decoder utilisation per GPU ("gpu0": {"decoder_pct", "sampling_period_us"})."""
        return {f"gpu{g.index}": g.decoder() for g in self.gpus}

    def describe(self) -> dict[str, Any]:
        return {"meter": self.name, "meter_label": self.label, "estimate": False,
                "devices": [{"gpu": g.index, "name": g.name, "energy": g.method,
                             "power_limit_w": g.limit_w(), "decoder": g.decoder()}
                            for g in self.gpus],
                "tdp_w": self.tdp_w, "tdp_source": self.tdp_source}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.nvml.nvmlShutdown()
