"""What every power meter gives: cumulative :class:`Sample` readings; the idle baseline.

A meter is read in the editor process (never in a worker): it watches the whole process tree
(editor + workers) for CPU time and the host's counters (RAPL, NVML) for energy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import InvalidArgument


@dataclass(frozen=True)
class Sample:
    """A cumulative meter reading; differences of two samples give energy and CPU time."""

    t: float  #: ``time.monotonic()`` when it was read
    energy_j: float  #: joules since the meter was opened (measured or estimated: see the label)
    cpu_s: float | None  #: CPU seconds of the watched process tree (editor + workers), if known


class Meter(Protocol):
    """A source of cumulative energy readings (see :func:`phast.power.open_meter`)."""

    name: str  #: "rapl", "nvml", "rapl+nvml" or "cpu-time-model"
    estimate: bool  #: True only for the CPU-time model
    label: str  #: e.g. "measured (RAPL: package-0)" or "estimate (CPU-time model)"

    def read(self) -> Sample:
        """The current cumulative reading."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-able: zones/devices/paths, model text, TDP."""
        ...

    def close(self) -> None:
        """Release what the meter holds (NVML handle); reading after close is undefined."""
        ...


@dataclass(frozen=True)
class Baseline:
    """Mean power drawn before work starts: budgets count power *above* it (marginal power)."""

    watts: float
    seconds: float  #: how long it was measured (wall)
    meter: str  #: the meter's name


#: Reads during a baseline are at most this far apart: a meter that integrates power between
#: reads (NVML without an energy counter) needs more than two points.
BASELINE_STEP_S = 0.25


def measure_baseline(meter: Meter, seconds: float = 2.0) -> Baseline:
    """Sample ``meter`` for ``seconds`` (nothing else of ours running) and return mean watts.

    With RAPL/NVML this is the host's idle package (and GPU) power -- including other
    processes; with the CPU-time model it is the watched tree's idle CPU rate scaled to the TDP.
    """
    if not seconds > 0:
        raise InvalidArgument(f"baseline seconds must be positive, got {seconds!r}")
    first = meter.read()
    end = first.t + seconds
    last = first
    while last.t < end:
        time.sleep(min(BASELINE_STEP_S, max(end - time.monotonic(), 0.0)))
        last = meter.read()
    wall = last.t - first.t
    return Baseline((last.energy_j - first.energy_j) / wall, wall, meter.name)
