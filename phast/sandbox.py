"""Confinement a worker applies to itself before it parses a single media byte.

Each layer is probed and reported (``{"layer": "active: ..." | "unavailable: why"}``); a layer
that cannot be applied is reported, never silently skipped. The report travels in the worker's
READY record and is visible as ``Clip.sandbox`` and in ``phast doctor``.

Layers, in the order the worker applies them at start-up (before READY, so before any request):

* ``no_new_privs`` (``PR_SET_NO_NEW_PRIVS``): no set-uid gain, and seccomp without privileges;
* ``rlimits``: address space (none for workers running a backend that cannot start under a
  cap, CUDA's: the editor bounds their resident memory instead), open files, no core files,
  no file growth;
* ``environment``: cleaned environment and stdio on /dev/null (set by the supervisor at spawn;
  the worker then points descriptor 2 at a pipe it reads itself, :mod:`phast.avlog`);
* ``landlock`` (:mod:`phast.landlock`): read-only access to library paths, nothing writable or
  executable, no TCP, no abstract Unix sockets, no signals out of the worker;
* ``seccomp`` (:mod:`phast.seccomp`): no new processes, programs or sockets, no debugging or
  signalling of other processes, no kernel-administration calls.

Media never needs a path grant: the editor opens each source read-only and passes the descriptor
with the ``open`` request; backends get it through :func:`phast.backends.base.open_source`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
import socket
from collections.abc import Iterable
from typing import Any

from phast import landlock
from phast import seccomp as _seccomp

PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1

#: The layers every report has, in the order they are applied.
LAYERS = ("no_new_privs", "rlimits", "environment", "landlock", "seccomp")

#: A worker's memory bound in bytes unless ``WorkerConfig(memory_limit=...)`` sets one (it
#: reaches the worker as ``PHAST_WORKER_MEMORY``). Decoders of 4K frame-threaded streams stay
#: well below it.
DEFAULT_MEMORY = 8 << 30
#: Default worker limits: ``memory`` (the bound above, bytes) and ``open_files``.
DEFAULT_LIMITS: dict[str, int] = {
    "memory": DEFAULT_MEMORY,
    "open_files": 256,
}
#: How the memory bound is enforced. ``ADDRESS_SPACE``: ``RLIMIT_AS`` in the worker (an
#: allocation past it fails; the worker exits). ``RESIDENT``: no address-space cap (CUDA reserves
#: far more virtual memory than any useful cap and fails to start under one); the editor's
#: watchdog kills the worker when its resident memory passes the bound
#: (:class:`phast.supervisor.MemoryWatch`). A worker uses ``RESIDENT`` when one of the backends
#: it preloads says ``address_space_limit = False``.
ADDRESS_SPACE, RESIDENT = "address_space", "resident"

_libc = ctypes.CDLL(None, use_errno=True)  # the process's own libc: no ldconfig subprocess


def _prctl_no_new_privs() -> str:
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"unavailable: prctl failed (errno {ctypes.get_errno()})"
    return "active"


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this worker when the editor dies, even mid-decode (a hang)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the editor died before the prctl took effect
        os._exit(0)


def _limit(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value if hard == resource.RLIM_INFINITY else hard))


def _rlimits(lim: dict[str, Any], bound: str) -> str:
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
        memory = int(lim["memory"])
        if bound == ADDRESS_SPACE:
            _limit(resource.RLIMIT_AS, memory)
            rl.append(f"as={memory >> 20}MiB")
        else:
            soft = resource.getrlimit(resource.RLIMIT_AS)[0]
            rl.append("as=" + ("unlimited" if soft == resource.RLIM_INFINITY else
                               f"{soft >> 20}MiB (inherited)"))
            rl.append(f"resident<={memory >> 20}MiB (the editor's watchdog)")
        return "active: " + ", ".join(rl)
    except (OSError, ValueError) as e:
        return f"partial: {', '.join(rl) or 'none'} ({e})"


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def host_support() -> dict[str, str]:
    """What this host offers, probed without confining anything (safe in the editor).

    ``"supported: ..."`` or ``"unsupported: why"`` per layer that depends on the host.
    """
    abi = landlock.abi_version()
    out = {"landlock": f"supported: ABI {abi}" if abi > 0 else
           "unsupported: the kernel has no Landlock (CONFIG_SECURITY_LANDLOCK, lsm=landlock)"}
    try:
        _seccomp.load_library()
        with open("/proc/self/status") as f:
            has = any(line.startswith("Seccomp:") for line in f)
        out["seccomp"] = "supported: libseccomp via pyseccomp" if has else (
            "unsupported: the kernel has no seccomp filters (CONFIG_SECCOMP_FILTER)")
    except (ImportError, OSError) as e:
        out["seccomp"] = f"unsupported: libseccomp cannot be loaded ({e}); install " \
                         "pyseccomp and the system's libseccomp2"
    return out


def confine(limits: dict[str, Any] | None = None, device_paths: Iterable[str] = (),
            memory_bound: str = ADDRESS_SPACE) -> dict[str, str]:
    """Apply every available layer to the calling (worker) process; return the report.

    ``device_paths`` are glob patterns of device nodes the worker's backends need read-write
    and by ioctl (``Backend.device_paths``). ``memory_bound`` is :data:`ADDRESS_SPACE` or
    :data:`RESIDENT` (no address-space cap: the editor watches resident memory). Call it while
    the process has one thread (see :func:`phast.landlock.restrict`).
    """
    if memory_bound not in (ADDRESS_SPACE, RESIDENT):
        raise ValueError(f"memory_bound must be {ADDRESS_SPACE!r} or {RESIDENT!r}")
    lim = {**DEFAULT_LIMITS, **(limits or {})}
    report: dict[str, str] = {"no_new_privs": _prctl_no_new_privs(),
                              "rlimits": _rlimits(lim, memory_bound)}
    report["environment"] = "active: cleaned" if os.environ.get("PHAST_WORKER") == "1" else (
        "unavailable: not started by the supervisor")
    # libseccomp is loaded before Landlock: loading it may run a helper program (ctypes'
    # find_library), which neither layer allows afterwards.
    try:
        sc: Any = _seccomp.load_library()
    except (ImportError, OSError) as e:
        sc, report["seccomp"] = None, f"unavailable: libseccomp cannot be loaded ({e})"
    threads = _threads()
    try:
        outcome = landlock.restrict(landlock.library_paths(), device_paths)
        _granted_devices[:] = outcome.devices
        report["landlock"] = outcome.describe() + (
            f" ({threads - 1} earlier threads not covered)" if threads > 1 else "")
    except OSError as e:
        why = "the kernel has no Landlock" if landlock.abi_version() <= 0 else "failed to apply"
        report["landlock"] = f"unavailable: {why} ({e.strerror or e})"
    if sc is not None:
        try:
            report["seccomp"] = _seccomp.apply()
        except (OSError, RuntimeError, ValueError) as e:
            report["seccomp"] = f"unavailable: failed to apply ({e})"
    return {k: report[k] for k in LAYERS}


def _attempt(action: Any) -> str:
    try:
        what = action()
    except OSError as e:
        return f"denied: {errno.errorcode.get(e.errno or 0, e.errno)}"
    return f"ALLOWED: {what}"


def _try_fork() -> str:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return "forked"


def _try_create() -> str:
    path = f"/tmp/.phast-doctor-{os.getpid()}"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    os.unlink(path)
    return f"created {path}"


def _try_read_passwd() -> str:
    with open("/etc/passwd", "rb") as f:
        return f"read {len(f.read())} bytes"


def _try_socket() -> str:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    return "created a socket"


def device_ioctl(path: str, flags: int = os.O_RDWR) -> str:
    """Open device node ``path`` and send it a harmless ioctl (``TCGETS``: "are you a
    terminal?"); what the driver said. Raises OSError when the open or the ioctl is refused
    (Landlock says ``EACCES``). A driver that does not know the request answers ``ENOTTY`` (or
    ``EINVAL``): the call got through the sandbox to the driver."""
    import fcntl
    import termios

    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        try:
            fcntl.ioctl(fd, termios.TCGETS, bytes(64))
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM):
                raise
            return f"reached the driver ({errno.errorcode.get(e.errno or 0, e.errno)})"
        return "reached the driver (a terminal)"
    finally:
        os.close(fd)


def _try_device(path: str) -> str:
    # access(2) checks the file's mode only (Landlock does not mediate it): a node this user may
    # not open at all (a root-only MIG capability node) is no sandbox refusal, and one it may
    # only read (capability nodes are opened read-only) is tried read-only.
    if os.access(path, os.R_OK | os.W_OK):
        flags, how = os.O_RDWR, ""
    elif os.access(path, os.R_OK):
        flags, how = os.O_RDONLY, " (read-only: its file mode)"
    else:
        return "not tried: its file mode lets this user not open it, sandbox or not"
    try:
        return device_ioctl(path, flags) + how
    except OSError as e:
        return f"denied: {errno.errorcode.get(e.errno or 0, e.errno)}"


def selftest() -> dict[str, str]:
    """Run inside a confined worker: attempt what the sandbox forbids, say what happened.

    Each attempt is harmless if it succeeds (the child exits at once, the file is removed).
    Every device node the worker was granted is opened (read-write where its file mode lets the
    user) and sent a harmless ioctl (``"... (device grant)"``): a grant the sandbox refuses
    (``denied: EACCES``) is the fault there.
    """
    checks = {
        "socket (seccomp)": _attempt(_try_socket),
        "fork (seccomp)": _attempt(_try_fork),
        "read /etc/passwd (landlock)": _attempt(_try_read_passwd),
        "create a file in /tmp (landlock)": _attempt(_try_create),
    }
    for node in _granted_devices:
        if not os.path.isdir(node):
            checks[f"open+ioctl {node} (device grant)"] = _try_device(node)
    return checks


#: Device nodes this worker's Landlock ruleset grants (set by :func:`confine`).
_granted_devices: list[str] = []


# -- media descriptors granted by the editor -------------------------------------------------
#: path -> descriptor the editor opened for it (the latest open request of that path).
_sources: dict[str, int] = {}


def grant_source(path: str, fd: int) -> None:
    """Record the descriptor the editor sent for ``path`` (the worker owns it from now on)."""
    old = _sources.get(path)
    _sources[path] = fd
    if old is not None and old != fd:
        os.close(old)


def source_fd(path: str) -> int | None:
    """The descriptor granted for ``path``, if any (not a copy: do not close it)."""
    return _sources.get(path)


def revoke_sources() -> None:
    """Close every granted descriptor (the worker has no open session left)."""
    while _sources:
        os.close(_sources.popitem()[1])
