"""Worker processes and the supervisor that keeps them honest.

::

    editor process                                              worker process (sandboxed)
    ┌───────────────────────────────────────────────┐  socket  ┌─────────────────────────┐
    │ Clip ─submit(Job)─► Worker: queue + I/O thread ├─────────►│ phast.worker loop       │
    │   ▲                  │ spawn, READY handshake  │ records  │   backend.decode(i) ──┐ │
    │   └─── Future ◄──────┤ watchdog (heartbeats)   │◄─────────┤                       │ │
    │                      │ restart, retry,         │  memfd   │   writes pixels ◄─────┘ │
    │   SlotPool ══════════╪═ quarantine ════════════╪══════════╪══ into granted slots    │
    └───────────────────────────────────────────────┘          └─────────────────────────┘

A :class:`Worker` owns at most one live :class:`Process` at a time and runs its jobs
(:class:`phast.jobs.Job`) one by one on its own thread. A job runs against the live
:class:`Process` (``job.run(proc)``: requests and replies over its socket); if the process dies
(seen on its pidfd and its socket together), stops answering (no record or heartbeat within
``hang_timeout``), or sends a record that fails validation, the process is killed, a fresh one
is started, and the job is asked whether to retry (:meth:`Job.failed`): a frame that fails twice
is quarantined. Every other
job queued on that worker simply runs on the new process; sessions re-open lazily and resume at
their playhead.

:class:`WorkerPool` bounds the number of processes: clips share workers once the bound is
reached (least-loaded first). :class:`MemoryWatch` kills a worker whose resident memory passes
its bound where the kernel does not cap its address space (GPU workers).
"""

from __future__ import annotations

import atexit
import contextlib
import heapq
import itertools
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from . import protocol, registry
from .errors import (
    WORKER_ERROR_TYPES,
    DecodeError,
    PhastError,
    ProtocolViolation,
    WorkerCrashed,
    WorkerHung,
    WorkerStartError,
)
from .jobs import Admission, Job, plain_job


@dataclass(frozen=True)
class WorkerConfig:
    """How workers are started and watched."""

    start_timeout: float = 30.0  #: seconds for a new process to say READY
    hang_timeout: float = 10.0  #: seconds of silence (no record, no heartbeat) before a kill
    idle_timeout: float = 5.0  #: seconds a worker with no open clip lingers before exiting
    #: Memory bound of each worker in bytes (default :data:`phast.sandbox.DEFAULT_MEMORY`):
    #: its address-space cap, or for workers that preload a backend without one (GPU
    #: decoders: ``Backend.address_space_limit``), its resident memory, watched by the editor
    #: (:class:`MemoryWatch`).
    memory_limit: int | None = None
    #: Backend specs ("module:Class") a worker imports before confining itself, granting their
    #: ``device_paths`` (GPU backends); CPU backends need not be named. Default: the built-in
    #: hardware backends this host may run (:func:`phast.registry.host_hardware_specs`).
    backends: tuple[str, ...] = field(default_factory=registry.host_hardware_specs)
    debug_stderr: bool = field(default_factory=lambda: bool(os.environ.get("PHAST_WORKER_DEBUG")))


