"""``Y4MBackend``: YUV4MPEG2 (``.y4m``) decoding in Python and numpy, no FFmpeg.

The whole job of a backend, for the simplest real format there is: parse the header
(:mod:`phast_y4m.header`), find every frame (:meth:`Y4MBackend.build_index`), and copy or
convert one frame into the buffer phast gives (:meth:`Y4MBackend.decode`). Everything else --
the sandboxed worker it runs in, shared memory, the index store, retries -- is phast's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
from phast.backends.base import (
    Backend,
    DecodedFrame,
    PlaneLayout,
    ProbeResult,
    SlotTooSmall,
    check_format,
    intra_index,
    open_source,
    packed_size,
)
from phast.errors import (
    DecodeError,
    IndexMismatch,
    InvalidArgument,
    MediaError,
    NoVideoStream,
)
from phast.index import FrameIndex
from phast.types import PACKED_LAYOUT

from . import convert
from .header import COLORSPACES, FRAME, MAX_FRAME_HEADER, MAX_HEADER, Header, parse_header

#: Options ``phast.open(..., backend_options=...)`` accepts, with their default.
OPTIONS: Mapping[str, Any] = MappingProxyType({"matrix": "bt601"})


class Y4MBackend(Backend):
    """YUV4MPEG2, 8-bit 4:2:0 / 4:2:2 / 4:4:4 / mono. Option ``matrix``: "bt601" (default, as
    FFmpeg reads y4m) or "bt709", for the packed RGB formats."""

    name = "y4m"
    device = "cpu"
    codecs = frozenset({"rawvideo"})
    pix_fmts = frozenset(layout.pix_fmt for layout in COLORSPACES.values())
    # Not offered (a request gets InvalidArgument, as the contract asks): rgb48le, where FFmpeg's
    # own output from 4:2:0 disagrees with its rgb24 (by up to 255 levels at odd widths), and
    # bgr24/bgra, which FFmpeg builds with another chroma phase than rgb24 at odd heights (up
    # to 82 levels apart). No tolerance against either would mean anything.
    formats = ("native", "rgb24", "rgba", "gray", "gray16le")
    # Measured by measure_tolerance.py against av.VideoFrame.to_ndarray, over every y4m clip
    # kind of phast.testing and each width/height parity (noisy pictures: the worst case for
    # chroma interpolation). gray is exact, so it is not listed.
    conversion_tolerance = MappingProxyType({"rgb24": 4, "rgba": 4, "gray16le": 1})

    @classmethod
    def probe(cls) -> ProbeResult:
        return ProbeResult(True, details={"numpy": np.__version__})

    def __init__(self, path: str, *, stream: int, options: Mapping[str, Any],
                 progress: Callable[[], None]) -> None:
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise InvalidArgument(f"unknown y4m option(s) {sorted(unknown)}; known: "
                                  f"{sorted(OPTIONS)}")
        self._matrix = str(options.get("matrix", OPTIONS["matrix"]))
        if self._matrix not in convert.MATRICES:
            raise InvalidArgument(f"matrix must be one of {sorted(convert.MATRICES)}, got "
                                  f"{self._matrix!r}")
        self._progress = progress
        self._fd = open_source(path)  # the descriptor the editor granted (sandbox)
        try:
            self._header: Header = parse_header(os.pread(self._fd, MAX_HEADER, 0))
            if stream != 0:
                raise NoVideoStream(f"{path}: a YUV4MPEG2 file has one video stream; asked "
                                    f"for video stream {stream}")
        except BaseException:
            os.close(self._fd)
            raise
        self._path = path
        self._positions: np.ndarray = np.empty(0, np.int64)  # byte offset of each FRAME line

    def describe(self) -> dict[str, Any]:
        h = self._header
        video = {"index": 0, "type": "video", "codec": "rawvideo", "width": h.width,
                 "height": h.height, "pix_fmt": h.pix_fmt}
        return {"codec": "rawvideo", "width": h.width, "height": h.height,
                "pix_fmt": h.pix_fmt, "bit_depth": 8,
                "average_rate": [h.rate.numerator, h.rate.denominator], "rotation": 0,
                "stream_index": 0, "streams": [video]}

    # -- index ------------------------------------------------------------------------------------
    def build_index(self, *, full_decode: bool = False) -> FrameIndex:
        """Walk the FRAME lines. Every frame is a keyframe; frame i is shown at i / rate.

        A final frame cut short (an interrupted capture) is left out, as FFmpeg leaves it out;
        anything else that is not a FRAME line where one must be is damage: MediaError.
        ``full_decode`` changes nothing: this walk already visits every frame.
        """
        h = self._header
        size = os.fstat(self._fd).st_size
        positions: list[int] = []
        pos = h.length
        while pos < size:
            if len(positions) % 64 == 0:
                self._progress()
            marker = os.pread(self._fd, MAX_FRAME_HEADER, pos)
            end = marker.find(b"\n")
            if end < 0 and pos + len(marker) >= size and (FRAME.startswith(marker)
                                                          or marker.startswith(FRAME)):
                break  # the last FRAME line itself is cut short
            if end < 0 or not marker.startswith(FRAME):
                raise MediaError(f"{self._path}: damaged YUV4MPEG2 stream: no FRAME line at byte "
                                 f"{pos} (after {len(positions)} frames)")
            if pos + end + 1 + h.frame_size > size:
                break  # the last frame is cut short: left out, as FFmpeg leaves it out
            positions.append(pos)
            pos += end + 1 + h.frame_size
        if not positions:
            raise MediaError(f"{self._path}: the YUV4MPEG2 stream has no complete frame")
        index = intra_index(len(positions), time_base=1 / h.rate, pos=positions)
        self.use_index(index)
        return index

    def use_index(self, index: FrameIndex) -> None:
        positions = index.pkt_pos
        if index.frame_count != index.packet_count or np.any(np.diff(positions) <= 0) or \
                positions[0] < self._header.length:
            raise MediaError(f"{self._path}: the stored index is not a YUV4MPEG2 frame index")
        self._positions = positions

    # -- frames -----------------------------------------------------------------------------------
    def _frame_offset(self, index: int) -> int:
        """Byte offset of frame ``index``'s planes, checking its FRAME line is still there."""
        if not 0 <= index < len(self._positions):
            raise IndexMismatch(f"frame {index} is not in this backend's index")
        pos = int(self._positions[index])
        marker = os.pread(self._fd, MAX_FRAME_HEADER, pos)
        end = marker.find(b"\n")
        if not marker.startswith(FRAME) or end < 0:
            raise IndexMismatch(f"{self._path}: no FRAME line at byte {pos} (file changed?)")
        return pos + end + 1

    def _read(self, index: int, into: memoryview) -> None:
        got = os.preadv(self._fd, [into], self._frame_offset(index))
        if got != len(into):
            raise DecodeError(f"{self._path}: frame {index} is cut short ({got} of {len(into)} "
                              "bytes; file truncated since it was indexed?)")

    def decode(self, index: int, format: str, out: memoryview) -> DecodedFrame:
        check_format(self, format)
        h = self._header
        if format == "native":
            if len(out) < h.frame_size:
                raise SlotTooSmall(h.frame_size)
            # The file stores exactly phast's native layout: planes packed, in order. No copy.
            self._read(index, out[: h.frame_size])
            layouts, offset = [], 0
            for rows, cols in h.plane_shapes:
                layouts.append(PlaneLayout(offset, rows, cols))
                offset += rows * cols
            return DecodedFrame(h.width, h.height, h.pix_fmt, 1, tuple(layouts), True)
        needed = packed_size(format, h.width, h.height)
        if len(out) < needed:
            raise SlotTooSmall(needed)
        raw = bytearray(h.frame_size)
        self._read(index, memoryview(raw))
        planes, offset = [], 0
        for rows, cols in h.plane_shapes:
            planes.append(np.frombuffer(raw, np.uint8, rows * cols, offset).reshape(rows, cols))
            offset += rows * cols
        channels, itemsize = PACKED_LAYOUT[format]
        shape = (h.height, h.width) if channels == 1 else (h.height, h.width, channels)
        dst = np.frombuffer(out, np.uint8 if itemsize == 1 else np.dtype("<u2"),
                            needed // itemsize).reshape(shape)
        convert.write_packed(planes, format, dst, full_range=h.full_range, matrix=self._matrix)
        row_bytes = h.width * channels * itemsize
        return DecodedFrame(h.width, h.height, format, itemsize,
                            (PlaneLayout(0, h.height, row_bytes),), True)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
