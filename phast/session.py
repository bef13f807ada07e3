"""Editor-side state of one open clip, and the worker requests it makes.

A session is what a worker needs to (re)open a clip: path, stream, backend, options and the frame
index. Its ``run_*`` methods execute on a worker's I/O thread with the live process; every reply
is validated here before anything reaches the caller.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import re
import stat
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import (
    DecodeError,
    FrameQuarantined,
    MediaError,
    ProtocolViolation,
    SourceNotFound,
)
from .frame import Frame
from .index import FrameIndex
from .jobs import Job, byproduct_job, plain_job, playahead_job
from .protocol import field
from .proxy import ProxySpec, looks_like_jpeg
from .shm import Slot, SlotPool
from .store import Store
from .supervisor import Process, Worker, WorkerPool, raise_for_error
from .types import PACKED_LAYOUT, Quality

if TYPE_CHECKING:
    from .governor import Account
    from .sharedstore import SharedStore

MAX_SIDE = 32768  #: largest width/height a completion record may claim
MAX_FRAME_BYTES = 1 << 30  #: largest slot a worker may ask for
_PIX_FMT = re.compile(r"^[a-z0-9_]{1,32}$")
#: Packets behind a decoder's position whose frames it likely still keeps (a copy, not a
#: decode; ``backends.decoderun.DEFAULT_KEEP_BYTES`` holds ~30 frames of 1080p).
KEPT_BEHIND = 24
#: Pictures the NEAREST tier tries, nearest first, before it gives up (a store read each).
NEAREST_TRIES = 3
#: By-product proxies: frames before the target's keyframe (leading pictures) and after the
#: target (read-ahead) a frame request asks for, and pictures fetched per collection job.
#: Frames ahead of a playhead whose proxies a tight budget makes instead of EXACT frames.
PLAY_AHEAD = 6
#: ... made only while the decoder is within this many such stretches of them: farther, the
#: catch-up's seek would cost more than the playhead leaves time for.
PLAY_REACH = 3
BYPRODUCT_LEAD = 8
BYPRODUCT_AHEAD = 16
BYPRODUCT_BATCH = 16


class Session:
    """Editor-side state of one open clip: everything a worker needs to (re)open it."""

    _ids = itertools.count(1)

    def __init__(self, path: str, stream: int, backend: str, spec: str,
                 options: Mapping[str, Any], pool: WorkerPool, max_slots: int, *,
                 store: Store | None = None, identity: str | None = None,
                 proxy_spec: ProxySpec | None = None, ram_frames: int = 8,
                 worker: Worker | None = None) -> None:
        self.id = next(self._ids)
        self.path, self.stream, self.backend, self.spec = path, stream, backend, spec
        self.options = dict(options)
        self.store, self.identity = store, identity
        self.proxy_spec = proxy_spec or ProxySpec()
        self.index: FrameIndex | None = None
        self.source: dict[str, Any] = {}
        self.slots = SlotPool(max_slots)
        # Recent EXACT frames by (index, format): answered from memory, even with a stuck
        # worker. Bounded well below the slot count: each entry keeps a slot leased.
        self.ram: collections.OrderedDict[tuple[int, str], Frame] = collections.OrderedDict()
        self.ram_frames = max(0, min(ram_frames, max_slots // 4))
        self.pending: dict[tuple[int, str], Job] = {}  # queued or running EXACT/prefetch jobs
        self.recent: collections.deque[int] = collections.deque(maxlen=3)  # requested indices
        self._keyframes: np.ndarray | None = None
        self.per_frame_s = 0.005  #: EWMA of decode seconds per frame of work (cost model)
        #: where the worker's decoder stands after the last frame it served: (start packet of
        #: its run, next packet), as it reported (Backend.decode_position); None: unknown
        self.decoder_at: tuple[int, int] | None = None
        self.account: Account | None = None  #: the power budget paying for this clip's work
        # Decoded proxy pictures by (shown index, format), copied out of their slots: the
        # NEAREST tier of a scrub keeps hitting the same few, and serving them from memory
        # costs no decode.
        self.proxy_ram: collections.OrderedDict[tuple[int, str], Frame] = \
            collections.OrderedDict()
        # Frames whose proxy the store did not have, and when we looked: a scrub asks about
        # the same unbuilt frames again and again (a store read costs ~0.3 ms of editor CPU).
        self.proxy_missing: dict[int, float] = {}
        # Which frames have a proxy in the store, as far as this process knows (the store's
        # map, then what this process stores): where the NEAREST tier looks. Shared with twins.
        self.proxy_hint: np.ndarray | None = None
        #: Proxies as a by-product of this session's decodes (phast.open with proxies on)
        self.byproducts = False
        self._collecting: Job | None = None  # the queued job fetching by-product proxies
        self._playing_ahead: Job | None = None  # the queued job making proxies ahead of play
        #: the last request played forward on proxies made ahead (see Clip._prefetch)
        self.playing_on_proxies = False
        self._keyframes_of: FrameIndex | None = None
        self._keyframe_set: tuple[np.ndarray, frozenset[int]] | None = None
        self.failures: collections.Counter[int] = collections.Counter()
        self.quarantined: set[int] = set()
        self.pool = pool
        self.worker: Worker = pool.assign(self.id, worker)
        self._jobs = itertools.count(1)
        self._lock = threading.Lock()
        self.closed = False
        self.device = "cpu"  #: where the backend's frames live; "cuda" once a worker says so
        #: Why ``backend="auto"`` skipped each better backend, and which one runs (phast.clip).
        self.selection: tuple[tuple[str, str], ...] = ()

    def twin(self) -> Session:
        """A second session of the same clip and index (its own decoder, maybe another worker):
        proxy building runs there without moving the playhead's decoder."""
        # its decoder makes proxies only: decoder shortcuts no proxy shows (PROXY_DECODE)
        # and one thread: background work is not waited for, and one thread decodes a frame
        # for less CPU than frame threads (and leaves the other cores to the playhead)
        options = {**self.options, "proxy_decode": self.proxy_spec.shortcuts, "threads": 1}
        twin = Session(self.path, self.stream, self.backend, self.spec, options, self.pool, 4,
                       store=self.store,
                       identity=self.identity, proxy_spec=self.proxy_spec, ram_frames=0,
                       worker=self.pool.build_worker())
        twin.index, twin.source = self.index, self.source
        twin.account = self.account
        twin.proxy_missing = self.proxy_missing  # what the twin builds is no longer missing
        twin.proxy_hint = self.proxies_known()  # ... and the main session's tiers see it
        return twin

    # -- run inside the worker's I/O thread ------------------------------------------------------
    def attach(self, proc: Process) -> None:
        # The worker's sandbox opens no media path: the source goes over as a read-only
        # descriptor, a fresh one per open (its file offset is the backend's alone).
        # O_NONBLOCK: a path swapped for a FIFO since phast.open checked it must not block here.
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError as e:
            raise SourceNotFound(f"no such file: {self.path}") from e
        except OSError as e:
            raise MediaError(f"{self.path}: cannot be read ({e})") from e
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise MediaError(f"{self.path}: not a regular file")
            reply, _ = proc.call({"op": "open", "session": self.id, "path": self.path,
                                  "stream": self.stream, "backend": self.spec,
                                  "options": self.options}, fds=[fd])
        finally:
            os.close(fd)
        raise_for_error(reply, proc)
        self.decoder_at = None  # a fresh decoder in this process: its first request seeks
        if reply.get("device") == "cuda":  # frames stay in the worker's GPU memory
            from .devframe import DeviceSlots

            self.device = "cuda"
            self.device_slots = getattr(self, "device_slots", None) or DeviceSlots(
                self.slots.max_slots)
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
        if self.device == "cuda":
            from .devframe import run_device_frame

            return run_device_frame(self, proc, i, fmt, raise_for_error)
        need = self._estimate(fmt)
        reindexed = False
        for _ in range(8):
            slot = self.slots.grant(need)
            key = (self.id, slot.id)
            job = next(self._jobs)
            msg = {"op": "frame", "session": self.id, "job": job, "index": i, "format": fmt,
                   "slot": slot.id, "size": slot.size, "attempt": self.failures[i]}
            wanted = self._byproducts_wanted(i)
            blobs = None
            if wanted is not None:
                msg["byproducts"], bits = wanted
                blobs = [bits]
            fds = None if key in proc.mapped or slot.fd is None else [slot.fd]
            try:
                reply, _ = proc.call(msg, blobs, fds=fds)
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
                frame = self._frame_from_record(reply, job, i, fmt, slot)
                self.decoder_at = self._position(reply.get("at"))
                waiting = reply.get("byproducts")
                if wanted is not None and isinstance(waiting, int) and waiting > 0:
                    self._collect_byproducts()
                return frame
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
                           slot: Slot, *, quality: Quality = Quality.EXACT,
                           shows: int | None = None,
                           size: tuple[int, int] | None = None) -> Frame:
        """Check a completion record against the job, the clip and the slot; build the Frame.

        ``size``, when given, is the exact (width, height) the picture must have (proxies).
        """
        if reply.get("ok") is not True or reply.get("job") != job or reply.get("index") != i \
                or reply.get("slot") != slot.id:
            raise ProtocolViolation(f"completion record does not match job {job} (frame {i})")
        rec = field(reply, "frame", dict)
        width, height = field(rec, "width", int), field(rec, "height", int)
        pix_fmt, itemsize = field(rec, "pix_fmt", str), field(rec, "itemsize", int)
        planes = field(rec, "planes", list)
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE) or itemsize not in (1, 2):
            raise ProtocolViolation(f"implausible frame {width}x{height}, itemsize {itemsize}")
        if size is not None and (width, height) != size:
            raise ProtocolViolation(f"picture is {width}x{height}, expected {size[0]}x{size[1]}")
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
            channels, nbytes = PACKED_LAYOUT[fmt]
            if (pix_fmt != fmt or itemsize != nbytes or len(layout) != 1
                    or layout[0][1] != height or layout[0][2] != width * channels * nbytes):
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
                     quality=quality, format=fmt, pix_fmt=pix_fmt, width=width,
                     height=height, key_frame=bool(rec.get("key_frame") is True), lease=lease,
                     shows=shows)

    # -- fallback tiers: proxy pictures ---------------------------------------------------------
    def proxy_size(self) -> tuple[int, int]:
        return self.proxy_spec.size_for(int(self.source["width"]), int(self.source["height"]))

    def run_image(self, proc: Process, data: bytes, size: tuple[int, int], i: int, fmt: str,
                  quality: Quality, shows: int) -> Frame:
        """Decode one stored proxy picture (on the image worker) into a slot of this clip."""
        w, h = size
        need = w * h * 3 * 2 if fmt == "native" else w * h * PACKED_LAYOUT[fmt][0] * \
            PACKED_LAYOUT[fmt][1]
        slot = self.slots.grant(need)
        key = (self.id, slot.id)
        job = next(self._jobs)
        msg = {"op": "image", "session": self.id, "job": job, "index": i, "format": fmt,
               "slot": slot.id, "size": slot.size}
        fds = None if key in proc.mapped or slot.fd is None else [slot.fd]
        try:
            reply, _ = proc.call(msg, [data], fds)
            proc.mapped.add(key)
            raise_for_error(reply, proc)
            return self._frame_from_record(reply, job, i, fmt, slot, quality=quality,
                                           shows=shows, size=size)
        except BaseException:
            self.slots.give_back(slot.id)
            raise

    def run_proxies(self, proc: Process, indices: list[int]) -> list[int]:
        """Have the worker decode ``indices`` and store their proxies; returns those stored."""
        w, h = self.proxy_size()
        reply, blobs = proc.call({"op": "proxies", "session": self.id, "indices": indices,
                                  "width": w, "height": h, "quality": self.proxy_spec.quality})
        raise_for_error(reply, proc)
        done = field(reply, "indices", list)
        if (len(done) != len(blobs) or not set(done) <= set(indices)
                or len(set(done)) != len(done)):
            raise ProtocolViolation("proxy reply does not match its request")
        for i, data in zip(done, blobs, strict=True):
            if not looks_like_jpeg(data):
                raise ProtocolViolation(f"proxy of frame {i} is not a JPEG picture")
        self.store_proxies([(i, w, h, data) for i, data in zip(done, blobs, strict=True)])
        return list(done)

    # -- proxies as a by-product of decoding ----------------------------------------------------
    def _byproducts_wanted(self, i: int, first: int | None = None,
                           budget: bool = True) -> tuple[dict[str, int], bytes] | None:
        """What to ask a frame request for besides the frame: proxies of the frames its decode
        passes through (the group of pictures up to ``i``, and a little beyond for read-ahead)
        that the store lacks -- when this clip makes proxies and (``budget``) its budget has
        room for building (the sink's work is charged to the request and its collection).
        ``first``: from this frame (default: a little before the group of pictures of ``i``)."""
        if not self.byproducts or self.store is None or self.index is None:
            return None
        if budget and self.account is not None and not self.account.spare():
            return None
        if first is None:
            keys = self.keyframes
            k = int(np.searchsorted(keys, i, side="right")) - 1
            first = max(0, (int(keys[k]) if k >= 0 else 0) - BYPRODUCT_LEAD)
        stop = min(self.index.frame_count, i + BYPRODUCT_AHEAD)
        lacking = ~self.proxies_known()[first:stop]
        if not lacking.any():
            return None
        spec = {"width": 0, "height": 0, "quality": self.proxy_spec.quality, "first": first,
                "count": len(lacking)}
        spec["width"], spec["height"] = self.proxy_size()
        return spec, np.packbits(lacking).tobytes()

    def play_ahead(self, i: int, step: int) -> bool:
        """Playing forward on a tight budget: have this clip's own decoder go on ahead of the
        playhead, dropping the frames nothing references, and turn what it decodes into
        proxies (one job at a time, prefetch priority, paid like building). A job still
        queued for frames the playhead has passed is replaced. False when there is nothing
        to make."""
        assert self.index is not None
        with self._lock:
            queued = self._playing_ahead
            if queued is not None and not queued.future.done():
                if queued.target is not None and queued.target > i:
                    return True
                if not queued.future.cancel():
                    return True  # running: it is past where the playhead is
            target = min(self.index.frame_count - 1, i + step * PLAY_AHEAD)
            if self.decode_work(target) > PLAY_AHEAD * PLAY_REACH:
                return False  # the decoder is far behind: chasing the playhead costs seeks
            # (admission decides whether the budget pays for it)
            wanted = self._byproducts_wanted(target, first=i + 1, budget=False)
            if wanted is None:
                return False
            spec, bits = wanted

            def run(proc: Process) -> list[int]:
                return self._fetch_byproducts(proc, {"op": "ahead", "index": target,
                                                     "references_only": True,
                                                     "byproducts": spec}, [bits])

            # what it decodes: on from where the decoder stands, or from a seek
            job = playahead_job(run, session=self, account=self.account,
                                work=self.decode_work(target), target=target)
            self._playing_ahead = job
        self.worker.submit(job)
        return True

    def _collect_byproducts(self) -> None:
        """Queue one job fetching the worker's by-product proxies (building priority: paid from
        the budget and admitted like building, after any request)."""
        with self._lock:
            if self._collecting is not None and not self._collecting.future.done():
                return
            job = byproduct_job(self.run_byproducts, session=self, account=self.account,
                                pictures=BYPRODUCT_BATCH)
            self._collecting = job
        self.worker.submit(job)

    def run_byproducts(self, proc: Process) -> list[int]:
        """Fetch (and have the worker encode) up to BYPRODUCT_BATCH by-product proxies; store
        the valid ones. More waiting: another job follows."""
        return self._fetch_byproducts(proc, {"op": "byproducts"}, [])

    def _fetch_byproducts(self, proc: Process, msg: dict[str, Any],
                          blobs: list[bytes]) -> list[int]:
        """Send ``msg`` (a request answered with by-product proxies), check the pictures,
        store them; queue a collection when the batch was full (more are waiting)."""
        reply, blobs = proc.call({**msg, "session": self.id, "limit": BYPRODUCT_BATCH}, blobs)
        raise_for_error(reply, proc)
        done = field(reply, "indices", list)
        assert self.index is not None
        n = self.index.frame_count
        if (len(done) != len(blobs) or len(set(done)) != len(done) or len(done) > BYPRODUCT_BATCH
                or not all(isinstance(i, int) and 0 <= i < n for i in done)
                or not all(looks_like_jpeg(b) for b in blobs)):
            raise ProtocolViolation("by-product reply does not match its request")
        w, h = self.proxy_size()
        self.store_proxies([(i, w, h, data) for i, data in zip(done, blobs, strict=True)])
        if len(done) == BYPRODUCT_BATCH:
            with self._lock:
                self._collecting = None
            self._collect_byproducts()
        return list(done)

    def store_proxies(self, entries: list[tuple[int, int, int, bytes]]) -> None:
        """Put checked ``(index, width, height, jpeg)`` proxies in the store and in the hint."""
        assert self.index is not None
        if self.store is not None and self.identity is not None:
            self.store.put_proxies(self.identity, self.stream, self.proxy_spec.key,
                                   self.index.frame_count, entries)
        hint = self.proxies_known()
        for i, *_ in entries:
            self.proxy_missing.pop(i, None)
            if 0 <= i < len(hint):
                hint[i] = True

    def proxies_known(self) -> np.ndarray:
        """The frames known to have a proxy in the store (bool per frame; see ``proxy_hint``)."""
        assert self.index is not None
        hint = self.proxy_hint
        if hint is None or len(hint) != self.index.frame_count:
            n = self.index.frame_count
            if self.store is not None and self.identity is not None:
                hint = self.store.proxy_map(self.identity, self.stream, self.proxy_spec.key, n)
            else:
                hint = np.zeros(n, bool)
            self.proxy_hint = hint
        return hint

    def nearest_pictures(self, i: int, fmt: str, limit: int = NEAREST_TRIES) -> list[int]:
        """Up to ``limit`` other frames phast has a picture of, nearest to ``i`` first: exact
        frames and proxy pictures in memory, and proxies the store is known to hold. Ties go
        to memory, then to the earlier frame."""
        with self._lock:
            memory = {k for k, f in self.ram if f == fmt} | {k for k, f in self.proxy_ram
                                                            if f == fmt}
        memory.discard(i)
        stored = _nearest_set(self.proxies_known(), i, limit)
        ranked = sorted(set(stored) | memory,
                        key=lambda k: (abs(k - i), k not in memory, k > i))
        return ranked[:limit]

    @property
    def keyframes(self) -> np.ndarray:
        """Display indices of keyframes (cached: the KEYFRAME tier looks them up per request)."""
        if self._keyframes is None or self._keyframes_of is not self.index:
            assert self.index is not None
            self._keyframes, self._keyframes_of = self.index.keyframes(), self.index
        return self._keyframes

    @property
    def keyframe_set(self) -> frozenset[int]:
        """Display indices of the keyframes (cached with :attr:`keyframes`)."""
        keys = self.keyframes
        cached = self._keyframe_set
        if cached is None or cached[0] is not keys:
            cached = self._keyframe_set = (keys, frozenset(int(k) for k in keys))
        return cached[1]

    # -- the cost model -------------------------------------------------------------------------
    def timed_frame(self, proc: Process, i: int, fmt: str, work: int) -> Frame:
        """:meth:`run_frame`, feeding the cost model: ``work`` frames took this long."""
        t = time.monotonic()
        frame = self.run_frame(proc, i, fmt)
        if work > 1:
            per_frame = (time.monotonic() - t) / work
            self.per_frame_s += 0.2 * (per_frame - self.per_frame_s)  # an EWMA over decodes
        return frame

    def decode_work(self, i: int) -> int:
        """Packets the worker must decode for frame ``i``: from where its decoder stands when
        the run it is in can reach ``i`` (going on), else from the frame's start packet (a
        seek); one when ``i`` was just decoded (kept by the worker)."""
        assert self.index is not None
        start, packet = int(self.index.frame_start[i]), int(self.index.frame_packet[i])
        at = self.decoder_at
        if at is not None and at[0] <= start <= at[1]:
            if packet < at[1]:
                return 1 if at[1] - packet <= KEPT_BEHIND else packet - start + 1
            return packet - at[1] + 1
        return packet - start + 1

    def _position(self, value: Any) -> tuple[int, int] | None:
        """A worker's reported decoder position, checked (plain data from a worker)."""
        assert self.index is not None
        n = len(self.index.pkt_pts)
        if (isinstance(value, list) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                and 0 <= value[0] <= value[1] <= n):
            return value[0], value[1]
        return None

    def exact_estimate(self, i: int) -> float:
        """Seconds an EXACT decode of frame ``i`` should take if started now (from RAM: 0)."""
        return self.decode_work(i) * self.per_frame_s

    # -- the RAM tier -----------------------------------------------------------------------------
    def ram_get(self, i: int, fmt: str) -> Frame | None:
        with self._lock:
            frame = self.ram.get((i, fmt))
            if frame is not None:
                self.ram.move_to_end((i, fmt))
            return frame

    def ram_put(self, i: int, fmt: str, frame: Frame) -> None:
        if self.ram_frames == 0:
            return
        with self._lock:
            if self.closed:
                return  # a decode that finished after close(): its slot goes back now
            self.ram[(i, fmt)] = frame.sibling()
            self.ram.move_to_end((i, fmt))
            while len(self.ram) > self.ram_frames:
                self.ram.popitem(last=False)[1].release()

    def proxy_known_missing(self, i: int) -> bool:
        """Did the store lack frame ``i``'s proxy less than ``MISSING_TTL`` ago? (Another
        editor process may build it meanwhile: the answer expires.)"""
        seen = self.proxy_missing.get(i)
        return seen is not None and time.monotonic() - seen < MISSING_TTL

    def proxy_ram_get(self, shows: int, fmt: str) -> Frame | None:
        with self._lock:
            frame = self.proxy_ram.get((shows, fmt))
            if frame is not None:
                self.proxy_ram.move_to_end((shows, fmt))
            return frame

    def proxy_ram_put(self, shows: int, fmt: str, frame: Frame) -> None:
        own = frame.copy()  # out of the slot: a cache must not hold the clip's slots
        for array in (own.array, *own.planes):
            array.setflags(write=False)  # handed out again: nobody may paint over it
        with self._lock:
            if self.closed:
                return
            self.proxy_ram[(shows, fmt)] = own
            self.proxy_ram.move_to_end((shows, fmt))
            while len(self.proxy_ram) > PROXY_RAM:
                self.proxy_ram.popitem(last=False)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        with self._lock:
            waiting = list(self.pending.values())
        for job in waiting:  # outside the lock: cancelling runs callbacks that take it
            job.future.cancel()  # queued or delayed decodes of a closed clip never run
        job = plain_job(lambda proc: _close_remote(proc, self.id))
        with contextlib.suppress(Exception):
            self.worker.submit(job).result(timeout=10)
        self.pool.release(self.worker, self.id)
        with self._lock:
            for frame in self.ram.values():
                frame.release()
            self.ram.clear()
            self.proxy_ram.clear()
        self.slots.close()