def _worker_env(config: WorkerConfig) -> dict[str, str]:
    """A cleaned environment: what Python needs to import the same code, and nothing else."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "LD_LIBRARY_PATH", "TZ",
                                      "CUDA_VISIBLE_DEVICES")
           if k in os.environ}
    env.update(
        PHAST_WORKER="1",
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p and os.path.exists(p)),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONNOUSERSITE="1",
        MALLOC_ARENA_MAX="2",  # fewer malloc arenas: less address space under RLIMIT_AS
        OMP_NUM_THREADS="1",
        # GPU kernels compiled in a worker stay in memory: the sandbox lets it write nothing
        CUPY_CACHE_IN_MEMORY="1",
    )
    if config.memory_limit:
        env["PHAST_WORKER_MEMORY"] = str(int(config.memory_limit))
    if config.backends:
        env["PHAST_WORKER_BACKENDS"] = ",".join(config.backends)
    return env


#: Scheduling niceness added to worker processes. Deadlines first: the editor and the image
#: worker (fallback tiers) run at the editor's priority, playhead decoding a little below it
#: (a long seek must not delay a fallback on a busy machine), proxy building far below.
DECODE_NICENESS = 4
BUILD_NICENESS = 10
ADMISSION_RETRY = 0.05  #: seconds before a postponed job is offered to the admission policy again


def _cpu_or_zero(pid: int) -> float:
    from .power import process_cpu_seconds

    try:
        return process_cpu_seconds(pid)
    except (OSError, ValueError):
        return 0.0


#: Seconds between two reads of a watched worker's resident memory. Between reads a worker can
#: outgrow its bound by what it touches in that time (a few hundred MiB at memset speed).
MEMORY_POLL = 0.05


def resident_bytes(pid: int) -> int | None:
    """Resident memory of process ``pid`` in bytes (``/proc/PID/statm``: anonymous, file-backed
    and shared pages it has mapped and touched); None when it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def address_space_cap(pid: int) -> int | None:
    """The soft ``RLIMIT_AS`` of process ``pid`` in bytes as the kernel enforces it (read from
    ``/proc/PID/limits``, not taken from the worker's word); None when unlimited or unknown."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max address space"):
                    soft = line.split()[3]
                    return None if soft == "unlimited" else int(soft)
    except (OSError, ValueError, IndexError):
        pass
    return None


class MemoryWatch:
    """Kills worker processes whose resident memory passes their bound: one thread for all.

    Workers whose address space the kernel caps at their bound need no watching (what is
    resident is mapped); the others (GPU workers: CUDA fails to start under an address-space
    cap) are read every :data:`MEMORY_POLL` seconds. A process killed here ends like a crashed
    one (its job is retried on a fresh process, a frame that does it twice is quarantined); the
    reason is in the :class:`~phast.errors.WorkerCrashed` message.
    """

    def __init__(self, interval: float = MEMORY_POLL) -> None:
        self.interval = interval
        self._procs: dict[int, Process] = {}  # by id(Process)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, proc: Process) -> None:
        with self._cond:
            self._procs[id(proc)] = proc
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="phast-memory-watch",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def forget(self, proc: Process) -> None:
        with self._cond:
            self._procs.pop(id(proc), None)

    def watched(self, proc: Process) -> bool:
        with self._cond:
            return id(proc) in self._procs

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._procs:
                    self._cond.wait()
                procs = list(self._procs.values())
            for proc in procs:
                rss = resident_bytes(proc.pid)
                if rss is not None and rss > proc.memory_limit:
                    self.forget(proc)
                    proc.end_for(f"resident memory {rss >> 20} MiB passed its bound of "
                                 f"{proc.memory_limit >> 20} MiB (WorkerConfig.memory_limit)")
            time.sleep(self.interval)


#: The editor's memory watchdog (started with the first worker that needs it).
memory_watch = MemoryWatch()


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class Process:
    """One worker OS process and the editor's end of its control socket."""

    def __init__(self, config: WorkerConfig, nice: int = 0) -> None:
        from .sandbox import DEFAULT_MEMORY

        self.config = config
        #: bytes: the worker's address-space cap, or its resident-memory bound (MemoryWatch)
        self.memory_limit = int(config.memory_limit or DEFAULT_MEMORY)
        #: why the editor killed this process itself (shown in WorkerCrashed), if it did
        self.ended_by: str | None = None
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        err = None if config.debug_stderr else subprocess.DEVNULL
        try:
            # spawn (fork+exec of a fresh interpreter), never a bare fork of the editor
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "phast.worker", str(child.fileno()), str(os.getpid()),
                 str(nice)],
                pass_fds=[child.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, env=_worker_env(config), close_fds=True, start_new_session=True,
            )
        finally:
            child.close()
        self.sock = parent
        self.pid = self.popen.pid
        self.pidfd = os.pidfd_open(self.pid)
        self.sessions: set[int] = set()  # sessions opened in this process
        self.mapped: set[tuple[int, int]] = set()  # (session, slot) mapped in this process
        #: Called once when this process ends (exit, kill or crash), before any retry: the
        #: editor's device mappings of this worker's memory close here (phast.devframe).
        self.on_end: list[Callable[[], None]] = []
        try:
            ready, _, _ = self.receive(config.start_timeout, what="READY")
        except (WorkerCrashed, ProtocolViolation) as e:
            self.kill()
            raise WorkerStartError(f"worker did not start: {e}") from e
        if ready.get("ready") is not True:
            self.kill()
            raise WorkerStartError("worker sent something other than READY")
        if ready.get("protocol") != protocol.VERSION:
            # e.g. phast upgraded on disk under a running editor: the two would misread each other
            self.kill()
            raise WorkerStartError(f"worker speaks protocol {ready.get('protocol')!r}, the editor "
                                   f"{protocol.VERSION!r}: restart the editor after upgrading")
        self.sandbox: dict[str, str] = {str(k): str(v) for k, v in
                                        (ready.get("sandbox") or {}).items()}
        self.ready_cpu_s = _cpu_or_zero(self.pid)  #: start-up CPU (phast.governor charges it)
        # The bound is enforced by the kernel (an address-space cap at or below it) or watched
        # here; which one is read from /proc, not from the worker's report.
        cap = address_space_cap(self.pid)
        if cap is None or cap > self.memory_limit:
            memory_watch.watch(self)

    # -- low level ----------------------------------------------------------------------------
    def send(self, msg: dict[str, Any], blobs: list[bytes] | None = None,
             fds: list[int] | None = None) -> None:
        try:
            protocol.send(self.sock, msg, blobs or [], fds or [])
        except OSError as e:
            raise self._death() from e

    def receive(self, timeout: float, what: str = "a record") -> tuple[dict[str, Any], list[bytes],
                                                                       list[int]]:
        """Wait for one record; raise WorkerCrashed on death, WorkerHung after ``timeout``."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(self.pidfd, select.POLLIN)
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise WorkerHung(f"worker {self.pid} sent no {what} for {timeout:.1f} s")
            events = dict(poller.poll(left * 1000))
            if self.sock.fileno() in events:
                try:
                    msg, blobs, fds = protocol.recv(self.sock)
                except (protocol.ChannelClosed, ConnectionError) as e:
                    raise self._death() from e
                if fds:  # a worker never sends descriptors
                    for fd in fds:
                        os.close(fd)
                    raise ProtocolViolation("worker sent file descriptors")
                return msg, blobs, fds
            if self.pidfd in events:
                raise self._death()

    def _death(self) -> WorkerCrashed:
        try:
            code = self.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        why = f": {self.ended_by}" if self.ended_by else ""
        return WorkerCrashed(f"worker {self.pid} died ({describe_exit(code)}{why})")

    def end_for(self, reason: str) -> None:
        """Kill the process from another thread, saying why (the memory watchdog); the thread
        waiting on it sees the death on its pidfd."""
        self.ended_by = reason
        # Popen.send_signal does nothing once the process is reaped: no stray signal to a
        # reused pid.
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGKILL)

    def call(self, msg: dict[str, Any], blobs: list[bytes] | None = None,
             fds: list[int] | None = None) -> tuple[dict[str, Any], list[bytes]]:
        """Send a request and return its reply, skipping heartbeats (each resets the watchdog)."""
        self.send(msg, blobs, fds)
        while True:
            reply, rblobs, _ = self.receive(self.config.hang_timeout, what="reply or heartbeat")
            if "beat" in reply:
                continue
            return reply, rblobs

    # -- ending ---------------------------------------------------------------------------------
    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        self._close_handles()

    def stop(self) -> None:
        """Ask the worker to exit; kill it if it does not within a second."""
        with contextlib.suppress(OSError, PhastError):
            protocol.send(self.sock, {"op": "exit"})
        try:
            self.popen.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)
        self._close_handles()

    def _close_handles(self) -> None:
        memory_watch.forget(self)
        hooks, self.on_end = self.on_end, []
        for hook in hooks:
            with contextlib.suppress(Exception):
                hook()
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.pidfd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = -1


class Worker:
    """A supervised worker slot: a job queue, an I/O thread, and the current process."""

    _ids = itertools.count(1)

    def __init__(self, pool: WorkerPool, nice: int = 0,
                 config: WorkerConfig | None = None) -> None:
        self.id = next(self._ids)
        self.nice = nice  #: added to its processes' scheduling niceness (background work)
        self.pool = pool
        self.config = config or pool.config
        self.sessions: set[int] = set()
        self.proc: Process | None = None
        self.restarts = 0
        self.last_failure: str | None = None
        #: ``time.monotonic()`` when the job now running started (None: idle). A job that has
        #: run far longer than its kind takes means a stalled or (re)starting process.
        self.busy_since: float | None = None
        self._queue: list[Job] = []  # a heap by (priority, submission order)
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"phast-worker-{self.id}",
                                        daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future[Any]:
        with self._cond:
            if self._stopping:
                raise PhastError("the worker pool is shut down")
            heapq.heappush(self._queue, job)
            self._cond.notify()
        return job.future

    def promote(self, job: Job, priority: int) -> None:
        """Move a queued job up to a more urgent priority."""
        with self._cond:
            job.priority = min(job.priority, priority)
            heapq.heapify(self._queue)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def busy_for(self) -> float:
        """Seconds the running job has taken so far (0.0 when idle)."""
        since = self.busy_since
        return 0.0 if since is None else time.monotonic() - since

    # -- the I/O thread -------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._stopping:
                    self._cond.wait(self.config.idle_timeout)
                if self._stopping and not self._queue:
                    break
                if not self._queue:
                    if not self.sessions and self.pool._retire(self):
                        self._stopping = True  # nothing may be queued on a retired worker
                        break
                    continue
                job = heapq.heappop(self._queue)
                governor = self.pool.governor
                if governor is not None and not job.future.cancelled() \
                        and not governor.admit(job):
                    # Not admitted now (the power budget): look again shortly; newer playhead
                    # work overtakes it, and a newer request may supersede it, meanwhile.
                    heapq.heappush(self._queue, job)
                    self._cond.wait(ADMISSION_RETRY)
                    continue
            if job.future.set_running_or_notify_cancel():
                self.busy_since = time.monotonic()
                try:
                    self._execute(job)
                finally:
                    self.busy_since = None
            elif self.pool.governor is not None:
                self.pool.governor.release(job)  # cancelled after admission: give back
            # Drop it now, not at the next job: its future holds the result, and a result can
            # hold a shared-memory slot leased.
            del job
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def _ensure_process(self) -> Process:
        if self.proc is None:
            self.proc = Process(self.config, self.nice)
        return self.proc

    def _discard_process(self, reason: str) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc = None
            self.restarts += 1
            self.last_failure = reason

    def _execute(self, job: Job) -> None:
        governor = self.pool.governor
        while True:
            try:
                proc = self._ensure_process()
                if job.session is not None and job.session.id not in proc.sessions:
                    job.session.attach(proc)  # opening: not charged to the job
                    proc.sessions.add(job.session.id)
                if governor is None:
                    result = job.run(proc)
                else:
                    governor.job_started(self, job)
                    try:
                        result = job.run(proc)
                    finally:
                        governor.job_finished(self, job)
                job.future.set_result(result)
                return
            except (WorkerCrashed, ProtocolViolation, WorkerStartError) as e:
                self._discard_process(str(e))
                final = job.failed(e)
                if final is not None:
                    job.future.set_exception(final)
                    return
            except BaseException as e:
                job.future.set_exception(e)
                return

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


def _prepare_images(proc: Process) -> None:
    reply, _ = proc.call({"op": "prepare_images"})
    raise_for_error(reply, proc)


def raise_for_error(reply: dict[str, Any], proc: Process) -> None:
    """Turn a worker's error record into the matching typed exception (whitelisted names)."""
    if not reply.get("error"):
        return
    kind = str(reply.get("type", ""))
    message = str(reply.get("message", ""))[:2000]
    if kind == "BackendError":
        # A backend raised something outside the contract: its state is not trusted any more.
        proc.kill()
        raise WorkerCrashed(f"backend failed in worker {proc.pid}: {message}")
    if kind == "DeviceError":
        # The worker's CUDA context may be poisoned (it exits by itself): a fresh process, never
        # a retry in this one.
        proc.kill()
        raise WorkerCrashed(f"device error in worker {proc.pid}: {message}")
    raise WORKER_ERROR_TYPES.get(kind, DecodeError)(message)


