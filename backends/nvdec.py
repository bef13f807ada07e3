"""The NVDEC backend: NVIDIA hardware decoding into device memory, handed over by CUDA IPC.

Indexing and positioning are the software backend's (:class:`SoftwareBackend`): the same PyAV demux
index, the same seeks to the start keyframe, the same per-frame checks against the index. Only the
decoder differs (:class:`NvdecDecoder`, injected): each demuxed packet goes, in Annex-B form
(FFmpeg's ``h264_mp4toannexb``/``hevc_mp4toannexb`` bitstream filters), to PyNvVideoCodec's NVDEC
decoder, tagged with its decode position as its PTS; each decoded surface comes back with that tag,
so it maps to a display index exactly as a software frame does. PyAV's demuxer is used rather than
PyNvVideoCodec's so that one demuxer defines packet positions, seeks and frame numbering for every
backend.

Memory ownership (the rules ``docs/architecture.md`` states):

* The decoder's own surfaces are copied at once into worker-owned device memory (the kept
  frames), so NVDEC can recycle them.
* Frames for the editor are written into **device slots**: regions of large allocations
  (:class:`DevicePool`, one ``cudaMalloc`` per arena) that the worker owns. The editor names the
  slot (it knows which slots its frames still hold); the worker never reuses a slot on its own.
  The completion record gives the allocation id, its size and IPC handle
  (``cudaIpcGetMemHandle``), and per plane the offset, rows, row bytes and pitch.
* The editor opens each allocation once (``cudaIpcOpenMemHandle``) per worker process and
  closes every mapping of a process when it ends (crash included), before any retry.
* A CUDA or decoder error raises :class:`~phast.errors.DeviceError`: the worker reports it and
  exits, since its CUDA context may be poisoned. PyNvVideoCodec's own exception classes are mapped
  by name (``nvdec_decoder.device_error``): ``PyNvVCExceptionUnsupported`` (codec, profile or size
  this GPU lacks) is :class:`~phast.errors.CannotHandle` while opening (``auto`` goes on to the
  next backend) and :class:`~phast.errors.UnsupportedCodec` later; ``PyNvVCException``, CUDA errors
  and anything else a GPU call raises are :class:`~phast.errors.DeviceError`. No untyped error
  leaves a device call.

Damage: NVDEC reports no concealed or corrupt picture (PyNvVideoCodec only prints), so
``nvdec_decoder.NvFrame`` can never say ``is_corrupt``. The index and the damage marks come from the
software decoder in the same worker, and NVDEC's pictures are compared with its pictures on a
sample (:class:`~phast.backends.crosscheck.CrossChecked`); after a disagreement the software
decoder's pictures are served, uploaded to device memory.

The worker: NVDEC needs the NVIDIA device nodes (:attr:`NvdecBackend.device_paths`, granted
read-write with device ioctls by Landlock) and no address-space cap
(``address_space_limit = False``: CUDA reserves far more virtual memory than any useful cap and
fails to initialise under one); its resident memory is bounded by the editor instead
(``WorkerConfig(memory_limit=...)``, :class:`phast.supervisor.MemoryWatch`).

Colour: NVDEC gives NV12 (8-bit 4:2:0). ``format="native"`` is that NV12 (planes Y and
interleaved UV); ``"rgb24"`` is converted on the GPU by :func:`nv12_to_rgb` (BT.601 or BT.709
as the stream says, limited or full range), within :attr:`NvdecBackend.conversion_tolerance`
of FFmpeg's swscale. Other formats are not offered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from phast.errors import MediaError

from .avframes import av, frame_planes, frame_pos
from .base import (
    DecodedFrame,
    DevicePlane,
    DeviceRecord,
    PlaneLayout,
    ProbeResult,
    SlotTooSmall,
    check_format,
)
from .crosscheck import CrossChecked, planes_crc
from .decoder import AvDecoder
from .nvdec_decoder import NVDEC_CODECS, NvdecDecoder, NvFrame

NVDEC_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})
#: NVDEC's limits per codec (width, height), from NVIDIA's decoder support matrix (NVDEC
#: application note): below the minimum or above the maximum, the decoder refuses the stream.
MAX_SIZE = {"h264": (4096, 4096), "hevc": (8192, 8192)}
MIN_SIZE = {"h264": (48, 16), "hevc": (144, 144)}
#: The NVIDIA device nodes CUDA and NVDEC open (Landlock grants them read-write and device
#: ioctls): the control node, unified memory (``nvidia-uvm``, and its ``-tools`` node, which the
#: driver opens too), one node per GPU, and the capability nodes of MIG instances. Not
#: ``nvidia-modeset`` (display only). Nodes must exist before a worker starts: a worker cannot
#: run ``nvidia-modprobe`` to create ``nvidia-uvm`` (:func:`phast.registry.host_check` says so).
NVIDIA_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
                  "/dev/nvidia[0-9]*", "/dev/nvidia-caps/nvidia-cap[0-9]*")
#: Device memory is carved from allocations this big (or one frame's size, if larger).
ARENA_BYTES = 64 << 20
#: Alignment of slot offsets and row pitches inside an allocation.
ALIGN = 512
#: Bytes of device memory one session may allocate for slots before it refuses.
MAX_POOL_BYTES = 2 << 30
FIX = "pip install 'phast[nvdec]' (PyNvVideoCodec and cupy-cuda12x) on a host with an NVIDIA GPU"


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class DevicePool:
    """Device slots carved from a few large allocations the worker owns (and exports by IPC).

    A slot keeps its region while it is big enough; a bigger request places it anew (the old
    region is not reused: slots rarely grow, and arenas are bounded by :data:`MAX_POOL_BYTES`).
    """

    def __init__(self, cupy: Any) -> None:
        self._cp = cupy
        self._arenas: list[tuple[Any, int]] = []  # (cupy.cuda.Memory, bytes used)
        self._handles: dict[int, bytes] = {}
        self._slots: dict[int, tuple[int, int, int]] = {}  # slot -> (arena, offset, capacity)

    def region(self, slot: int, nbytes: int) -> tuple[int, int]:
        """(allocation id, offset) of ``slot``'s region, holding at least ``nbytes``."""
        have = self._slots.get(slot)
        if have is not None and have[2] >= nbytes:
            return have[0], have[1]
        need = _align(nbytes)
        if self._arenas and self._arenas[-1][0].size - self._arenas[-1][1] >= need:
            arena = len(self._arenas) - 1
        else:
            total = sum(m.size for m, _ in self._arenas)
            size = max(ARENA_BYTES, need)
            if total + size > MAX_POOL_BYTES:
                raise MediaError(f"device slots would exceed {MAX_POOL_BYTES >> 20} MiB")
            self._arenas.append((self._cp.cuda.Memory(size), 0))  # cudaMalloc: IPC-exportable
            arena = len(self._arenas) - 1
        mem, used = self._arenas[arena]
        self._arenas[arena] = (mem, used + need)
        self._slots[slot] = (arena, used, need)
        return arena, used

    def pointer(self, alloc: int, offset: int) -> int:
        return int(self._arenas[alloc][0].ptr) + offset

    def size(self, alloc: int) -> int:
        return int(self._arenas[alloc][0].size)

    def handle(self, alloc: int) -> bytes:
        if alloc not in self._handles:
            self._handles[alloc] = bytes(self._cp.cuda.runtime.ipcGetMemHandle(
                self._arenas[alloc][0].ptr))
        return self._handles[alloc]

    def view(self, alloc: int, offset: int, shape: tuple[int, ...],
             strides: tuple[int, ...]) -> Any:
        """A cupy uint8 array over part of an allocation (no copy)."""
        cp = self._cp
        mem = self._arenas[alloc][0]
        ptr = cp.cuda.MemoryPointer(mem, offset)
        return cp.ndarray(shape, dtype=cp.uint8, memptr=ptr, strides=strides)

    def close(self) -> None:
        self._slots.clear()
        self._handles.clear()
        self._arenas.clear()  # frees the allocations (the editor's mappings keep nothing alive)




