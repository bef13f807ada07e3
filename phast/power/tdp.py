"""The power the budget is measured against: :func:`discover_tdp`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgument, MeterUnavailable
from . import nvml as _nvml
from . import rapl

#: A typical laptop U-series CPU package, used when nothing better is known.
DEFAULT_TDP_W = 15.0


@dataclass(frozen=True)
class Tdp:
    """Thermal design power in watts, where it came from, and its parts."""

    watts: float
    source: str  #: "setting", "PHAST_TDP_W", "RAPL long_term (PL1): <files>", "default ..."
    parts: dict[str, float] = field(default_factory=dict)  #: e.g. {"package-0": 15.0}


def _positive(value: float, what: str) -> float:
    if not value > 0:
        raise InvalidArgument(f"{what} must be a positive number of watts, got {value!r}")
    return float(value)


def discover_tdp(setting: float | None = None, *, powercap_root: str = rapl.POWERCAP_ROOT,
                 nvml: Any = None) -> Tdp:
    """The TDP, first found of:

    1. ``setting`` (an explicit argument: the whole figure, GPUs included);
    2. ``$PHAST_TDP_W`` (likewise);
    3. the RAPL ``long_term`` (PL1) limit of every package, summed (see
       :func:`phast.power.rapl.long_term_limits`), else the 15 W default for the CPU --
       plus, when ``nvml`` (the ``pynvml`` module or a stand-in) is given, each GPU's enforced
       power limit.
    """
    if setting is not None:
        w = _positive(setting, "the TDP setting")
        return Tdp(w, "setting", {"total": w})
    env = os.environ.get("PHAST_TDP_W")
    if env:
        try:
            value = float(env)
        except ValueError as e:
            raise InvalidArgument(f"PHAST_TDP_W must be a number of watts, got {env!r}") from e
        w = _positive(value, "PHAST_TDP_W")
        return Tdp(w, "PHAST_TDP_W", {"total": w})
    parts, files = rapl.long_term_limits(powercap_root)
    if parts:
        source = "RAPL long_term (PL1): " + ", ".join(files)
    else:
        parts = {"cpu": DEFAULT_TDP_W}
        source = f"default ({DEFAULT_TDP_W:g} W for the whole CPU package)"
    if nvml is not None:
        try:
            gpus = _nvml.power_limits(nvml)
        except MeterUnavailable:
            gpus = {}
        if gpus:
            parts = {**parts, **gpus}
            source += " + NVML enforced power limit (" + ", ".join(gpus) + ")"
    return Tdp(sum(parts.values()), source, parts)
