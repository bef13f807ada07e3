"""phast.power: RAPL over a fake powercap tree, NVML through a fake module, the CPU-time model
against real processes, TDP discovery, the idle baseline and ``phast power``.

The powercap trees and the NVML module are stand-ins for hardware this machine lacks; the
process-tree CPU accounting runs on real child processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from phast import power
from phast.cli import main as phast_main
from phast.errors import (
    InvalidArgument,
    MeterPermissionDenied,
    MeterUnavailable,
    MissingDependency,
    PhastError,
)
from phast.power import nvml as power_nvml
from phast.power import rapl

# -- a fake powercap tree ---------------------------------------------------------------------


def zone(root: Path, key: str, name: str, energy_uj: int, *, max_uj: int = 262143328850,
         pl1_uw: int | None = None, parent: Path | None = None) -> Path:
    """One zone directory (nested under ``parent`` for a subzone, as sysfs has them)."""
    d = (parent or root) / key
    d.mkdir()
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    if pl1_uw is not None:
        for i, (cname, uw) in enumerate((("long_term", pl1_uw), ("short_term", 2 * pl1_uw))):
            (d / f"constraint_{i}_name").write_text(cname + "\n")
            (d / f"constraint_{i}_power_limit_uw").write_text(f"{uw}\n")
    return d


def set_energy(d: Path, uj: int) -> None:
    (d / "energy_uj").write_text(f"{uj}\n")


@pytest.fixture
def laptop(tmp_path: Path) -> dict[str, Path]:
    """package-0 (core, uncore subzones), psys, and the MMIO duplicate of package-0."""
    root = tmp_path / "powercap"
    root.mkdir()
    pkg = zone(root, "intel-rapl:0", "package-0", 1_000_000, pl1_uw=28_000_000)
    core = zone(root, "intel-rapl:0:0", "core", 500_000, parent=pkg)
    zone(root, "intel-rapl:0:1", "uncore", 100_000, parent=pkg)
    psys = zone(root, "intel-rapl:1", "psys", 9_000_000, pl1_uw=40_000_000)
    mmio = zone(root, "intel-rapl-mmio:0", "package-0", 7_000_000, pl1_uw=15_000_000)
    # the flat view sysfs also gives: a link to the subzone at the top
    (root / "intel-rapl:0:0").symlink_to(core)
    return {"root": root, "pkg": pkg, "core": core, "psys": psys, "mmio": mmio}


@pytest.fixture(autouse=True)
def no_env_tdp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHAST_TDP_W", raising=False)


def test_rapl_counts_packages_only(laptop: dict[str, Path]) -> None:
    meter = power.open_meter("rapl", powercap_root=str(laptop["root"]))
    assert isinstance(meter, power.RaplMeter)
    assert meter.name == "rapl" and meter.estimate is False
    assert meter.label == "measured (RAPL: package-0)"
    s0 = meter.read()
    assert s0.energy_j == 0.0 and s0.cpu_s is not None and s0.cpu_s > 0
    set_energy(laptop["pkg"], 3_500_000)
    set_energy(laptop["core"], 2_000_000)  # subzone: inside the package's figure already
    set_energy(laptop["psys"], 99_000_000)  # the platform: contains the package
    set_energy(laptop["mmio"], 8_000_000)  # the same package again
    s1 = meter.read()
    assert s1.energy_j == 2.5
    assert s1.t >= s0.t
    desc = meter.describe()
    assert [z["zone"] for z in desc["zones"]] == ["intel-rapl:0"]
    assert set(desc["skipped_zones"]) == {"intel-rapl:0:0", "intel-rapl:0:1", "intel-rapl:1",
                                          "intel-rapl-mmio:0"}
    assert "MMIO" in desc["skipped_zones"]["intel-rapl-mmio:0"]
    assert "platform" in desc["skipped_zones"]["intel-rapl:1"]
    json.dumps(desc)


def test_rapl_sums_packages_and_uses_psys_only_without_them(tmp_path: Path) -> None:
    root = tmp_path / "two"
    root.mkdir()
    p0 = zone(root, "intel-rapl:0", "package-0", 10)
    p1 = zone(root, "intel-rapl:1", "package-1", 20)
    meter = power.open_meter("rapl", powercap_root=str(root), tdp=power.Tdp(100.0, "t"))
    set_energy(p0, 1_000_010)
    set_energy(p1, 2_000_020)
    assert meter.read().energy_j == 3.0
    assert meter.label == "measured (RAPL: package-0, package-1)"

    root = tmp_path / "psys-only"
    root.mkdir()
    ps = zone(root, "intel-rapl:1", "psys", 0)
    meter = power.open_meter("rapl", powercap_root=str(root), tdp=power.Tdp(10.0, "t"))
    set_energy(ps, 1_250_000)
    assert meter.read().energy_j == 1.25
    assert meter.label == "measured (RAPL: psys)"


def test_rapl_mmio_counts_when_it_is_the_only_interface(tmp_path: Path) -> None:
    root = tmp_path / "mmio"
    root.mkdir()
    z = zone(root, "intel-rapl-mmio:0", "package-0", 5)
    meter = power.open_meter("rapl", powercap_root=str(root), tdp=power.Tdp(10.0, "t"))
    set_energy(z, 500_005)
    assert meter.read().energy_j == 0.5


def test_rapl_wraparound(tmp_path: Path) -> None:
    root = tmp_path / "wrap"
    root.mkdir()
    z = zone(root, "intel-rapl:0", "package-0", 900_000, max_uj=999_999)
    meter = power.open_meter("rapl", powercap_root=str(root), tdp=power.Tdp(15.0, "t"))
    set_energy(z, 950_000)
    assert meter.read().energy_j == pytest.approx(0.05, abs=1e-12)
    set_energy(z, 100_000)  # wrapped: 950000 -> 999999 -> 0 -> 100000
    assert meter.read().energy_j == pytest.approx(0.2, abs=1e-12)
    set_energy(z, 300_000)
    assert meter.read().energy_j == pytest.approx(0.4, abs=1e-12)
    # the counter holds 1 J, at 15 W it wraps every 1/15 s: reads must come faster than that
    assert meter.wrap_period_s == pytest.approx(0.999999 / 15)
    assert meter.max_poll_interval_s == pytest.approx(meter.wrap_period_s / rapl.WRAP_SAFETY)
    assert meter.describe()["wrap_period_s"] == meter.wrap_period_s
    late = meter.describe()["late_reads"]
    time.sleep(meter.max_poll_interval_s * 1.5)
    meter.read()
    assert meter.describe()["late_reads"] == late + 1


def test_rapl_root_only_counter(laptop: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    real = rapl.read_sysfs

    def root_only(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(rapl, "read_sysfs", root_only)
    with pytest.raises(MeterPermissionDenied) as info:
        power.open_meter("rapl", powercap_root=str(laptop["root"]))
    e = info.value
    assert isinstance(e, PermissionError) and isinstance(e, MeterUnavailable)
    assert isinstance(e, PhastError)
    msg = str(e)
    assert str(laptop["pkg"] / "energy_uj") in msg
    for fix in ("run as root", "chmod a+r", "udev", "--meter cpu"):
        assert fix in msg, fix
    # auto falls back to the CPU-time model and says why
    meter = power.open_meter("auto", powercap_root=str(laptop["root"]), nvml=FakeNvml([]))
    assert meter.name == "cpu-time-model" and meter.estimate
    assert any("readable by root only" in why for why in meter.describe()["fallback"])


def test_no_rapl(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable, match="no RAPL package zone"):
        power.open_meter("rapl", powercap_root=str(tmp_path))
    with pytest.raises(InvalidArgument, match="unknown meter"):
        power.open_meter("battery", powercap_root=str(tmp_path))


# -- TDP ----------------------------------------------------------------------------------------


def test_tdp_discovery_order(laptop: dict[str, Path], tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = str(laptop["root"])
    # RAPL PL1: package-0 has 28 W through MSR and 15 W through MMIO; the lower one is enforced
    tdp = power.discover_tdp(powercap_root=root)
    assert tdp.watts == 15.0 and tdp.parts == {"package-0": 15.0}
    assert tdp.source.startswith("RAPL long_term (PL1)")
    assert str(laptop["mmio"] / "constraint_0_power_limit_uw") in tdp.source
    monkeypatch.setenv("PHAST_TDP_W", "28")
    assert power.discover_tdp(powercap_root=root) == power.Tdp(28.0, "PHAST_TDP_W",
                                                               {"total": 28.0})
    assert power.discover_tdp(45, powercap_root=root) == power.Tdp(45.0, "setting",
                                                                   {"total": 45.0})
    monkeypatch.setenv("PHAST_TDP_W", "lots")
    with pytest.raises(InvalidArgument, match="PHAST_TDP_W"):
        power.discover_tdp(powercap_root=root)
    monkeypatch.setenv("PHAST_TDP_W", "-3")
    with pytest.raises(InvalidArgument):
        power.discover_tdp(powercap_root=root)
    with pytest.raises(InvalidArgument):
        power.discover_tdp(0)
    monkeypatch.delenv("PHAST_TDP_W")
    empty = tmp_path / "none"
    empty.mkdir()
    tdp = power.discover_tdp(powercap_root=str(empty))
    assert tdp.watts == power.DEFAULT_TDP_W == 15.0 and tdp.source.startswith("default")


def test_two_packages_pl1_summed_and_gpu_limits_added(tmp_path: Path) -> None:
    root = tmp_path / "server"
    root.mkdir()
    zone(root, "intel-rapl:0", "package-0", 0, pl1_uw=125_000_000)
    zone(root, "intel-rapl:1", "package-1", 0, pl1_uw=125_000_000)
    tdp = power.discover_tdp(powercap_root=str(root))
    assert tdp.watts == 250.0 and tdp.parts == {"package-0": 125.0, "package-1": 125.0}
    nv = FakeNvml([FakeGpu(limit_mw=70_000), FakeGpu(limit_mw=300_000)])
    tdp = power.discover_tdp(powercap_root=str(root), nvml=nv)
    assert tdp.watts == 620.0 and tdp.parts["gpu1"] == 300.0
    assert "NVML enforced power limit (gpu0, gpu1)" in tdp.source
    assert nv.inits == nv.shutdowns == 1


def test_amd_zone_without_constraints(tmp_path: Path) -> None:
    root = tmp_path / "amd"
    root.mkdir()
    pkg = zone(root, "intel-rapl:0", "package-0", 42)
    zone(root, "intel-rapl:0:0", "core", 7, parent=pkg)
    meter = power.open_meter("auto", powercap_root=str(root), nvml=FakeNvml([]))
    assert meter.name == "rapl"
    assert meter.describe()["tdp_source"].startswith("default")  # no PL1 file to read
    set_energy(pkg, 2_000_042)
    assert meter.read().energy_j == 2.0


# -- a fake NVML module ------------------------------------------------------------------------


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # pynvml's name
    pass


class FakeGpu:
    def __init__(self, *, energy_mj: int | None = 0, power_mw: int = 0,
                 limit_mw: int = 100_000, decoder: int = 0, name: Any = "Fake GPU") -> None:
        self.energy_mj, self.power_mw, self.limit_mw = energy_mj, power_mw, limit_mw
        self.decoder, self.name = decoder, name


class FakeNvml:
    """The pynvml functions phast.power uses, over a list of :class:`FakeGpu`."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported

    def __init__(self, gpus: list[FakeGpu], *, init_fails: bool = False) -> None:
        self.gpus, self.init_fails = gpus, init_fails
        self.inits = self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.init_fails:
            raise NVMLError("Driver Not Loaded")
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        return self.gpus[i]

    def nvmlDeviceGetName(self, h: FakeGpu) -> Any:
        return h.name

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeGpu) -> int:
        if h.energy_mj is None:
            raise NVMLError_NotSupported("Not Supported")
        return h.energy_mj

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        return h.power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeGpu) -> int:
        return h.limit_mw

    def nvmlDeviceGetDecoderUtilization(self, h: FakeGpu) -> list[int]:
        return [h.decoder, 167_000]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_nvml_counter_and_power_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(power_nvml, "time", clock)
    counter = FakeGpu(energy_mj=5_000_000, limit_mw=70_000, decoder=37, name=b"Tesla T4")
    old = FakeGpu(energy_mj=None, power_mw=40_000, limit_mw=250_000, name="GTX 1080")
    nv = FakeNvml([counter, old])
    meter = power.open_meter("nvml", nvml=nv, tdp=power.Tdp(100.0, "t"))
    assert isinstance(meter, power.NvmlMeter) and meter.name == "nvml" and not meter.estimate
    assert meter.label == ("measured (NVML: GPU 0 energy counter, "
                           "GPU 1 power integrated over reads)")
    clock.now += 2.0
    counter.energy_mj += 30_000  # 30 J
    old.power_mw = 60_000  # 40 W -> 60 W over 2 s: 100 J
    s = meter.read()
    assert s.energy_j == 130.0 and s.t == clock.now
    clock.now += 1.0
    counter.energy_mj += 500
    s = meter.read()  # + 0.5 J + 60 W x 1 s
    assert s.energy_j == 190.5
    desc = meter.describe()
    assert [d["name"] for d in desc["devices"]] == ["Tesla T4", "GTX 1080"]
    assert [d["power_limit_w"] for d in desc["devices"]] == [70.0, 250.0]
    assert desc["devices"][1]["energy"] == "power integrated over reads"
    assert meter.utilisation()["gpu0"] == {"decoder_pct": 37, "sampling_period_us": 167_000}
    json.dumps(desc)
    meter.close()
    meter.close()
    assert nv.inits == nv.shutdowns == 1


