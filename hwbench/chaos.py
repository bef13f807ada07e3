"""Chaos under load: ``hwbench torture --chaos N`` kills and stops phast's workers mid-run.

While the fixed-rate schedule runs, :class:`Chaos` (a thread) picks, at random times (``N`` a
minute on average, exponential gaps), a random live worker process of the pool -- decode, image
(fallback tiers) or build (proxies) -- and does one of::

    kill       SIGKILL: the supervisor sees the death on its pidfd and restarts the worker
    stop       SIGSTOP, then SIGCONT after 0.1-1.5 s: a stall shorter than the watchdog
    stop-left  SIGSTOP and never SIGCONT: the watchdog (hang_timeout) must kill it

:class:`Verifier` hashes a sample of the EXACT frames served meanwhile (on its own thread, so
the requests are not slowed) and checks them afterwards against a sequential PyAV decode.
:func:`leaks` looks for what a run could leave behind: worker processes still alive, memfd
slots still open or mapped in this process, anything phast-named in ``/dev/shm``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import random
import signal
import threading
import time
from collections import Counter
from typing import Any

import numpy as np

#: (kind, weight): the mix of faults.
KINDS = (("kill", 0.5), ("stop", 0.35), ("stop-left", 0.15))
STOP_HOLD = (0.1, 1.5)  #: seconds a ``stop`` lasts before SIGCONT


class Chaos(threading.Thread):
    """Inject ``per_minute`` faults a minute into ``pool``'s workers until :meth:`stop`."""

    def __init__(self, pool: Any, per_minute: float, seed: int) -> None:
        super().__init__(name="hwbench-chaos", daemon=True)
        self.pool, self.per_minute = pool, per_minute
        self.rng = random.Random(seed)
        self.events: list[dict[str, Any]] = []
        self.seen_pids: set[int] = set()
        self._stopped: list[tuple[float, int]] = []  # (SIGCONT time, pid)
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        self._t0 = time.monotonic()
        next_fault = self._t0 + self._gap()
        while not self._halt.is_set():
            now = time.monotonic()
            self._resume_due(now)
            self._note_pids()
            if now >= next_fault:
                self._fault(now)
                next_fault = now + self._gap()
            self._halt.wait(0.02)

    def _gap(self) -> float:
        return self.rng.expovariate(self.per_minute / 60.0)

    def _note_pids(self) -> None:
        for _role, worker in self.pool.roles():
            if worker.pid is not None:
                self.seen_pids.add(worker.pid)

    def _fault(self, now: float) -> None:
        live = [(role, w.pid) for role, w in self.pool.roles() if w.pid is not None]
        if not live:
            return
        role, pid = self.rng.choice(live)
        kind = self.rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
        try:
            os.kill(pid, signal.SIGKILL if kind == "kill" else signal.SIGSTOP)
        except ProcessLookupError:
            return  # it ended between the look and the kill
        event = {"t": round(now - self._t0, 3), "kind": kind, "pid": pid, "role": role}
        if kind == "stop":
            hold = self.rng.uniform(*STOP_HOLD)
            self._stopped.append((now + hold, pid))
            event["hold_s"] = round(hold, 3)
        self.events.append(event)

    def _resume_due(self, now: float) -> None:
        due = [pid for at, pid in self._stopped if at <= now]
        self._stopped = [(at, pid) for at, pid in self._stopped if at > now]
        for pid in due:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop injecting; resume every process this thread stopped (``stop-left`` included:
        one the watchdog has not reached yet must not stay frozen after the run)."""
        self._halt.set()
        self.join()
        self._note_pids()
        for event in self.events:
            if event["kind"] != "kill":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(event["pid"], signal.SIGCONT)
        self._stopped.clear()

    def summary(self) -> dict[str, Any]:
        return {"per_minute": self.per_minute, "count": len(self.events),
                "kinds": dict(Counter(e["kind"] for e in self.events)),
                "roles": dict(Counter(e["role"] for e in self.events)),
                "events": self.events}


class Verifier(threading.Thread):
    """Check a sample of the pictures served, off the request path, against a sequential decode
    afterwards: EXACT frames by hash (bit for bit), PROXY and NEAREST pictures by fingerprint
    (:func:`hwbench.compare.is_frame`: the picture is frame ``shows``, not a neighbour).

    :meth:`offer` never blocks: a picture arriving while ``depth`` wait is not sampled (a
    waiting frame keeps its shared-memory slot leased).
    """

    def __init__(self, depth: int = 2) -> None:
        super().__init__(name="hwbench-verify", daemon=True)
        self._queue: queue.Queue[tuple[int, np.ndarray, str, int] | None] = queue.Queue(depth)
        self.hashes: list[tuple[int, str]] = []
        self.prints: list[tuple[int, str, int, np.ndarray]] = []  # index, quality, shows, print
        self.offered = 0
        self.offered_pictures = 0

    def offer(self, index: int, array: np.ndarray, quality: str = "exact",
              shows: int | None = None) -> None:
        if quality == "exact":
            self.offered += 1
        else:
            self.offered_pictures += 1
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait((index, array, quality, index if shows is None else shows))

    def run(self) -> None:
        from .compare import fingerprint
        from .fuzz import frame_hash

        while (item := self._queue.get()) is not None:
            index, array, quality, shows = item
            if quality == "exact":
                self.hashes.append((index, frame_hash(array)))
            else:
                self.prints.append((index, quality, shows, fingerprint(array)))
            del item, array  # drop the array (and its lease) before waiting again

    def finish(self, path: str) -> dict[str, Any]:
        """Stop checking; decode the reference frames of ``path``; count wrong pictures."""
        self._queue.put(None)
        self.join()
        from .compare import PROXY_TOLERANCE, WINDOW, fingerprint, is_frame
        from .fuzz import _sequential_decode, frame_hash

        exact = {i for i, _ in self.hashes}
        near = {j for _, _, shows, _ in self.prints
                for j in range(shows - WINDOW, shows + WINDOW + 1)}
        reference: dict[int, str] = {}
        refprints: dict[int, np.ndarray] = {}
        if exact or near:
            last = max(exact | near)
            for k, picture in enumerate(_sequential_decode(path)):
                if k in exact:
                    reference[k] = frame_hash(picture)
                if k in near:
                    refprints[k] = fingerprint(picture)
                if k >= last:
                    break
        wrong = [(i, h) for i, h in self.hashes if reference.get(i) != h]
        # a PROXY must show the frame asked for; any picture must show the frame it names
        bad = [(i, q, shows) for i, q, shows, fp in self.prints
               if (q == "proxy" and shows != i)
               or not is_frame(fp, shows, refprints, tolerance=PROXY_TOLERANCE)]
        return {"exact_served": self.offered, "exact_checked": len(self.hashes),
                "wrong_exact": len(wrong),
                "wrong_exact_indices": sorted({i for i, _ in wrong})[:20],
                "pictures_served": self.offered_pictures, "pictures_checked": len(self.prints),
                "wrong_pictures": len(bad), "wrong_picture_examples": bad[:20]}


def _memfds() -> tuple[int, int]:
    """(open memfd descriptors, memfd mappings) of this process."""
    fds = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            fds += os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:")
    with open("/proc/self/maps") as maps:
        mapped = sum(1 for line in maps if "/memfd:" in line)
    return fds, mapped


def _shm_phast() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/dev/shm") if "phast" in n.lower())
    except FileNotFoundError:
        return []


def baseline() -> dict[str, Any]:
    """What is there before a run (memfds of other users of this process, /dev/shm)."""
    fds, mapped = _memfds()
    return {"memfd_fds": fds, "memfd_maps": mapped, "shm": _shm_phast()}


def leaks(before: dict[str, Any], pids: set[int], settle_s: float = 5.0) -> dict[str, Any]:
    """What a closed run left behind, against ``before`` (:func:`baseline`).

    Worker processes get ``settle_s`` to be reaped; a process counts as leaked if it is alive
    (not a zombie) and still a phast worker.
    """
    import psutil

    gc.collect()
    end = time.monotonic() + settle_s
    alive: list[int] = []
    while True:
        alive = []
        for pid in sorted(pids):
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE and "phast.worker" in " ".join(p.cmdline()):
                    alive.append(pid)
        if not alive or time.monotonic() > end:
            break
        time.sleep(0.1)
    fds, mapped = _memfds()
    shm = [n for n in _shm_phast() if n not in before["shm"]]
    return {"worker_pids_seen": len(pids), "leaked_processes": alive,
            "leaked_memfd_fds": max(0, fds - before["memfd_fds"]),
            "leaked_memfd_maps": max(0, mapped - before["memfd_maps"]),
            "leaked_shm": shm,
            "clean": not alive and fds <= before["memfd_fds"]
            and mapped <= before["memfd_maps"] and not shm}


class ChaosRun:
    """What ``hwbench torture`` holds for a chaos or ``--verify`` run: the fault thread, the
    verifier, the leak baseline; :attr:`result` becomes the report's ``"chaos"`` entry."""

    def __init__(self, pool: Any, cfg: Any) -> None:
        self.pool = pool
        self.before = baseline()  # before the clip opens: its slots are not there yet
        self.chaos = Chaos(pool, cfg.chaos, cfg.seed) if cfg.chaos else None
        self.verifier = Verifier()
        self.result: dict[str, Any] = {}

    def start(self) -> None:
        self.verifier.start()
        if self.chaos is not None:
            self.chaos.start()

    def stop(self) -> None:
        if self.chaos is not None:
            self.chaos.stop()
            self.result.update(self.chaos.summary())

    def after_close(self, path: str) -> None:
        """After the clip is closed and the pool shut down: verify frames, look for leaks."""
        pids = set(self.chaos.seen_pids) if self.chaos is not None else set()
        if self.verifier.is_alive():
            self.result.update(self.verifier.finish(path))
        self.result.update(leaks(self.before, pids))


def format_line(c: dict[str, Any]) -> str:
    """One line of the torture summary."""
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(c.get("kinds", {}).items())) or "none"
    return (f"chaos: {c.get('count', 0)} faults ({kinds}); EXACT checked "
            f"{c.get('exact_checked', 0)} of {c.get('exact_served', 0)}, wrong "
            f"{c.get('wrong_exact', 0)}; PROXY/NEAREST pictures checked "
            f"{c.get('pictures_checked', 0)} of {c.get('pictures_served', 0)}, wrong "
            f"{c.get('wrong_pictures', 0)}; leaked processes {len(c.get('leaked_processes', []))}, "
            f"memfds {c.get('leaked_memfd_fds', 0)} open / {c.get('leaked_memfd_maps', 0)} "
            f"mapped, /dev/shm {len(c.get('leaked_shm', []))}")
