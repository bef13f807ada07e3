"""``phast.open`` and ``Clip``: the editor-facing API over sessions, workers and slots."""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import math
import os
import re
import threading
import weakref
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import numpy as np

from . import registry
from .errors import (
    CannotHandle,
    ClipClosed,
    DecodeError,
    FrameOutOfRange,
    FrameQuarantined,
    InvalidArgument,
    MediaError,
    PhastError,
    ProtocolViolation,
    SourceNotFound,
    UnsupportedCodec,
    WorkerCrashed,
)
from .frame import Frame
from .index import FrameIndex
from .protocol import field
from .shm import Slot, SlotPool
from .store import IndexStore, source_identity
from .supervisor import Job, Process, Worker, WorkerPool, default_pool, raise_for_error
from .types import OUTPUT_FORMATS, PACKED_LAYOUT, ClipInfo, Quality, StreamInfo

MAX_SIDE = 32768  #: largest width/height a completion record may claim
MAX_FRAME_BYTES = 1 << 30  #: largest slot a worker may ask for
_PIX_FMT = re.compile(r"^[a-z0-9_]{1,32}$")


class _Session:
    """Editor-side state of one open clip: everything a worker needs to (re)open it."""

    _ids = itertools.count(1)

    def __init__(self, path: str, stream: int, backend: str, spec: str,
                 options: Mapping[str, Any], pool: WorkerPool, max_slots: int) -> None:
        self.id = next(self._ids)
        self.path, self.stream, self.backend, self.spec = path, stream, backend, spec
        self.options = dict(options)
        self.index: FrameIndex | None = None
        self.source: dict[str, Any] = {}
        self.slots = SlotPool(max_slots)
        self.playhead: int | None = None
        self.failures: collections.Counter[int] = collections.Counter()
        self.quarantined: set[int] = set()
        self.pool = pool
        self.worker: Worker = pool.assign(self.id)
        self._jobs = itertools.count(1)
        self._lock = threading.Lock()
        self.closed = False

    # -- run inside the worker's I/O thread ------------------------------------------------------
    def attach(self, proc: Process) -> None:
        reply, _ = proc.call({"op": "open", "session": self.id, "path": self.path,
                              "stream": self.stream, "backend": self.spec,
                              "options": self.options})
        raise_for_error(reply, proc)
        if self.index is not None:
            # No separate warm-up: after a restart the interrupted request (the playhead) is
            # retried first, and that positions the new decoder exactly where the editor is.
            msg = {"op": "adopt", "session": self.id, "index": self.index.header()}
            reply, _ = proc.call(msg, self.index.blobs())
            raise_for_error(reply, proc)

    def run_index(self, proc: Process, full_decode: bool = False) -> None:
        reply, blobs = proc.call({"op": "index", "session": self.id,
                                  "full_decode": full_decode})
        raise_for_error(reply, proc)
        index = FrameIndex.from_parts(field(reply, "index", dict), blobs)
        self.source = _check_source(field(reply, "source", dict))
        self.index = index

    def run_frame(self, proc: Process, i: int, fmt: str) -> Frame:
        need = self._estimate(fmt)
        reindexed = False
        for _ in range(8):
            slot = self.slots.grant(need)
            key = (self.id, slot.id)
            job = next(self._jobs)
            msg = {"op": "frame", "session": self.id, "job": job, "index": i, "format": fmt,
                   "slot": slot.id, "size": slot.size, "attempt": self.failures[i]}
            fds = None if key in proc.mapped or slot.fd is None else [slot.fd]
            try:
                reply, _ = proc.call(msg, fds=fds)
                proc.mapped.add(key)
                if reply.get("error") and reply.get("type") == "SlotTooSmall":
                    need = _check_needed(reply.get("needed"), slot.size)
                    self.slots.give_back(slot.id)
                    continue
                if reply.get("error") and reply.get("type") == "IndexMismatch" and not reindexed:
                    self.slots.give_back(slot.id)
                    if self.index is not None and self.index.method == "decode":
                        raise DecodeError(f"{self.path}: frame {i}: {reply.get('message')}")
                    self.run_index(proc, full_decode=True)
                    reindexed = True
                    _replace_stored(self)
                    count = self.index.frame_count if self.index is not None else 0
                    if i >= count:
                        raise DecodeError(f"{self.path}: frame {i} does not exist in a sequential "
                                          f"decode, which gives {count} frames")
                    continue
                raise_for_error(reply, proc)
                return self._frame_from_record(reply, job, i, fmt, slot)
            except BaseException:
                self.slots.give_back(slot.id)
                raise
        raise ProtocolViolation("worker kept asking for bigger slots")

    def frame_failed(self, i: int) -> Any:
        def failed(error: BaseException, _job_failures: int) -> BaseException | None:
            self.failures[i] += 1
            if self.failures[i] < 2:
                return None
            self.quarantined.add(i)
            q = FrameQuarantined(
                f"frame {i} of {self.path} made the worker fail {self.failures[i]} times "
                f"(last: {error}); it is quarantined"
            )
            q.__cause__ = error
            return q

        return failed

    # -- helpers ------------------------------------------------------------------------------
    def _estimate(self, fmt: str) -> int:
        w, h = int(self.source.get("width", 64)), int(self.source.get("height", 64))
        if fmt == "native":
            return w * h * 3 * 2  # 4:4:4 at 16 bits: pages are only touched when written
        channels, itemsize = PACKED_LAYOUT[fmt]
        return w * h * channels * itemsize

    def _frame_from_record(self, reply: dict[str, Any], job: int, i: int, fmt: str,
                           slot: Slot) -> Frame:
        """Check a completion record against the job, the clip and the slot; build the Frame."""
        if reply.get("ok") is not True or reply.get("job") != job or reply.get("index") != i \
                or reply.get("slot") != slot.id:
            raise ProtocolViolation(f"completion record does not match job {job} (frame {i})")
        rec = field(reply, "frame", dict)
        width, height = field(rec, "width", int), field(rec, "height", int)
        pix_fmt, itemsize = field(rec, "pix_fmt", str), field(rec, "itemsize", int)
        planes = field(rec, "planes", list)
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE) or itemsize not in (1, 2):
            raise ProtocolViolation(f"implausible frame {width}x{height}, itemsize {itemsize}")
        if not 1 <= len(planes) <= 4 or not _PIX_FMT.match(pix_fmt):
            raise ProtocolViolation("implausible plane list or pixel format")
        end = 0
        layout = []
        for p in planes:
            if (not isinstance(p, list) or len(p) != 3
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in p)):
                raise ProtocolViolation("malformed plane record")
            off, rows, row_bytes = p
            if off < end or rows < 1 or row_bytes < 1 or row_bytes % itemsize \
                    or off + rows * row_bytes > slot.size:
                raise ProtocolViolation(f"plane {p} is outside its slot or overlaps another")
            end = off + rows * row_bytes
            layout.append((off, rows, row_bytes))
        if fmt != "native":
            channels, size = PACKED_LAYOUT[fmt]
            if (pix_fmt != fmt or itemsize != size or len(layout) != 1 or layout[0][1] != height
                    or layout[0][2] != width * channels * size):
                raise ProtocolViolation(f"record does not describe a {width}x{height} {fmt} frame")
        elif layout[0][1] != height:
            raise ProtocolViolation("native luma plane height differs from the frame height")

        dtype = np.dtype(np.uint8) if itemsize == 1 else np.dtype("<u2")
        lease = self.slots.lease(slot)
        views = tuple(lease.view(o, (r, b // itemsize), dtype) for o, r, b in layout)
        if fmt != "native":
            channels = PACKED_LAYOUT[fmt][0]
            shape = (height, width) if channels == 1 else (height, width, channels)
            array = lease.view(0, shape, dtype)
        elif len(views) == 1:
            array = views[0]
        else:
            array = lease.view(0, (end // itemsize,), dtype)
        assert self.index is not None
        return Frame(array=array, planes=views if fmt == "native" else (array,), index=i,
                     pts=int(self.index.frame_pts[i]), time=self.index.frame_time(i),
                     quality=Quality.EXACT, format=fmt, pix_fmt=pix_fmt, width=width,
                     height=height, key_frame=bool(rec.get("key_frame") is True), lease=lease)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        job = Job(lambda proc: _close_remote(proc, self.id))
        with contextlib.suppress(Exception):
            self.worker.submit(job).result(timeout=10)
        self.pool.release(self.worker, self.id)
        self.slots.close()


def _close_remote(proc: Process, session_id: int) -> None:
    if session_id in proc.sessions:
        proc.call({"op": "close", "session": session_id})
        proc.sessions.discard(session_id)
        proc.mapped = {k for k in proc.mapped if k[0] != session_id}


def _check_needed(value: Any, current: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not current < value <= \
            MAX_FRAME_BYTES:
        raise ProtocolViolation(f"implausible slot size request {value!r}")
    return value


def _check_source(src: dict[str, Any]) -> dict[str, Any]:
    """The stream description from a worker, type-checked field by field."""
    out = {
        "codec": str(field(src, "codec", str))[:64],
        "width": field(src, "width", int),
        "height": field(src, "height", int),
        "pix_fmt": str(field(src, "pix_fmt", str))[:32],
        "bit_depth": field(src, "bit_depth", int),
        "rotation": field(src, "rotation", int),
        "stream_index": field(src, "stream_index", int),
    }
    if not (0 < out["width"] <= MAX_SIDE and 0 < out["height"] <= MAX_SIDE):
        raise ProtocolViolation("implausible stream size")
    rate = src.get("average_rate")
    ok = (isinstance(rate, list) and len(rate) == 2 and all(isinstance(v, int) for v in rate)
          and rate[0] > 0 and rate[1] > 0)
    out["average_rate"] = rate if ok else None
    streams = []
    for s in src.get("streams") or []:
        if isinstance(s, dict):
            streams.append({k: s[k] for k in ("index", "type", "codec", "width", "height",
                                              "pix_fmt") if isinstance(s.get(k), (int, str))})
    out["streams"] = streams[:64]
    return out


_stores: dict[str, IndexStore] = {}
_stores_lock = threading.Lock()


def _store_for(cache_dir: str | os.PathLike[str] | None) -> IndexStore:
    key = os.fspath(cache_dir) if cache_dir is not None else ""
    with _stores_lock:
        if key not in _stores:
            _stores[key] = IndexStore(cache_dir)
        return _stores[key]


def _replace_stored(session: _Session) -> None:
    store, identity = getattr(session, "store", None), getattr(session, "identity", None)
    if store is not None and identity is not None and session.index is not None:
        store.put(identity, session.backend, session.stream, session.index, session.source)


class Clip:
    """One open video stream. Thread-safe; close it (or use ``with``) when done.

    ``frame(i)`` blocks until frame ``i`` is decoded, bit-exact with a sequential decode.
    """

    def __init__(self, session: _Session) -> None:
        self._session = session
        self._finalizer = weakref.finalize(self, session.close)

    # -- facts ----------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self._session.path

    @property
    def backend(self) -> str:
        """Name of the backend decoding this clip."""
        return self._session.backend

    @property
    def info(self) -> ClipInfo:
        s = self._session
        idx = s.index
        assert idx is not None
        src = s.source
        count = idx.frame_count
        start = idx.frame_time(0)
        step = idx.frame_duration()
        duration = idx.frame_time(count - 1) - start + step
        rate = src.get("average_rate")
        if count > 1 and duration > 0:
            avg = Fraction(count / duration).limit_denominator(100000)
            if rate and not idx.is_vfr() and abs(float(Fraction(*rate)) - float(avg)) < 0.01 * \
                    float(avg):
                avg = Fraction(*rate)
        else:
            avg = Fraction(*rate) if rate else Fraction(0)
        return ClipInfo(
            path=s.path, stream=s.stream, stream_index=src["stream_index"], codec=src["codec"],
            width=src["width"], height=src["height"], pix_fmt=src["pix_fmt"],
            bit_depth=src["bit_depth"],
            frame_count=count, time_base=idx.time_base, start_time=start, duration=duration,
            average_rate=avg, is_vfr=idx.is_vfr(), keyframes=tuple(int(k) for k in
                                                                     idx.keyframes()),
            rotation=src["rotation"], index_method=idx.method, timestamps=idx.timestamps,
            streams=tuple(StreamInfo(**{k: v for k, v in st.items()}) for st in
                          src.get("streams", [])),
        )

    @property
    def worker_pid(self) -> int | None:
        """PID of the worker process currently serving this clip (None between restarts)."""
        return self._session.worker.pid

    @property
    def sandbox(self) -> dict[str, str]:
        """The confinement report of the worker serving this clip (empty before it starts)."""
        proc = self._session.worker.proc
        return dict(proc.sandbox) if proc is not None else {}

    @property
    def quarantined(self) -> frozenset[int]:
        return frozenset(self._session.quarantined)

    def __len__(self) -> int:
        idx = self._session.index
        assert idx is not None
        return idx.frame_count

    # -- frames -----------------------------------------------------------------------------
    def frame(self, index: int, *, format: str = "rgb24") -> Frame:
        """Frame ``index`` (display order; negative counts from the end), EXACT.

        Raises :class:`FrameOutOfRange`, :class:`InvalidArgument`, :class:`DecodeError`,
        :class:`FrameQuarantined`, :class:`ClipClosed`.
        """
        s = self._live()
        i = self._check_index(index)
        _check_format(format)
        if i in s.quarantined:
            raise FrameQuarantined(f"frame {i} of {s.path} is quarantined (it crashed workers)")
        job = Job(lambda proc: s.run_frame(proc, i, format), session=s, failed=s.frame_failed(i))
        s.playhead = i
        return s.worker.submit(job).result()

    def frame_at(self, seconds: float, *, format: str = "rgb24") -> Frame:
        """The frame on screen at ``seconds`` (stream time, the clock of ``Frame.time``)."""
        s = self._live()
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float, Fraction)):
            raise InvalidArgument(f"seconds must be a number, got {type(seconds).__name__}")
        t = float(seconds)
        if math.isnan(t):
            raise InvalidArgument("seconds is NaN")
        idx = s.index
        assert idx is not None
        i = idx.index_at(t)
        end = idx.frame_time(idx.frame_count - 1) + idx.frame_duration()
        if i < 0 or t >= end:
            raise FrameOutOfRange(
                f"no frame is shown at {t:.6f} s: frames cover {idx.frame_time(0):.6f} to "
                f"{end:.6f} s"
            )
        return self.frame(i, format=format)

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise InvalidArgument(f"frame index must be an int, got {type(index).__name__}")
        n = len(self)
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise FrameOutOfRange(f"frame {index} is out of range for a clip of {n} frames")
        return i

    def _live(self) -> _Session:
        if self._session.closed:
            raise ClipClosed(f"clip {self.path} is closed")
        return self._session

    # -- lifetime -----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._session.closed

    def close(self) -> None:
        """Close the clip: its worker session and its slots (leased frames stay valid)."""
        self._finalizer()

    def __enter__(self) -> Clip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)} frames"
        return f"<phast.Clip {self.path!r} backend={self.backend} {state}>"


def _check_format(fmt: Any) -> None:
    if fmt not in OUTPUT_FORMATS:
        raise InvalidArgument(f"format must be one of {', '.join(OUTPUT_FORMATS)}; got {fmt!r}")


def open(path: str | os.PathLike[str], *, backend: str = "auto", stream: int = 0,
         cache_dir: str | os.PathLike[str] | None = None,
         backend_options: Mapping[str, Any] | None = None, pool: WorkerPool | None = None,
         max_slots: int = 32) -> Clip:
    """Open video stream ``stream`` (0 = first video stream) of ``path``.

    The first open of a source scans it once in a worker; the frame index is stored under
    ``cache_dir`` (default :func:`phast.store.default_cache_dir`) and reused while the file is
    unchanged. ``backend`` is a registry name or ``"auto"``. ``backend_options`` is plain data
    passed to the backend. Raises :class:`SourceNotFound`, :class:`MediaError` (and subclasses
    ``NoVideoStream``, ``UnsupportedCodec``), :class:`BackendNotFound`, :class:`InvalidArgument`.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgument(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if not isinstance(backend, str):
        raise InvalidArgument("backend must be a string")
    if isinstance(stream, bool) or not isinstance(stream, int) or stream < 0:
        raise InvalidArgument(f"stream must be a non-negative int, got {stream!r}")
    if isinstance(max_slots, bool) or not isinstance(max_slots, int) or max_slots < 1:
        raise InvalidArgument("max_slots must be a positive int")
    options = dict(backend_options or {})
    try:
        json.dumps(options)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"backend_options must be plain JSON data: {e}") from e
    p = os.path.abspath(os.fspath(path))
    if not os.path.exists(p):
        raise SourceNotFound(f"no such file: {p}")
    if not os.path.isfile(p):
        raise MediaError(f"{p} is not a regular file")
    if os.path.getsize(p) == 0:
        raise MediaError(f"{p} is empty")
    candidates = registry.resolve(backend)
    identity = source_identity(p)
    store = _store_for(cache_dir)
    pool = pool or default_pool()
    reasons = []
    for name, spec in candidates:
        session = _Session(p, stream, name, spec, options, pool, max_slots)
        session.store, session.identity = store, identity  # type: ignore[attr-defined]
        try:
            cached = store.get(identity, name, stream)
            if cached is not None:
                session.index, session.source = cached
                session.source = _check_source(session.source)
            else:
                session.worker.submit(Job(session.run_index, session=session)).result()
                store.put(identity, name, stream, session.index,  # type: ignore[arg-type]
                          session.source)
            return Clip(session)
        except CannotHandle as e:
            reasons.append(f"{name}: {e}")
            session.close()
        except WorkerCrashed as e:
            session.close()
            raise MediaError(f"{p}: the worker died twice while opening it ({e})") from e
        except BaseException:
            session.close()
            raise
    raise UnsupportedCodec(f"no backend can open {p}: {'; '.join(reasons) or 'none available'}")


__all__ = ["Clip", "PhastError", "open"]