def test_nvml_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable, match="no NVIDIA GPU"):
        power.open_meter("nvml", nvml=FakeNvml([]))
    broken = FakeNvml([FakeGpu()], init_fails=True)
    with pytest.raises(MeterUnavailable, match="Driver Not Loaded"):
        power.open_meter("nvml", nvml=broken)
    meter = power.open_meter("auto", nvml=broken, powercap_root=str(tmp_path))
    assert meter.name == "cpu-time-model"
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as if nvidia-ml-py were not installed
    with pytest.raises(MissingDependency, match=r"phast\[nvml\]"):
        power.open_meter("nvml")


def test_auto_combines_rapl_and_nvml(laptop: dict[str, Path]) -> None:
    gpu = FakeGpu(energy_mj=1_000, limit_mw=70_000)
    nv = FakeNvml([gpu])
    meter = power.open_meter("auto", powercap_root=str(laptop["root"]), nvml=nv)
    assert isinstance(meter, power.CombinedMeter)
    assert meter.name == "rapl+nvml" and not meter.estimate
    assert meter.label == "measured (RAPL: package-0; NVML: GPU 0 energy counter)"
    desc = meter.describe()
    assert desc["tdp_w"] == 15.0 + 70.0  # package PL1 + the GPU's enforced limit
    assert "NVML enforced power limit" in desc["tdp_source"]
    set_energy(laptop["pkg"], 2_000_000)
    gpu.energy_mj += 4_000
    s = meter.read()
    assert s.energy_j == 1.0 + 4.0 and s.cpu_s is not None
    meter.close()
    assert nv.shutdowns == nv.inits


