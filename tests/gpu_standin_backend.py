"""Test-only backends for the GPU structure on a machine without a GPU (never installed).

* :class:`LyingDecoder` is a :class:`~phast.backends.crosscheck.CrossChecked` backend, NVDEC's
  base, whose "hardware" decoder is FFmpeg's software one made to lie: the pictures of the
  display indices in option ``lie`` come out with their luma inverted. The index and the
  reference pictures come from an honest software decoder, as they do for NVDEC.
* :class:`GpuErrorBackend` raises, on cue, what PyNvVideoCodec raises, through NVDEC's own
  mapping (``nvdec_decoder.device_call``). The exception classes are stand-ins named and built
  as PyNvVideoCodec's pybind11 module registers them (each on ``Exception``): a fake of a
  library this machine lacks, not NVDEC.

Options of :class:`GpuErrorBackend`: ``error`` (a key of :data:`ERRORS`), ``at`` (frame index,
or -1: while opening), ``always`` (every attempt; default the first only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import av

from phast import worker
from phast.backends.avframes import frame_pos
from phast.backends.base import DecodedFrame
from phast.backends.crosscheck import CrossChecked
from phast.backends.decoder import AvDecoder
from phast.backends.nvdec_decoder import device_call
from phast.backends.software import SoftwareBackend


class LyingDecoder(CrossChecked):
    """Cross-checked, with :class:`_Liar` as its "hardware" decoder."""

    name = "lying"

    def make_decoder(self, options: Mapping[str, Any]) -> AvDecoder:
        return _Liar({int(i) for i in options.get("lie", ())}, lambda: self._index,
                     threads=int(options.get("threads", 0)))


class _Liar(AvDecoder):
    """FFmpeg's decoder, inverting the luma of the display indices in ``lie``."""

    def __init__(self, lie: set[int], index: Callable[[], Any], *, threads: int) -> None:
        super().__init__(threads=threads)
        self._lie, self._index = lie, index

    def decode(self, packet: Any) -> list[Any]:
        return [self._maybe_lie(f) for f in super().decode(packet)]

    def _maybe_lie(self, f: Any) -> Any:
        pos = frame_pos(f)
        idx = self._index()
        if idx is None or pos is None or int(idx.packet_frame[pos]) not in self._lie:
            return f
        # A new frame: the decoder's own buffer (a reference picture) stays untouched.
        planes = f.to_ndarray()
        height = f.height
        planes[:height] = 255 - planes[:height]
        g = av.VideoFrame.from_ndarray(planes, format=f.format.name)
        g.pts, g.opaque, g.key_frame = f.pts, f.opaque, f.key_frame
        return g


class PyNvVCException(Exception):
    """Stand-in for PyNvVideoCodec's generic error class."""


class PyNvVCExceptionUnsupported(Exception):
    """Stand-in for PyNvVideoCodec's "not supported on this GPU" class."""


for _cls in (PyNvVCException, PyNvVCExceptionUnsupported):
    _cls.__module__ = "PyNvVideoCodec._PyNvVideoCodec"

#: error name -> what the GPU library raises
ERRORS: dict[str, Callable[[], Exception]] = {
    "generic": lambda: PyNvVCException("HandlePictureDisplay : Error code : 208"),
    "unsupported": lambda: PyNvVCExceptionUnsupported("Codec not supported on this GPU"),
    "runtime": lambda: RuntimeError("CUDA_ERROR_LAUNCH_FAILED"),  # a pybind11 translation
}


class GpuErrorBackend(SoftwareBackend):
    name = "gpu-error"

    def __init__(self, path: str, *, stream: int, options: Mapping[str, Any],
                 progress: Callable[[], None]) -> None:
        self.error = str(options.get("error", ""))
        self.at = int(options.get("at", -1))
        self.always = bool(options.get("always", False))
        self._opening = True
        super().__init__(path, stream=stream, options=options, progress=progress)
        if self.at == -1:
            self._fail("creating the NVDEC decoder")
        self._opening = False

    def _fail(self, what: str) -> None:
        """Raise the cued error through NVDEC's mapping; as after NVDEC's, the next request
        starts a fresh decode run."""
        try:
            with device_call(what, opening=self._opening):
                raise ERRORS[self.error]()
        finally:
            self._reset_run()

    def decode(self, index: int, format: str, out: memoryview) -> DecodedFrame:
        if index == self.at and (self.always or worker.current_job.get("attempt") == 0):
            self._fail("NVDEC decoding")
        return super().decode(index, format, out)


class FailingDecoder(AvDecoder):
    """FFmpeg's decoder that fails, through NVDEC's mapping, when fed packet ``at`` (the
    stand-in's error ``error``): a decoder failing in the middle of a decode run."""

    def __init__(self, error: str, at: int) -> None:
        super().__init__()
        self.error, self.at = error, at

    def decode(self, packet: Any) -> list[Any]:
        if packet is not None and packet.opaque.pos == self.at:
            with device_call("NVDEC decoding"):
                raise ERRORS[self.error]()
        return super().decode(packet)


class FailingBackend(SoftwareBackend):
    """The software backend with :class:`FailingDecoder` (options ``error``, ``at``)."""

    name = "failing-decoder"

    def make_decoder(self, options: Mapping[str, Any]) -> AvDecoder:
        return FailingDecoder(str(options.get("error", "generic")), int(options.get("at", -1)))


__all__ = ["ERRORS", "FailingBackend", "GpuErrorBackend", "LyingDecoder"]
