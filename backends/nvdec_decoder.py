"""NVDEC's decoder for the software backend's pipeline, and the typing of GPU library errors.

:class:`NvdecDecoder` is what :class:`~phast.backends.nvdec.NvdecBackend` injects into the
software backend (``decoder.py`` says what a decoder does): PyAV's packets go to
PyNvVideoCodec's NVDEC decoder in Annex-B form (FFmpeg's ``h264_mp4toannexb`` /
``hevc_mp4toannexb`` bitstream filters), each tagged with its decode position as its PTS; each
surface comes back with that tag and is copied at once into worker-owned device memory
(:class:`NvFrame`), so it maps to a display index exactly as a software frame does and NVDEC can
recycle the surface.

Every GPU call goes through :func:`device_call`, which types what it raises
(:func:`device_error`): no untyped error leaves a device call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from phast.errors import CannotHandle, DecodeError, DeviceError, PhastError, UnsupportedCodec

from .avframes import Tag, av, frame_pos
from .decoder import AvDecoder

#: Codecs fed to NVDEC here (those with an Annex-B filter in FFmpeg); 8-bit 4:2:0 only.
NVDEC_CODECS = frozenset({"h264", "hevc"})
#: PyNvVideoCodec's exception classes (pybind11 ``register_exception``: each derives from
#: ``Exception`` only, neither from the other). Matched by class name along the MRO, so the
#: mapping works (and is tested) where the module is not installed.
NVC_UNSUPPORTED = "PyNvVCExceptionUnsupported"  #: codec, profile, size or format this GPU lacks
NVC_ERROR = "PyNvVCException"  #: any other PyNvVideoCodec failure (CUDA, NVDEC API, parser)

class _Plane:
    __slots__ = ("buffer_size",)

    def __init__(self, nbytes: int) -> None:
        self.buffer_size = nbytes


class _Format:
    name = "nv12"


class NvFrame:
    """A decoded NVDEC picture copied into worker-owned device memory (an NV12 cupy array).

    Carries the attributes the software backend's checks read (``opaque``, ``pts``...).
    ``is_corrupt`` is always False because no signal exists: NVDEC reports no concealed or
    corrupt picture (PyNvVideoCodec prints, it does not tell its caller). What stands behind an
    NVDEC picture instead is the software decoder's index (damage marked as the software backend
    marks it) and the sampled comparison of :class:`~phast.backends.crosscheck.CrossChecked`.
    """

    is_corrupt = False  # unknowable here: see the class docstring
    rotation = 0
    format = _Format()

    def __init__(self, nv12: Any, width: int, height: int, pos: int, pts: int | None,
                 key_frame: bool) -> None:
        self.nv12 = nv12
        self.width, self.height = width, height
        self.opaque = Tag(pos)
        self.pts = pts
        self.key_frame = key_frame
        self.planes = (_Plane(int(nv12.nbytes)),)

    def split(self) -> tuple[Any, Any]:
        """The Y and interleaved UV planes, cropped to the visible picture."""
        h, w = self.height, self.width
        ch, cw = (h + 1) // 2, 2 * ((w + 1) // 2)
        return self.nv12[:h, :w], self.nv12[h:h + ch, :cw]


def device_error(error: BaseException, what: str, *, opening: bool = False) -> PhastError | None:
    """The typed phast error for ``error``, raised by a GPU library during ``what``; None for
    what passes through unchanged.

    Unchanged: phast's own errors (``SlotTooSmall`` included: already typed), FFmpeg's (the
    software machinery reads them), a host ``MemoryError`` (the worker exits), and what is not
    an ``Exception`` (interrupts, exits). PyNvVideoCodec's classes are told apart by name along
    the MRO (the module may be absent; pybind11 registers both on ``Exception``):
    ``PyNvVCExceptionUnsupported`` is :class:`CannotHandle` while ``opening`` (``auto`` tries
    the next backend) and :class:`UnsupportedCodec` afterwards (the caller gets it, and the
    next request starts a fresh decoder). Everything else -- ``PyNvVCException``, cupy's CUDA
    runtime and driver errors, device out-of-memory (cupy's ``OutOfMemoryError`` is a
    ``MemoryError`` subclass), pybind11's translations of C++ exceptions (``RuntimeError``,
    ``ValueError``...), an API that changed (``AttributeError``) -- is :class:`DeviceError`:
    the worker exits, since its CUDA context may be poisoned.
    """
    if isinstance(error, (PhastError, av.FFmpegError)) \
            or not isinstance(error, Exception) or type(error) is MemoryError:
        return None
    detail = f"{what}: {type(error).__name__}: {error}"
    if NVC_UNSUPPORTED in {cls.__name__ for cls in type(error).__mro__}:
        return (CannotHandle if opening else UnsupportedCodec)(
            f"NVDEC cannot decode this stream on this GPU ({detail})")
    return DeviceError(detail)


@contextlib.contextmanager
def device_call(what: str, *, opening: bool = False) -> Iterator[None]:
    """Turn what a GPU library raises in the block into a typed error (:func:`device_error`),
    chained to the original; what passes through unchanged is re-raised as it is."""
    try:
        yield
    except Exception as e:
        mapped = device_error(e, what, opening=opening)
        if mapped is None:
            raise
        raise mapped from e


class NvdecDecoder(AvDecoder):
    """PyNvVideoCodec's NVDEC decoder, fed PyAV's packets in Annex-B form, each tagged with its
    decode position as PTS (the surface comes back with it). The stream's PyAV codec context
    is kept for its facts (size, colour) and never decodes.

    NVDEC has no flush-without-output: a fresh decoder (and filter) starts each new run. After a
    GPU call fails (:meth:`device_call`) the next positioning starts a fresh decoder too.
    """

    av_frames = False  # surfaces live in device memory (NvFrame)
    can_skip = False  # NVDEC decodes every packet it is given: no NONREF skipping

    def __init__(self, cupy: Any, nvc: Any, gpu: int, *, threads: int = 0) -> None:
        super().__init__(threads=threads)
        self.cp, self.nvc, self.gpu = cupy, nvc, gpu
        #: PyNvVideoCodec's "unsupported" is CannotHandle until the backend is open
        self.opening = True
        self.fresh = False  #: no packet sent since the decoder was created
        self._decoder: Any = None
        self._bsf: Any = None
        self._stream: Any = None
        self._packets: dict[int, tuple[int | None, bool]] = {}  # position -> (pts, keyframe)

    def attach(self, stream: Any, *, frame_threads: bool) -> None:
        from av.bitstream import BitStreamFilterContext

        super().attach(stream, frame_threads=frame_threads)
        if self.cc.name not in NVDEC_CODECS:
            raise CannotHandle(f"NVDEC is fed {', '.join(sorted(NVDEC_CODECS))} here, "
                               f"not {self.cc.name!r}")
        self._stream = stream
        self._packets.clear()
        # the filter belongs to its container's stream: a new one for every container
        self._bsf = BitStreamFilterContext(f"{self.cc.name}_mp4toannexb", stream)
        if self._decoder is None or not self.fresh:
            self._new_decoder()

    def _new_decoder(self) -> None:
        codec = {"h264": self.nvc.cudaVideoCodec.H264,
                 "hevc": self.nvc.cudaVideoCodec.HEVC}[self.cc.name]
        with self.device_call("creating the NVDEC decoder"):
            self.cp.cuda.Device(self.gpu).use()
            self._decoder = self.nvc.CreateDecoder(gpuid=self.gpu, codec=codec,
                                                   cudacontext=0, cudastream=0,
                                                   usedevicememory=True)
        self.fresh = True

    @contextlib.contextmanager
    def device_call(self, what: str) -> Iterator[None]:
        """Turn what a GPU call raises in the block into a typed error (:func:`device_error`);
        after one, the next positioning starts a fresh decoder (and the pipeline drops its
        run: no warm continuation through a decoder that failed)."""
        try:
            with device_call(what, opening=self.opening):
                yield
        except PhastError:
            self.fresh = False
            raise

    def check(self, pkt: Any) -> None:
        """Decode one packet and drop its pictures (the open's profile check)."""
        for p in self._bsf.filter(pkt):
            payload = np.frombuffer(bytes(p), np.uint8)
            pd = self.nvc.PacketData()
            pd.bsl_data = int(payload.ctypes.data)
            pd.bsl = len(payload)
            self.fresh = False
            with self.device_call("checking the stream on NVDEC"):
                for _ in self._decoder.Decode(pd):
                    pass  # pictures of this check are not kept
            del payload  # alive until Decode returned

    def flush(self) -> None:
        self._packets.clear()
        if not self.fresh:
            from av.bitstream import BitStreamFilterContext

            self._bsf = BitStreamFilterContext(f"{self.cc.name}_mp4toannexb", self._stream)
            self._new_decoder()

    def decode(self, packet: Any) -> list[Any]:
        if packet is None:
            out = []
            for p in self._bsf.filter(None):
                out += self._send(bytes(p), frame_pos(p))
            return out + self._send(b"", None)  # an empty packet flushes NVDEC
        pos = packet.opaque.pos
        self._packets[pos] = (packet.pts, bool(packet.is_keyframe))
        out = []
        for p in self._bsf.filter(packet):
            out += self._send(bytes(p), pos)
        return out

    def _send(self, payload: bytes, pos: int | None) -> list[NvFrame]:
        nvc = self.nvc
        data = np.frombuffer(payload, np.uint8) if payload else np.zeros(1, np.uint8)
        pd = nvc.PacketData()
        pd.bsl_data = int(data.ctypes.data)
        pd.bsl = len(payload)
        if pos is not None:
            pd.pts = pos  # comes back on the frame: which packet made it
        frames = []
        self.fresh = False
        with self.device_call("NVDEC decoding"):
            for f in self._decoder.Decode(pd):
                frames.append(self._keep_surface(f))
        del data  # alive until Decode returned: NVDEC reads the bytes in the call
        return frames

    def _keep_surface(self, f: Any) -> NvFrame:
        """Copy a decoder surface into worker-owned memory so NVDEC can reuse the surface."""
        cp = self.cp
        src = cp.from_dlpack(f)
        if src.ndim == 3:
            src = src.reshape(src.shape[0], src.shape[1])
        w, h = self.cc.width, self.cc.height
        if src.shape[0] < h + (h + 1) // 2 or src.shape[1] < w:
            raise DecodeError(f"NVDEC surface {src.shape} is smaller than a {w}x{h} NV12 frame")
        pos = int(f.getPTS())
        pts, key = self._packets.pop(pos, (None, False))
        return NvFrame(cp.array(src, copy=True), w, h, pos, pts, key)

    def close(self) -> None:
        self._decoder = None  # frees the NVDEC session
        self._bsf = None


__all__ = ["NVC_ERROR", "NVC_UNSUPPORTED", "NVDEC_CODECS", "NvFrame", "NvdecDecoder",
           "device_call", "device_error"]
