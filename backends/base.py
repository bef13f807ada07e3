"""The backend contract. These docstrings are the spec every backend, built-in or third-party,
follows.

A backend turns one video stream of one source into frames, by display index. It runs inside a
sandboxed worker process; phast owns everything else (processes, shared memory, validation,
caching, deadlines). The worker calls, in order::

    probe()                          # class method: can this backend run on this host?
    b = Backend(path, stream=k, options={...}, progress=beat)
    b.describe()                     # plain facts about the stream
    b.build_index() or b.use_index(index)
    b.decode(i, format, out) ...     # any order, any number of times
    b.close()

Error signalling:

* raise :class:`phast.errors.CannotHandle` from ``__init__`` when the input is not for this backend
  (wrong codec, wrong container): the selector tries the next backend and records the reason;
* raise :class:`phast.errors.MediaError` (or a subclass: ``NoVideoStream``, ``UnsupportedCodec``,
  ``DecodeError``) for damaged or unusable input: the caller gets that error;
* raise :class:`phast.errors.IndexMismatch` when decoded frames disagree with the index;
* raise :class:`SlotTooSmall` from ``decode`` when ``out`` cannot hold the frame: phast grants a
  bigger slot and calls ``decode`` again for the same frame;
* anything else (and any crash or hang) is treated as a broken worker: restarted, retried, and the
  frame quarantined if it fails twice.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from phast.index import FrameIndex


@dataclass(frozen=True)
class ProbeResult:
    """Whether a backend can run on this host; ``reason`` says why not (and how to fix it)."""

    available: bool
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


class SlotTooSmall(Exception):
    """Raised by :meth:`Backend.decode` when ``out`` is smaller than the frame needs."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"frame needs {needed} bytes")
        self.needed = needed


@dataclass(frozen=True)
class PlaneLayout:
    """Where one plane lies in the output slot: ``rows`` rows of ``row_bytes`` bytes, packed."""

    offset: int
    rows: int
    row_bytes: int

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes


@dataclass(frozen=True)
class DecodedFrame:
    """What :meth:`Backend.decode` wrote into the slot (the completion record's content).

    ``pix_fmt`` is the format of the pixels in the slot: the requested one, or for
    ``format="native"`` the decoder's own (e.g. ``"yuv420p10le"``). ``itemsize`` is 2 for formats
    with more than 8 bits per sample, else 1.
    """

    width: int
    height: int
    pix_fmt: str
    itemsize: int
    planes: tuple[PlaneLayout, ...]
    key_frame: bool = False


class Backend(abc.ABC):
    """Base class of every backend; subclass it and register the class under a name."""

    #: Registry name (``phast.open(path, backend=name)``).
    name: ClassVar[str] = ""
    #: Where decoded frames live: "cpu" for host memory.
    device: ClassVar[str] = "cpu"
    #: Codec names (FFmpeg spelling) this backend can decode; empty means "ask ``__init__``".
    codecs: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def probe(cls) -> ProbeResult:
        """Say whether this backend can run here, without opening any source.

        Must not raise: a missing library or device is ``ProbeResult(False, "why, and the fix")``.
        """
        return ProbeResult(True)

    @abc.abstractmethod
    def __init__(self, path: str, *, stream: int, options: Mapping[str, Any],
                 progress: Callable[[], None]) -> None:
        """Open video stream number ``stream`` (0 = first video stream) of ``path``.

        ``options`` is plain data from ``phast.open(..., backend_options=...)``. Call ``progress()``
        often during long work (every packet is fine): it is the worker's heartbeat, and a worker
        silent for longer than the watchdog timeout is killed as hung.
        """

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Plain facts about the stream (JSON-serialisable).

        Keys: ``codec``, ``width``, ``height``, ``pix_fmt``, ``bit_depth``, ``average_rate``
        (``[num, den]`` or None), ``rotation`` (degrees), ``streams`` (list of dicts with
        ``index``, ``type``, ``codec`` and for video ``width``, ``height``, ``pix_fmt``).
        """

    @abc.abstractmethod
    def build_index(self, *, full_decode: bool = False) -> FrameIndex:
        """Scan the stream and return its :class:`~phast.index.FrameIndex`.

        Frame ``i`` of the index must be frame ``i`` of a plain sequential decode. The backend
        keeps using the index it returns. ``full_decode=True`` means an index built earlier
        disagreed with the decoder: build this one by decoding every frame.
        """

    @abc.abstractmethod
    def use_index(self, index: FrameIndex) -> None:
        """Adopt an index built earlier (by this backend class, for this same source)."""

    @abc.abstractmethod
    def decode(self, index: int, format: str, out: memoryview) -> DecodedFrame:
        """Decode display frame ``index`` into ``out`` in ``format`` and describe what was written.

        ``format`` is one of :data:`phast.types.OUTPUT_FORMATS`; planes are written packed (no
        row padding) from offset 0 in plane order. Raise :class:`SlotTooSmall` if ``out`` is too
        small, before writing. The pixels must be exactly those of frame ``index``: if the decoder
        disagrees with the index, raise :class:`~phast.errors.IndexMismatch`, never guess.
        """

    def prefetch(self, index: int) -> bool:
        """Optionally decode frame ``index`` ahead of a request, if that is cheap now.

        Called while the worker is idle and the playhead moves forward. Return False when it
        would not be cheap (the base implementation, and any backend without a warm decoder).
        Must not raise for an index out of range; must not seek.
        """
        return False

    def close(self) -> None:  # noqa: B027 -- optional hook
        """Release decoder resources. Called once; the worker may exit right after."""


def write_planes(planes: Sequence[np.ndarray], out: memoryview) -> tuple[PlaneLayout, ...]:
    """Copy 2-D uint8 plane views (rows x row bytes, any row stride) packed into ``out``.

    Raises :class:`SlotTooSmall` before writing anything if they do not fit.
    """
    needed = sum(p.shape[0] * p.shape[1] for p in planes)
    if needed > len(out):
        raise SlotTooSmall(needed)
    dst = np.frombuffer(out, dtype=np.uint8)
    layouts, offset = [], 0
    for plane in planes:
        rows, row_bytes = plane.shape
        np.copyto(dst[offset : offset + rows * row_bytes].reshape(rows, row_bytes), plane)
        layouts.append(PlaneLayout(offset, rows, row_bytes))
        offset += rows * row_bytes
    return tuple(layouts)


def packed_row_bytes(width: int, channels: int, itemsize: int) -> int:
    return width * channels * itemsize


def ceil_bytes(bits: int) -> int:
    return math.ceil(bits / 8)