# -- process-tree CPU time and the CPU-time model --------------------------------------------

BUSY = ("import time\nt = time.process_time()\n"
        "while time.process_time() - t < {s}:\n    pass\n")


def test_cpu_model_counts_a_busy_child() -> None:
    meter = power.open_meter("cpu", tdp=power.Tdp(10.0, "t"))
    assert isinstance(meter, power.CpuTimeModel)
    assert meter.estimate and meter.label == "estimate (CPU-time model)"
    cores = meter.describe()["logical_cores"]
    s0 = meter.read()
    assert s0.cpu_s is not None
    child = subprocess.Popen([sys.executable, "-c", BUSY.format(s=0.6)])
    try:
        deadline = time.monotonic() + 60
        while power.process_cpu_seconds(child.pid) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.02)
        child_cpu = power.process_cpu_seconds(child.pid)  # first: it keeps running meanwhile
        alive = meter.read()
        # /proc counts in clock ticks and the tree sums ~200 s of them: one tick of slack for
        # the float subtraction (197.29 - 196.97 < 0.32)
        tick = 1 / os.sysconf("SC_CLK_TCK")
        assert alive.cpu_s is not None and alive.cpu_s - s0.cpu_s >= child_cpu - tick
        assert child_cpu >= 0.3
    finally:
        child.wait(timeout=60)
    # reaped: its time now counts through our cutime/cstime, nothing vanishes
    s1 = meter.read()
    assert s1.cpu_s is not None and s1.cpu_s - s0.cpu_s >= 0.6 - 0.02
    assert s1.energy_j - s0.energy_j == pytest.approx((s1.cpu_s - s0.cpu_s) / cores * 10.0)
    assert meter.describe()["model"].startswith("energy_j = process-tree CPU s")
    with pytest.raises(ProcessLookupError):
        power.process_cpu_seconds(child.pid)