class WorkerPool:
    """A bounded set of workers shared by open clips."""

    def __init__(self, max_workers: int | None = None, config: WorkerConfig | None = None,
                 governor: Admission | None = None) -> None:
        self.max_workers = max_workers or max(1, min(4, os.cpu_count() or 1))
        self.config = config or WorkerConfig()
        #: Admits every job before it starts and charges what it cost (a
        #: :class:`phast.governor.Governor`); created on the first clip opened with a budget
        #: when not given (:meth:`ensure_governor`).
        self.governor = governor
        self._image_worker: Worker | None = None
        self._images_ready: Future[Any] = Future()
        self._build_worker: Worker | None = None
        self._workers: list[Worker] = []
        self._lock = threading.Lock()
        self._closed = False

    def new_worker(self) -> Worker:
        return Worker(self, nice=DECODE_NICENESS)

    def assign(self, session_id: int, worker: Worker | None = None) -> Worker:
        """The worker for a new session: ``worker`` if given, else an idle one, else a new one
        below ``max_workers``, else the least loaded."""
        with self._lock:
            if self._closed:
                raise PhastError("the worker pool is shut down")
            if worker is not None:
                worker.sessions.add(session_id)
                return worker
            idle = [w for w in self._workers if not w.sessions and not w._stopping]
            if idle:  # a worker whose process may still be up: no interpreter to boot
                worker = idle[0]
            elif len(self._workers) < self.max_workers:
                worker = self.new_worker()
                self._workers.append(worker)
            else:
                worker = min(self._workers, key=lambda w: len(w.sessions))
            worker.sessions.add(session_id)
            return worker

    def release(self, worker: Worker, session_id: int) -> None:
        with self._lock:
            worker.sessions.discard(session_id)

    def _retire(self, worker: Worker) -> bool:
        """Called by an idle worker's thread: leave the pool if nobody uses it."""
        with self._lock:
            if worker.sessions:
                return False
            if worker is self._build_worker:
                self._build_worker = None
            with contextlib.suppress(ValueError):
                self._workers.remove(worker)
            return True

    def image_worker(self) -> Worker:
        """The worker that decodes proxy pictures: separate, so a busy or stuck decode worker
        never delays the fallback tiers."""
        with self._lock:
            if self._closed:
                raise PhastError("the worker pool is shut down")
            if self._image_worker is None or self._image_worker._stopping:
                # JPEG on the CPU only: no backend to preload, no device node granted
                self._image_worker = Worker(self, config=replace(self.config, backends=()))
                self._image_worker.sessions.add(0)  # never retires while the pool lives
                # Start its process (and its JPEG decoder) now: a fallback cannot wait for an
                # interpreter to boot and import PyAV.
                self._images_ready = self._image_worker.submit(plain_job(_prepare_images))
            return self._image_worker

    def build_worker(self) -> Worker:
        """The worker that builds proxies, at a lower OS priority (niceness +10): background
        work takes the cores only when the playhead and the fallbacks leave them idle."""
        with self._lock:
            if self._closed:
                raise PhastError("the worker pool is shut down")
            if self._build_worker is None or self._build_worker._stopping:
                self._build_worker = Worker(self, nice=BUILD_NICENESS)
            return self._build_worker

    def prepare_images(self, timeout: float | None = None) -> None:
        """Block until the image worker is up with its decoder loaded (it starts on its own
        when a clip opens; fallbacks requested before this return degrade to BLANK)."""
        self.image_worker()
        self._images_ready.result(timeout)

    def ensure_governor(self, create: Callable[[], Admission]) -> Admission:
        """The pool's governor, made with ``create`` on first use (``Governor.for_host``: TDP
        discovery, the host's meter); the caller names the class, so this module needs none."""
        with self._lock:
            if self.governor is None:
                self.governor = create()
            return self.governor

    @property
    def workers(self) -> list[Worker]:
        with self._lock:
            return list(self._workers)

    def roles(self) -> list[tuple[str, Worker]]:
        """Every worker with its role, ``"decode"``, ``"image"`` or ``"build"`` (monitoring:
        restart counters, process ids)."""
        with self._lock:
            out = [("decode", w) for w in self._workers]
            out += [(role, w) for role, w in (("image", self._image_worker),
                                              ("build", self._build_worker)) if w is not None]
            return out

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
            for extra in (self._image_worker, self._build_worker):
                if extra is not None:
                    workers.append(extra)
            self._image_worker = self._build_worker = None
        if self.governor is not None:
            self.governor.close()
        for w in workers:
            w.stop()
        for w in workers:
            w.join(timeout)


_default_pool: WorkerPool | None = None
_default_lock = threading.Lock()


def default_pool() -> WorkerPool:
    """The process-wide pool ``phast.open`` uses unless given one."""
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool._closed:
            _default_pool = WorkerPool()
        return _default_pool


@atexit.register
def _shutdown_default_pool() -> None:
    if _default_pool is not None:
        _default_pool.shutdown(timeout=5)