#: Seconds a proxy-store miss is remembered (see :meth:`Session.proxy_known_missing`).
MISSING_TTL = 2.0
#: Decoded proxy pictures kept per clip (640x360 rgb24: 0.7 MB each).
PROXY_RAM = 24


def _nearest_set(have: np.ndarray, i: int, limit: int) -> list[int]:
    """The ``limit`` indices k != i with ``have[k]`` nearest to ``i`` (ties: the earlier)."""
    n = len(have)
    radius = 32
    while True:
        lo, hi = max(0, i - radius), min(n, i + radius + 1)
        ks = np.flatnonzero(have[lo:hi]) + lo
        ks = ks[ks != i]
        # every k within the radius is found: enough of them are the nearest overall
        if len(ks) >= limit or (lo == 0 and hi == n):
            order = np.lexsort((ks, np.abs(ks - i)))[:limit]
            return [int(k) for k in ks[order]]
        radius *= 16


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


_stores: dict[tuple[str, int, bool], Store] = {}
_stores_lock = threading.Lock()


def _store_for(cache_dir: str | os.PathLike[str] | None, shared: SharedStore | None = None,
               publish: bool = False) -> Store:
    """The process's store of ``cache_dir`` (one per directory, shared level and role)."""
    key = (os.fspath(cache_dir) if cache_dir is not None else "", id(shared), publish)
    with _stores_lock:
        if key not in _stores:
            if shared is None:
                _stores[key] = Store(cache_dir)
            else:
                from .levels import LayeredStore

                _stores[key] = LayeredStore(cache_dir, shared, publish=publish)
        return _stores[key]


def _replace_stored(session: Session) -> None:
    if session.store is not None and session.identity is not None and session.index is not None:
        session.store.put_index(session.identity, session.backend, session.stream, session.index,
                                session.source)
