"""Shared-memory frame slots, owned by the editor process.

A slot is an anonymous ``memfd`` segment the editor creates, maps, and hands to a worker as a file
descriptor (``SCM_RIGHTS`` over the control socket). The worker maps it and writes one decoded
frame; the editor validates the completion record and exposes the bytes as a numpy view without
copying.

Why memfd rather than named POSIX segments: nothing ever appears in ``/dev/shm``, so there is
nothing to unlink after a crash -- the kernel frees a segment when its last descriptor and mapping
are gone, whoever died. The editor stays the single owner: it creates every segment, and a worker
only ever receives descriptors for slots granted to it.

Leases: while any array derived from a slot is alive, the slot is not reused (numpy's ``base``
chain keeps a :class:`Lease` alive; a ``weakref.finalize`` on the lease returns the slot). This
makes use-after-release impossible: ``Frame.release()`` drops phast's reference, and the slot is
recycled once the caller's arrays are gone too.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import gc
import itertools
import mmap
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import SlotsExhausted

PAGE = mmap.PAGESIZE


def _round_up(n: int, to: int = PAGE) -> int:
    return max(to, (n + to - 1) // to * to)


class Slot:
    """One memfd segment and the editor's mapping of it."""

    def __init__(self, slot_id: int, size: int) -> None:
        self.id = slot_id
        self.size = _round_up(size)
        self.fd: int | None = os.memfd_create(f"phast-slot-{slot_id}",
                                              os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        # A slot dropped without close() (its pool collected as garbage, or a failed mmap below)
        # must not leave the descriptor open: the mapping dies with the mmap object, the fd
        # only with this.
        self._close_fd = weakref.finalize(self, os.close, self.fd)
        # Pages are allocated on first touch: an oversized slot costs address space, not memory.
        os.ftruncate(self.fd, self.size)
        # A slot never changes size (a bigger frame gets a new slot). Sealed, nobody holding
        # its descriptor -- a worker, a `phast serve` client -- can shrink it under another
        # process's mapping (a SIGBUS there); clients check the seal before mapping.
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        self.map = mmap.mmap(self.fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.buffer = np.frombuffer(self.map, dtype=np.uint8)

    def offset_of(self, array: np.ndarray) -> int:
        """Byte offset in this slot of ``array``'s first element; ValueError if ``array``'s
        memory is not inside the slot."""
        offset = array.ctypes.data - self.buffer.ctypes.data
        span = array.nbytes if array.flags.c_contiguous else (
            sum((n - 1) * st for n, st in zip(array.shape, array.strides, strict=True))
            + array.itemsize)
        if not 0 <= offset <= offset + span <= self.size:
            raise ValueError("array is not inside this slot")
        return offset

    def close(self) -> None:
        if self.fd is not None:
            self._close_fd()
            self.fd = None
        self.buffer = np.empty(0, np.uint8)
        # A caller may still hold an array on it: then the mapping dies with that array.
        with contextlib.suppress(BufferError):
            self.map.close()


class Lease:
    """Keeps one slot out of circulation while any numpy view of it is alive.

    numpy arrays built with :meth:`view` keep this object as their ``base``; the finalizer
    returns the slot to its pool when the last one is garbage collected.
    """

    def __init__(self, pool: SlotPool, slot: Slot) -> None:
        self.slot = slot
        self._interface: dict[str, Any] = {}
        weakref.finalize(self, pool.give_back, slot.id)

    def view(self, offset: int, shape: tuple[int, ...], dtype: np.dtype,
             strides: tuple[int, ...] | None = None) -> np.ndarray:
        dtype = np.dtype(dtype)
        addr = self.slot.buffer.ctypes.data + offset
        self._interface = {
            "version": 3,
            "shape": shape,
            "typestr": dtype.str,
            "data": (addr, True),  # read-only: frames are what the decoder produced
            "strides": strides,
        }
        return np.asarray(self)

    @property
    def __array_interface__(self) -> dict[str, Any]:
        return self._interface


class SlotPool:
    """The slots of one clip: grant for a job, lease to frames, reuse, close.

    Thread-safe. At most ``max_slots`` exist; when all are leased, :class:`SlotsExhausted`.
    Slots come back from lease finalizers, which the garbage collector may run on any thread at
    any allocation -- including inside :meth:`grant` while it holds the lock. So a finalizer
    never waits: it queues the slot id, and whoever holds the lock next takes it back.
    """

    def __init__(self, max_slots: int = 32) -> None:
        self.max_slots = max_slots
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._slots: dict[int, Slot] = {}
        self._free: set[int] = set()
        self._returned: collections.deque[int] = collections.deque()  # appended lock-free
        self._closed = False

    def _drain(self) -> None:
        """Take back queued returns (call with the lock held)."""
        while self._returned:
            slot_id = self._returned.popleft()
            slot = self._slots.get(slot_id)
            if slot is None:
                continue
            if self._closed:
                self._slots.pop(slot_id).close()
            else:
                self._free.add(slot_id)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the lock with returns taken back on entry, and again after letting go."""
        try:
            with self._lock:
                self._drain()
                yield
        finally:
            self._drain_soon()

    def grant(self, nbytes: int) -> Slot:
        """A slot of at least ``nbytes`` that nobody else uses until it is given back."""
        for attempt in range(2):
            with self._locked():
                fit = [s for s in self._free if self._slots[s].size >= nbytes]
                if fit:
                    slot_id = min(fit)
                    self._free.discard(slot_id)
                    return self._slots[slot_id]
                if len(self._slots) >= self.max_slots and self._free:
                    # Every free slot is too small (the stream grew): replace one.
                    self._slots.pop(self._free.pop()).close()
                if len(self._slots) < self.max_slots:
                    slot = Slot(next(self._ids), nbytes)
                    self._slots[slot.id] = slot
                    return slot
            if attempt == 0:
                gc.collect()  # leases held only by unreachable cycles come back now
        raise SlotsExhausted(
            f"all {self.max_slots} frame slots are leased by live frames or arrays; release "
            "frames (Frame.release(), `with clip.frame(i) as f:`) or keep copies (Frame.copy())"
        )

    def lease(self, slot: Slot) -> Lease:
        return Lease(self, slot)

    def give_back(self, slot_id: int) -> None:
        """Return a slot (from any thread, finalizers included; never blocks)."""
        self._returned.append(slot_id)
        self._drain_soon()

    def _drain_soon(self) -> None:
        """Drain returns unless another thread holds the lock; then that thread does it when it
        lets go (every holder calls this after releasing), so no return waits for a grant that
        may never come -- after :meth:`close` none does."""
        while self._returned and self._lock.acquire(blocking=False):
            try:
                self._drain()
            finally:
                self._lock.release()

    @property
    def leased(self) -> int:
        with self._locked():
            return len(self._slots) - len(self._free)

    def close(self) -> None:
        """Close free slots now; leased ones close when their last array goes."""
        with self._locked():
            self._closed = True
            for slot_id in list(self._free):
                self._slots.pop(slot_id).close()
            self._free.clear()
