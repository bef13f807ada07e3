"""``phast.open`` and ``Clip``: the editor-facing API over sessions, workers and slots."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import heapq
import json
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from . import registry
from .builder import ProxyBuilder
from .errors import (
    BackendUnavailable,
    CannotHandle,
    ClipClosed,
    FrameOutOfRange,
    FrameQuarantined,
    InvalidArgument,
    MediaError,
    PhastError,
    SourceNotFound,
    UnsupportedCodec,
    WorkerCrashed,
)
from .frame import Frame
from .governor import Governor, resolve_budget
from .jobs import PLAYHEAD, PREFETCH, Job, exact_job, plain_job
from .proxy import ProxySpec
from .session import Session, _check_source, _store_for
from .sharedstore import SharedStore, open_shared
from .store import source_identity
from .supervisor import WorkerPool, default_pool
from .tiers import Request
from .types import OUTPUT_FORMATS, ClipInfo, StreamInfo


class Clip:
    """One open video stream. Thread-safe; close it (or use ``with``) when done.

    ``frame(i)`` blocks until frame ``i`` is decoded, bit-exact with a sequential decode;
    ``frame(i, deadline=d)`` and ``request(i, deadline=d)`` answer on time with quality tiers.
    """

    def __init__(self, session: Session, builder: ProxyBuilder | None = None) -> None:
        self._session = session
        self._builder = builder
        self._info: tuple[Any, ClipInfo] | None = None
        self._finalizer = weakref.finalize(self, _close, session, builder)

    # -- facts ----------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self._session.path

    @property
    def backend(self) -> str:
        """Name of the backend decoding this clip."""
        return self._session.backend

    @property
    def backend_status(self) -> tuple[tuple[str, str], ...]:
        """How the backend was chosen: ``(name, "selected")`` last, preceded (for
        ``backend="auto"``) by each better backend with ``"skipped: why"``."""
        return self._session.selection

    @property
    def info(self) -> ClipInfo:
        s = self._session
        idx = s.index
        assert idx is not None
        cached = self._info
        if cached is not None and cached[0] is idx:
            return cached[1]  # the index only changes when a mismatch forces a re-index
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
        info = ClipInfo(
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
        self._info = (idx, info)
        return info

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
    def power(self) -> dict[str, Any] | None:
        """This clip's power account (None when opened with ``budget="off"``): ``budget`` (share
        of TDP), ``rate_w``, ``level_j``/``capacity_j`` (the token bucket), ``spent_j`` by kind,
        ``unbudgeted_j`` (blocking orders), admitted/denied counts, and the TDP it is based on."""
        account = self._session.account
        if account is None:
            return None
        gov = account.governor
        return {**account.snapshot(), "tdp_w": gov.tdp_w, "tdp_source": gov.tdp.source,
                "meter": getattr(gov.meter, "name", "cpu-time-model")}

    @property
    def quarantined(self) -> frozenset[int]:
        return frozenset(self._session.quarantined)

    def __len__(self) -> int:
        idx = self._session.index
        assert idx is not None
        return idx.frame_count

    # -- frames -----------------------------------------------------------------------------
    def frame(self, index: int, *, format: str = "rgb24",
              deadline: float | None = None) -> Frame:
        """Frame ``index`` (display order; negative counts from the end).

        Without ``deadline``: blocks for the EXACT frame, bit-exact with a sequential decode, and
        raises :class:`FrameOutOfRange`, :class:`InvalidArgument`, :class:`DecodeError`,
        :class:`FrameQuarantined`, :class:`ClipClosed`. With ``deadline`` (seconds from now):
        returns by then with the best tier available (see :meth:`request`); decoding trouble
        degrades the tier instead of raising.
        """
        if deadline is not None:
            return self.request(index, deadline=deadline, format=format).frame()
        s = self._live()
        i = self._check_index(index)
        _check_format(format)
        if i in s.quarantined:
            raise FrameQuarantined(f"frame {i} of {s.path} is quarantined (it crashed workers)")
        hit = s.ram_get(i, format)
        if hit is not None:
            return hit.sibling()
        frame = self._exact_job(i, format, supersedable=False).future.result()
        # In RAM before we return (the job's done-callback may run a moment later): a deadline
        # request that follows at once must find it.
        s.ram_put(i, format, frame)
        return frame.sibling()

    def frame_at(self, seconds: float, *, format: str = "rgb24",
                 deadline: float | None = None) -> Frame:
        """The frame on screen at ``seconds`` (stream time, the clock of ``Frame.time``)."""
        return self.frame(self.index_at(seconds), format=format, deadline=deadline)

    def request(self, index: int, *, deadline: float, format: str = "rgb24",
                on_exact: Callable[[Frame], None] | None = None) -> Request:
        """Ask for frame ``index`` without blocking; ``Request.frame()`` answers by ``deadline``.

        The EXACT decode goes on after the deadline: ``on_exact(frame)`` is called (on a phast
        thread) when it lands, and ``Request.exact`` resolves. A newer request for this clip
        cancels this one's decode if it has not started yet (scrubbing queues no backlog);
        prefetch along the playhead's direction follows.
        """
        s = self._live()
        i = self._check_index(index)
        _check_format(format)
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) \
                or not deadline > 0 or math.isinf(deadline):
            raise InvalidArgument(f"deadline must be positive seconds, got {deadline!r}")
        deadline_at = time.monotonic() + float(deadline)
        hit = s.ram_get(i, format)
        hopeless = False
        if hit is not None:
            exact: cf.Future[Frame] = cf.Future()
            exact.set_result(hit)
        elif i in s.quarantined:
            exact = cf.Future()
            exact.set_exception(FrameQuarantined(f"frame {i} of {s.path} is quarantined"))
        else:
            self._supersede(i, format)
            # A decode that cannot make the deadline (a long seek) waits for the playhead to
            # settle: while a scrub goes on, the next request cancels it before it costs CPU;
            # when the playhead stops, it starts and refines the picture.
            # ... and so does one the budget cannot pay now (it would be paid too late for this
            # frame, and hold back what can be shown meanwhile), or one while playing on
            # proxies made ahead (Session.play_ahead: the frame will be a proxy by then).
            hopeless = (s.exact_estimate(i) > float(deadline) or s.playing_on_proxies
                        or (s.account is not None
                            and not s.account.can_pay("exact", s.decode_work(i))))
            exact = self._exact_job(i, format, supersedable=True,
                                    delay=SETTLE if hopeless else 0.0).future
        if on_exact is not None:
            exact.add_done_callback(lambda f: _deliver(f, on_exact))
        s.recent.append(i)
        self._prefetch(i, format)
        return Request(s, i, format, deadline_at, exact, fallback_now=hopeless)

    def index_at(self, seconds: float) -> int:
        """Display index of the frame on screen at ``seconds``; :class:`FrameOutOfRange` if none."""
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
        return i

    def _exact_job(self, i: int, fmt: str, *, supersedable: bool,
                   priority: int = PLAYHEAD, delay: float = 0.0) -> Job:
        """The (shared) job decoding frame ``i`` in ``fmt``; its result also lands in RAM.

        With ``delay``, the job is queued only after that many seconds, unless cancelled first.
        """
        s = self._session
        with s._lock:
            found = s.pending.get((i, fmt))
            shared = found is not None and not found.future.cancelled() and (
                not found.future.done() or found.future.exception() is None)
            if found is not None and shared:
                job = found
                if not supersedable:
                    job.become_order()  # a blocking call is an order
                if priority < job.priority:
                    s.worker.promote(job, priority)  # a prefetch became the playhead
            else:
                work = s.decode_work(i)
                # Deadline requests and prefetches spend the clip's budget only when admitted;
                # a blocking frame() is charged but never refused.
                job = exact_job(lambda proc: s.timed_frame(proc, i, fmt, work), session=s,
                                account=s.account, work=work, failed=s.frame_failed(i),
                                priority=priority, order=not supersedable)
                job.held = delay > 0
                s.pending[(i, fmt)] = job
        if shared:
            if delay <= 0:
                _submit_held(s, job)  # a settling decode that is wanted now: queue it at once
            return job
        # The callback must not capture `job`: future -> callback -> job -> future would be a
        # cycle keeping the decoded frame (and its slot) alive until a garbage collection.
        job.future.add_done_callback(lambda f: _exact_done(s, i, fmt, f))
        if delay > 0:
            _later.call(delay, _submit_held, s, job)
        else:
            s.worker.submit(job)
        return job

    def _supersede(self, i: int, fmt: str) -> None:
        """Cancel queued, not yet running decodes of older requests (never a blocking one)."""
        s = self._session
        with s._lock:
            stale = [job for key, job in s.pending.items()
                     if key != (i, fmt) and job.supersedable]
        for job in stale:
            job.future.cancel()  # False (and harmless) when it already runs: it lands in RAM

    def _prefetch(self, i: int, fmt: str) -> None:
        """Playing forward or backward (steady steps of 1 or 2): decode the next frames ahead.

        Under a budget that has no room to spare, playing forward makes proxies ahead instead
        of EXACT frames (:meth:`Session.play_ahead`): a full-size frame costs its decode and a
        full-size conversion, a proxy its decode and a small picture -- about a third, so
        the budget shows three times as many of the frames played.
        """
        s = self._session
        s.playing_on_proxies = False
        if len(s.recent) < 3:
            return
        a, b, c = s.recent
        step = c - b
        if step != b - a or step == 0 or abs(step) > 2:
            return  # scrubbing: where it goes next is anyone's guess
        account = s.account
        if step > 0 and s.byproducts and account is not None and not account.spare() \
                and s.play_ahead(i, step):
            s.playing_on_proxies = True
            return
        for k in (1, 2):
            j = i + k * step
            if 0 <= j < len(self) and s.ram_get(j, fmt) is None and j not in s.quarantined \
                    and (account is None or account.can_pay("exact", s.decode_work(j))):
                self._exact_job(j, fmt, supersedable=True, priority=PREFETCH)

    # -- proxies ------------------------------------------------------------------------------
    def build_proxies(self, *, full: bool = True,
                      progress: Callable[[int, int], None] | None = None,
                      frames: Sequence[int] | None = None) -> tuple[int, int]:
        """Build this clip's proxies now (blocking): keyframes, then with ``full`` every frame;
        or only ``frames`` (display indices), each group of pictures in one sequential pass.

        Returns (built, failed). ``progress(done, total)`` is called after each chunk. Frames
        already in the store are skipped, so this also completes a background build.
        """
        s = self._live()
        if frames is not None:
            frames = [self._check_index(i) for i in frames]
        builder = ProxyBuilder(s.twin(), full=full, frames=frames)
        try:
            builder.run(progress)
        finally:
            builder.session.close()
        return builder.done, builder.failed

    @property
    def proxies_stored(self) -> int:
        """How many of the clip's frames have a proxy in the store, as far as this process
        knows (the store's map when the clip opened, and what it stored since)."""
        return int(self._live().proxies_known().sum())

    @property
    def proxy_progress(self) -> tuple[int, int] | None:
        """(done, planned) of the background proxy build; None when none was started."""
        b = self._builder
        return None if b is None else (b.done + b.failed, b.total)

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise InvalidArgument(f"frame index must be an int, got {type(index).__name__}")
        n = len(self)
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise FrameOutOfRange(f"frame {index} is out of range for a clip of {n} frames")
        return i

    def _live(self) -> Session:
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


def _playhead_of(session: weakref.ref[Session]) -> Callable[[], tuple[int, ...]]:
    """Where the user is in a session: the frames last asked for, latest last (the builder
    builds there). Weak: a builder must not keep its clip's session alive."""
    def playhead() -> tuple[int, ...]:
        s = session()
        return tuple(s.recent) if s is not None else ()
    return playhead


def _attached(proc: Any) -> None:
    """A job that only makes its session attach (open the source) in the worker."""


def _close(session: Session, builder: ProxyBuilder | None) -> None:
    if builder is not None:
        builder.stop()
        builder.session.close()
    session.close()
    _later.forget(session)
    account = session.account
    if account is not None:
        account.governor.close_account(account)


class _Later:
    """One thread running delayed calls (a thread per delayed decode cost ~0.2 ms of CPU for
    every hopeless request of a scrub)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self._thread: threading.Thread | None = None

    def call(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (time.monotonic() + delay, self._seq, fn, args))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="phast-later",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                _at, _seq, fn, args = heapq.heappop(self._heap)
            try:
                fn(*args)
            except Exception:  # one failed call must not stop the others
                log.exception("delayed call failed")
            # Not held while waiting for the next call: the arguments (a clip's session and its
            # job, whose result is a frame) would keep a closed clip's slot mapped.
            del fn, args

    def forget(self, owner: object) -> None:
        """Drop the calls whose first argument is ``owner`` (a clip that closes)."""
        with self._cond:
            kept = [e for e in self._heap if not (e[3] and e[3][0] is owner)]
            if len(kept) != len(self._heap):
                heapq.heapify(kept)
                self._heap[:] = kept


_later = _Later()


def _submit_held(s: Session, job: Job) -> None:
    """Queue a delayed decode (its time has come, or a request wants it now) unless it was
    queued already."""
    with s._lock:
        if not job.held:
            return
        job.held = False
    if not job.future.cancelled() and not s.closed:
        with contextlib.suppress(PhastError):  # the pool shut down meanwhile
            s.worker.submit(job)


def _deliver(future: cf.Future[Frame], callback: Callable[[Frame], None]) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    try:
        callback(future.result().sibling())
    except Exception:  # a caller's callback must not take a phast thread down
        log.exception("on_exact callback failed")


def _exact_done(s: Session, i: int, fmt: str, future: cf.Future[Frame]) -> None:
    with s._lock:
        job = s.pending.get((i, fmt))
        if job is not None and job.future is future:
            del s.pending[(i, fmt)]
    if not future.cancelled() and future.exception() is None:
        s.ram_put(i, fmt, future.result())


def _check_format(fmt: Any) -> None:
    if fmt not in OUTPUT_FORMATS:
        raise InvalidArgument(f"format must be one of {', '.join(OUTPUT_FORMATS)}; got {fmt!r}")


def open(path: str | os.PathLike[str], *, backend: str = "auto", stream: int = 0,
         cache_dir: str | os.PathLike[str] | None = None,
         backend_options: Mapping[str, Any] | None = None, pool: WorkerPool | None = None,
         max_slots: int = 32, proxies: bool | None = None, proxy_height: int = 360,
         ram_frames: int = 8, budget: float | str | None = None,
         proxy_shortcuts: bool = True, shared_store: str | SharedStore | None = None,
         publish: bool = False) -> Clip:
    """Open video stream ``stream`` (0 = first video stream) of ``path``.

    The first open of a source scans it once in a worker; the frame index is stored under
    ``cache_dir`` (default :func:`phast.store.default_cache_dir`) and reused while the file is
    unchanged. ``backend`` is a registry name or ``"auto"``. ``backend_options`` is plain data
    passed to the backend. ``proxies=True`` builds ``proxy_height``-row proxies of the clip in
    the background (keyframes first) for the fallback tiers (default: on, unless the environment
    sets ``PHAST_PROXIES=0``); ``ram_frames`` recent EXACT frames
    are kept in memory. ``budget`` is the share of the host's sustainable TDP this clip's work
    may use (default 0.10, or ``$PHAST_BUDGET``; ``"off"``: ungoverned); see
    :mod:`phast.governor`. Opening itself (the index scan) is not governed.
    ``proxy_shortcuts``: the proxy builder's decoder skips what no proxy shows
    (``phast.backends.decoder.PROXY_DECODE``; False: proxies of exactly decoded frames).
    ``shared_store``: a second proxy level behind the local one (an fsspec URL or directory, or a
    :class:`phast.sharedstore.SharedStore`; default ``$PHAST_SHARED_STORE``, else none): proxies
    the local store lacks are read from it (checked, then copied locally). ``publish=True``
    also writes the proxies this clip builds there (proxy farms; workstations only read). Raises
    :class:`SourceNotFound`, :class:`MediaError` (and subclasses
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
    if isinstance(ram_frames, bool) or not isinstance(ram_frames, int) or ram_frames < 0:
        raise InvalidArgument("ram_frames must be a non-negative int")
    proxy_spec = ProxySpec(height=proxy_height, shortcuts=proxy_shortcuts)
    share = resolve_budget(budget)
    if proxies is None:
        proxies = os.environ.get("PHAST_PROXIES", "1") != "0"
    options = dict(backend_options or {})
    if "proxy_decode" in options:
        raise InvalidArgument("backend option 'proxy_decode' is phast's own (its proxy builder "
                              "sets it); see phast.open(..., proxy_shortcuts=)")
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
    shared = open_shared(shared_store)
    if publish and shared is None:
        raise InvalidArgument("publish=True needs a shared_store (or $PHAST_SHARED_STORE)")
    store = _store_for(cache_dir, shared, publish)
    pool = pool or default_pool()
    reasons: list[str] = []
    auto = backend == "auto"
    tried: list[tuple[str, str]] = []  # (backend, why it was skipped): never a silent fallback
    for n, (name, spec) in enumerate(candidates):
        why = registry.host_check(name) if auto else None
        if why:
            tried.append((name, f"skipped: {why}"))
            continue
        session = Session(p, stream, name, spec, options, pool, max_slots, store=store,
                          identity=identity, proxy_spec=proxy_spec, ram_frames=ram_frames)
        try:
            if auto and n < len(candidates) - 1:
                # A better backend than the last resort: its probe and capability check (in the
                # worker) decide now, not at the first frame.
                session.worker.submit(plain_job(_attached, session=session)).result()
            cached = store.get_index(identity, name, stream)
            if cached is not None:
                session.index, session.source = cached
                session.source = _check_source(session.source)
            else:
                session.worker.submit(plain_job(session.run_index, session=session)).result()
                store.put_index(identity, name, stream, session.index,  # type: ignore[arg-type]
                                session.source)
            pool.image_worker()  # the fallback tiers' decoder, started before it is needed
            if share is not None:
                governor = pool.ensure_governor(Governor.for_host)
                if isinstance(governor, Governor):  # (a pool may be given another admission)
                    session.account = governor.open_account(share, os.path.basename(p))
            session.selection = (*tried, (name, "selected"))
            if tried:
                log.info("%s: backend %s; %s", p, name,
                         "; ".join(f"{b} {w}" for b, w in tried))
            builder = None
            if proxies:
                session.byproducts = True  # every frame decoded becomes a proxy, budget allowing
                builder = ProxyBuilder(session.twin(), full=True,
                                       playhead=_playhead_of(weakref.ref(session)))
                builder.start()
            return Clip(session, builder)
        except CannotHandle as e:
            reasons.append(f"{name}: {e}")
            tried.append((name, f"skipped: {e}"))
            session.close()
        except BackendUnavailable as e:
            session.close()
            if not auto:
                raise
            tried.append((name, f"skipped: {e}"))
        except WorkerCrashed as e:
            session.close()
            raise MediaError(f"{p}: the worker died twice while opening it ({e})") from e
        except BaseException:
            session.close()
            raise
    reasons += [f"{b}: {w}" for b, w in tried if not any(r.startswith(f"{b}:") for r in reasons)]
    raise UnsupportedCodec(f"no backend can open {p}: {'; '.join(reasons) or 'none available'}")


log = logging.getLogger(__name__)

#: Seconds a hopeless EXACT decode (one the cost model says cannot make its deadline) waits for
#: the playhead to settle before it starts. Scrubbing at display rate supersedes it first.
SETTLE = 0.15

__all__ = ["Clip", "PhastError", "Request", "open"]
