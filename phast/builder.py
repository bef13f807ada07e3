"""Background proxy building: keyframes first, then where the user is, then the rest.

A builder works through its own :class:`~phast.session.Session` of the clip (its own decoder, on
whichever worker the pool assigns), so building never moves the playhead's decoder. Work goes out
as small BUILD-priority jobs -- one keyframe, or a run of consecutive frames of one group of
pictures -- so a playhead request waits at most for one chunk, and the pool's admission policy
(the power governor) can hold building back between chunks.

Which chunk comes next is decided when the previous one is done, from where the user is now::

    1. keyframes, nearest the playhead first: each stands in for its whole group of pictures
       (the NEAREST tier), and costs one intra decode
    2. the group of pictures holding the playhead, then those ahead of it (playback goes
       forward), then those behind, nearest first: a scrub or a step back lands there
    3. (the rest, by the same order: the playhead is somewhere)

A group being built is finished first unless the user has settled in another one (the last
requests all in it): moving to another group costs a seek and a decode up to where building
stopped, and a playhead that jumps about (random access) would make every chunk pay that.

Frames that have a proxy by then (another editor, or a by-product of the clip's own decodes,
:meth:`Session._byproducts_wanted`) are skipped and counted as done.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
from collections.abc import Callable, Sequence

import numpy as np

from .jobs import Job, build_job
from .session import Session

log = logging.getLogger(__name__)

RUN_CHUNK = 24  #: consecutive frames per job: cheap sequential decoding, short enough to yield
#: Groups of pictures behind the playhead cost this many times their distance when choosing what
#: to build next (playback moves forward).
BEHIND_WEIGHT = 2


class ProxyBuilder:
    """Builds the proxies of one clip; ``start()`` in the background or ``run()`` blocking.

    ``playhead()`` says where the user is: the display indices last asked for, latest last
    (empty: nowhere yet).
    """

    def __init__(self, session: Session, *, full: bool = True,
                 playhead: Callable[[], Sequence[int]] | None = None,
                 frames: Sequence[int] | None = None) -> None:
        assert session.index is not None and session.store is not None
        self.session = session
        self.full = full
        self._playhead = playhead or (lambda: ())
        index = session.index
        n = index.frame_count
        have = session.proxies_known()
        self._keys = [int(k) for k in index.keyframes() if not have[int(k)]]
        wanted = None if frames is None else set(int(i) for i in frames)
        if wanted is not None:
            # only these frames, each group of pictures in one sequential pass (keyframes
            # included: a proxy farm has no playhead to serve first)
            self._keys, full = [], True
        # Groups of pictures by their first display index: the frames each still lacks.
        bounds = sorted(set(int(k) for k in index.keyframes()) | {0, n})
        self._starts = bounds[:-1]
        self._groups: dict[int, list[int]] = {}
        if full:
            keys = set(int(k) for k in index.keyframes()) if wanted is None else set()
            for lo, hi in itertools.pairwise(bounds):
                todo = [i for i in range(lo, hi) if i not in keys and not have[i]
                        and (wanted is None or i in wanted)]
                if todo:
                    self._groups[lo] = todo
        self.total = len(self._keys) + sum(len(g) for g in self._groups.values())
        self.done = 0
        self.failed = 0
        self._stopped = threading.Event()
        self._finished = threading.Event()
        self._current: Job | None = None
        self._building: int | None = None  # the group of pictures being built
        self._lock = threading.Lock()

    # -- the plan ---------------------------------------------------------------------------------
    def _next_chunk(self) -> list[int] | None:
        """The next chunk to build (see the module docstring); None when all is built."""
        have = self.session.proxies_known()
        recent = list(self._playhead())
        p = recent[-1] if recent else None
        while self._keys:
            k = self._keys.pop(self._nearest_key(p))
            if not have[k]:
                return [k]
            self.done += 1
        while self._groups:
            start = self._next_group(p, recent)
            self._building = start
            todo = self._groups[start]
            chunk = [i for i in todo[:RUN_CHUNK] if not have[i]]
            self.done += min(RUN_CHUNK, len(todo)) - len(chunk)
            del todo[:RUN_CHUNK]
            if not todo:
                del self._groups[start]
            if chunk:
                return chunk
        return None

    def _nearest_key(self, p: int | None) -> int:
        if p is None:
            return 0
        return int(np.argmin([abs(k - p) for k in self._keys]))

    def _group_of(self, i: int) -> int:
        return self._starts[max(0, bisect.bisect_right(self._starts, i) - 1)]

    def _next_group(self, p: int | None, recent: list[int]) -> int:
        settled = len(recent) >= 2 and len({self._group_of(i) for i in recent}) == 1
        if self._building in self._groups and not (settled and p is not None
                                                    and self._group_of(p) != self._building):
            return self._building  # go on where the decoder is
        if p is None:
            return min(self._groups)
        here = self._group_of(p)

        def cost(start: int) -> int:
            if start == here:
                return -1
            return start - p if start > p else (p - start) * BEHIND_WEIGHT
        return min(self._groups, key=cost)

    # -- background -------------------------------------------------------------------------------
    def start(self) -> None:
        """Queue the first chunk; each finished chunk queues the next."""
        self._next()

    def _next(self) -> None:
        with self._lock:
            chunk = None if self._stopped.is_set() else self._next_chunk()
            if chunk is None:
                self._finished.set()
                return
            job = self._job(chunk, order=False)
            self._current = job
        job.future.add_done_callback(lambda f: self._chunk_done(f, chunk))
        try:
            self.session.worker.submit(job)
        except Exception:
            self._finished.set()

    def _chunk_done(self, future: object, chunk: list[int]) -> None:
        import concurrent.futures as cf

        assert isinstance(future, cf.Future)
        if future.cancelled():
            self._finished.set()
            return
        error = future.exception()
        if error is not None:
            log.warning("proxy building failed for frames %s..%s: %s", chunk[0], chunk[-1], error)
            self.failed += len(chunk)
        else:
            stored = future.result()
            self.done += len(stored)
            self.failed += len(chunk) - len(stored)
        self._next()

    # -- blocking ---------------------------------------------------------------------------------
    def run(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Build everything planned now, calling ``progress(done, total)`` after each chunk."""
        while not self._stopped.is_set():
            with self._lock:
                chunk = self._next_chunk()
            if chunk is None:
                break
            job = self._job(chunk, order=True)  # an order: never refused
            try:
                stored = self.session.worker.submit(job).result()
            except Exception as e:
                log.warning("proxy building failed for frames %s..%s: %s", chunk[0], chunk[-1], e)
                stored = []
            self.done += len(stored)
            self.failed += len(chunk) - len(stored)
            if progress is not None:
                progress(self.done + self.failed, self.total)
        self._finished.set()

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            if self._current is not None:
                self._current.future.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def _job(self, chunk: list[int], *, order: bool) -> Job:
        """The job building ``chunk``. Keyframes each cost a seek and an intra decode; a run of
        consecutive frames continues one decode (a different cost per frame, and kind)."""
        s = self.session
        keyframe = len(chunk) == 1 and chunk[0] in s.keyframe_set
        return build_job(lambda proc: s.run_proxies(proc, chunk), session=s, account=s.account,
                         frames=len(chunk), keyframe=keyframe, order=order)


__all__ = ["ProxyBuilder"]
