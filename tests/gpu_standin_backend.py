"""Test-only backends for the GPU structure on a machine without a GPU (never installed).

* :class:`LyingDecoder` is a :class:`~phast.backends.crosscheck.CrossChecked` backend, NVDEC's
  base, whose "hardware" decoder is FFmpeg's software one made to lie: the pictures of the
  display indices in option ``lie`` come out with their luma inverted. The index and the
  reference pictures come from an honest software decoder, as they do for NVDEC.
* :class:`GpuErrorBackend` raises, on cue, what PyNvVideoCodec raises, through NVDEC's own
  mapping (``NvdecBackend._device_call``). The exception classes are stand-ins named and built
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
from phast.backends.base import DecodedFrame
from phast.backends.crosscheck import CrossChecked
from phast.backends.nvdec import NvdecBackend
from phast.backends.software import SoftwareBackend, _frame_pos


class LyingDecoder(CrossChecked):
    name = "lying"

    def __init__(self, path: str, *, stream: int, options: Mapping[str, Any],
                 progress: Callable[[], None]) -> None:
        self._lie = {int(i) for i in options.get("lie", ())}
        super().__init__(path, stream=stream, options=options, progress=progress)

    def _decode_packet(self, pkt: Any) -> list[Any]:
        return [self._maybe_lie(f) for f in super()._decode_packet(pkt)]

    def _maybe_lie(self, f: Any) -> Any:
        pos = _frame_pos(f)
        idx = self._index
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
    _device_call = NvdecBackend._device_call  # NVDEC's mapping, on a CPU decoder

    def __init__(self, path: str, *, stream: int, options: Mapping[str, Any],
                 progress: Callable[[], None]) -> None:
        self.error = str(options.get("error", ""))
        self.at = int(options.get("at", -1))
        self.always = bool(options.get("always", False))
        self._opening = True
        self._fresh = True
        super().__init__(path, stream=stream, options=options, progress=progress)
        if self.at == -1:
            self._fail("creating the NVDEC decoder")
        self._opening = False

    def _fail(self, what: str) -> None:
        with self._device_call(what):
            raise ERRORS[self.error]()

    def decode(self, index: int, format: str, out: memoryview) -> DecodedFrame:
        if index == self.at and (self.always or worker.current_job.get("attempt") == 0):
            self._fail("NVDEC decoding")
        return super().decode(index, format, out)


__all__ = ["ERRORS", "GpuErrorBackend", "LyingDecoder"]
