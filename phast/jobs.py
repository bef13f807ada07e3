"""Jobs: one unit of work for a worker process, how urgent it is, and who pays for it.

The low module between the queue and the budget: :mod:`phast.supervisor` queues and runs
jobs, :mod:`phast.governor` admits and charges them, and neither imports the other -- the pool
holds an :class:`Admission` (the governor) without knowing its class. Every kind of job is
built here, by one function each, so its priority and its payment terms are set in one place::

    kind        built by          priority            paid from the budget   admission may hold it
    exact       exact_job         PLAYHEAD/PREFETCH   yes (blocking: tallied) yes (blocking: never)
    image       image_job         PLAYHEAD            yes, at the next tick   never (the floor)
    build       build_job         BUILD               yes (explicit: tallied) yes (explicit: never)
    build_key   build_job         BUILD               (as build)             (as build)
    byproduct   byproduct_job     BUILD               yes                    yes
    playahead   playahead_job     PREFETCH            yes                    yes
    other       plain_job         PLAYHEAD            no account             never

(``governor.INITIAL_COST`` has each kind's first cost estimate; the governor's module docstring
says how admission treats each priority.)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

#: Job priorities, most urgent first. A worker always runs the most urgent queued job next.
PLAYHEAD, PREFETCH, BUILD = 0, 1, 2
PRIORITY_NAMES = {PLAYHEAD: "playhead", PREFETCH: "prefetch", BUILD: "build"}


class ProcessView(Protocol):
    """What the governor reads of a worker process: its pid and its start-up CPU seconds."""

    @property
    def pid(self) -> int: ...

    @property
    def ready_cpu_s(self) -> float: ...


class WorkerView(Protocol):
    """What the governor reads of a supervised worker: its id and its live process."""

    @property
    def id(self) -> int: ...

    @property
    def proc(self) -> ProcessView | None: ...


class Attachable(Protocol):
    """What a worker needs from a clip session to (re)open it in a process (``Session``)."""

    id: int

    def attach(self, proc: Any) -> None: ...


class Admission(Protocol):
    """What the worker pool asks of its governor (:class:`phast.governor.Governor`)."""

    def admit(self, job: Job) -> bool: ...

    def release(self, job: Job) -> None: ...

    def job_started(self, worker: WorkerView, job: Job) -> None: ...

    def job_finished(self, worker: WorkerView, job: Job) -> None: ...

    def close(self) -> None: ...


class Job:
    """One unit of work for a worker; ``run`` is called with the live process (maybe again).

    ``priority`` orders the queue (:data:`PLAYHEAD` > :data:`PREFETCH` > :data:`BUILD`); a job
    whose future is cancelled before it starts is dropped. The payment terms (``account``,
    ``kind``, ``work``, ``governed``, ``budgeted``, ``metered``) are the governor's: build a job
    with one of this module's functions to get them right.
    """

    _seq = itertools.count()

    def __init__(self, run: Callable[[Any], Any], *, session: Attachable | None = None,
                 failed: Callable[[BaseException, int], BaseException | None] | None = None,
                 priority: int = PLAYHEAD) -> None:
        self.run = run
        self.session = session
        self.future: Future[Any] = Future()
        self.failures = 0
        self.priority = priority
        self.seq = next(self._seq)  # FIFO among equal priorities
        self.supersedable = False  #: a newer request for the clip may cancel it while queued
        self.held = False  #: created with a delay and not yet handed to a worker (phast.clip)
        self.target: int | None = None  #: the frame it works towards, where that matters
        # The power governor's view (phast/governor.py): whose budget pays (an Account, opaque
        # here), what kind of work and how many units of it (frames to decode, pictures), and
        # whether it may be refused.
        self.account: Any = None
        self.kind = "other"
        self.work = 1
        self.governed = False  #: admission may hold it back for the budget (implies budgeted)
        #: its CPU is paid from the account's budget; orders (a blocking frame(), an explicit
        #: build) are only tallied, and a fallback's proxy decode is paid but never held back
        self.budgeted = False
        self.reserved_j = 0.0  #: estimate reserved at admission, released when charged
        #: measured on its own (worker CPU read when it starts and ends); small frequent jobs
        #: are charged at the governor's next measurement instead
        self.metered = True
        self.cpu_s = 0.0  #: worker CPU seconds measured while it ran
        self._failed = failed

    def __lt__(self, other: Job) -> bool:
        return (self.priority, self.seq) < (other.priority, other.seq)

    def failed(self, error: BaseException) -> BaseException | None:
        """Record a worker failure; return the error to raise, or None to retry."""
        self.failures += 1
        if self._failed is not None:
            return self._failed(error, self.failures)
        return error if self.failures >= 2 else None

    def _pay(self, account: Any, kind: str, work: int, *, governed: bool) -> Job:
        self.account, self.kind, self.work = account, kind, work
        self.governed = self.budgeted = governed
        return self

    def become_order(self) -> None:
        """A blocking request took this job over: never refused, tallied apart from the budget,
        never superseded."""
        self.supersedable = False
        self.governed = self.budgeted = False


def plain_job(run: Callable[[Any], Any], *, session: Attachable | None = None) -> Job:
    """Opening, closing, preparing a worker: no account pays, nothing holds it back."""
    return Job(run, session=session)


def exact_job(run: Callable[[Any], Any], *, session: Attachable, account: Any, work: int,
              failed: Callable[[BaseException, int], BaseException | None],
              priority: int = PLAYHEAD, order: bool = False) -> Job:
    """Decode one frame exactly (``work``: packets to decode). A deadline request or a prefetch
    spends the budget when admitted; an ``order`` (a blocking ``frame()``) is never refused
    and only tallied. Deadline requests and prefetches may be superseded while queued."""
    job = Job(run, session=session, failed=failed, priority=priority)
    job.supersedable = not order
    return job._pay(account, "exact", max(1, work), governed=not order)


def image_job(run: Callable[[Any], Any], *, account: Any) -> Job:
    """Decode a stored proxy picture for a fallback: the budget's floor, paid but never held
    back; about a millisecond, so charged at the governor's next measurement."""
    job = Job(run, priority=PLAYHEAD)._pay(account, "image", 1, governed=False)
    job.budgeted = True
    job.metered = False
    return job


