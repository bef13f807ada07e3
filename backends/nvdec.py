"""The NVDEC backend: NVIDIA hardware decoding into device memory, handed over by CUDA IPC.

Indexing and positioning are the software backend's (:class:`SoftwareBackend`): the same PyAV
demux index, the same seeks to the start keyframe, the same per-frame checks against the index.
Only the decoder differs: each demuxed packet goes, in Annex-B form (FFmpeg's
``h264_mp4toannexb``/``hevc_mp4toannexb`` bitstream filters), to PyNvVideoCodec's NVDEC decoder,
tagged with its decode position as its PTS; each decoded surface comes back with that tag, so
it maps to a display index exactly as a software frame does. PyAV's demuxer is used rather than
PyNvVideoCodec's so that one demuxer defines packet positions, seeks and frame numbering for
every backend.

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
  exits, since its CUDA context may be poisoned.

Colour: NVDEC gives NV12 (8-bit 4:2:0). ``format="native"`` is that NV12 (planes Y and
interleaved UV); ``"rgb24"`` is converted on the GPU by :func:`nv12_to_rgb` (BT.601 or BT.709
as the stream says, limited or full range), within :attr:`NvdecBackend.conversion_tolerance`
of FFmpeg's swscale. Other formats are not offered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from phast.errors import CannotHandle, DecodeError, DeviceError, InvalidArgument, MediaError
from phast.index import KEY

from .base import DecodedFrame, PlaneLayout, ProbeResult, SlotTooSmall, check_format
from .software import SoftwareBackend, _Tag, av

#: Codecs fed to NVDEC here (those with an Annex-B filter in FFmpeg); 8-bit 4:2:0 only.
NVDEC_CODECS = frozenset({"h264", "hevc"})
NVDEC_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})
#: NVDEC's limits per codec (width, height), from NVIDIA's decoder support matrix.
MAX_SIZE = {"h264": (4096, 4096), "hevc": (8192, 8192)}
#: Device memory is carved from allocations this big (or one frame's size, if larger).
ARENA_BYTES = 64 << 20
#: Alignment of slot offsets and row pitches inside an allocation.
ALIGN = 512
#: Bytes of device memory one session may allocate for slots before it refuses.
MAX_POOL_BYTES = 2 << 30
FIX = "pip install 'phast[nvdec]' (PyNvVideoCodec and cupy-cuda12x) on a host with an NVIDIA GPU"


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class DevicePlane:
    """One plane in device memory: ``rows`` rows of ``row_bytes`` bytes, ``pitch`` apart."""

    offset: int
    rows: int
    row_bytes: int
    pitch: int


@dataclass(frozen=True)
class DeviceRecord:
    """What :meth:`NvdecBackend.decode_device` wrote: the device half of a completion record."""

    width: int
    height: int
    pix_fmt: str
    itemsize: int
    key_frame: bool
    alloc: int
    alloc_size: int
    handle: bytes
    planes: tuple[DevicePlane, ...]


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


class _Plane:
    __slots__ = ("buffer_size",)

    def __init__(self, nbytes: int) -> None:
        self.buffer_size = nbytes


class _Format:
    name = "nv12"


class NvFrame:
    """A decoded NVDEC picture copied into worker-owned device memory (an NV12 cupy array).

    Carries the attributes the software backend's checks read (``opaque``, ``pts``...).
    """

    is_corrupt = False
    rotation = 0
    format = _Format()

    def __init__(self, nv12: Any, width: int, height: int, pos: int, pts: int | None,
                 key_frame: bool) -> None:
        self.nv12 = nv12
        self.width, self.height = width, height
        self.opaque = _Tag(pos)
        self.pts = pts
        self.key_frame = key_frame
        self.planes = (_Plane(int(nv12.nbytes)),)

    def split(self) -> tuple[Any, Any]:
        """The Y and interleaved UV planes, cropped to the visible picture."""
        h, w = self.height, self.width
        ch, cw = (h + 1) // 2, 2 * ((w + 1) // 2)
        return self.nv12[:h, :w], self.nv12[h:h + ch, :cw]


def _device_errors(cp: Any) -> tuple[type[BaseException], ...]:
    return (cp.cuda.runtime.CUDARuntimeError, cp.cuda.driver.CUDADriverError)


class NvdecBackend(SoftwareBackend):
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
            return ProbeResult(False, f"CUDA cannot start here ({e}); a worker's address-space "
                                      "cap also stops it: WorkerConfig(memory_limit=...)")
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
        mw, mh = MAX_SIZE[str(codec)]
        if int(info.get("width", 0)) > mw or int(info.get("height", 0)) > mh:
            return f"{info.get('width')}x{info.get('height')} exceeds NVDEC's {mw}x{mh} for {codec}"
        return None

    def __init__(self, path: str, *, stream: int, options: Mapping[str, Any],
                 progress: Callable[[], None]) -> None:
        import cupy as cp
        import PyNvVideoCodec as nvc

        self._cp, self._nvc = cp, nvc
        self._errors_dev = _device_errors(cp)
        # NVDEC decodes every packet it is given: no NONREF skipping on long seeks.
        super().__init__(path, stream=stream, options={**options, "skip_nonref": False},
                         progress=progress)
        codec = self._cc.name
        if codec not in NVDEC_CODECS:
            raise CannotHandle(f"NVDEC is fed {', '.join(sorted(NVDEC_CODECS))} here, "
                               f"not {codec!r}")
        self._gpu = int(options.get("gpu", 0))
        cs = getattr(self._cc, "colorspace", None)
        self._bt709 = int(cs or 0) == 1  # AVCOL_SPC_BT709, as swscale reads the frame's
        rng = getattr(self._cc, "color_range", None)
        self._full = int(rng or 0) == 2 or self._cc.pix_fmt == "yuvj420p"
        self._pts_of: dict[int, int | None] = {}
        self._pool = DevicePool(cp)
        self._bsf: Any = None
        self._decoder: Any = None
        self._fresh = False
        self._new_decoder()

    # -- the decoder ----------------------------------------------------------------------------
    def _new_decoder(self) -> None:
        from av.bitstream import BitStreamFilterContext

        self._bsf = BitStreamFilterContext(f"{self._cc.name}_mp4toannexb", self._stream)
        codec = {"h264": self._nvc.cudaVideoCodec.H264,
                 "hevc": self._nvc.cudaVideoCodec.HEVC}[self._cc.name]
        with self._device_call("creating the NVDEC decoder"):
            self._cp.cuda.Device(self._gpu).use()
            self._decoder = self._nvc.CreateDecoder(gpuid=self._gpu, codec=codec,
                                                    cudacontext=0, cudastream=0,
                                                    usedevicememory=True)
        self._fresh = True

    def _open_container(self) -> None:
        super()._open_container()
        if getattr(self, "_pool", None) is not None:
            self._flush_decoder()  # the filter belongs to the old container's stream

    def _device_call(self, what: str) -> Any:
        return _DeviceCall(what, self._errors_dev)

    def _flush_decoder(self) -> None:
        # NVDEC has no flush-without-output: a fresh decoder (and filter) starts a new run.
        self._pts_of.clear()
        if not self._fresh:
            self._new_decoder()

    def _decode_packet(self, pkt: Any) -> list[Any]:
        if pkt is None:
            packets = list(self._bsf.filter(None))
            out = []
            for p in packets:
                out += self._send(bytes(p), self._tag_of(p))
            return out + self._send(b"", None)  # an empty packet flushes NVDEC
        pos = pkt.opaque.pos
        self._pts_of[pos] = pkt.pts
        out = []
        for p in self._bsf.filter(pkt):
            out += self._send(bytes(p), pos)
        return out

    @staticmethod
    def _tag_of(p: Any) -> int | None:
        tag = getattr(p, "opaque", None)
        return tag.pos if isinstance(tag, _Tag) else None

    def _send(self, payload: bytes, pos: int | None) -> list[NvFrame]:
        nvc = self._nvc
        data = np.frombuffer(payload, np.uint8) if payload else np.zeros(1, np.uint8)
        pd = nvc.PacketData()
        pd.bsl_data = int(data.ctypes.data)
        pd.bsl = len(payload)
        if pos is not None:
            pd.pts = pos  # comes back on the frame: which packet made it
        frames = []
        self._fresh = False
        with self._device_call("NVDEC decoding"):
            for f in self._decoder.Decode(pd):
                frames.append(self._keep_surface(f))
        del data  # alive until Decode returned: NVDEC reads the bytes in the call
        return frames

    def _keep_surface(self, f: Any) -> NvFrame:
        """Copy a decoder surface into worker-owned memory so NVDEC can reuse the surface."""
        cp = self._cp
        src = cp.from_dlpack(f)
        if src.ndim == 3:
            src = src.reshape(src.shape[0], src.shape[1])
        w, h = self._cc.width, self._cc.height
        if src.shape[0] < h + (h + 1) // 2 or src.shape[1] < w:
            raise DecodeError(f"NVDEC surface {src.shape} is smaller than a {w}x{h} NV12 frame")
        pos = int(f.getPTS())
        idx = self._index
        key = bool(idx is not None and 0 <= pos < len(idx.pkt_flags) and idx.pkt_flags[pos] & KEY)
        return NvFrame(cp.array(src, copy=True), w, h, pos, self._pts_of.pop(pos, None), key)

    # -- frames ---------------------------------------------------------------------------------
    def decode(self, index: int, format: str, out: memoryview) -> DecodedFrame:
        """Host path (proxy building, checks): convert on the GPU, then copy to ``out``."""
        check_format(self, format)
        frame: NvFrame = self.av_frame(index)
        w, h = frame.width, frame.height
        y, uv = frame.split()
        if format == "native":
            planes = [y, uv]
        else:
            rgb = self._cp.empty((h, w, 3), self._cp.uint8)
            with self._device_call("NV12 to RGB"):
                nv12_to_rgb(y, uv, rgb, bt709=self._bt709, full_range=self._full)
            planes = [rgb.reshape(h, w * 3)]
        needed = sum(int(p.shape[0] * p.shape[1]) for p in planes)
        if needed > len(out):
            raise SlotTooSmall(needed)
        dst = np.frombuffer(out, np.uint8)
        layouts, offset = [], 0
        with self._device_call("copying to the host"):
            for p in planes:
                rows, row_bytes = int(p.shape[0]), int(p.shape[1])
                dst[offset:offset + rows * row_bytes] = self._cp.asnumpy(p).reshape(-1)
                layouts.append(PlaneLayout(offset, rows, row_bytes))
                offset += rows * row_bytes
        return DecodedFrame(w, h, "nv12" if format == "native" else format, 1, tuple(layouts),
                            frame.key_frame)

    def proxy_picture(self, index: int, width: int, height: int) -> np.ndarray:
        """Frame ``index`` as a ``height`` x ``width`` rgb24 proxy, made on the GPU (one fused
        convert + area-downscale kernel): only the small picture crosses the bus."""
        from phast.kernels import cuda

        frame: NvFrame = self.av_frame(index)
        y, uv = frame.split()
        with self._device_call("making a proxy on the GPU"):
            return np.asarray(cuda.default().proxy(
                [y, uv], "nv12", (height, width), host=True,
                **_colour(self._bt709, self._full)))

    def decode_device(self, index: int, format: str, slot: int) -> DeviceRecord:
        """Decode frame ``index`` into device slot ``slot`` (a region the worker owns)."""
        if format not in self.formats:
            raise InvalidArgument(f"backend 'nvdec' writes {', '.join(self.formats)}, "
                                  f"not {format!r}")
        frame: NvFrame = self.av_frame(index)
        w, h = frame.width, frame.height
        y, uv = frame.split()
        with self._device_call("writing a device slot"):
            if format == "native":
                ypitch, uvpitch = _align(w), _align(int(uv.shape[1]))
                nbytes = ypitch * h + uvpitch * int(uv.shape[0])
                alloc, off = self._pool.region(slot, nbytes)
                planes = (DevicePlane(off, h, w, ypitch),
                          DevicePlane(off + ypitch * h, int(uv.shape[0]), int(uv.shape[1]),
                                      uvpitch))
                for plane, src in zip(planes, (y, uv), strict=True):
                    dst = self._pool.view(alloc, plane.offset, (plane.rows, plane.row_bytes),
                                          (plane.pitch, 1))
                    dst[...] = src
            else:
                pitch = _align(w * 3)
                alloc, off = self._pool.region(slot, pitch * h)
                planes = (DevicePlane(off, h, w * 3, pitch),)
                rgb = self._pool.view(alloc, off, (h, w, 3), (pitch, 3, 1))
                nv12_to_rgb(y, uv, rgb, bt709=self._bt709, full_range=self._full)
            # The editor reads on its own stream: the pixels must be there when we answer.
            self._cp.cuda.Device().synchronize()
            handle = self._pool.handle(alloc)
        return DeviceRecord(w, h, "nv12" if format == "native" else format, 1, frame.key_frame,
                           alloc, self._pool.size(alloc), handle, planes)

    def close(self) -> None:
        super().close()
        self._decoder = None
        self._bsf = None
        self._pool.close()


class _DeviceCall:
    """Turns CUDA and NVDEC failures inside the block into :class:`DeviceError`."""

    def __init__(self, what: str, errors: tuple[type[BaseException], ...]) -> None:
        self.what, self.errors = what, errors

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> bool:
        if error is None or isinstance(error, (DecodeError, MediaError, av.FFmpegError)):
            return False
        # PyNvVideoCodec raises RuntimeError (pybind11) for NVDEC/CUDA failures.
        if isinstance(error, self.errors) or type(error) is RuntimeError:
            raise DeviceError(f"{self.what}: {type(error).__name__}: {error}") from error
        return False
