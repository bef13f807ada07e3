"""RAPL energy counters through Linux powercap (``/sys/class/powercap``).

Zones. powercap lists ``intel-rapl:N`` (top-level zones: ``package-N``, on laptops also
``psys``) and their subzones ``intel-rapl:N:M`` (``core``, ``uncore``, ``dram``), and on recent
Intel parts ``intel-rapl-mmio:N``: a second interface to the *same* package (its power limits
live there), listed under the same zone name. AMD parts expose ``package-N`` zones through the
same driver, often without constraint files: their energy counts, their TDP comes from elsewhere.

What is counted (one number, never a part twice):

* only top-level zones -- a subzone's energy is already in its parent's;
* an ``intel-rapl-mmio`` zone only when no ``intel-rapl`` zone has its name (same package);
* the ``package-*`` zones, summed; ``psys`` (the whole platform, which *contains* the packages)
  only when there is no package zone. Packages are preferred because the budget is set
  against the package TDP (PL1); ``psys`` is listed by :meth:`RaplMeter.describe` but not added.

Wraparound. ``energy_uj`` counts up to ``max_energy_range_uj`` and starts again at 0; a reading
below the previous one has wrapped once and ``max_energy_range_uj + 1`` is added. Several wraps
between two readings cannot be told from one: the meter must be read more often than the wrap
period (``max_energy_range_uj`` at full power -- hours at 15 W, minutes on a large server).
:attr:`RaplMeter.max_poll_interval_s` says how often; reads further apart are counted in
``describe()["late_reads"]`` (their energy may be short by whole wraps).

Permissions. Since CVE-2020-8694 ("Platypus") ``energy_uj`` is mode 0400: readable by root
only. That raises :class:`~phast.errors.MeterPermissionDenied`, whose message says what to do.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MeterPermissionDenied, MeterUnavailable
from .base import Sample
from .cpu import tree_cpu_or_none

POWERCAP_ROOT = "/sys/class/powercap"

#: Power can exceed PL1 for a while (PL2 bursts, typically up to ~2x PL1); reading this many
#: times faster than "max range at TDP" keeps a wrap from hiding between two reads.
WRAP_SAFETY = 4.0

_ZONE = re.compile(r"^(intel-rapl|intel-rapl-mmio):(\d+)((?::\d+)*)$")


def read_sysfs(path: Path) -> str:
    """Text of one sysfs attribute (the single place files are read; tests replace it)."""
    return path.read_text().strip()


@dataclass(frozen=True)
class Zone:
    """One powercap zone directory."""

    key: str  #: directory name, e.g. "intel-rapl:0" or "intel-rapl:0:1"
    path: Path
    name: str  #: its ``name`` file, e.g. "package-0", "psys", "core"
    interface: str  #: "intel-rapl" or "intel-rapl-mmio"
    top: bool  #: a top-level zone (not a subzone)
    max_range_uj: int

    @property
    def energy_file(self) -> Path:
        return self.path / "energy_uj"


def list_zones(root: str | os.PathLike[str] = POWERCAP_ROOT) -> list[Zone]:
    """Every RAPL zone under ``root`` (flat or nested layout), sorted by directory name."""
    found: dict[str, Path] = {}
    todo = [Path(root)]
    while todo:
        d = todo.pop()
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for p in entries:
            if _ZONE.match(p.name) and p.is_dir() and p.name not in found:
                found[p.name] = p
                todo.append(p)
    zones = []
    for key, path in sorted(found.items()):
        m = _ZONE.match(key)
        assert m is not None
        try:
            name = read_sysfs(path / "name")
            max_range = int(read_sysfs(path / "max_energy_range_uj"))
        except (OSError, ValueError):
            continue  # not an energy zone (or a broken one): nothing to count
        zones.append(Zone(key, path, name, m.group(1), not m.group(3), max_range))
    return zones


def select_zones(zones: list[Zone]) -> tuple[list[Zone], dict[str, str]]:
    """The zones to sum (see the module docstring) and, for every other zone, why not."""
    skipped: dict[str, str] = {}
    msr_names = {z.name for z in zones if z.top and z.interface == "intel-rapl"}
    tops = []
    for z in zones:
        if not z.top:
            skipped[z.key] = "subzone: counted in its parent zone"
        elif z.interface == "intel-rapl-mmio" and z.name in msr_names:
            skipped[z.key] = f"same zone as intel-rapl {z.name} (MMIO interface)"
        else:
            tops.append(z)
    packages = [z for z in tops if z.name.startswith("package")]
    counted = packages or [z for z in tops if z.name == "psys"]
    for z in tops:
        if z not in counted:
            skipped[z.key] = ("platform zone: contains the packages, which are counted"
                              if z.name == "psys" else "not a package or platform zone")
    return counted, skipped


def permission_message(path: Path) -> str:
    return (f"the RAPL energy counter {path} is readable by root only (mode 0400 since "
            f"CVE-2020-8694): run as root, grant read access (`sudo chmod a+r "
            f"{path.parent.parent}/intel-rapl*/energy_uj`, lost at reboot; a udev rule on "
            f"SUBSYSTEM==\"powercap\" makes it stick), or use the CPU-time model (--meter cpu)")


def read_energy_uj(zone: Zone) -> int:
    """The zone's counter; raises :class:`MeterPermissionDenied` / :class:`MeterUnavailable`."""
    try:
        return int(read_sysfs(zone.energy_file))
    except PermissionError as e:
        raise MeterPermissionDenied(permission_message(zone.energy_file)) from e
    except (OSError, ValueError) as e:
        raise MeterUnavailable(f"cannot read RAPL counter {zone.energy_file}: {e}") from e


