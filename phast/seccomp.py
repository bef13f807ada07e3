"""seccomp: the system calls a worker may no longer make, as a BPF filter (via libseccomp).

The filter allows by default and denies what a decoder never needs but an attacker who owns the
decoder would reach for first. Denied calls fail with ``EPERM`` rather than killing the process:
libraries that probe (a socket for some optional feature, a helper program) get a clean error
and carry on, tests can observe the denial, and an attacker gains nothing from the error code.
Anything the filter does not know (a 32-bit ``int 0x80`` or x32 syscall) kills the process.

Denied:

* new processes and programs: ``fork``, ``vfork``, ``clone`` *without* ``CLONE_THREAD``,
  ``execve``, ``execveat``. Threads stay possible (decoders use pthreads): ``clone3`` takes its
  flags in memory, which a filter cannot read, so it fails with ``ENOSYS`` and glibc falls back
  to ``clone``, whose flags are checked;
* the network and new channels: ``socket`` (every family), ``socketpair`` (the control socket is
  inherited, never created);
* other processes: ``ptrace``, ``process_vm_readv``/``writev``, ``pidfd_open``/``getfd``/
  ``send_signal``, ``tkill``, and ``kill``/``tgkill``/``rt_(tg)sigqueueinfo`` aimed at any
  process but the worker itself;
* the kernel's attack surface and privileged operations: ``mount``, ``umount2``,
  ``pivot_root``, ``chroot``, ``unshare``, ``setns``, ``bpf``, ``perf_event_open``, ``keyctl``,
  ``add_key``, ``request_key``, ``(f)init_module``, ``delete_module``, ``kexec_*``, ``reboot``,
  ``swapon``/``swapoff``, ``userfaultfd``, ``io_uring_*`` (its operations bypass this filter),
  ``open_by_handle_at``/``name_to_handle_at`` (open by inode, around path checks).
"""

from __future__ import annotations

import errno
import os
from typing import Any

CLONE_THREAD = 0x00010000

#: Denied with EPERM whatever their arguments.
DENIED: tuple[str, ...] = (
    "fork", "vfork", "execve", "execveat",
    "socket", "socketpair",
    "ptrace", "process_vm_readv", "process_vm_writev",
    "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "tkill",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "open_by_handle_at", "name_to_handle_at",
)
#: Signal calls allowed only when their first argument is the worker's own pid.
SIGNALS_TO_SELF = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")


def load_library() -> Any:
    """Import pyseccomp (it loads the system's libseccomp.so.2); raise ImportError/OSError."""
    import pyseccomp

    return pyseccomp


def build(sc: Any, pid: int) -> Any:
    """The worker's filter for process ``pid`` (not loaded yet)."""
    f = sc.SyscallFilter(sc.ALLOW)
    f.set_attr(sc.Attr.CTL_TSYNC, 1)  # every thread of the process, not just the caller
    eperm = sc.ERRNO(errno.EPERM)
    for name in DENIED:
        f.add_rule(eperm, name)
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    # clone(flags, ...): only threads (flags & CLONE_THREAD == CLONE_THREAD) pass.
    f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    for name in SIGNALS_TO_SELF:
        f.add_rule(eperm, name, sc.Arg(0, sc.NE, pid))
    return f


def apply() -> str:
    """Install the filter on this process for good; return its report line (raise on failure)."""
    sc = load_library()
    build(sc, os.getpid()).load()
    return (f"active: {len(DENIED)} syscalls denied (EPERM), clone3 ENOSYS, clone only with "
            "CLONE_THREAD, signals to self only, foreign ABIs kill")
