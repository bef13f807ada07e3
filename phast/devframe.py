"""Device frames: pictures in a worker's GPU memory, mapped into the editor by CUDA IPC.

Ownership rules (``docs/architecture.md``, "Hardware backends"):

* The **worker owns** every device allocation. The editor names a *device slot* per request
  (:class:`DeviceSlots`); the worker writes the frame into that slot's region and never reuses
  a slot the editor has not handed back (a slot comes back when every frame over it is gone).
* The editor maps each allocation **once per worker process** (``cudaIpcOpenMemHandle``) and
  caches the mapping (:class:`DeviceMappings`); frames point at offsets inside it.
* Mappings belong to the worker's **generation**: when the process ends (exit, crash, kill) all
  its mappings close (``Process.on_end``) before any retry, and frames over them refuse access
  (:class:`~phast.errors.WorkerCrashed`) instead of exposing dangling device pointers. Keep
  pixels past a worker's life with :meth:`DeviceFrame.copy` (device) or ``numpy()`` (host).
* Every record is checked (:func:`check_device_record`) before a pointer is formed: a plane lies
  inside its allocation, planes do not overlap, and a known allocation id keeps its size and
  handle.

cupy is imported only when a mapping is opened or pixels are copied: ``import phast`` and
``phast.open`` never load it.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

import numpy as np

from .backends.base import DevicePlane, DeviceRecord
from .errors import ProtocolViolation, SlotsExhausted, WorkerCrashed
from .frame import Frame
from .protocol import field
from .types import PACKED_LAYOUT, Quality

MAX_SIDE = 32768
MAX_ALLOCS = 4096  #: allocation ids a worker may use
MAX_ALLOC_BYTES = 1 << 34  #: largest allocation a record may claim (16 GiB)
IPC_HANDLE_BYTES = 64  #: sizeof(cudaIpcMemHandle_t)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_device_record(rec: Any, fmt: str,
                        known: Mapping[int, tuple[int, bytes]]) -> DeviceRecord:
    """Validate the ``frame`` part of a device completion record; plain data in, no GPU needed.

    ``known`` maps the allocation ids this worker process already exported to (size, handle).
    Raises :class:`ProtocolViolation` for anything out of bounds: an allocation id whose size or
    handle changed (a forged id), a plane past the end of its allocation, overlapping planes, a
    pitch below the row size, or a layout that does not describe a ``fmt`` frame.
    """
    if not isinstance(rec, dict):
        raise ProtocolViolation("device frame record is not an object")
    width, height = field(rec, "width", int), field(rec, "height", int)
    pix_fmt, itemsize = field(rec, "pix_fmt", str), field(rec, "itemsize", int)
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE) or itemsize not in (1, 2):
        raise ProtocolViolation(f"implausible frame {width}x{height}, itemsize {itemsize}")
    dev = field(rec, "device", dict)
    alloc, size = field(dev, "alloc", int), field(dev, "alloc_size", int)
    if not 0 <= alloc < MAX_ALLOCS or not 0 < size <= MAX_ALLOC_BYTES:
        raise ProtocolViolation(f"implausible allocation {alloc} of {size} bytes")
    try:
        handle = bytes.fromhex(field(dev, "handle", str))
    except ValueError as e:
        raise ProtocolViolation("IPC handle is not hex") from e
    if len(handle) != IPC_HANDLE_BYTES:
        raise ProtocolViolation(f"IPC handle has {len(handle)} bytes, not {IPC_HANDLE_BYTES}")
    if alloc in known and known[alloc] != (size, handle):
        raise ProtocolViolation(f"allocation {alloc} changed its size or handle")
    raw = field(dev, "planes", list)
    if not 1 <= len(raw) <= 4:
        raise ProtocolViolation("implausible plane list")
    planes: list[DevicePlane] = []
    end = 0
    for p in raw:
        if not isinstance(p, list) or len(p) != 4 or not all(_int(v) for v in p):
            raise ProtocolViolation("malformed device plane record")
        plane = DevicePlane(*p)
        if (plane.offset < end or plane.rows < 1 or plane.row_bytes < 1
                or plane.pitch < plane.row_bytes or plane.row_bytes % itemsize
                or plane.end > size):
            raise ProtocolViolation(f"plane {p} is outside allocation {alloc} ({size} bytes) "
                                    "or overlaps another")
        end = plane.offset + plane.rows * plane.pitch
        planes.append(plane)
    if fmt != "native":
        channels, nbytes = PACKED_LAYOUT[fmt]
        if (pix_fmt != fmt or itemsize != nbytes or len(planes) != 1
                or planes[0].rows != height or planes[0].row_bytes != width * channels * nbytes):
            raise ProtocolViolation(f"record does not describe a {width}x{height} {fmt} frame")
    elif planes[0].rows != height:
        raise ProtocolViolation("native luma plane height differs from the frame height")
    return DeviceRecord(width, height, pix_fmt, itemsize, rec.get("key_frame") is True, alloc,
                        size, handle, tuple(planes))


# -- mappings ----------------------------------------------------------------------------------


class Ipc(Protocol):
    def open(self, handle: bytes) -> int: ...
    def close(self, ptr: int) -> None: ...


class CupyIpc:
    """CUDA IPC through cupy's runtime bindings (imported on first use)."""

    def open(self, handle: bytes) -> int:
        import cupy

        rt = cupy.cuda.runtime
        return int(rt.ipcOpenMemHandle(handle, rt.cudaIpcMemLazyEnablePeerAccess))

    def close(self, ptr: int) -> None:
        import cupy

        cupy.cuda.runtime.ipcCloseMemHandle(ptr)