def probe(root: str | os.PathLike[str] = POWERCAP_ROOT) -> tuple[list[Zone], dict[str, str]]:
    """Zones to count, after one successful read of each; raises if RAPL is unusable here."""
    zones = list_zones(root)
    counted, skipped = select_zones(zones)
    if not counted:
        raise MeterUnavailable(
            f"no RAPL package zone under {root} (no powercap intel-rapl driver or not a "
            f"supported CPU); use --meter cpu for the CPU-time model")
    for z in counted:
        read_energy_uj(z)
    return counted, skipped


def long_term_limits(root: str | os.PathLike[str] = POWERCAP_ROOT
                     ) -> tuple[dict[str, float], list[str]]:
    """PL1 (``long_term`` constraint) in watts per package name, and the files read.

    A package listed twice (``intel-rapl`` and ``intel-rapl-mmio``) gets the lower limit: the
    hardware enforces both. Zones without constraint files (AMD) give nothing.
    """
    limits: dict[str, float] = {}
    files: list[str] = []
    for z in list_zones(root):
        if not (z.top and z.name.startswith("package")):
            continue
        for name_file in sorted(z.path.glob("constraint_*_name")):
            try:
                if read_sysfs(name_file) != "long_term":
                    continue
                limit_file = z.path / name_file.name.replace("_name", "_power_limit_uw")
                watts = int(read_sysfs(limit_file)) / 1e6
            except (OSError, ValueError):
                continue
            if watts > 0:
                limits[z.name] = min(watts, limits.get(z.name, watts))
                files.append(str(limit_file))
    return limits, files


class RaplMeter:
    """Sum of the selected RAPL zones' energy since the meter was opened."""

    name = "rapl"
    estimate = False

    def __init__(self, zones: list[Zone], *, tdp_w: float, tdp_source: str = "",
                 skipped: dict[str, str] | None = None, root_pid: int | None = None,
                 cpu: bool = True) -> None:
        if not zones:
            raise MeterUnavailable("no RAPL zone to count")
        self.zones, self.skipped = zones, dict(skipped or {})
        self.tdp_w, self.tdp_source = tdp_w, tdp_source
        self.root_pid = os.getpid() if root_pid is None else root_pid
        self._cpu = cpu
        self.label = "measured (RAPL: " + ", ".join(z.name for z in zones) + ")"
        #: seconds for the fastest-wrapping counted zone to wrap at the TDP
        self.wrap_period_s = min(z.max_range_uj for z in zones) / 1e6 / tdp_w
        #: read at least this often so no wrap goes unseen (also at bursts above the TDP)
        self.max_poll_interval_s = self.wrap_period_s / WRAP_SAFETY
        self.late_reads = 0
        self._last = [read_energy_uj(z) for z in zones]
        self._total_uj = 0
        self._t = time.monotonic()

    def read(self) -> Sample:
        raw = [read_energy_uj(z) for z in self.zones]
        t = time.monotonic()
        if t - self._t > self.max_poll_interval_s:
            self.late_reads += 1
        for i, (z, now) in enumerate(zip(self.zones, raw, strict=True)):
            delta = now - self._last[i]
            if delta < 0:  # wrapped (once: see the module docstring)
                delta += z.max_range_uj + 1
            self._total_uj += delta
        self._last, self._t = raw, t
        cpu = tree_cpu_or_none(self.root_pid) if self._cpu else None
        return Sample(t, self._total_uj / 1e6, cpu)

    def describe(self) -> dict[str, Any]:
        return {"meter": self.name, "meter_label": self.label, "estimate": False,
                "zones": [{"zone": z.key, "name": z.name, "path": str(z.energy_file),
                           "max_energy_range_uj": z.max_range_uj} for z in self.zones],
                "skipped_zones": self.skipped,
                "wrap_period_s": self.wrap_period_s,
                "max_poll_interval_s": self.max_poll_interval_s,
                "late_reads": self.late_reads,
                "tdp_w": self.tdp_w, "tdp_source": self.tdp_source}

    def close(self) -> None:
        return None
