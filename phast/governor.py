"""The power governor: admits decode, prefetch and proxy-build work against a power budget.

Each clip opened with a budget ``b`` (a share of the host's sustainable TDP; default
:data:`DEFAULT_BUDGET`, ``phast.open(..., budget=)``, ``$PHAST_BUDGET``) gets an
:class:`Account`: a token bucket in joules, refilled at ``b x tdp_w`` watts and capped at
``capacity_j``. Work is *charged* to the account of the clip it serves, from what it measurably
cost, and *admitted* against what is left::

    charge   worker CPU seconds x joules per CPU second
             - each worker process's CPU time (read by the editor from /proc, never reported by
               the sandboxed worker) is sampled when a job starts and ends, and at every tick
               (idle read-ahead), and the difference goes to the job's account;
             - the editor process's own CPU (minus its idle rate) is split over the accounts
               that worked in that tick;
             - joules per CPU second: ``tdp_w / logical cores`` (the CPU-time model); with a
               measured meter (RAPL, NVML) the factor is reconciled at every tick with the
               meter's marginal energy over phast's CPU time.
    admit    PLAYHEAD  (a deadline request's EXACT decode, a proxy picture for a fallback):
                       when the account can pay the job's estimated cost now;
             PREFETCH  when it can pay it and keep PREFETCH_RESERVE_S of budget, and no
                       playhead job of the clip is waiting for energy;
             BUILD     the same with BUILD_RESERVE_S -- except keyframe proxies (the
                       fallback tiers' foundation: one stands in for a whole GOP), which
                       keep only prefetching's reserve.
    floor    answering from pictures phast has (memory, the proxy store: a proxy picture
             decoded on the image worker for a fallback) is charged like any work but never
             held back: the budget buys pictures first, and exact decodes, prefetching and
             building share what is left (their admission sees the floor's charges).

A job that is not admitted stays queued (a newer request supersedes it, or it runs when the
bucket has refilled), so under pressure the quality tier drops and the deadline holds. Blocking
requests (``clip.frame(i)``
without a deadline, ``clip.build_proxies()``) are explicit orders: never refused, and tallied
apart from the budget (``unbudgeted_j``): the budget is what phast spends on its own initiative
and on deadline work, and an order must not black out the fallbacks that follow it.

Estimated costs are EWMAs of the measured CPU seconds per unit of work (frames decoded for an
EXACT frame, frames proxied, pictures decoded), per clip and kind, so the estimate follows the
clip's codec, resolution and the machine.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgument
from .jobs import BUILD, PLAYHEAD, PREFETCH, Job, WorkerView

if TYPE_CHECKING:
    from .power import Meter, Tdp

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 0.10  #: share of the host's sustainable TDP a clip may use
BUDGET_ENV = "PHAST_BUDGET"  #: a number in (0, 1], or "off" for no governor
TICK_S = 0.2  #: reconciliation period (5 Hz)
BURST_S = 2.0  #: bucket capacity, in seconds of budget (at least the clip's costliest decode)
PREFETCH_RESERVE_S = 0.25  #: budget prefetching must leave for the playhead, in seconds
BUILD_RESERVE_S = 0.5  #: budget proxy building must leave for the playhead, in seconds
WAITING_S = 0.15  #: a denied playhead job holds lower priorities back this long
SAFETY = 0.95  #: the bucket refills at this share of the budget: headroom for charging lag

#: The kind of work the fallback tiers stand on (keyframe proxies: each stands in for its whole
#: GOP): built before the rest, keeping only prefetching's reserve for the playhead.
FOUNDATION = "build_key"

#: Initial estimates, CPU seconds per job and per unit of work (a frame decoded, a picture),
#: until the clip's own measurements arrive.
INITIAL_COST = {"exact": (0.008, 0.010), "image": (0.002, 0.001), "build": (0.005, 0.015),
                "build_key": (0.0, 0.040), "byproduct": (0.001, 0.002),
                "playahead": (0.005, 0.012)}


def resolve_budget(budget: float | str | None) -> float | None:
    """The budget a clip runs under: ``budget``, else ``$PHAST_BUDGET``, else 0.10.

    ``None`` from ``"off"`` means no governor. Raises :class:`InvalidArgument` for anything that
    is not a share in (0, 1].
    """
    if budget is None:
        budget = os.environ.get(BUDGET_ENV, "").strip() or DEFAULT_BUDGET
    if isinstance(budget, str):
        if budget.lower() in ("off", "none", "unlimited"):
            return None
        try:
            budget = float(budget)
        except ValueError as e:
            raise InvalidArgument(f"budget must be a share of TDP in (0, 1] or 'off', got "
                                  f"{budget!r}") from e
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise InvalidArgument(f"budget must be a share of TDP in (0, 1] or 'off', got {budget!r}")
    return float(budget)


@dataclass
class _Cost:
    """CPU seconds of one kind of job: ``fixed + per_unit x units``, each an EWMA.

    Two terms because jobs differ in size by two orders of magnitude: an EXACT frame while
    playing decodes one frame and converts it (the conversion and the copy are most of it), a
    seek decodes a hundred; a single average would price every played frame as a seek, or
    every seek as a played frame. Small jobs (``units <= SMALL``) teach ``fixed``, large ones
    (``units >= LARGE``) ``per_unit``, each net of the other term.
    """

    fixed: float
    per_unit: float
    samples: int = 0

    SMALL = 2
    LARGE = 8

    def estimate(self, units: int) -> float:
        return self.fixed + max(0, units) * self.per_unit

    def update(self, cpu_s: float, units: int) -> None:
        if units <= 0 or cpu_s < 0:
            return
        # The first measurements replace the guess quickly; later ones smooth out noise.
        alpha = 0.5 if self.samples < 4 else 0.2
        if units <= self.SMALL:
            self.fixed += alpha * (max(0.0, cpu_s - units * self.per_unit) - self.fixed)
        elif units >= self.LARGE:
            self.per_unit += alpha * (max(0.0, cpu_s - self.fixed) / units - self.per_unit)
        else:
            scale = cpu_s / max(self.estimate(units), 1e-9)  # both, in proportion
            self.fixed += alpha * (self.fixed * scale - self.fixed)
            self.per_unit += alpha * (self.per_unit * scale - self.per_unit)
        self.samples += 1


class Account:
    """One clip's token bucket (joules) and its cost model. Thread-safe via the governor."""

    def __init__(self, governor: Governor, budget: float, name: str) -> None:
        self.governor = governor
        self.budget = budget
        self.name = name
        self.rate_w = budget * governor.tdp_w
        # Starts with the playhead's reserve only: the budget is earned, not borrowed up front.
        self.level_j = self.rate_w * BUILD_RESERVE_S
        self.reserved_j = 0.0  # estimates of admitted jobs not charged yet
        self.spent_j = 0.0
        self.unbudgeted_j = 0.0  #: what orders (blocking requests, explicit builds) cost
        self.spent_by: dict[str, float] = {}
        self.denied: dict[str, int] = {}
        self.admitted: dict[str, int] = {}
        self.costs = {kind: _Cost(*v) for kind, v in INITIAL_COST.items()}
        self.max_unit_j = 0.0  # the costliest single job estimate seen (capacity floor)
        #: until when a denied job of a priority holds the lower ones back (playhead only)
        self.waiting_until: dict[int, float] = {}
        self.active = False  # charged during the current tick
        self._stamp = time.monotonic()
        self.closed = False

    @property
    def capacity_j(self) -> float:
        # At least the costliest job seen (with its reserve), so that every job can be paid.
        return max(self.rate_w * BURST_S, self.max_unit_j * 1.05)

    def _refill(self, now: float) -> None:
        dt = now - self._stamp
        self._stamp = now
        if dt > 0:
            self.level_j = min(self.capacity_j, self.level_j + dt * self.rate_w * SAFETY)

    def estimate_j(self, kind: str, units: int) -> float:
        """Estimated joules of ``units`` of ``kind`` work for this clip."""
        cost = self.costs.get(kind) or _Cost(*INITIAL_COST["exact"])
        return cost.estimate(units) * self.governor.joules_per_cpu_s

    def charge(self, joules: float, kind: str, *, budgeted: bool = True) -> None:
        """Debit ``joules`` of ``kind`` work; orders (``budgeted=False``) are only tallied."""
        if joules <= 0:
            return
        if budgeted:
            # Debt is repaid in full: forgiving it (a floor) let a clip overspend its budget
            # by what estimates missed (measured 10.9% on a 10% budget). Admission pays only
            # from a positive level, so debt comes from estimate errors and the editor's own
            # share, and stays small.
            self.level_j -= joules
            self.spent_j += joules
            self.spent_by[kind] = self.spent_by.get(kind, 0.0) + joules
            self.active = True
        else:
            self.unbudgeted_j += joules

    def can_pay(self, kind: str, units: int) -> bool:
        """:meth:`Governor.can_pay` for this account."""
        return self.governor.can_pay(self, kind, units)

    def spare(self) -> bool:
        """:meth:`Governor.spare` for this account."""
        return self.governor.spare(self)

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "budget": self.budget, "rate_w": round(self.rate_w, 4),
                "level_j": round(self.level_j, 4), "capacity_j": round(self.capacity_j, 4),
                "spent_j": round(self.spent_j, 4), "unbudgeted_j": round(self.unbudgeted_j, 4),
                "spent_by": {k: round(v, 4) for k, v in self.spent_by.items()},
                "admitted": dict(self.admitted), "denied": dict(self.denied),
                "cpu_per_unit_ms": {k: round(c.per_unit * 1e3, 3) for k, c in
                                    self.costs.items()},
                "cpu_per_job_ms": {k: round(c.fixed * 1e3, 3) for k, c in self.costs.items()}}