class DeviceMappings:
    """The editor's mappings of one worker process's allocations: opened once, closed together.

    ``closed`` turns True when the process ends; every lease over these mappings then refuses
    access.
    """

    def __init__(self, ipc: Ipc | None = None) -> None:
        self.ipc: Ipc = ipc or CupyIpc()
        self._maps: dict[int, tuple[int, int, bytes]] = {}  # alloc -> (ptr, size, handle)
        self._lock = threading.Lock()
        self.closed = False

    def known(self) -> dict[int, tuple[int, bytes]]:
        with self._lock:
            return {a: (size, h) for a, (_p, size, h) in self._maps.items()}

    def pointer(self, rec: DeviceRecord) -> int:
        """Base pointer of ``rec``'s allocation in this process (mapping it the first time)."""
        with self._lock:
            if self.closed:
                raise WorkerCrashed("the worker owning this device memory has ended")
            got = self._maps.get(rec.alloc)
            if got is None:
                got = (self.ipc.open(rec.handle), rec.alloc_size, rec.handle)
                self._maps[rec.alloc] = got
            return got[0]

    def close_all(self) -> None:
        with self._lock:
            self.closed = True
            maps, self._maps = self._maps, {}
        for ptr, _size, _handle in maps.values():
            with contextlib.suppress(Exception):  # a context already gone: nothing to unmap
                self.ipc.close(ptr)

    def __len__(self) -> int:
        return len(self._maps)


_by_process: weakref.WeakKeyDictionary[Any, DeviceMappings] = weakref.WeakKeyDictionary()
_by_process_lock = threading.Lock()


def mappings_for(proc: Any, ipc: Ipc | None = None) -> DeviceMappings:
    """The mappings of worker process ``proc``; they close when the process ends."""
    with _by_process_lock:
        maps = _by_process.get(proc)
        if maps is None:
            maps = _by_process[proc] = DeviceMappings(ipc)
            proc.on_end.append(maps.close_all)
        return maps


# -- device slots --------------------------------------------------------------------------------


class DeviceSlots:
    """Device slot ids of one clip: granted per request, leased to frames, returned by GC.

    Returns come from finalizers (any thread, any time): queued lock-free, taken back under the
    lock, as :class:`phast.shm.SlotPool` does.
    """

    def __init__(self, max_slots: int = 32) -> None:
        self.max_slots = max_slots
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._all: set[int] = set()
        self._free: set[int] = set()
        self._returned: collections.deque[int] = collections.deque()

    def grant(self) -> int:
        with self._lock:
            while self._returned:
                self._free.add(self._returned.popleft())
            if self._free:
                return self._free.pop()
            if len(self._all) >= self.max_slots:
                raise SlotsExhausted(f"all {self.max_slots} device slots are held by frames")
            slot = next(self._ids)
            self._all.add(slot)
            return slot

    def give_back(self, slot: int) -> None:
        self._returned.append(slot)

    def lease(self, slot: int, maps: DeviceMappings) -> DeviceLease:
        return DeviceLease(self, slot, maps)


class DeviceLease:
    """Keeps one device slot out of reuse while any frame or array over it lives."""

    def __init__(self, slots: DeviceSlots, slot: int, maps: DeviceMappings) -> None:
        self.slot = slot
        self.maps = maps
        weakref.finalize(self, slots.give_back, slot)

    @property
    def alive(self) -> bool:
        return not self.maps.closed


class DeviceArray:
    """A strided view of device memory with ``__cuda_array_interface__`` and ``__dlpack__``.

    Holds its lease: a cupy/torch array made from it keeps the slot from reuse. Access after the
    owning worker ended raises :class:`~phast.errors.WorkerCrashed`.
    """

    def __init__(self, lease: DeviceLease | None, ptr: int, shape: tuple[int, ...],
                 strides: tuple[int, ...], dtype: np.dtype[Any], keep: Any = None) -> None:
        self._lease, self._ptr, self._keep = lease, ptr, keep
        self.shape, self.strides, self.dtype = shape, strides, dtype

    def _check(self) -> None:
        if self._lease is not None and not self._lease.alive:
            raise WorkerCrashed("the worker that owned this frame's device memory has ended; "
                                "copy() frames you keep")

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        self._check()
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self._ptr, False),
                "strides": self.strides, "version": 3, "stream": None}

    def cupy(self) -> Any:
        import cupy

        self._check()
        return cupy.asarray(self)

    def __dlpack__(self, stream: Any = None) -> Any:
        return self.cupy().__dlpack__(stream=stream)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.cupy().__dlpack_device__()

    def get(self) -> np.ndarray:
        """A host copy."""
        import cupy

        return cupy.asnumpy(self.cupy())