def test_tree_of_another_root_includes_grandchildren() -> None:
    code = ("import subprocess, sys\n"
            f"subprocess.run([sys.executable, '-c', {BUSY.format(s=0.4)!r}])\n"
            "sys.stdin.read()\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tree = power.tree_cpu_seconds(parent.pid)
            own = power.process_cpu_seconds(parent.pid)
            if tree - own >= 0.4 - 0.02:  # the reaped grandchild, through the parent's cutime
                break
            time.sleep(0.05)
        assert tree - own >= 0.4 - 0.02
    finally:
        assert parent.stdin is not None
        parent.stdin.close()
        parent.wait(timeout=60)
    with pytest.raises(ProcessLookupError):
        power.tree_cpu_seconds(parent.pid)


# -- baseline ---------------------------------------------------------------------------------


class SteadyMeter:
    """Energy growing at exactly 5 W of the real monotonic clock (tests the arithmetic)."""

    name, estimate, label = "steady", False, "measured (steady)"

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def read(self) -> power.Sample:
        t = time.monotonic()
        return power.Sample(t, 5.0 * (t - self.t0), None)

    def describe(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        return None


def test_baseline() -> None:
    base = power.measure_baseline(SteadyMeter(), 0.3)
    assert base.watts == pytest.approx(5.0) and base.meter == "steady"
    assert 0.3 <= base.seconds < 5
    idle = power.measure_baseline(power.open_meter("cpu", tdp=power.Tdp(15.0, "t")), 0.3)
    assert idle.meter == "cpu-time-model" and 0.0 <= idle.watts < 15.0
    with pytest.raises(InvalidArgument):
        power.measure_baseline(SteadyMeter(), 0)


def test_phast_power_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert phast_main(["power", "--meter", "cpu", "--tdp", "20", "--seconds", "0.2",
                       "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["meter"] == "cpu-time-model" and info["estimate"] is True
    assert info["tdp_w"] == 20.0 and info["tdp_source"] == "setting"
    assert info["power_w"] >= 0
    assert phast_main(["power", "--meter", "cpu", "--seconds", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "estimate (CPU-time model)" in out and "tdp: 15 W" in out
    if not os.path.isdir("/sys/class/powercap"):
        assert phast_main(["power", "--meter", "rapl", "--seconds", "0.2"]) == 1
        assert "no RAPL package zone" in capsys.readouterr().err