def build_job(run: Callable[[Any], Any], *, session: Attachable, account: Any, frames: int,
              keyframe: bool, order: bool = False) -> Job:
    """Build ``frames`` proxies: a keyframe (``build_key``: a seek and an intra decode, the
    fallback tiers' foundation) or a run of consecutive frames (``build``). Background building
    is admitted against the budget; an ``order`` (``build_proxies()``) is never refused."""
    job = Job(run, session=session, priority=BUILD)
    return job._pay(account, "build_key" if keyframe else "build", frames, governed=not order)


def byproduct_job(run: Callable[[Any], Any], *, session: Attachable, account: Any,
                  pictures: int) -> Job:
    """Collect up to ``pictures`` by-product proxies from a worker: paid and admitted like
    building."""
    job = Job(run, session=session, priority=BUILD)
    return job._pay(account, "byproduct", pictures, governed=True)


def playahead_job(run: Callable[[Any], Any], *, session: Attachable, account: Any, work: int,
                  target: int) -> Job:
    """Decode on to frame ``target`` ahead of a playhead, for its proxies (``work``: packets
    to decode): prefetch priority, paid and admitted."""
    job = Job(run, session=session, priority=PREFETCH)
    job.target = target
    return job._pay(account, "playahead", work, governed=True)


__all__ = ["BUILD", "PLAYHEAD", "PREFETCH", "PRIORITY_NAMES", "Admission", "Attachable", "Job",
           "ProcessView", "WorkerView", "build_job", "byproduct_job", "exact_job", "image_job",
           "plain_job", "playahead_job"]
