"""Independent reference decoder: the ground truth the library under test is compared with.

It is deliberately the most boring decode possible - open the file with PyAV, call
``container.decode(video=stream_index)`` from the start with default threading, never seek -
so that it shares no code path with the library's own seeking/caching/backends.

Contract:

* ``reference_frames(path, stream_index=0, format="rgb24")`` - every frame in display order,
  converted with ``frame.to_ndarray(format=format)``; with ``format="native"`` each frame is a
  tuple of uint8 arrays, one per plane, holding only the plane's visible bytes (see
  :func:`native_planes`).
* ``reference_pts(path, stream_index=0)`` - ``frame.pts`` of every decoded frame (may be None).
* ``reference_count(path, stream_index=0)`` - number of decoded frames.

``stream_index`` counts *video* streams (0 = first video stream), as in PyAV's
``decode(video=n)``.

Results are cached in memory per (path, mtime, size, stream_index, format), since many tests
ask for the same clip. Returned arrays are the cached objects themselves, marked read-only;
copy before modifying. Each call returns a fresh list, so callers may reorder or slice it.
Decode errors (e.g. a truncated file) propagate and are not cached.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

__all__ = [
    "NATIVE",
    "native_planes",
    "plane_row_bytes",
    "reference_count",
    "reference_frames",
    "reference_pts",
]

NATIVE = "native"

# Entries hold whole decoded clips; the test corpus is tiny, but bound it anyway.
_CACHE_SIZE = 64

Planes = tuple[np.ndarray, ...]
Frames = list[np.ndarray] | list[Planes]


class _FileKey(NamedTuple):
    """Identifies one version of a file: a rewritten clip must not hit a stale entry."""

    path: str
    mtime_ns: int
    size: int


def _file_key(path: str | os.PathLike[str]) -> _FileKey:
    resolved = Path(path).resolve()
    stat = resolved.stat()  # raises FileNotFoundError for missing inputs, as PyAV would
    return _FileKey(str(resolved), stat.st_mtime_ns, stat.st_size)


def plane_row_bytes(frame: av.VideoFrame, index: int) -> int:
    """Number of meaningful bytes in one row of plane ``index`` (excludes line padding).

    Planar formats (``format.is_planar``, which includes semi-planar ones such as nv12/p010):
    plane width times the sum, over the components stored in that plane, of ``ceil(bits / 8)``.
    Packed single-plane formats: width times ``ceil(padded_bits_per_pixel / 8)``.
    """
    video_format = frame.format
    plane = frame.planes[index]
    if video_format.is_planar:
        bytes_per_pixel = sum(
            math.ceil(component.bits / 8)
            for component in video_format.components
            if component.plane == index
        )
    else:
        bytes_per_pixel = math.ceil(video_format.padded_bits_per_pixel / 8)
    return plane.width * bytes_per_pixel


def native_planes(frame: av.VideoFrame) -> Planes:
    """Copy each plane's visible bytes into a ``(plane.height, row_bytes)`` uint8 array.

    The decoder's line padding (``plane.line_size - row_bytes`` bytes per row) is dropped, so
    two decodes of the same picture compare equal regardless of allocation alignment.
    Multi-byte samples stay in their stored byte order (e.g. little-endian for ``*10le``).
    A palette plane (pal8 and friends) is returned as its 256 RGBA entries, shape (256, 4).
    """
    planes = []
    for index, plane in enumerate(frame.planes):
        raw = np.frombuffer(memoryview(plane), dtype=np.uint8)
        if index == 1 and frame.format.has_palette:
            planes.append(raw[: 256 * 4].reshape(256, 4).copy())
            continue
        rows = raw[: plane.line_size * plane.height].reshape(plane.height, plane.line_size)
        planes.append(np.ascontiguousarray(rows[:, : plane_row_bytes(frame, index)]))
    return tuple(planes)


def _convert(frame: av.VideoFrame, format: str) -> np.ndarray | Planes:
    if format == NATIVE:
        return native_planes(frame)
    return frame.to_ndarray(format=format)


def _freeze(item: np.ndarray | Planes) -> np.ndarray | Planes:
    # Cached arrays are shared between tests; make accidental in-place edits fail loudly.
    arrays = item if isinstance(item, tuple) else (item,)
    for array in arrays:
        array.flags.writeable = False
    return item


def _decode(key: _FileKey, stream_index: int) -> Iterator[av.VideoFrame]:
    with av.open(key.path) as container:
        yield from container.decode(video=stream_index)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _cached_frames(
    key: _FileKey, stream_index: int, format: str
) -> tuple[np.ndarray | Planes, ...]:
    return tuple(_freeze(_convert(frame, format)) for frame in _decode(key, stream_index))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _cached_pts(key: _FileKey, stream_index: int) -> tuple[int | None, ...]:
    return tuple(frame.pts for frame in _decode(key, stream_index))


def reference_frames(
    path: str | os.PathLike[str], *, stream_index: int = 0, format: str = "rgb24"
) -> Frames:
    """Decode every frame of video stream ``stream_index`` sequentially, in display order.

    ``format`` is any pixel format accepted by ``VideoFrame.to_ndarray`` (the array layout is
    PyAV's), or ``"native"`` for per-plane visible bytes in the decoder's own pixel format.
    """
    return list(_cached_frames(_file_key(path), stream_index, format))


def reference_pts(path: str | os.PathLike[str], stream_index: int = 0) -> list[int | None]:
    """``frame.pts`` of every sequentially decoded frame, in the stream's time base."""
    return list(_cached_pts(_file_key(path), stream_index))


def reference_count(path: str | os.PathLike[str], stream_index: int = 0) -> int:
    """Number of frames a plain sequential decode yields (after edit-list trimming etc.)."""
    return len(_cached_pts(_file_key(path), stream_index))
