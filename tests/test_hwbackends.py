"""Hardware backends: probes, auto selection, device-frame records, and (on a GPU) NVDEC.

Runs here: probe reasons, selection with recorded skips, ``phast backends``, the record checks
(plain data), mapping closure when a real worker process ends (IPC calls recorded by a stand-in:
the process and its ending are real, the GPU is not -- that part is not NVDEC done), what a GPU
worker is given (device patterns, no address-space cap: real workers, no hardware),
PyNvVideoCodec's errors typed (stand-in classes named as the library names them) and NVDEC's
own error path in real workers on a CPU decoder.
GPU tests (``nvdec``/``gpu`` markers) skip without the hardware, fail with PHAST_REQUIRE_GPU=1;
the ``vaapi`` one fails with PHAST_REQUIRE_GPU=vaapi (or ``all``). Tests that assume the hardware
is absent skip where it is present.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import phast
from phast import registry
from phast.cli import main
from phast.devframe import (
    DeviceMappings,
    DeviceSlots,
    build_frame,
    check_device_record,
    mappings_for,
)
from phast.errors import BackendUnavailable, DecodeError, ProtocolViolation, WorkerCrashed
from phast.probe import probe_backend
from phast.supervisor import Process, WorkerConfig

HANDLE = bytes(range(64))


# Tests about the *absence* of hardware assume it, and say so: on a host that has it they skip
# (they can only fail there, whatever phast does), so a GPU runner with PHAST_REQUIRE_GPU=1 can
# be green. The hardware tests themselves are marked (gpu, nvdec, vaapi: tests/gpu_gate.py).


def _nvdec_libraries_missing() -> list[str]:
    from importlib.util import find_spec

    return [m for m in ("PyNvVideoCodec", "cupy") if find_spec(m) is None]


def _pyav_has_vaapi() -> bool:
    from av.codec.hwaccel import hwdevices_available

    return "vaapi" in hwdevices_available()


def _hardware_host_checks_pass() -> list[str]:
    return [n for n in ("nvdec", "vaapi") if registry.host_check(n) is None]


without_nvdec_libraries = pytest.mark.skipif(
    not _nvdec_libraries_missing(),
    reason="PyNvVideoCodec and cupy are installed here: this test is about their absence")
without_pyav_vaapi = pytest.mark.skipif(
    _pyav_has_vaapi(), reason="this PyAV has VAAPI: this test is about a PyAV without it")
without_gpu_hardware = pytest.mark.skipif(
    bool(_hardware_host_checks_pass()),
    reason="this host may run a hardware backend (its cheap check passes), so auto may select "
           "it: this test is about a host without")


def record(**over: Any) -> dict[str, Any]:
    dev = {"alloc": 0, "alloc_size": 1 << 20, "handle": HANDLE.hex(),
           "planes": [[4096, 48, 192, 512]]}
    dev.update(over.pop("device", {}))
    rec = {"width": 64, "height": 48, "pix_fmt": "rgb24", "itemsize": 1, "key_frame": True,
           "device": dev}
    rec.update(over)
    return rec


# -- probes ---------------------------------------------------------------------------------------


@without_pyav_vaapi
def test_vaapi_probe_names_the_fix() -> None:
    from phast.backends.vaapi import VaapiBackend

    result = VaapiBackend.probe()
    assert result.available is False  # PyPI PyAV wheels carry no VAAPI
    assert "--no-binary av" in result.reason and "libva-dev" in result.reason
    assert "renderD" in result.reason


@without_nvdec_libraries
def test_nvdec_probe_says_why() -> None:
    result = probe_backend(registry.BUILTIN["nvdec"], 60)
    assert result["available"] is False
    assert "PyNvVideoCodec" in result["reason"] and "phast[nvdec]" in result["reason"]
    assert result["codecs"] == ["h264", "hevc"]


def test_host_checks_import_nothing() -> None:
    """On any host; the reasons are checked where what they name is absent."""
    import glob
    import sys

    before = set(sys.modules)
    nvdec, vaapi = registry.host_check("nvdec"), registry.host_check("vaapi")
    assert registry.host_check("software") is None
    assert not {"cupy", "PyNvVideoCodec", "av"} & (set(sys.modules) - before)
    if _nvdec_libraries_missing():
        assert "phast[nvdec]" in (nvdec or "")
    elif not os.path.exists("/dev/nvidiactl"):
        assert "/dev/nvidiactl" in (nvdec or "")
    if not glob.glob("/dev/dri/renderD*"):
        assert "renderD" in (vaapi or "")


def test_nvdec_host_check_wants_the_uvm_node(monkeypatch) -> None:
    """A sandboxed worker cannot create /dev/nvidia-uvm (CUDA runs nvidia-modprobe for it):
    without it the host check says how to make it, and workers get no NVDEC."""
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(os.path, "exists", lambda p: p == "/dev/nvidiactl")
    assert "nvidia-modprobe -u" in (registry.host_check("nvdec") or "")
    monkeypatch.setattr(os.path, "exists", lambda p: p in ("/dev/nvidiactl", "/dev/nvidia-uvm"))
    assert registry.host_check("nvdec") is None


def test_default_workers_grant_the_hardware_this_host_may_run(monkeypatch) -> None:
    """The default pool's workers import (and get the devices of) the hardware backends whose
    host check passes, so auto can select them; none on a host without them."""
    from phast.supervisor import WorkerConfig

    assert WorkerConfig().backends == registry.host_hardware_specs()
    if registry.host_check("nvdec") and registry.host_check("vaapi"):
        assert WorkerConfig().backends == ()
    monkeypatch.setattr(registry, "host_check", lambda name: None if name == "vaapi" else "no")
    assert WorkerConfig().backends == (registry.BUILTIN["vaapi"],)


def test_auto_order_puts_hardware_first() -> None:
    assert registry.AUTO_ORDER == ("nvdec", "vaapi", "software")
    assert [n for n, _ in registry.resolve("auto")] == ["nvdec", "vaapi", "software"]


def test_backends_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["NAME", "AVAILABLE", "ORIGIN", "CODECS"]
    rows = {line.split()[0]: line for line in out[1:]}
    assert rows["software"].split()[1] == "yes"
    assert "h264,hevc" in rows["nvdec"]
    if _nvdec_libraries_missing():  # its probe cannot pass
        assert rows["nvdec"].split()[1] == "no"
    if not _pyav_has_vaapi():
        assert rows["vaapi"].split()[1] == "no" and "--no-binary av" in rows["vaapi"]


# -- selection -----------------------------------------------------------------------------------


@without_gpu_hardware
def test_auto_picks_software_and_records_why(make: Any, cache_dir: Path) -> None:
    path = make("h264_bpyramid_longgop")
    with phast.open(path, cache_dir=cache_dir) as clip:
        assert clip.backend == "software"
        status = dict(clip.backend_status)
        assert list(status) == ["nvdec", "vaapi", "software"]
        assert status["software"] == "selected"
        assert status["nvdec"] == f"skipped: {registry.host_check('nvdec')}"
        assert status["vaapi"] == f"skipped: {registry.host_check('vaapi')}"
        assert clip.frame(3).array.shape == (clip.info.height, clip.info.width, 3)


@without_pyav_vaapi
def test_explicit_hardware_backend_raises_with_the_reason(make: Any, cache_dir: Path) -> None:
    path = make("h264_bpyramid_longgop")
    with pytest.raises(BackendUnavailable, match="no VAAPI support"):
        phast.open(path, backend="vaapi", cache_dir=cache_dir)


def test_open_keeps_av_and_cupy_out_of_the_editor(make: Any, cache_dir: Path) -> None:
    import subprocess
    import sys

    code = ("import sys, phast; c = phast.open(sys.argv[1], cache_dir=sys.argv[2]); "
            "c.frame(0); c.close(); print(c.backend, sorted(m for m in "
            "('av', 'cupy', 'PyNvVideoCodec') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(make("h264_bpyramid_longgop")),
                          str(cache_dir)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PHAST_PROXIES": "0"})
    assert out.returncode == 0, out.stderr
    backend, loaded = out.stdout.strip().splitlines()[-1].split(" ", 1)
    # An NVDEC frame is mapped into the editor through CUDA IPC: cupy, and nothing else.
    assert loaded == ("['cupy']" if backend == "nvdec" else "[]"), out.stdout


def test_capabilities_refuse_what_hardware_cannot_do() -> None:
    from phast.backends.nvdec import NvdecBackend
    from phast.backends.vaapi import VaapiBackend

    ok = {"codec": "h264", "pix_fmt": "yuv420p", "bit_depth": 8, "width": 1920, "height": 1080}
    assert NvdecBackend.capabilities(ok) is None
    assert "10 bits" in (NvdecBackend.capabilities({**ok, "pix_fmt": "yuv420p10le",
                                                     "bit_depth": 10}) or "")
    assert "vp9" in (NvdecBackend.capabilities({**ok, "codec": "vp9"}) or "")
    assert "4096x4096" in (NvdecBackend.capabilities({**ok, "width": 8192}) or "")
    assert VaapiBackend.capabilities(ok) is None
    assert "4:2:0" in (VaapiBackend.capabilities({**ok, "pix_fmt": "yuv444p"}) or "")


# -- device records (plain data) -----------------------------------------------------------------


def test_a_valid_record_passes() -> None:
    rec = check_device_record(record(), "rgb24", {})
    assert (rec.alloc, rec.alloc_size, rec.handle) == (0, 1 << 20, HANDLE)
    assert rec.planes[0].end == 4096 + 47 * 512 + 192


@pytest.mark.parametrize("bad, match", [
    ({"device": {"planes": [[(1 << 20) - 100, 48, 192, 512]]}}, "outside allocation"),
    ({"device": {"planes": [[0, 48, 192, 100]]}}, "outside allocation"),  # pitch < row bytes
    ({"device": {"planes": [[-512, 48, 192, 512]]}}, "outside allocation"),
    ({"device": {"alloc_size": 1 << 40}}, "implausible allocation"),
    ({"device": {"alloc": -1}}, "implausible allocation"),
    ({"device": {"handle": "zz"}}, "not hex"),
    ({"device": {"handle": "00" * 8}}, "8 bytes"),
    ({"device": {"planes": [[0, 48, 191, 512]]}}, "64x48 rgb24"),
    ({"device": {"planes": [[0, 48, 192, 512], [4096, 24, 64, 512]]}}, "overlaps"),
    ({"device": {"planes": [[0, 48, True, 512]]}}, "malformed"),
    ({"width": 0}, "implausible frame"),
])
def test_forged_records_are_rejected(bad: dict[str, Any], match: str) -> None:
    with pytest.raises(ProtocolViolation, match=match):
        check_device_record(record(**bad), "rgb24", {})


def test_a_known_allocation_id_cannot_change() -> None:
    known = {0: (1 << 20, HANDLE)}
    check_device_record(record(), "rgb24", known)
    with pytest.raises(ProtocolViolation, match="changed"):
        check_device_record(record(device={"alloc_size": 1 << 21}), "rgb24", known)
    with pytest.raises(ProtocolViolation, match="changed"):
        check_device_record(record(device={"handle": bytes(64).hex()}), "rgb24", known)


def test_native_nv12_record() -> None:
    rec = record(pix_fmt="nv12", device={"planes": [[0, 48, 64, 512], [24576, 24, 64, 512]]})
    assert len(check_device_record(rec, "native", {}).planes) == 2


# -- mappings belong to a worker generation (stand-in IPC, real worker process) ------------------


class RecordingIpc:
    """Stands in for cudaIpcOpen/CloseMemHandle (no GPU here): records the calls."""

    def __init__(self) -> None:
        self.opened: list[bytes] = []
        self.closed: list[int] = []

    def open(self, handle: bytes) -> int:
        self.opened.append(handle)
        return 0x7F0000000000 + 0x10000000 * len(self.opened)

    def close(self, ptr: int) -> None:
        self.closed.append(ptr)


def test_a_dying_worker_closes_its_mappings_and_frames_refuse_access() -> None:
    ipc = RecordingIpc()
    proc = Process(WorkerConfig())
    maps = mappings_for(proc, ipc)
    rec = check_device_record(record(), "rgb24", maps.known())
    base = maps.pointer(rec)
    assert maps.pointer(rec) == base and len(ipc.opened) == 1  # mapped once, cached
    slots = DeviceSlots(4)
    slot = slots.grant()
    frame = build_frame(rec, base, slots.lease(slot, maps), fmt="rgb24", index=0, pts=0,
                        time=0.0)
    cai = frame.__cuda_array_interface__
    assert cai["data"][0] == base + 4096 and cai["shape"] == (48, 64, 3)
    assert cai["strides"] == (512, 3, 1)
    os.kill(proc.pid, 9)  # a crash; the supervisor's discard path kills and closes handles
    proc.kill()
    assert ipc.closed == [base] and maps.closed
    with pytest.raises(WorkerCrashed):
        frame.__cuda_array_interface__  # noqa: B018 -- the access is the test
    with pytest.raises(WorkerCrashed):
        maps.pointer(rec)


def test_device_slots_come_back_when_frames_go() -> None:
    import gc

    slots = DeviceSlots(1)
    maps = DeviceMappings(RecordingIpc())
    s = slots.grant()
    lease = slots.lease(s, maps)
    with pytest.raises(phast.SlotsExhausted):
        slots.grant()
    del lease
    gc.collect()
    assert slots.grant() == s


# -- what a GPU worker is given (real workers; the hardware is not) -------------------------------


def test_gpu_backends_declare_their_device_nodes() -> None:
    from fnmatch import fnmatch

    from phast.backends.nvdec import NvdecBackend
    from phast.backends.vaapi import VaapiBackend

    def granted(node: str, patterns: tuple[str, ...]) -> bool:
        return any(fnmatch(node, p) for p in patterns)

    nv = NvdecBackend.device_paths
    for node in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia0",
                 "/dev/nvidia7", "/dev/nvidia-caps/nvidia-cap1"):
        assert granted(node, nv), node
    for node in ("/dev/nvidia-modeset", "/dev/dri/renderD128", "/dev/dri/card0"):
        assert not granted(node, nv), node
    assert VaapiBackend.device_paths == ("/dev/dri/renderD*",)
    assert granted("/dev/dri/renderD129", VaapiBackend.device_paths)
    assert not granted("/dev/dri/card0", VaapiBackend.device_paths)
    # CUDA cannot start under an address-space cap; VAAPI can.
    assert NvdecBackend.address_space_limit is False
    assert VaapiBackend.address_space_limit is True


def test_a_gpu_host_s_default_workers_preload_and_grant_the_hardware(monkeypatch) -> None:
    """Where the cheap host checks pass, the default pool's workers preload NVDEC and VAAPI
    before confining themselves: their device patterns reach the Landlock ruleset (nodes that
    exist are granted read-write with device ioctls, the others reported missing) and, NVDEC
    being preloaded, the worker has no address-space cap and the editor watches its resident
    memory instead."""
    import glob

    from phast import sandbox, supervisor
    from phast.backends.nvdec import NvdecBackend
    from phast.backends.vaapi import VaapiBackend

    monkeypatch.setattr(registry, "host_check", lambda name: None)
    config = WorkerConfig()
    assert config.backends == (registry.BUILTIN["nvdec"], registry.BUILTIN["vaapi"])
    proc = Process(config)
    try:
        report = proc.sandbox
        assert "preload" not in report  # both modules import here, without their libraries
        assert "as=unlimited" in report["rlimits"], report["rlimits"]
        assert f"resident<={sandbox.DEFAULT_MEMORY >> 20}MiB" in report["rlimits"]
        assert supervisor.address_space_cap(proc.pid) is None
        assert supervisor.memory_watch.watched(proc)
        if sandbox.host_support()["landlock"].startswith("supported"):
            line = report["landlock"]
            for pattern in NvdecBackend.device_paths + VaapiBackend.device_paths:
                nodes = glob.glob(pattern)
                assert all(n in line for n in nodes) if nodes else pattern in line, pattern
    finally:
        proc.stop()
    assert not supervisor.memory_watch.watched(proc)


# -- PyNvVideoCodec's errors, typed (stand-in classes: the library is absent here) ---------------


def _gpu_errors() -> dict[str, Any]:
    from tests import gpu_standin_backend as standin

    class CUDARuntimeError(RuntimeError):  # as cupy names it
        pass

    class OutOfMemoryError(MemoryError):  # cupy's device out-of-memory
        pass

    return {**{k: f() for k, f in standin.ERRORS.items()},
            "cupy": CUDARuntimeError("cudaErrorIllegalAddress"),
            "device_oom": OutOfMemoryError("out of memory allocating 1 GiB"),
            "api": AttributeError("'DecodedFrame' object has no attribute 'getPTS'")}


@pytest.mark.parametrize(("name", "opening", "expected"), [
    ("unsupported", True, "CannotHandle"),
    ("unsupported", False, "UnsupportedCodec"),
    ("generic", False, "DeviceError"),
    ("generic", True, "DeviceError"),
    ("runtime", False, "DeviceError"),
    ("cupy", False, "DeviceError"),
    ("device_oom", False, "DeviceError"),
    ("api", False, "DeviceError"),
])
def test_gpu_library_errors_become_typed_errors(name: str, opening: bool, expected: str) -> None:
    from phast.backends.nvdec_decoder import device_error

    mapped = device_error(_gpu_errors()[name], "NVDEC decoding", opening=opening)
    assert type(mapped).__name__ == expected
    assert "NVDEC decoding" in str(mapped)


def test_typed_and_host_errors_pass_through() -> None:
    import av

    from phast.backends.base import SlotTooSmall
    from phast.backends.nvdec_decoder import device_error
    from phast.errors import DecodeError

    for error in (DecodeError("damaged"), SlotTooSmall(10), MemoryError(), KeyboardInterrupt(),
                  av.error.InvalidDataError(1094995529, "Invalid data")):
        assert device_error(error, "x") is None, error


def test_a_failed_device_call_raises_typed_and_drops_the_decode_run(make) -> None:
    """NVDEC's decoder's own context manager (on an instance without CUDA): the error is typed,
    chained to the original, and the next positioning starts a fresh decoder; and a decoder
    failing in the middle of a run (NVDEC's mapping, on a CPU decoder) ends the run: the next
    request positions anew."""
    from phast.backends.nvdec_decoder import NvdecDecoder
    from phast.errors import DeviceError
    from tests.gpu_standin_backend import FailingBackend

    decoder = NvdecDecoder.__new__(NvdecDecoder)
    decoder.opening, decoder.fresh = False, True
    original = _gpu_errors()["generic"]
    with pytest.raises(DeviceError, match="NVDEC decoding: PyNvVCException") as caught, \
            decoder.device_call("NVDEC decoding"):
        raise original
    assert caught.value.__cause__ is original
    assert decoder.fresh is False
    with pytest.raises(ValueError, match="not a GPU error"), decoder.device_call("x"):
        raise DecodeError("not a GPU error")  # typed already: unchanged

    backend = FailingBackend(str(make("h264_bpyramid_longgop")), stream=0,
                             options={"error": "generic", "at": 59}, progress=lambda: None)
    try:
        backend.build_index()
        backend.av_frame(50)  # past the verified prefix, which is kept
        assert backend.decode_position() is not None  # a warm run, going on from frame 50
        with pytest.raises(DeviceError, match="NVDEC decoding") as caught:
            backend.av_frame(int(backend._index.packet_frame[59]))
        assert type(caught.value.__cause__).__name__ == "PyNvVCException"
        assert backend.decode_position() is None
    finally:
        backend.close()


@pytest.fixture
def gpu_error() -> Any:
    registry.register("gpu-error", "tests.gpu_standin_backend:GpuErrorBackend")
    yield "gpu-error"
    registry.unregister("gpu-error")


@pytest.mark.parametrize("error", ["generic", "runtime"])
def test_a_device_error_ends_the_worker_and_the_retry_is_exact(error, make, cache_dir, pool,
                                                               gpu_error) -> None:
    from tests.reference import reference_frames

    ref = reference_frames(make("h264_bpyramid_longgop"))
    with phast.open(make("h264_bpyramid_longgop"), cache_dir=cache_dir, pool=pool,
                    backend=gpu_error, backend_options={"error": error, "at": 20}) as clip:
        first = clip.worker_pid
        assert np.array_equal(clip.frame(20).array, ref[20])  # on a fresh worker
        assert clip.worker_pid != first and pool.workers[0].restarts == 1
        failure = pool.workers[0].last_failure or ""
        assert "device error" in failure and "NVDEC decoding" in failure, failure


def test_an_unsupported_stream_is_a_typed_error(make, cache_dir, pool, gpu_error) -> None:
    """Mid-stream, PyNvVideoCodec's "unsupported" is UnsupportedCodec for that request (the
    worker lives on); while opening, CannotHandle (an explicit backend: UnsupportedCodec)."""
    from tests.reference import reference_frames

    path = make("h264_bpyramid_longgop")
    ref = reference_frames(path)
    with phast.open(path, cache_dir=cache_dir, pool=pool, backend=gpu_error,
                    backend_options={"error": "unsupported", "at": 20, "always": True}) as clip:
        pid = clip.worker_pid
        with pytest.raises(phast.UnsupportedCodec, match="not supported on this GPU"):
            clip.frame(20)
        assert np.array_equal(clip.frame(21).array, ref[21])
        assert clip.worker_pid == pid and pool.workers[0].restarts == 0
    fresh = cache_dir / "fresh"  # no stored index: the open runs in a worker now
    fresh.mkdir()
    with pytest.raises(phast.UnsupportedCodec, match="gpu-error: NVDEC cannot decode"):
        phast.open(path, cache_dir=fresh, pool=pool, backend=gpu_error,
                   backend_options={"error": "unsupported", "at": -1})


# -- on a GPU -------------------------------------------------------------------------------------


@pytest.mark.nvdec
@pytest.mark.gpu
def test_nvdec_frames_match_software(make: Any, cache_dir: Path) -> None:
    import cupy

    from phast.backends.nvdec import NvdecBackend

    path = make("h264_bpyramid_longgop")
    with phast.open(path, backend="software", cache_dir=cache_dir) as sw, \
            phast.open(path, backend="nvdec", cache_dir=cache_dir) as hw:
        assert len(sw) == len(hw)
        tol = NvdecBackend.conversion_tolerance["rgb24"]
        for i in (0, 5, len(sw) - 1, 17, 3):
            ref = sw.frame(i).to_ndarray().astype(int)
            got = hw.frame(i)
            dev = cupy.asarray(got)  # zero copy: the pointer is the frame's
            assert dev.data.ptr == got.__cuda_array_interface__["data"][0]
            assert np.abs(got.to_ndarray().astype(int) - ref).max() <= tol, i
            nat = hw.frame(i, format="native").planes[0].get()
            sw_nat = sw.frame(i, format="native").planes[0]
            assert np.array_equal(nat, sw_nat)


@pytest.mark.nvdec
@pytest.mark.gpu
def test_nvdec_worker_crash_closes_mappings(make: Any, cache_dir: Path) -> None:
    path = make("h264_bpyramid_longgop")
    with phast.open(path, backend="nvdec", cache_dir=cache_dir) as hw:
        frame = hw.frame(2)
        pid = hw.worker_pid
        assert pid is not None
        os.kill(pid, 9)
        again = hw.frame(4)  # a fresh worker, fresh mappings
        assert hw.worker_pid != pid
        with pytest.raises(WorkerCrashed):
            frame.__cuda_array_interface__  # noqa: B018
        assert again.to_ndarray().shape[2] == 3


@pytest.mark.nvdec
@pytest.mark.gpu
def test_nvdec_workers_get_the_gpu_and_no_address_space_cap(make: Any, cache_dir: Path) -> None:
    """On a GPU host the default workers preload NVDEC: its nodes are granted and usable (an
    ioctl reaches the NVIDIA driver through Landlock), there is no address-space cap, and CUDA
    starts under the rest of the sandbox (seccomp included)."""
    from phast import doctor

    result = doctor.run()
    assert result["ok"], result
    grants = [c for c in result["checks"] if c.endswith("(device grant)")]
    for node in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0"):
        assert f"open+ioctl {node} (device grant)" in grants, grants
    with phast.open(make("h264_bpyramid_longgop"), backend="nvdec", cache_dir=cache_dir) as hw:
        hw.frame(0)
        assert "as=unlimited" in hw.sandbox["rlimits"], hw.sandbox
        assert "/dev/nvidiactl" in hw.sandbox["landlock"], hw.sandbox


@pytest.mark.vaapi
def test_vaapi_frames_match_software(make: Any, cache_dir: Path) -> None:
    """VAAPI's downloaded NV12 holds the software decoder's samples, bit for bit."""
    if not _pyav_has_vaapi():  # a failure under PHAST_REQUIRE_GPU=vaapi (tests/gpu_gate.py)
        pytest.skip("this PyAV has no VAAPI: build it from source (backends/vaapi.py FIX)")
    path = make("h264_bpyramid_longgop")
    with phast.open(path, backend="software", cache_dir=cache_dir) as sw, \
            phast.open(path, backend="vaapi", cache_dir=cache_dir) as hw:
        assert len(sw) == len(hw)
        for i in (0, 5, len(sw) - 1, 17, 3, 61):
            y, uv = hw.frame(i, format="native").planes
            sy, su, sv = sw.frame(i, format="native").planes
            assert np.array_equal(y, sy), i
            assert np.array_equal(uv[:, 0::2], su) and np.array_equal(uv[:, 1::2], sv), i
        assert "/dev/dri/renderD" in hw.sandbox["landlock"], hw.sandbox


def test_the_image_worker_gets_no_backend_devices() -> None:
    """Proxy pictures are JPEG decoded on the CPU: the image worker preloads no backend and is
    granted no device node, whatever the pool's workers get."""
    from phast.supervisor import WorkerConfig, WorkerPool

    spec = registry.BUILTIN["software"]
    pool = WorkerPool(max_workers=1, config=WorkerConfig(backends=(spec,)))
    try:
        assert pool.image_worker().config.backends == ()
        assert pool.build_worker().config.backends == (spec,)
    finally:
        pool.shutdown()
