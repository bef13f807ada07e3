"""Background proxy building: keyframes first, then every frame in sequential passes.

A builder works through its own :class:`~phast.session.Session` of the clip (its own decoder, on
whichever worker the pool assigns), so building never moves the playhead's decoder. Work goes out
as small BUILD-priority jobs -- a few keyframes, or a run of consecutive frames of one GOP -- so a
playhead request waits at most for one chunk, and the pool's admission policy (the power
governor) can hold building back between chunks. Frames already in the store are skipped.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable

from .session import Session
from .supervisor import BUILD, Job

log = logging.getLogger(__name__)

#: keyframes per job: each costs a seek and an intra decode; one at a time, so that under a
#: tight power budget the first keyframe proxies (the fallback tiers' foundation) come soonest
KEYFRAME_CHUNK = 1
RUN_CHUNK = 24  #: consecutive frames per job: cheap sequential decoding, short enough to yield


class ProxyBuilder:
    """Builds the proxies of one clip; ``start()`` in the background or ``run()`` blocking."""

    def __init__(self, session: Session, *, full: bool = True) -> None:
        assert session.index is not None and session.store is not None
        self.session = session
        self.full = full
        assert session.index is not None
        self._keys = frozenset(int(k) for k in session.index.keyframes())
        self._plan = self._make_plan()
        self.total = sum(len(c) for c in self._plan)
        self.done = 0
        self.failed = 0
        self._stopped = threading.Event()
        self._finished = threading.Event()
        self._current: Job | None = None
        self._lock = threading.Lock()

    def _make_plan(self) -> list[list[int]]:
        s = self.session
        assert s.index is not None and s.store is not None and s.identity is not None
        cached = _Cached(s)
        keys = [int(k) for k in s.index.keyframes() if not cached(int(k))]
        plan = [keys[j : j + KEYFRAME_CHUNK] for j in range(0, len(keys), KEYFRAME_CHUNK)]
        if not self.full:
            return plan
        key_set = set(s.index.keyframes().tolist())
        bounds = sorted(key_set | {0, s.index.frame_count})
        for lo, hi in itertools.pairwise(bounds):
            run = [i for i in range(lo, hi) if i not in key_set and not cached(i)]
            plan += [run[j : j + RUN_CHUNK] for j in range(0, len(run), RUN_CHUNK)]
        return [chunk for chunk in plan if chunk]

    # -- background -------------------------------------------------------------------------------
    def start(self) -> None:
        """Queue the first chunk; each finished chunk queues the next."""
        self._next()

    def _next(self) -> None:
        with self._lock:
            if self._stopped.is_set() or not self._plan:
                self._finished.set()
                return
            chunk = self._plan.pop(0)
            job = _build_job(self.session, chunk, self._kind(chunk), governed=True)
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
                if not self._plan:
                    break
                chunk = self._plan.pop(0)
            # an order: never refused
            job = _build_job(self.session, chunk, self._kind(chunk), governed=False)
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


    def _kind(self, chunk: list[int]) -> str:
        """The governor's cost kind: keyframes each cost a seek and an intra decode; a run of
        consecutive frames continues one decode (a different cost per frame)."""
        return "build_key" if chunk[0] in self._keys else "build"


def _build_job(session: Session, chunk: list[int], kind: str, *, governed: bool) -> Job:
    job = Job(lambda proc: session.run_proxies(proc, chunk), session=session, priority=BUILD)
    job.account, job.kind, job.work = session.account, kind, len(chunk)
    job.governed = job.budgeted = governed
    return job


class _Cached:
    """``cached(i)``: is frame i's proxy already in the store? (one existence check each)"""

    def __init__(self, session: Session) -> None:
        self.s = session

    def __call__(self, i: int) -> bool:
        s = self.s
        assert s.store is not None and s.identity is not None
        return s.store.has_proxy(s.identity, s.stream, s.proxy_spec.key, i)


__all__ = ["ProxyBuilder"]
