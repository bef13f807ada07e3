"""Confinement a worker applies to itself before it parses a single media byte.

Each layer is probed and reported (``{"layer": "active" | "unavailable: why"}``); a layer that
cannot be applied is reported, never silently skipped. The report travels in the worker's READY
record and is visible as ``Clip.sandbox`` and in ``phast doctor``.

Layers applied here: ``PR_SET_NO_NEW_PRIVS``; rlimits (address space, open files, no core files,
no file writes); a cleaned environment and stdio on /dev/null (set by the supervisor at spawn).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import signal
from typing import Any

PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1

#: Default worker limits; ``PHAST_WORKER_MEMORY`` (bytes) overrides the address-space cap.
DEFAULT_LIMITS: dict[str, int] = {
    "address_space": 8 << 30,  # decoders of 4K frame-threaded streams stay well below this
    "open_files": 256,
}


def _prctl_no_new_privs() -> str:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return f"unavailable: prctl failed (errno {ctypes.get_errno()})"
        return "active"
    except OSError as e:
        return f"unavailable: {e}"


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this worker when the editor dies, even mid-decode (a hang)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass  # the closed control socket still ends an idle worker
    if os.getppid() != parent_pid:  # the editor died before the prctl took effect
        os._exit(0)


def _limit(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value if hard == resource.RLIM_INFINITY else hard))


def confine(limits: dict[str, Any] | None = None) -> dict[str, str]:
    """Apply every available layer to the calling (worker) process; return the report."""
    lim = {**DEFAULT_LIMITS, **(limits or {})}
    report: dict[str, str] = {"no_new_privs": _prctl_no_new_privs()}
    rl = []
    try:
        _limit(resource.RLIMIT_CORE, 0)
        rl.append("core=0")
        # No file may grow: a write returns EFBIG instead of killing the process with SIGXFSZ.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _limit(resource.RLIMIT_FSIZE, 0)
        rl.append("fsize=0")
        _limit(resource.RLIMIT_NOFILE, int(lim["open_files"]))
        rl.append(f"nofile={lim['open_files']}")
        _limit(resource.RLIMIT_AS, int(lim["address_space"]))
        rl.append(f"as={int(lim['address_space']) >> 20}MiB")
        report["rlimits"] = "active: " + ", ".join(rl)
    except (OSError, ValueError) as e:
        report["rlimits"] = f"partial: {', '.join(rl) or 'none'} ({e})"
    report["environment"] = "active: cleaned" if os.environ.get("PHAST_WORKER") == "1" else (
        "unavailable: not started by the supervisor")
    report["seccomp"] = "unavailable: no syscall filter is installed by this version"
    report["landlock"] = "unavailable: no filesystem ruleset is installed by this version"
    return report
