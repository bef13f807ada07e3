"""``Frame``: one picture handed to the editor, viewing shared memory without a copy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .types import Quality

if TYPE_CHECKING:
    from .shm import Slot


@dataclass(frozen=True, eq=False)
class PlaneInfo:
    offset: int
    rows: int
    row_bytes: int


class Frame:
    """A decoded frame: pixels plus where they belong on the timeline.

    ``array`` is a read-only numpy view of a shared-memory slot (zero copy). The slot stays
    leased to this frame -- and to every array derived from it -- until all of them are gone;
    call :meth:`release` (or use ``with``) when done, and :meth:`copy` for long-lived use.

    For packed formats ``array`` has shape ``(height, width, channels)`` (``(height, width)`` for
    gray). For ``format="native"`` :attr:`planes` holds one 2-D array per plane (rows x row
    samples, rows cropped to the visible width) and ``array`` is the first plane when there is
    only one, else all planes packed into one 1-D array, in plane order.
    """

    __slots__ = ("_array", "_lease", "_planes", "format", "height", "index", "key_frame",
                 "pix_fmt", "pts", "quality", "shows", "time", "width")

    def __init__(self, *, array: np.ndarray, planes: tuple[np.ndarray, ...], index: int,
                 pts: int, time: float, quality: Quality, format: str, pix_fmt: str, width: int,
                 height: int, key_frame: bool, shows: int | None = None,
                 lease: Any = None) -> None:
        self._array: np.ndarray | None = array
        self._planes: tuple[np.ndarray, ...] | None = planes
        self._lease = lease
        self.index = index  #: the requested display index (always)
        self.shows = index if shows is None else shows  #: display index whose pixels these are
        self.pts = pts
        self.time = time  #: seconds, ``pts * time_base`` (stream time)
        self.quality = quality
        self.format = format  #: the requested format
        self.pix_fmt = pix_fmt  #: the pixel format of the data (the decoder's for "native")
        self.width = width
        self.height = height
        self.key_frame = key_frame

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            raise ValueError("frame was released")
        return self._array

    @property
    def planes(self) -> tuple[np.ndarray, ...]:
        if self._planes is None:
            raise ValueError("frame was released")
        return self._planes

    def to_ndarray(self) -> np.ndarray:
        """A copy of :attr:`array` owned by the caller (PyAV's name for it)."""
        return np.array(self.array, copy=True)

    numpy = to_ndarray

    def copy(self) -> Frame:
        """A frame with its own memory (no slot lease): keep this one as long as you like."""
        planes = tuple(np.array(p, copy=True) for p in self.planes)
        array = planes[0] if len(planes) == 1 and self.format == "native" else (
            np.array(self.array, copy=True))
        return Frame(array=array, planes=planes if self.format == "native" else (array,),
                     index=self.index, pts=self.pts, time=self.time, quality=self.quality,
                     format=self.format, pix_fmt=self.pix_fmt, width=self.width,
                     height=self.height, key_frame=self.key_frame, shows=self.shows)

    def sibling(self, *, index: int | None = None, quality: Quality | None = None,
                shows: int | None = None, pts: int | None = None,
                time: float | None = None) -> Frame:
        """Another Frame over the same pixels (same lease), e.g. a cached frame handed out again.

        Releasing one sibling never invalidates another: each holds the lease through its arrays.
        """
        return type(self)(array=self.array, planes=self.planes,
                     index=self.index if index is None else index,
                     pts=self.pts if pts is None else pts, time=self.time if time is None else time,
                     quality=self.quality if quality is None else quality, format=self.format,
                     pix_fmt=self.pix_fmt, width=self.width, height=self.height,
                     key_frame=self.key_frame, shows=self.shows if shows is None else shows,
                     lease=self._lease)

    def release(self) -> None:
        """Drop this frame's hold on its slot (arrays you kept still hold it until they go)."""
        self._array = None
        self._planes = None
        self._lease = None

    @property
    def slot(self) -> Slot | None:
        """The shared-memory slot holding these pixels (``None`` for a frame with its own memory:
        a copy, a BLANK picture, a released frame).

        For code that hands the pixels to another process (``phast serve``): ``slot.fd`` is the
        memfd (sealed against resizing), ``slot.offset_of(plane)`` where each plane starts. The
        slot is not reused while this frame is unreleased; never write to it.
        """
        lease = self._lease
        return None if lease is None or self._array is None else lease.slot

    @property
    def released(self) -> bool:
        return self._array is None

    def __enter__(self) -> Frame:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = " released" if self.released else ""
        return (f"<phast.Frame index={self.index} {self.quality.name} {self.width}x{self.height} "
                f"{self.pix_fmt} pts={self.pts} time={self.time:.6f}{state}>")
