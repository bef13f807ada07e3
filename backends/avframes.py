"""PyAV frames as the backends see them: their visible planes, their conversion into a slot,
a checksum of their picture, and which packet made them.

The converter of the software backend's three parts (demuxer -> decoder -> converter): a frame
that comes out of a decoder is checked and kept as an ``av.VideoFrame``, and converted only when
it is served (:func:`write_frame`).
"""

from __future__ import annotations

import zlib
from typing import Any, NamedTuple

import numpy as np

from phast.errors import MediaError, MissingDependency
from phast.types import PACKED_LAYOUT

from .base import DecodedFrame, SlotTooSmall, ceil_bytes, write_planes

try:
    import av
except ImportError as e:  # pragma: no cover - av is a core dependency
    raise MissingDependency("the software backend needs PyAV: pip install av") from e


def _plane_row_bytes(frame: av.VideoFrame, plane: int) -> int:
    """Visible bytes per row of one plane (rows are padded to an alignment in FFmpeg buffers)."""
    fmt = frame.format
    width = frame.planes[plane].width
    if len(frame.planes) == 1:
        return ceil_bytes(fmt.padded_bits_per_pixel * width)
    per_pixel = sum(ceil_bytes(c.bits) for c in fmt.components if c.plane == plane)
    return per_pixel * width


def frame_planes(frame: av.VideoFrame) -> list[np.ndarray]:
    """The visible bytes of each plane as (rows, row bytes) uint8 views, no copy."""
    views = []
    for p, plane in enumerate(frame.planes):
        rows, row_bytes = plane.height, _plane_row_bytes(frame, p)
        if row_bytes > plane.line_size:
            raise MediaError(f"unexpected plane layout for {frame.format.name}")
        buf = np.frombuffer(memoryview(plane), dtype=np.uint8)
        views.append(np.lib.stride_tricks.as_strided(buf, (rows, row_bytes), (plane.line_size, 1)))
    return views


def write_frame(frame: av.VideoFrame, format: str, out: memoryview,
                reformatter: Any = None) -> DecodedFrame:
    """Convert ``frame`` to ``format`` (swscale, as ``to_ndarray`` does); pack it into ``out``.

    Pass a long-lived ``VideoReformatter``: it keeps its swscale context between frames (same
    parameters, same pixels), where ``frame.reformat`` builds a new one every call (~0.9 ms at
    720p, more than the conversion itself).
    """
    if format == "native":
        src = frame
        itemsize = 2 if max((c.bits for c in frame.format.components), default=8) > 8 else 1
    else:
        channels, itemsize = PACKED_LAYOUT[format]
        needed = frame.width * frame.height * channels * itemsize
        if needed > len(out):
            raise SlotTooSmall(needed)  # before paying for the conversion
        src = (reformatter.reformat(frame, format=format) if reformatter is not None
               else frame.reformat(format=format))
    layouts = write_planes(frame_planes(src), out)
    return DecodedFrame(src.width, src.height, src.format.name, itemsize, layouts, frame.key_frame)


def picture_crc(frame: Any) -> int:
    """CRC-32 of a decoded frame's visible bytes (row padding excluded: it is never written):
    whether two decodes of the same frame agree, five times cheaper than BLAKE2 at 1080p."""
    crc = 0
    for view in frame_planes(frame):
        crc = zlib.crc32(np.ascontiguousarray(view).data, crc)
    return crc


class FrameFacts(NamedTuple):
    """What a decoded frame says about its stream (``describe``), kept instead of the frame:
    holding a decoded frame changes which buffers the decoder reuses, and the checks that
    compare two decodes rely on one of them holding nothing."""

    width: int
    height: int
    pix_fmt: str
    rotation: int

    @classmethod
    def of(cls, f: Any) -> FrameFacts:
        return cls(int(f.width), int(f.height), str(f.format.name),
                   int(getattr(f, "rotation", 0) or 0))


class Tag:
    """A packet's decode position, attached as FFmpeg opaque data and read back off its frame.

    PyAV keys opaque objects by ``id()``: a distinct object per packet keeps two live packets
    with the same position (interned small ints!) from sharing, and freeing, one key.
    """

    __slots__ = ("pos",)

    def __init__(self, pos: int) -> None:
        self.pos = pos


def frame_pos(frame: Any) -> int | None:
    """The decode position of the packet that made ``frame`` (its :class:`Tag`), or None."""
    tag = frame.opaque
    return tag.pos if isinstance(tag, Tag) else None


__all__ = ["FrameFacts", "Tag", "av", "frame_planes", "frame_pos", "picture_crc", "write_frame"]