class DeviceFrame(Frame):
    """A :class:`~phast.frame.Frame` whose pixels are in GPU memory (``frame.device == "cuda"``).

    ``array`` and ``planes`` are :class:`DeviceArray` views (``__cuda_array_interface__``,
    ``__dlpack__``: hand them to cupy, torch, numba without a copy); the frame itself exposes
    the same interfaces for ``array``. ``numpy()``/``to_ndarray()`` copy to the host.
    """

    __slots__ = ()
    device = "cuda"

    def _dev(self) -> DeviceArray:
        return cast(DeviceArray, self.array)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return self._dev().__cuda_array_interface__

    def __dlpack__(self, stream: Any = None) -> Any:
        return self._dev().__dlpack__(stream=stream)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._dev().__dlpack_device__()

    def to_ndarray(self) -> np.ndarray:
        return self._dev().get()

    numpy = to_ndarray

    def copy(self) -> Frame:
        """A frame over its own device memory (cupy-owned): valid whatever the worker does."""
        import cupy

        def own(a: Any) -> DeviceArray:
            c = cupy.ascontiguousarray(a.cupy())
            return DeviceArray(None, int(c.data.ptr), c.shape, c.strides, a.dtype, keep=c)

        planes = tuple(own(p) for p in self.planes)
        array = planes[0] if self.array is self.planes[0] else own(self.array)
        return DeviceFrame(array=array, planes=planes,  # type: ignore[arg-type]
                           index=self.index, pts=self.pts, time=self.time,
                           quality=self.quality, format=self.format, pix_fmt=self.pix_fmt,
                           width=self.width, height=self.height, key_frame=self.key_frame,
                           shows=self.shows)


def build_frame(rec: DeviceRecord, base: int, lease: DeviceLease, *, fmt: str, index: int,
                pts: int, time: float, quality: Quality = Quality.EXACT) -> DeviceFrame:
    """A :class:`DeviceFrame` over a validated record, ``base`` being the mapped allocation."""
    dtype = np.dtype(np.uint8) if rec.itemsize == 1 else np.dtype("<u2")
    views = tuple(DeviceArray(lease, base + p.offset, (p.rows, p.row_bytes // rec.itemsize),
                              (p.pitch, rec.itemsize), dtype) for p in rec.planes)
    if fmt != "native":
        channels = PACKED_LAYOUT[fmt][0]
        p = rec.planes[0]
        shape = (rec.height, rec.width) if channels == 1 else (rec.height, rec.width, channels)
        strides = (p.pitch, rec.itemsize) if channels == 1 else (
            p.pitch, channels * rec.itemsize, rec.itemsize)
        array = DeviceArray(lease, base + p.offset, shape, strides, dtype)
        planes: tuple[DeviceArray, ...] = (array,)
    else:
        array, planes = views[0], views
    return DeviceFrame(array=array, planes=planes,  # type: ignore[arg-type]
                       index=index, pts=pts, time=time, quality=quality, format=fmt,
                       pix_fmt=rec.pix_fmt, width=rec.width, height=rec.height,
                       key_frame=rec.key_frame, lease=lease)


def run_device_frame(session: Any, proc: Any, i: int, fmt: str,
                     raise_for_error: Callable[[dict[str, Any], Any], None]) -> DeviceFrame:
    """Ask worker ``proc`` for frame ``i`` of ``session`` in a device slot; check; wrap it."""
    slots: DeviceSlots = session.device_slots
    slot = slots.grant()
    job = next(session._jobs)
    try:
        reply, _ = proc.call({"op": "frame", "session": session.id, "job": job, "index": i,
                              "format": fmt, "dslot": slot, "attempt": session.failures[i]})
        raise_for_error(reply, proc)
        if reply.get("ok") is not True or reply.get("job") != job or reply.get("index") != i \
                or reply.get("dslot") != slot:
            raise ProtocolViolation(f"completion record does not match job {job} (frame {i})")
        maps = mappings_for(proc)
        rec = check_device_record(reply.get("frame"), fmt, maps.known())
        base = maps.pointer(rec)
    except BaseException:
        slots.give_back(slot)
        raise
    index = session.index
    return build_frame(rec, base, slots.lease(slot, maps), fmt=fmt, index=i,
                       pts=int(index.frame_pts[i]), time=index.frame_time(i))


__all__ = ["DeviceArray", "DeviceFrame", "DeviceMappings", "DeviceRecord", "DeviceSlots",
           "build_frame", "check_device_record", "mappings_for", "run_device_frame"]
