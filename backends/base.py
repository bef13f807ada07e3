"""The backend contract. These docstrings are the spec every backend, built-in or third-party,
follows; ``docs/plugins.md`` walks a plugin author through it, and :mod:`phast.testing` checks it.

A backend turns one video stream of one source into frames, by display index. A backend author
writes decode logic only: phast owns the sandbox, the worker processes, shared memory, the frame
index store, validation of everything a backend says, deadlines and retries. **Backend code only
ever runs inside a sandboxed worker process** (never in the editor: the editor refers to a
backend by its registry string ``"module:Class"`` and never imports it). One worker may serve
several sources at once, each with its own backend instance, one request at a time.

Lifecycle (what the worker calls, in order)::

    Backend.probe()                  # class method, once per worker process: can it run here?
    b = Backend(path, stream=k, options={...}, progress=beat)   # open; or raise CannotHandle
    b.describe()                     # plain facts about the stream (JSON data)
    b.build_index()                  # first open of a source: scan it, return its FrameIndex
      or b.use_index(index)          # later opens: adopt the index phast stored
    b.decode(i, format, out) ...     # any order, any number of times, any frame
    b.prefetch(i)                    # optional: cheap read-ahead while the worker is idle
    b.close()                        # once; the process may exit right after

Probe: "not here" versus "broken"

* ``probe()`` returns ``ProbeResult(False, "why, and the fix")`` when the backend cannot run on
  this host (library or device missing). ``phast backends`` lists the reason; ``phast.open`` with
  that backend raises :class:`~phast.errors.BackendUnavailable` with it.
* A probe that *raises*, or a module that fails to import, is a broken plugin: reported the same
  way (name, exception), and never affects other backends or the editor.

Error signalling (from ``__init__``, ``build_index``, ``use_index``, ``decode``):

* :class:`phast.errors.CannotHandle` -- "this input is not for me" (wrong container, codec or
  pixel format): only from ``__init__``. ``backend="auto"`` tries the next backend and records the
  reason; with an explicit backend the caller gets :class:`~phast.errors.UnsupportedCodec`.
* :class:`phast.errors.MediaError` or a subclass (``NoVideoStream``, ``UnsupportedCodec``,
  ``DecodeError``) -- the input is for this backend but damaged or unusable: the caller gets it.
  ``DecodeError`` from ``decode`` refuses one frame; other frames keep working.
* :class:`phast.errors.IndexMismatch` -- decoded frames disagree with the index: phast calls
  ``build_index(full_decode=True)`` and retries.
* :class:`~phast.errors.SlotTooSmall` (also importable from here) from ``decode`` -- ``out``
  cannot hold the frame (raise it before writing): phast grants a bigger buffer and calls
  ``decode`` again for the same frame.
* :class:`phast.errors.InvalidArgument` from ``decode`` -- a ``format`` outside
  :attr:`Backend.formats`.
* Anything else, and any crash or hang, means a broken worker: it is killed, a fresh one retries
  the request once, and a frame that fails twice is quarantined (``FrameQuarantined``). Never
  catch-and-guess: wrong pixels are worse than an error.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from phast.errors import InvalidArgument, MediaError, SlotTooSmall
from phast.index import (
    KEY,
    NOPTS,
    FrameIndex,
    compute_starts,
    display_order_from_pts,
)
from phast.types import OUTPUT_FORMATS, PACKED_LAYOUT

#: Keys every :meth:`Backend.describe` result has (``streams`` and ``stream_index`` too).
DESCRIBE_KEYS: tuple[str, ...] = ("codec", "width", "height", "pix_fmt", "bit_depth",
                                  "average_rate", "rotation", "stream_index", "streams")


@dataclass(frozen=True)
class ProbeResult:
    """Whether a backend can run on this host; ``reason`` says why not (and how to fix it).

    ``details`` is plain data shown by ``phast backends`` (library versions, device names).
    """

    available: bool
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlaneLayout:
    """Where one plane lies in the output buffer: ``rows`` rows of ``row_bytes`` bytes, packed."""

    offset: int
    rows: int
    row_bytes: int

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes


@dataclass(frozen=True)
class DevicePlane:
    """One plane in device memory: ``rows`` rows of ``row_bytes`` bytes, ``pitch`` apart."""

    offset: int
    rows: int
    row_bytes: int
    pitch: int

    @property
    def end(self) -> int:
        """One past the plane's last visible byte, from the allocation's start."""
        return self.offset + (self.rows - 1) * self.pitch + self.row_bytes


@dataclass(frozen=True)
class DeviceRecord:
    """What :meth:`Backend.decode_device` wrote: the device half of a completion record (the
    allocation's id, size and CUDA IPC handle, and each plane's place in it). The editor reads
    the same record back from plain data (``phast.devframe.check_device_record``)."""

    width: int
    height: int
    pix_fmt: str
    itemsize: int
    key_frame: bool
    alloc: int
    alloc_size: int
    handle: bytes
    planes: tuple[DevicePlane, ...]


@dataclass(frozen=True)
class DecodedFrame:
    """What :meth:`Backend.decode` wrote into ``out`` (the completion record's content).

    ``pix_fmt`` is the format of the pixels written: the requested one, or for ``format="native"``
    the decoder's own (FFmpeg spelling, e.g. ``"yuv420p10le"``). ``itemsize`` is 2 for formats
    with more than 8 bits per sample, else 1. ``planes`` lie inside ``out``, in plane order,
    without overlap; for a packed format there is exactly one, of ``height`` rows.
    """

    width: int
    height: int
    pix_fmt: str
    itemsize: int
    planes: tuple[PlaneLayout, ...]
    key_frame: bool = False


class Backend(abc.ABC):
    """Base class of every backend; subclass it and register the class under a name.

    Capabilities are class attributes, readable without opening a source (``phast backends``,
    :mod:`phast.testing`). They describe; phast does not select on them yet.
    """

    #: Registry name (``phast.open(path, backend=name)``); the entry point's name.
    name: ClassVar[str] = ""
    #: Where decoded frames live: "cpu" for host memory (shared-memory slots), "cuda" for device
    #: memory the worker owns and the editor maps through CUDA IPC (see ``backends/nvdec.py``).
    device: ClassVar[str] = "cpu"
    #: Codec names (FFmpeg spelling) this backend can decode; empty means "ask ``__init__``".
    codecs: ClassVar[frozenset[str]] = frozenset()
    #: Native pixel formats (FFmpeg spelling) ``decode(..., "native")`` can produce; empty means
    #: "whatever the decoder gives".
    pix_fmts: ClassVar[frozenset[str]] = frozenset()
    #: Output formats ``decode`` writes; must include "native" and "rgb24". A request for any
    #: other format raises :class:`~phast.errors.InvalidArgument`.
    formats: ClassVar[tuple[str, ...]] = OUTPUT_FORMATS
    #: Largest absolute difference, per packed output format, between this backend's conversion
    #: and FFmpeg's (``av.VideoFrame.to_ndarray(format=...)`` of the same native frame), in units
    #: of the format's samples. A format absent here is converted bit-exactly. Native planes are
    #: always exact: they are the decoder's output, not a conversion.
    conversion_tolerance: ClassVar[Mapping[str, int]] = MappingProxyType({})
    #: Device nodes (glob patterns under /dev, e.g. ``("/dev/nvidiactl", "/dev/dri/renderD*")``)
    #: the backend opens read-write and talks to by ioctl; the worker's Landlock ruleset grants
    #: exactly these (the nodes that exist when it starts). A worker grants them only for
    #: backends named in ``WorkerConfig(backends=...)`` (imported before it confines itself); a
    #: CPU backend needs none.
    device_paths: ClassVar[tuple[str, ...]] = ()
    #: False when the backend's libraries reserve more virtual address space than a cap can
    #: allow (CUDA maps device memory and large reservations into the process, and fails to
    #: initialise under ``RLIMIT_AS``). A worker that preloads such a backend
    #: (``WorkerConfig(backends=...)``) sets no address-space cap; the editor bounds its
    #: resident memory instead, with the same ``WorkerConfig(memory_limit=...)`` (a watchdog
    #: that kills the worker past it). Elsewhere such a backend is refused at open.
    address_space_limit: ClassVar[bool] = True

    @classmethod
    def probe(cls) -> ProbeResult:
        """Say whether this backend can run here, without opening any source.

        Called in a child process by ``phast backends`` and once per worker process before the
        first open. Must be quick (a few seconds at most: it is timed out) and must not raise: a
        missing library or device is ``ProbeResult(False, "why, and the fix")``. A probe that
        raises is reported as a broken backend.
        """
        return ProbeResult(True)

    @classmethod
    def capabilities(cls, info: Mapping[str, Any]) -> str | None:
        """Say why this backend cannot decode a stream described by ``info``; None if it can.

        ``info`` is the :meth:`describe` result (codec, pix_fmt, bit_depth, width, height).
        The worker calls it right after a successful open and turns a reason into
        :class:`~phast.errors.CannotHandle`, so ``backend="auto"`` records it and tries the
        next backend. Hardware backends check codec, profile, bit depth and size here.
        """
        return None

    @abc.abstractmethod
    def __init__(self, path: str, *, stream: int, options: Mapping[str, Any],
                 progress: Callable[[], None]) -> None:
        """Open video stream number ``stream`` (0 = first video stream) of ``path``.

        ``path`` is an absolute path to an existing, non-empty regular file. Read it through
        :func:`open_source` (``fd = open_source(path)``, here in ``__init__``; keep the descriptor
        and close it in :meth:`close`): in a worker the sandbox lets no path outside the library
        directories be opened, and the editor passes the source as a descriptor. Never write
        anything (the sandbox forbids it). ``options`` is plain JSON data from
        ``phast.open(..., backend_options=...)``: validate it, and raise
        :class:`~phast.errors.InvalidArgument` for bad values. Call ``progress()`` often during
        long work (every packet is fine; it is cheap): it is the worker's heartbeat, and a worker
        silent for longer than the watchdog timeout is killed as hung.

        Raise :class:`~phast.errors.CannotHandle` when the source is not for this backend,
        :class:`~phast.errors.NoVideoStream` when it has no video stream number ``stream``, and
        :class:`~phast.errors.MediaError` when it is for this backend but damaged. Keep open
        cheap: the full scan belongs in :meth:`build_index`.
        """

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Plain facts about the stream (JSON-serialisable), valid right after ``__init__``.

        Keys (:data:`DESCRIBE_KEYS`): ``codec`` (FFmpeg spelling), ``width``, ``height``,
        ``pix_fmt`` (the native format of frame 0), ``bit_depth``, ``average_rate``
        (``[num, den]`` or None), ``rotation`` (degrees, metadata only), ``stream_index`` (index of
        the stream among all of the source's streams) and ``streams`` (list of dicts with
        ``index``, ``type``, ``codec`` and, for video, ``width``, ``height``, ``pix_fmt``). The
        editor type-checks every field; a wrong type is a protocol violation.
        """

    @abc.abstractmethod
    def build_index(self, *, full_decode: bool = False) -> FrameIndex:
        """Scan the stream and return its :class:`~phast.index.FrameIndex`.

        Frame ``i`` of the index must be frame ``i`` of a plain sequential decode (PyAV's
        ``container.decode(video=0)``). The backend keeps using the index it returns. Build it
        with the helpers below when they fit: :func:`intra_index` (every frame a keyframe, packets
        in display order) or :func:`index_from_packets` (display order from packet timestamps);
        or with :mod:`phast.index` directly. The editor validates it before storing it.
        ``full_decode=True`` means an index built earlier disagreed with the decoder: build this
        one by decoding every frame.
        """

    @abc.abstractmethod
    def use_index(self, index: FrameIndex) -> None:
        """Adopt an index built earlier (by this backend class, for this same source).

        Called instead of :meth:`build_index` when phast has the source's index stored. Trust
        nothing cheap to check (e.g. that its packet positions still hold frame headers); raise
        :class:`~phast.errors.IndexMismatch` from ``decode`` when decoding proves it wrong.
        """

    @abc.abstractmethod
    def decode(self, index: int, format: str, out: memoryview) -> DecodedFrame:
        """Decode display frame ``index`` into ``out`` in ``format`` and describe what was written.

        ``out`` is a writable, 1-D, C-contiguous byte buffer (a shared-memory slot the editor
        granted, or a scratch buffer): write only into it, and keep no reference to it after
        returning. ``index`` is in ``range(frame_count)``. ``format`` is one of
        :data:`phast.types.OUTPUT_FORMATS`:

        * ``"native"``: the decoder's planes untouched, each row cropped to its visible bytes
          (:func:`native_row_bytes`); samples wider than 8 bits stay little-endian 16-bit words.
        * a packed format (``"rgb24"``, ``"gray16le"``...): one plane of ``height`` rows of
          ``width * channels * itemsize`` bytes (:data:`phast.types.PACKED_LAYOUT`), converted as
          FFmpeg's swscale converts (``to_ndarray(format=...)``), within
          :attr:`conversion_tolerance`.

        Planes are written packed (no row padding) from offset 0 in plane order
        (:func:`write_planes`). Raise :class:`SlotTooSmall` if ``out`` is too small, before
        writing. The pixels must be exactly those of frame ``index``: if the decoder disagrees
        with the index, raise :class:`~phast.errors.IndexMismatch`; never guess.
        """

    def prefetch(self, index: int) -> bool:
        """Optionally decode frame ``index`` ahead of a request, if that is cheap now.

        Called while the worker is idle and the playhead moves forward. Return False when it
        would not be cheap (the base implementation, and any backend without a warm decoder).
        Must not raise for an index out of range; must not seek.
        """
        return False

    def advance(self, index: int, *, references_only: bool) -> bool:
        """Optionally decode on to frame ``index`` for the frame sink only (proxies made
        ahead of a playhead), skipping frames no other frame references when asked (a
        player dropping frames to keep up). Seeks when the current run cannot reach it. Return
        False when the backend cannot (the default); must not raise for a bad index."""
        return False

    def decode_position(self) -> tuple[int, int] | None:
        """Optionally, where the decoder stands: ``(start, next)``, the packet (decode order)
        its current run started from and the next packet it would feed. The editor estimates
        what a request will cost from it (continuing the run, or seeking); None: unknown
        (the default), every request is costed as a seek."""
        return None

    def set_frame_sink(self, sink: Callable[[int, Any], None] | None) -> bool:
        """Optionally hand every frame this backend decodes, and would serve, to ``sink``.

        ``sink(index, frame)`` is called with the display index and an ``av.VideoFrame`` as
        frames come out of decodes for any reason (requests, the frames on the way to a far
        target, read-ahead), only once they are as trusted as a served frame; it must not keep
        the frame. The worker turns them into proxies as a by-product. ``None`` stops it.
        Return False when the backend cannot (the default: frames elsewhere than the host).
        """
        return False

    def av_frame(self, index: int) -> Any:
        """Optionally, frame ``index`` as an ``av.VideoFrame`` in host memory, decoded exactly
        as :meth:`decode` would serve it. Proxy building downscales it without a conversion;
        None (the default): not offered, proxies are made from the ``rgb24`` output."""
        return None

    def proxy_picture(self, index: int, width: int, height: int) -> np.ndarray | None:
        """Optionally, frame ``index``'s proxy: a ``height`` x ``width`` x 3 uint8 rgb24 array,
        area-downscaled where the backend's frames live (a GPU backend converts and downscales
        on the device and copies only the small picture to the host; NVDEC does, with
        :mod:`phast.kernels`). Raise as :meth:`decode` does for a frame it cannot serve. None
        (the default): not offered, the worker downscales :meth:`av_frame` or the rgb24 output.
        """
        return None

    def decode_device(self, index: int, format: str, slot: int) -> DeviceRecord:
        """Decode frame ``index`` into device slot ``slot``, a region of device memory the
        worker owns (backends whose :attr:`device` is not "cpu": the editor asks them for
        frames this way, never through :meth:`decode`). The record says where the planes are;
        ``phast.devframe`` checks it and maps the allocation into the editor."""
        raise InvalidArgument(f"backend {self.name!r} keeps its frames in host memory "
                              f"(device {self.device!r}): use decode()")

    def close(self) -> None:  # noqa: B027 -- optional hook
        """Release decoder resources and close the source. Called once; the worker may exit
        right after, or keep serving other sources (so leak nothing: files, threads, memory)."""


# -- helpers for backend authors ----------------------------------------------------------------


def open_source(path: str) -> int:
    """A new read-only descriptor of the source ``path``; the caller owns (and closes) it.

    In a worker, call it from ``Backend.__init__``: it duplicates the descriptor the editor opened
    and passed with the ``open`` request (the worker's Landlock ruleset denies opening media by
    path). Elsewhere (a backend's own tests, :mod:`phast.testing`) it opens ``path``. The
    duplicate shares its file offset with nothing else the worker holds; read with ``pread`` or
    seek before reading.
    """
    import os

    from phast import sandbox

    fd = sandbox.source_fd(path)
    if fd is not None:
        return os.dup(fd)
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


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


def packed_size(format: str, width: int, height: int) -> int:
    """Bytes a ``width`` x ``height`` frame needs in packed ``format`` (not "native")."""
    channels, itemsize = PACKED_LAYOUT[format]
    return packed_row_bytes(width, channels, itemsize) * height


def ceil_bytes(bits: int) -> int:
    return math.ceil(bits / 8)


def native_row_bytes(plane_width: int, bits_per_sample: int, samples_per_pixel: int = 1) -> int:
    """Visible bytes in one row of a native plane: samples are 1 byte up to 8 bits, else 2."""
    return plane_width * samples_per_pixel * ceil_bytes(bits_per_sample)


def check_format(backend: type[Backend] | Backend, format: str) -> None:
    """Raise :class:`~phast.errors.InvalidArgument` unless ``backend`` declares ``format``."""
    if format not in backend.formats:
        raise InvalidArgument(f"backend {backend.name!r} cannot write format {format!r}; it "
                              f"writes {', '.join(backend.formats)}")


def intra_index(count: int, *, time_base: Fraction, pts: Sequence[int] | None = None,
                pos: Sequence[int] | None = None, timestamps: str = "container") -> FrameIndex:
    """The index of a stream whose packets are all keyframes, one frame each, in display order.

    Raw and intra-only formats (YUV4MPEG2, MJPEG, image sequences): packet ``i`` is frame ``i``
    and decodes on its own. ``pts`` defaults to ``0 .. count - 1`` (in ``time_base``); ``pos`` is
    each packet's byte position (-1 where unknown), which a backend may use to find it again.
    ``timestamps`` is "container" when the source defines the times (a frame rate in a header
    counts), "synthesized" when the backend made them up.
    """
    if count < 1:
        raise MediaError("the video stream has no frames")
    frames = np.arange(count, dtype=np.int64)
    stamps = frames if pts is None else np.asarray(pts, dtype=np.int64)
    where = np.full(count, -1, np.int64) if pos is None else np.asarray(pos, dtype=np.int64)
    index = FrameIndex(stamps, stamps, where, np.full(count, KEY, np.uint8), frames, stamps,
                       frames, Fraction(time_base), "demux", timestamps)
    index.validate()
    return index


def index_from_packets(pkt_pts: Sequence[int], pkt_dts: Sequence[int], pkt_pos: Sequence[int],
                       pkt_flags: Sequence[int], *, time_base: Fraction) -> FrameIndex | None:
    """An index from one demux pass, with display order taken from packet timestamps.

    Arrays are per packet in decode order (``NOPTS`` for a missing timestamp, -1 for an unknown
    position, flags from :mod:`phast.index`: ``KEY``, ``DISCARD``). Returns None when timestamps
    cannot give the display order (missing or duplicate): decode every frame instead. The order
    is phast's rule for well-formed streams; the backend must still check decoded frames against
    it and raise :class:`~phast.errors.IndexMismatch` on disagreement (and is expected to verify
    a prefix by decoding, as the software backend does).
    """
    pts = np.asarray(pkt_pts, dtype=np.int64)
    flags = np.asarray(pkt_flags, dtype=np.uint8)
    order = display_order_from_pts(pts, flags)
    if order is None or len(order) == 0:
        return None
    index = FrameIndex(pts, np.asarray(pkt_dts, dtype=np.int64), np.asarray(pkt_pos, np.int64),
                       flags, order, pts[order], compute_starts(order, pts, flags),
                       Fraction(time_base), "demux", "container")
    index.validate()
    return index


__all__ = ["DESCRIBE_KEYS", "NOPTS", "Backend", "DecodedFrame", "DevicePlane", "DeviceRecord",
           "PlaneLayout", "ProbeResult",
           "SlotTooSmall", "ceil_bytes", "check_format", "index_from_packets", "intra_index",
           "native_row_bytes", "packed_row_bytes", "packed_size", "write_planes"]
