"""A frame at every deadline: requests, quality tiers, and what they fall back to.

``Clip.request(i, deadline=d)`` starts the EXACT decode at playhead priority and returns a
:class:`Request` at once. ``Request.frame()`` answers by the deadline with the best picture it can
honestly label::

    EXACT     the frame itself: from the RAM tier, or decoded in time
    PROXY     the frame downscaled, from the proxy store (decoded on the image worker)
    NEAREST   the nearest other frame phast has a picture of, before or after (an exact frame
              in memory, a decoded proxy in memory, or a stored proxy); ``Frame.shows`` says
              which
    BLANK     zeros at proxy size: phast has no picture of the clip yet

What phast has costs little to show, so it is the budget's floor (:mod:`phast.governor`):
decoding a stored proxy picture is charged to the clip but never refused, while exact decodes,
prefetching and building share what is left.

The fallback lookups start ``FALLBACK_RESERVE`` (or ``FALLBACK_SHARE`` of a longer deadline)
before the deadline, so a request whose exact frame arrives in time costs no proxy work -- or at
once, when the clip's cost model (:meth:`Session.exact_estimate`) says the exact frame cannot
make the deadline (a long seek).
The exact decode goes on after the deadline (``Request.exact`` resolves, ``on_exact`` fires)
unless a newer request for the clip supersedes it while it is still queued.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import FrameOutOfRange, PhastError
from .frame import Frame
from .jobs import image_job
from .types import PACKED_LAYOUT, Quality

if TYPE_CHECKING:
    from .index import FrameIndex
    from .session import Session

log = logging.getLogger(__name__)

#: Seconds before the deadline at which the fallback lookups start (a stored-proxy read plus a
#: 360p JPEG decode on the image worker take ~2-5 ms; the rest is scheduling margin).
FALLBACK_RESERVE = 0.020
#: ... or this share of the request's whole deadline, if more: a longer deadline (a render
#: preview, an MLT ``phast.deadline``) leaves the fallback room for a loaded machine, where
#: the image worker's answer can take tens of milliseconds, at the cost of a ~1 ms picture
#: decoded in vain when EXACT lands in the last quarter.
FALLBACK_SHARE = 0.25
#: Seconds before the deadline at which ``Request.frame()`` stops waiting, so that thread
#: wake-up delays on a busy machine still land the return inside the deadline.
RETURN_MARGIN = 0.006
#: Seconds the image worker may be busy with one job before fallbacks stop queueing on it (a
#: stored proxy decodes in ~2-5 ms; longer means a stopped, hung or restarting process, and a
#: request that waited for it would answer from memory only at its deadline, with no slack
#: left for a late thread wake-up).
IMAGE_STALLED = 0.1
_helpers = cf.ThreadPoolExecutor(max_workers=4, thread_name_prefix="phast-tier")


class Request:
    """One frame request with a deadline (see the module docstring)."""

    def __init__(self, session: Session, index: int, fmt: str, deadline_at: float,
                 exact: cf.Future[Frame], *, fallback_now: bool = False) -> None:
        self.index = index
        self.format = fmt
        self.deadline_at = deadline_at  #: ``time.monotonic()`` value of the deadline
        self._session = session
        self._exact = exact
        self._fallback: cf.Future[Frame | None] | None = None
        self._lock = threading.Lock()
        self._reserve = max(FALLBACK_RESERVE, FALLBACK_SHARE * (deadline_at - time.monotonic()))
        if fallback_now and not exact.done():
            self._start_fallback()

    @property
    def exact(self) -> cf.Future[Frame]:
        """Future of the EXACT frame; cancelled if superseded before it started."""
        return self._exact

    def frame(self) -> Frame:
        """The best frame available at the deadline (earlier if EXACT is ready). Never raises
        for decoding trouble: a failed or quarantined exact decode degrades to a lower tier."""
        now = time.monotonic()
        if not self._exact.done() and self._fallback is None:
            start_fallback_at = self.deadline_at - self._reserve - RETURN_MARGIN
            if now < start_fallback_at:
                cf.wait([self._exact], timeout=start_fallback_at - now)
        exact = _result(self._exact)
        if exact is not None:
            return exact.sibling()
        pending = self._start_fallback()
        end = self.deadline_at - RETURN_MARGIN
        left = end - time.monotonic()
        both: list[cf.Future[Any]] = [self._exact, pending]
        if left > 0:
            # Take EXACT if it lands before the deadline; else the fallback once it is ready.
            cf.wait(both, timeout=left, return_when=cf.FIRST_COMPLETED)
            exact = _result(self._exact)
            if exact is None and not pending.done():
                cf.wait(both, timeout=max(0.0, end - time.monotonic()),
                        return_when=cf.FIRST_COMPLETED)
        exact = _result(self._exact)
        if exact is not None:
            return exact.sibling()
        lower = _result(pending)
        if lower is None:
            # The fallback found nothing, or is still in the store or on a busy machine: what
            # memory holds costs no I/O and is always affordable at the deadline.
            lower = fallback(self._session, self.index, self.format, stored=False)
        return lower if lower is not None else blank(self._session, self.index, self.format)

    def _start_fallback(self) -> cf.Future[Frame | None]:
        with self._lock:
            if self._fallback is None:
                self._fallback = _helpers.submit(fallback, self._session, self.index,
                                                 self.format, until=self.deadline_at)
            return self._fallback


def _result(future: cf.Future[Any]) -> Any:
    if not future.done() or future.cancelled():
        return None
    return None if future.exception() is not None else future.result()


def fallback(session: Session, i: int, fmt: str, *, stored: bool = True,
             until: float | None = None) -> Frame | None:
    """PROXY of frame ``i``, else the NEAREST picture of another frame, else None.

    ``stored=False`` looks in memory only (no proxy store read, no image worker); ``until`` (a
    ``time.monotonic()`` value) is when an image-worker decode stops being worth waiting for.
    """
    proxy = _proxy_frame(session, i, i, fmt, Quality.PROXY, stored, until)
    if proxy is not None:
        return proxy
    for k in session.nearest_pictures(i, fmt):
        exact = session.ram_get(k, fmt)
        if exact is not None:
            return exact.sibling(index=i, quality=Quality.NEAREST, shows=k,
                                 pts=_pts(session, i), time=_time(session, i))
        near = _proxy_frame(session, i, k, fmt, Quality.NEAREST, stored, until)
        if near is not None:
            return near
        if until is not None and time.monotonic() >= until:
            break
    return None


def _proxy_frame(session: Session, i: int, shows: int, fmt: str,
                 quality: Quality, stored: bool = True,
                 until: float | None = None) -> Frame | None:
    """Frame ``shows``'s proxy standing in for frame ``i``: from memory, else decoded from the
    store on the image worker (the budget's floor: charged, never refused); else None."""
    cached = session.proxy_ram_get(shows, fmt)
    if cached is not None:
        return cached.sibling(index=i, quality=quality, shows=shows, pts=_pts(session, i),
                              time=_time(session, i))
    store = session.store
    if not stored or store is None or session.identity is None \
            or session.proxy_known_missing(shows):
        return None
    entry = store.get_proxy(session.identity, session.stream, session.proxy_spec.key, shows)
    if entry is None:
        session.proxy_missing[shows] = time.monotonic()
        hint = session.proxy_hint
        if hint is not None and 0 <= shows < len(hint):
            hint[shows] = False  # evicted, or never there: no longer a NEAREST candidate
        return None
    width, height, data = entry
    if (width, height) != session.proxy_size():
        return None
    job_run: Callable[[Any], Frame] = lambda proc: session.run_image(  # noqa: E731
        proc, data, (width, height), i, fmt, quality, shows)
    # Paid, but never held back: the floor of the budget (see the module docstring).
    job = image_job(job_run, account=session.account)
    try:
        worker = session.pool.image_worker()
        if worker.busy_for() > IMAGE_STALLED:
            return None  # stopped, hung or restarting: memory's tiers answer without waiting
        future = worker.submit(job)
        wait = None if until is None else max(0.0, until - time.monotonic())
        frame: Frame = future.result(timeout=wait)
    except cf.TimeoutError:
        future.cancel()  # still queued: never decoded (running: its result is dropped)
        return None
    except (PhastError, cf.CancelledError):
        # the worker failed on it (crash, damaged picture, no slot free), or the pool shut
        # down: this tier has nothing; the caller tries the next one
        return None
    except Exception:  # a bug: the deadline still holds (next tier), but it is not hidden
        log.exception("fallback picture of frame %d for frame %d of %s failed", shows, i,
                      session.path)
        return None
    if quality is Quality.NEAREST or shows in session.keyframe_set:
        # Pictures shown for other frames (and keyframes, which stand in for whole GOPs) come
        # back again and again; a random frame's own proxy rarely does (copying it out of its
        # slot would be wasted work).
        session.proxy_ram_put(shows, fmt, frame)
    return frame


def blank(session: Session, i: int, fmt: str) -> Frame:
    """A zero picture at proxy size, labelled BLANK (``shows`` is -1: it shows no frame)."""
    w, h = session.proxy_size()
    if fmt == "native":
        array = np.zeros((h, w), np.uint8)
        planes: tuple[np.ndarray, ...] = (array,)
        pix_fmt = "gray"
    else:
        channels, itemsize = PACKED_LAYOUT[fmt]
        shape = (h, w) if channels == 1 else (h, w, channels)
        array = np.zeros(shape, np.uint8 if itemsize == 1 else np.dtype("<u2"))
        planes, pix_fmt = (array,), fmt
    array.setflags(write=False)
    return Frame(array=array, planes=planes, index=i, pts=_pts(session, i),
                 time=_time(session, i), quality=Quality.BLANK, format=fmt, pix_fmt=pix_fmt,
                 width=w, height=h, key_frame=False, shows=-1)


def _pts(session: Session, i: int) -> int:
    return int(_index_of(session, i).frame_pts[i])


def _time(session: Session, i: int) -> float:
    return _index_of(session, i).frame_time(i)


def _index_of(session: Session, i: int) -> FrameIndex:
    """The clip's index, checked to still hold frame ``i``: a damaged source re-indexed by a
    full decode (after the request was made) can turn out to have fewer frames."""
    index = session.index
    assert index is not None
    if not 0 <= i < index.frame_count:
        raise FrameOutOfRange(f"frame {i} does not exist in {session.path}: re-indexing by a "
                              f"sequential decode found {index.frame_count} frames")
    return index