class _WorkerMark:
    """The CPU time of one worker process already charged, and to whom idle time goes."""

    __slots__ = ("account", "cpu_s", "job", "kind", "pid", "startup_s")

    def __init__(self) -> None:
        self.pid: int | None = None
        self.cpu_s = 0.0
        self.startup_s = 0.0  #: a new process's start-up CPU, charged to the job that needed it
        self.account: Account | None = None
        self.kind = "idle"
        self.job: Job | None = None


class Governor:
    """Admission and accounting for one :class:`~phast.supervisor.WorkerPool` (see module doc):
    the pool's :class:`~phast.jobs.Admission`.

    ``meter`` is read at every tick (``TICK_S``) while an account is open. ``baseline_w`` is the
    host's idle power on a measured meter, measured before work started (budgets count marginal
    power); without it the governor learns it from ticks in which phast was idle.
    """

    def __init__(self, *, tdp: Tdp | None = None, meter: Meter | None = None,
                 baseline_w: float | None = None, idle_cpu_rate: float = 0.0,
                 cores: int | None = None,
                 editor_cpu: Callable[[], float] | None = None,
                 process_cpu: Callable[[int], float] | None = None) -> None:
        from . import power

        self.tdp = tdp if tdp is not None else power.discover_tdp()
        self.tdp_w = self.tdp.watts
        self.cores = cores or _logical_cores()
        self.model_j_per_cpu_s = self.tdp_w / self.cores
        self.joules_per_cpu_s = self.model_j_per_cpu_s
        self.meter = meter
        self.baseline_w = baseline_w  #: idle power of a measured meter (None: learned)
        self.idle_w: float | None = None
        #: cores the editor process keeps busy when phast does nothing (not charged)
        self.idle_cpu_rate = idle_cpu_rate
        # The editor process's own CPU (all its threads); the workers are sampled one by one
        # (a scan of the whole process tree costs milliseconds on a busy host).
        self._editor_cpu = editor_cpu or _self_cpu_seconds
        self._process_cpu = process_cpu or power.process_cpu_seconds
        self._lock = threading.RLock()
        self._accounts: weakref.WeakSet[Account] = weakref.WeakSet()
        self._marks: dict[int, _WorkerMark] = {}  # by Worker.id
        self._workers: weakref.WeakValueDictionary[int, WorkerView] = \
            weakref.WeakValueDictionary()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._last: tuple[float, float, float | None] | None = None  # t, editor cpu, energy
        self._workers_cpu_in_tick = 0.0
        self.ticks = 0

    @classmethod
    def for_host(cls) -> Governor:
        """A governor on this host's best meter (RAPL, NVML, else the CPU-time model) and its
        sustainable TDP (``$PHAST_TDP_W``, RAPL PL1, NVML limit, else a stated default)."""
        from . import power

        tdp = power.discover_tdp()
        try:
            meter: Meter | None = power.open_meter("auto", tdp=tdp)
        except Exception as e:  # no meter is readable: the CPU-time model is built in
            log.info("no power meter (%s): governing on the CPU-time model", e)
            meter = None
        return cls(tdp=tdp, meter=meter)

    # -- accounts ---------------------------------------------------------------------------------
    def open_account(self, budget: float, name: str) -> Account:
        acct = Account(self, budget, name)
        with self._lock:
            self._accounts.add(acct)
            if self._thread is None or not self._thread.is_alive():
                self._last = None
                self._wake.clear()
                self._thread = threading.Thread(target=self._run, name="phast-governor",
                                                daemon=True)
                self._thread.start()
        return acct

    def close_account(self, acct: Account) -> None:
        with self._lock:
            acct.closed = True
            self._accounts.discard(acct)
            if not self._live_accounts():
                self._wake.set()  # the tick thread ends: an idle editor costs nothing

    def _live_accounts(self) -> list[Account]:
        return [a for a in list(self._accounts) if not a.closed]

    # -- admission --------------------------------------------------------------------------------
    def admit(self, job: Job) -> bool:
        """May ``job`` start now? Reserves its estimated cost when it may."""
        acct: Account | None = job.account
        if acct is None or acct.closed:
            return True
        est = acct.estimate_j(job.kind, job.work)
        now = time.monotonic()
        with self._lock:
            acct._refill(now)
            reserve_j = 0.0
            foundation = job.kind == FOUNDATION
            if job.priority == PREFETCH or foundation:
                reserve_j = PREFETCH_RESERVE_S * acct.rate_w
            elif job.priority == BUILD:
                reserve_j = BUILD_RESERVE_S * acct.rate_w
            # The bucket must be able to hold every job's cost plus its reserve, or it could
            # never be admitted.
            acct.max_unit_j = max(acct.max_unit_j, est + reserve_j)
            avail = acct.level_j - acct.reserved_j
            # a playhead job of this clip is saving up: it gets the tokens first
            held = acct.waiting_until.get(PLAYHEAD, 0.0) > now
            if not job.governed:
                ok = True
            elif job.priority == PLAYHEAD:
                ok = avail >= est
                if not ok:
                    acct.waiting_until[PLAYHEAD] = now + WAITING_S
            else:
                ok = not held and avail - est >= reserve_j
            if ok and job.governed:
                acct.reserved_j += est
                job.reserved_j = est
            tally = acct.admitted if ok else acct.denied
            tally[job.kind] = tally.get(job.kind, 0) + 1
            return ok

    def can_pay(self, acct: Account | None, kind: str, units: int) -> bool:
        """Could the account pay ``units`` of ``kind`` work now (nothing reserved or tallied)?
        A deadline request whose EXACT decode it cannot pay waits for the playhead to settle
        instead of queueing ahead of everything (phast.clip)."""
        if acct is None or acct.closed:
            return True
        with self._lock:
            acct._refill(time.monotonic())
            return acct.level_j - acct.reserved_j >= acct.estimate_j(kind, units)

    def spare(self, acct: Account | None) -> bool:
        """Has the account room for optional work beyond the playhead's reserve (what building
        must leave)? Asked before adding optional work to a job, such as by-product proxies;
        nothing is reserved or tallied."""
        if acct is None or acct.closed:
            return True
        with self._lock:
            acct._refill(time.monotonic())
            return acct.level_j - acct.reserved_j >= BUILD_RESERVE_S * acct.rate_w

    # -- charging ---------------------------------------------------------------------------------
    def job_started(self, worker: WorkerView, job: Job) -> None:
        """Close the worker's idle stretch (charged to its last account) and open the job's.

        A job that is not ``metered`` (a proxy picture decoded for a fallback: about a
        millisecond, 30 a second) is not measured on its own: reading the worker's CPU time
        twice would cost a third of the job. Its worker's CPU is charged at the next
        measurement (a tick, or a measured job) to the account and kind of its last job.
        """
        with self._lock:
            self._workers[worker.id] = worker
            mark = self._marks.get(worker.id)
            proc = worker.proc
            if not job.metered and mark is not None and proc is not None \
                    and mark.pid == proc.pid:
                mark.job, mark.kind = None, job.kind
                if job.account is not None:
                    mark.account = job.account
                return
            self._settle(worker)
            mark = self._marks[worker.id]
            # (an unmetered job is not held: its result may lease a slot)
            mark.job, mark.kind = (job if job.metered else None), job.kind
            if job.account is not None:
                mark.account = job.account
            if mark.startup_s > 0 and job.account is not None:
                # The process started (or restarted) for this job: its interpreter, imports
                # and sandbox are the clip's power too, though not the job's own cost (its
                # model). A process started for opening a clip (no account) is opening's.
                job.account.charge(mark.startup_s * self.joules_per_cpu_s, "startup",
                                   budgeted=job.budgeted)
                self._workers_cpu_in_tick += mark.startup_s
            mark.startup_s = 0.0

    def job_finished(self, worker: WorkerView, job: Job) -> None:
        """Charge the job's CPU time to its account and feed the clip's cost model."""
        if not job.metered:
            return  # charged later (see job_started)
        with self._lock:
            mark = self._marks.get(worker.id)
            if mark is None:
                return
            self._settle(worker)  # adds to job.cpu_s
            acct = job.account
            if acct is not None:
                acct.reserved_j = max(0.0, acct.reserved_j - job.reserved_j)
                job.reserved_j = 0.0
                cost = acct.costs.get(job.kind)
                if cost is not None and job.work > 0 and job.cpu_s > 0:
                    cost.update(job.cpu_s, job.work)
            job.cpu_s = 0.0  # a retried job is measured afresh
            mark.job, mark.kind = None, "idle"

    def release(self, job: Job) -> None:
        """Give back the reservation of an admitted job that will not run (cancelled)."""
        acct = job.account
        if acct is not None:
            with self._lock:
                acct.reserved_j = max(0.0, acct.reserved_j - job.reserved_j)
                job.reserved_j = 0.0

    def _settle(self, worker: WorkerView) -> None:
        """Charge the CPU the worker's process used since its mark to its current account."""
        mark = self._marks.setdefault(worker.id, _WorkerMark())
        proc = worker.proc
        if proc is None:
            return
        pid = proc.pid
        try:
            now = self._process_cpu(pid)
        except (OSError, ValueError):
            return  # gone: a crash; its last CPU time is counted by the tree meter
        if mark.pid != pid:  # a new process: its start-up goes to the job that needed it
            mark.pid, mark.cpu_s = pid, proc.ready_cpu_s
            mark.startup_s = mark.cpu_s
        used = max(0.0, now - mark.cpu_s)
        mark.cpu_s = now
        if used > 0:
            self._workers_cpu_in_tick += used
            if mark.job is not None:
                mark.job.cpu_s += used
            if mark.account is not None:
                job = mark.job
                mark.account.charge(used * self.joules_per_cpu_s,
                                    job.kind if job is not None else mark.kind,
                                    budgeted=job is None or job.budgeted)

    # -- the tick: idle charges, the editor's share, reconciliation with the meter ----------------
    def _run(self) -> None:
        while not self._wake.wait(TICK_S):
            try:
                self.tick()
            except Exception:  # a meter that fails must not take the editor down
                log.exception("power governor tick failed")
        with self._lock:
            self._thread = None

    def tick(self) -> None:
        with self._lock:
            if not self._live_accounts():
                self._wake.set()
                return
            for worker in list(self._workers.values()):
                if worker.id in self._marks:
                    self._settle(worker)
            now = time.monotonic()
            editor_cpu = self._editor_cpu()
            energy = None
            if self.meter is not None and not getattr(self.meter, "estimate", True):
                # (the CPU-time model is built in: reading it again would only cost a scan)
                try:
                    energy = self.meter.read().energy_j
                except Exception as e:  # keep governing on the CPU-time model
                    log.warning("power meter read failed (%s); using the CPU-time model", e)
                    self.meter = None
            last, self._last = self._last, (now, editor_cpu, energy)
            workers_cpu, self._workers_cpu_in_tick = self._workers_cpu_in_tick, 0.0
            accounts = self._live_accounts()
            self.ticks += 1
            if last is None:
                for a in accounts:
                    a.active = False
                return
            dt, d_editor = now - last[0], editor_cpu - last[1]
            if energy is not None and last[2] is not None and dt > 0:
                self._reconcile((energy - last[2]) / dt, (d_editor + workers_cpu) / dt)
            editor = d_editor - self.idle_cpu_rate * dt
            payers = [a for a in accounts if a.active] or accounts
            if editor > 0 and payers:
                share = editor * self.joules_per_cpu_s / len(payers)
                for a in payers:
                    a.charge(share, "editor")
            for a in accounts:
                a.active = False

    def _reconcile(self, power_w: float, busy_cores: float) -> None:
        """Fit joules per CPU second to a measured meter: its marginal power over phast's CPU
        rate. The idle power is the given baseline, else learned from ticks where phast was
        idle; until one is known the CPU-time model's factor stands."""
        if getattr(self.meter, "estimate", True):
            return  # the CPU-time model *is* the factor
        if busy_cores < 0.01:
            self.idle_w = power_w if self.idle_w is None else \
                self.idle_w + 0.1 * (power_w - self.idle_w)
            return
        base = self.baseline_w if self.baseline_w is not None else self.idle_w
        if base is None:
            return
        k = (power_w - base) / busy_cores / self.model_j_per_cpu_s
        k = max(0.25, min(4.0, k))  # other processes' bursts must not swing the factor wildly
        self.joules_per_cpu_s += 0.2 * (k * self.model_j_per_cpu_s - self.joules_per_cpu_s)

    # -- reports ----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Plain data: TDP, meter, factor and every open account's state."""
        with self._lock:
            return {"tdp_w": self.tdp_w, "tdp_source": self.tdp.source, "cores": self.cores,
                    "meter": getattr(self.meter, "name", "cpu-time-model"),
                    "baseline_w": self.baseline_w,
                    "joules_per_cpu_s": round(self.joules_per_cpu_s, 4),
                    "accounts": [a.snapshot() for a in self._live_accounts()]}

    def close(self) -> None:
        with self._lock:
            for a in self._live_accounts():
                a.closed = True
            self._wake.set()


def _self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _logical_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


__all__ = ["DEFAULT_BUDGET", "Account", "Governor", "resolve_budget"]
