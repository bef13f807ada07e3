"""The reference decode conformance is judged against: the most boring decode possible.

Open the file with PyAV, ``container.decode(video=k)`` from the start with default threading,
never seek. It shares no code path with phast's workers or any backend.

* :func:`reference_frames` -- every frame in display order, ``frame.to_ndarray(format=...)``, or
  for ``format="native"`` a tuple of each plane's visible bytes (:func:`native_planes`).
* :func:`reference_pts` -- ``frame.pts`` of every frame (None where the source has none).
* :func:`reference_pix_fmt` -- the native pixel format of frame 0.

Results are cached in memory per file version (path, mtime, size) and returned read-only.
With ``partial=True`` a decode error ends the list instead of propagating (damaged inputs).
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = ["native_planes", "reference_frames", "reference_pix_fmt", "reference_pts"]

Planes = tuple[np.ndarray, ...]


class _FileKey(NamedTuple):
    path: str
    mtime_ns: int
    size: int


def _key(path: str | os.PathLike[str]) -> _FileKey:
    resolved = Path(path).resolve()
    st = resolved.stat()
    return _FileKey(str(resolved), st.st_mtime_ns, st.st_size)


def _row_bytes(frame: Any, index: int) -> int:
    """Visible bytes in one row of plane ``index`` (FFmpeg pads rows to an alignment)."""
    fmt, plane = frame.format, frame.planes[index]
    if fmt.is_planar:
        per_pixel = sum(math.ceil(c.bits / 8) for c in fmt.components if c.plane == index)
    else:
        per_pixel = math.ceil(fmt.padded_bits_per_pixel / 8)
    return int(plane.width * per_pixel)


def native_planes(frame: Any) -> Planes:
    """Each plane's visible bytes as a ``(plane.height, row_bytes)`` uint8 array (a copy).

    Row padding is dropped; samples wider than 8 bits keep their stored (little-endian) bytes.
    This is the layout phast's ``format="native"`` promises.
    """
    planes = []
    for i, plane in enumerate(frame.planes):
        raw = np.frombuffer(memoryview(plane), dtype=np.uint8)
        rows = raw[: plane.line_size * plane.height].reshape(plane.height, plane.line_size)
        planes.append(np.ascontiguousarray(rows[:, : _row_bytes(frame, i)]))
    return tuple(planes)


def _decode(key: _FileKey, stream: int, partial: bool) -> list[Any]:
    import av

    frames: list[Any] = []
    try:
        with av.open(key.path) as container:
            for frame in container.decode(video=stream):
                frames.append(frame)
    except (av.FFmpegError, OSError, ValueError):
        if not partial:
            raise
    return frames


def _freeze(item: Any) -> Any:
    for array in item if isinstance(item, tuple) else (item,):
        array.flags.writeable = False
    return item


@functools.lru_cache(maxsize=32)
def _cached(key: _FileKey, stream: int, format: str, partial: bool) -> tuple[Any, ...]:
    frames = _decode(key, stream, partial)
    if format == "pts":
        return tuple(f.pts for f in frames)
    if format == "pix_fmt":
        return tuple(f.format.name for f in frames[:1])
    if format == "native":
        return tuple(_freeze(native_planes(f)) for f in frames)
    return tuple(_freeze(f.to_ndarray(format=format)) for f in frames)


def reference_frames(path: str | os.PathLike[str], *, format: str = "rgb24", stream: int = 0,
                     partial: bool = False) -> list[Any]:
    """Every frame of video stream ``stream``, decoded sequentially, in display order."""
    return list(_cached(_key(path), stream, format, partial))


def reference_pts(path: str | os.PathLike[str], *, stream: int = 0,
                  partial: bool = False) -> list[int | None]:
    """``frame.pts`` of every sequentially decoded frame, in the stream's time base."""
    return list(_cached(_key(path), stream, "pts", partial))


def reference_pix_fmt(path: str | os.PathLike[str], *, stream: int = 0) -> str:
    """The native pixel format (FFmpeg spelling) of frame 0."""
    found = _cached(_key(path), stream, "pix_fmt", False)
    if not found:
        raise ValueError(f"{path}: no frame decodes")
    return str(found[0])