def _colour(bt709: bool, full_range: bool) -> dict[str, str]:
    return {"matrix": "bt709" if bt709 else "bt601",
            "color_range": "full" if full_range else "limited"}


def nv12_to_rgb(y: Any, uv: Any, out: Any, *, bt709: bool, full_range: bool) -> None:
    """Convert NV12 planes ``y`` (h x w) and ``uv`` (ceil(h/2) x 2*ceil(w/2)) into ``out``.

    ``out`` is an (h, w, 3) uint8 cupy array (any row pitch). phast's shared kernels
    (:mod:`phast.kernels`, one source for CUDA and OpenCL; nearest chroma, tested against the
    NumPy reference) do the work.
    """
    from phast.kernels import cuda

    cuda.default().convert([y, uv], "nv12", out=out, **_colour(bt709, full_range))


class NvdecBackend(CrossChecked):
    """NVDEC decoding into device memory. Options: ``gpu`` (device ordinal, default 0),
    ``keep_bytes`` (device bytes of decoded frames kept for backward stepping)."""

    name = "nvdec"
    device = "cuda"
    codecs: ClassVar[frozenset[str]] = NVDEC_CODECS
    pix_fmts: ClassVar[frozenset[str]] = frozenset({"nv12"})
    formats: ClassVar[tuple[str, ...]] = ("native", "rgb24")
    #: NVDEC's samples are exact (the codec is); the float conversion differs from swscale's
    #: fixed-point one by rounding. Not yet measured on hardware: see the GPU tests.
    conversion_tolerance: ClassVar[Mapping[str, int]] = MappingProxyType({"rgb24": 3})
    device_paths: ClassVar[tuple[str, ...]] = NVIDIA_DEVICES
    #: CUDA reserves far more address space than any useful cap: workers running NVDEC are
    #: bounded by resident memory (the editor's watchdog), not by RLIMIT_AS.
    address_space_limit: ClassVar[bool] = False

    @classmethod
    def probe(cls) -> ProbeResult:
        from importlib.util import find_spec

        missing = [m for m in ("PyNvVideoCodec", "cupy") if find_spec(m) is None]
        if missing:
            return ProbeResult(False, f"{' and '.join(missing)} not installed; fix: {FIX}")
        try:
            import cupy as cp
            import PyNvVideoCodec as nvc
        except Exception as e:  # a broken CUDA install fails at import
            return ProbeResult(False, f"cannot import the NVDEC libraries ({type(e).__name__}: "
                                      f"{e}); fix: {FIX}")
        try:
            count = int(cp.cuda.runtime.getDeviceCount())
        except Exception as e:
            return ProbeResult(False, f"CUDA cannot start here ({e}); in a worker it needs the "
                                      "NVIDIA device nodes and no address-space cap, which "
                                      "workers that preload this backend get "
                                      "(WorkerConfig(backends=...), the default on a GPU host)")
        if count < 1:
            return ProbeResult(False, "no CUDA device")
        name = cp.cuda.runtime.getDeviceProperties(0)["name"]
        return ProbeResult(True, details={
            "gpu": name.decode() if isinstance(name, bytes) else str(name),
            "pynvvideocodec": getattr(nvc, "__version__", "?"), "cupy": cp.__version__})

    @classmethod
    def capabilities(cls, info: Mapping[str, Any]) -> str | None:
        codec = info.get("codec")
        if codec not in NVDEC_CODECS:
            return f"NVDEC is fed {', '.join(sorted(NVDEC_CODECS))} here, not {codec!r}"
        if info.get("pix_fmt") not in NVDEC_PIX_FMTS or info.get("bit_depth") != 8:
            return (f"the NVDEC path handles 8-bit 4:2:0 only; this stream is "
                    f"{info.get('pix_fmt')} ({info.get('bit_depth')} bits)")
        width, height = int(info.get("width", 0)), int(info.get("height", 0))
        mw, mh = MAX_SIZE[str(codec)]
        if width > mw or height > mh:
            return f"{width}x{height} exceeds NVDEC's {mw}x{mh} for {codec}"
        nw, nh = MIN_SIZE[str(codec)]
        if width < nw or height < nh:
            return f"{width}x{height} is below NVDEC's minimum {nw}x{nh} for {codec}"
        return None

    def __init__(self, path: str, *, stream: int, options: Mapping[str, Any],
                 progress: Callable[[], None]) -> None:
        self._pool: DevicePool | None = None
        super().__init__(path, stream=stream, options=options, progress=progress)
        try:
            decoder = self._nvdec
            cc = decoder.cc
            cs = getattr(cc, "colorspace", None)
            self._bt709 = int(cs or 0) == 1  # AVCOL_SPC_BT709, as swscale reads the frame's
            rng = getattr(cc, "color_range", None)
            self._full = int(rng or 0) == 2 or cc.pix_fmt == "yuvj420p"
            self._pool = DevicePool(decoder.cp)
            self._check_first_packet()
        except BaseException:
            self.close()
            raise
        decoder.opening = False

    def make_decoder(self, options: Mapping[str, Any]) -> AvDecoder:
        import cupy as cp
        import PyNvVideoCodec as nvc

        self._nvdec = NvdecDecoder(cp, nvc, int(options.get("gpu", 0)),
                                   threads=int(options.get("threads", 0)))
        return self._nvdec

    def _check_first_packet(self) -> None:
        """Give NVDEC the stream's first packet now: a GPU without the stream's profile, level
        or size raises ``PyNvVCExceptionUnsupported`` when it parses the sequence header --
        :class:`CannotHandle` here, so ``auto`` tries the next backend, not an error at the
        first frame."""
        p = self._pipeline
        try:
            for pkt in p.demux.container.demux(p.demux.stream):
                if pkt.size:
                    self._nvdec.check(pkt)
                    break
        except av.FFmpegError:
            pass  # a damaged first packet: the software reference indexes and marks damage
        finally:
            p.reopen()  # from byte 0 again, with a fresh decoder

    # -- the cross-check (backends/crosscheck.py) -----------------------------------------------
    def _picture_crc(self, frame: Any) -> int:
        """The CRC of an NVDEC picture's Y, U and V samples, in the software decoder's planar
        layout (NV12's interleaved UV split into U and V), read back from the device."""
        if not isinstance(frame, NvFrame):
            return super()._picture_crc(frame)
        y, uv = frame.split()
        with self._nvdec.device_call("reading a picture back for the cross-check"):
            host_y, host_uv = self._nvdec.cp.asnumpy(y), self._nvdec.cp.asnumpy(uv)
        return planes_crc([host_y, host_uv[:, 0::2], host_uv[:, 1::2]])

    def _disagreement(self, j: int) -> None:
        super()._disagreement(j)
        self._nvdec.close()  # the software decoder serves from now on: free the NVDEC session

    def _nv_frame(self, index: int) -> NvFrame:
        """Frame ``index`` as NV12 in device memory: NVDEC's picture, or after a disagreement
        the software decoder's, uploaded (bit-exact with a sequential software decode)."""
        frame = self.av_frame(index)
        if isinstance(frame, NvFrame):
            return frame
        y, u, v = frame_planes(frame)
        h, w = y.shape
        ch, cw = u.shape
        nv12 = np.zeros((h + ch, max(w, 2 * cw)), np.uint8)
        nv12[:h, :w] = y
        nv12[h:, 0:2 * cw:2] = u
        nv12[h:, 1:2 * cw:2] = v
        with self._nvdec.device_call("uploading a software picture"):
            dev = self._nvdec.cp.asarray(nv12)
        return NvFrame(dev, w, h, frame_pos(frame) or 0, frame.pts, bool(frame.key_frame))

    # -- frames ---------------------------------------------------------------------------------
    def decode(self, index: int, format: str, out: memoryview) -> DecodedFrame:
        """Host path (proxy building, checks): convert on the GPU, then copy to ``out``."""
        check_format(self, format)
        frame = self._nv_frame(index)
        w, h = frame.width, frame.height
        y, uv = frame.split()
        if format == "native":
            planes = [y, uv]
        else:
            rgb = self._nvdec.cp.empty((h, w, 3), self._nvdec.cp.uint8)
            with self._nvdec.device_call("NV12 to RGB"):
                nv12_to_rgb(y, uv, rgb, bt709=self._bt709, full_range=self._full)
            planes = [rgb.reshape(h, w * 3)]
        needed = sum(int(p.shape[0] * p.shape[1]) for p in planes)
        if needed > len(out):
            raise SlotTooSmall(needed)
        dst = np.frombuffer(out, np.uint8)
        layouts, offset = [], 0
        with self._nvdec.device_call("copying to the host"):
            for p in planes:
                rows, row_bytes = int(p.shape[0]), int(p.shape[1])
                dst[offset:offset + rows * row_bytes] = self._nvdec.cp.asnumpy(p).reshape(-1)
                layouts.append(PlaneLayout(offset, rows, row_bytes))
                offset += rows * row_bytes
        return DecodedFrame(w, h, "nv12" if format == "native" else format, 1, tuple(layouts),
                            frame.key_frame)

    def proxy_picture(self, index: int, width: int, height: int) -> np.ndarray:
        """Frame ``index`` as a ``height`` x ``width`` rgb24 proxy, made on the GPU (one fused
        convert + area-downscale kernel): only the small picture crosses the bus."""
        from phast.kernels import cuda

        frame = self._nv_frame(index)
        y, uv = frame.split()
        with self._nvdec.device_call("making a proxy on the GPU"):
            return np.asarray(cuda.default().proxy(
                [y, uv], "nv12", (height, width), host=True,
                **_colour(self._bt709, self._full)))

    def decode_device(self, index: int, format: str, slot: int) -> DeviceRecord:
        """Decode frame ``index`` into device slot ``slot`` (a region the worker owns)."""
        check_format(self, format)
        pool = self._pool
        assert pool is not None  # made in __init__
        frame = self._nv_frame(index)
        w, h = frame.width, frame.height
        y, uv = frame.split()
        planes: tuple[DevicePlane, ...]
        with self._nvdec.device_call("writing a device slot"):
            if format == "native":
                ypitch, uvpitch = _align(w), _align(int(uv.shape[1]))
                nbytes = ypitch * h + uvpitch * int(uv.shape[0])
                alloc, off = pool.region(slot, nbytes)
                planes = (DevicePlane(off, h, w, ypitch),
                          DevicePlane(off + ypitch * h, int(uv.shape[0]), int(uv.shape[1]),
                                      uvpitch))
                for plane, src in zip(planes, (y, uv), strict=True):
                    dst = pool.view(alloc, plane.offset, (plane.rows, plane.row_bytes),
                                          (plane.pitch, 1))
                    dst[...] = src
            else:
                pitch = _align(w * 3)
                alloc, off = pool.region(slot, pitch * h)
                planes = (DevicePlane(off, h, w * 3, pitch),)
                rgb = pool.view(alloc, off, (h, w, 3), (pitch, 3, 1))
                nv12_to_rgb(y, uv, rgb, bt709=self._bt709, full_range=self._full)
            # The editor reads on its own stream: the pixels must be there when we answer.
            self._nvdec.cp.cuda.Device().synchronize()
            handle = pool.handle(alloc)
        return DeviceRecord(w, h, "nv12" if format == "native" else format, 1, frame.key_frame,
                           alloc, pool.size(alloc), handle, planes)

    def close(self) -> None:
        try:
            super().close()  # the decoder too
        finally:
            if self._pool is not None:
                self._pool.close()
