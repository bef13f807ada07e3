"""Landlock: the file system and network a worker may still reach, as an unprivileged ruleset.

The worker restricts itself (``landlock_create_ruleset`` / ``add_rule`` / ``restrict_self``,
syscalls 444-446, called through ctypes) before it reads any media. Every access right the
kernel's Landlock ABI knows is *handled* (denied unless a rule grants it):

* file system: read, write, execute, make/remove anything, rename/link across directories
  (``refer``, ABI 2), truncate (ABI 3), device ioctls (ABI 5);
* network (ABI 4): TCP bind and connect, with no rule: denied;
* scopes (ABI 6): abstract Unix sockets and signals to processes outside the worker's domain.

Rules grant *read* (files and directory listings) beneath the directories Python and the
backends load code and data from (:func:`library_paths`), and read-write plus device ioctls on
the device nodes a backend declares (``Backend.device_paths``; nodes that exist when the worker
confines itself: the ruleset is fixed then). Nothing is writable, nothing is executable. Media is
not in the ruleset at all: the editor opens each source and passes its descriptor with the
``open`` request (a descriptor already open is not subject to Landlock).
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass, field

# x86_64 and aarch64 share the generic numbers for these (added in Linux 5.13).
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH = 1

# Access rights on files and directories, with the ABI that introduced them.
FS_RIGHTS: tuple[tuple[str, int, int], ...] = (
    ("execute", 1 << 0, 1), ("write_file", 1 << 1, 1), ("read_file", 1 << 2, 1),
    ("read_dir", 1 << 3, 1), ("remove_dir", 1 << 4, 1), ("remove_file", 1 << 5, 1),
    ("make_char", 1 << 6, 1), ("make_dir", 1 << 7, 1), ("make_reg", 1 << 8, 1),
    ("make_sock", 1 << 9, 1), ("make_fifo", 1 << 10, 1), ("make_block", 1 << 11, 1),
    ("make_sym", 1 << 12, 1), ("refer", 1 << 13, 2), ("truncate", 1 << 14, 3),
    ("ioctl_dev", 1 << 15, 5),
)
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
#: Rights a rule on a regular file (not a directory) may carry.
FILE_ONLY = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)

READ_FILE, READ_DIR, WRITE_FILE, IOCTL_DEV = 1 << 2, 1 << 3, 1 << 1, 1 << 15

#: System locations of shared libraries and the data they read at run time.
SYSTEM_READ = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib",
               "/etc/ld.so.cache", "/etc/localtime", "/usr/share/zoneinfo",
               "/sys/devices/system/cpu", "/proc/self", "/dev/null", "/dev/zero", "/dev/urandom")
#: Never granted, whatever ``sys.path`` says: each would open (nearly) everything.
TOO_BROAD = frozenset({"/", "/usr", "/home", "/root", "/tmp", "/var", "/etc", "/proc", "/dev"})


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(number: int, *args: object) -> int:
    res = int(_libc.syscall(ctypes.c_long(number), *args))
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res


def abi_version() -> int:
    """The Landlock ABI this kernel offers; 0 when it has none (or it is disabled at boot)."""
    if platform.machine() not in ("x86_64", "aarch64"):
        return 0
    try:
        return _syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                        ctypes.c_uint32(CREATE_RULESET_VERSION))
    except OSError:  # ENOSYS: not built in; EOPNOTSUPP: disabled (lsm= boot option)
        return 0


def handled_fs(abi: int) -> int:
    return sum(bit for _name, bit, since in FS_RIGHTS if since <= abi)


def library_paths() -> list[str]:
    """Where this interpreter and its packages load code and data from (read-only grants)."""
    paths = [p for p in sys.path if p]
    paths += [sys.prefix, sys.exec_prefix]
    paths += [v for k, v in sysconfig.get_paths().items() if k in (
        "stdlib", "platstdlib", "purelib", "platlib")]
    paths.append(os.path.dirname(os.path.realpath(sys.executable)))
    paths += _package_dirs()
    paths += SYSTEM_READ
    out: list[str] = []
    for p in paths:
        real = os.path.realpath(p)
        if real in TOO_BROAD or not os.path.exists(real):
            continue
        for q in (p, real):  # both spellings: a rule follows the inode, either works
            if q not in out and os.path.exists(q):
                out.append(q)
    return out


def _package_dirs() -> list[str]:
    """Directories of packages imported from outside ``sys.path`` (editable installs map
    packages to their source trees with import hooks): phast's own, and every package loaded
    before confinement, so their lazy submodule imports keep working."""
    import importlib.util

    dirs = []
    for name in ("phast", "phast.backends", "phast.kernels", "phast.testing"):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.submodule_search_locations:
            dirs += list(spec.submodule_search_locations)
    for module in list(sys.modules.values()):
        locations = getattr(module, "__path__", None)  # packages only: their whole directory
        if locations is not None and getattr(module, "__file__", None):
            dirs += [str(p) for p in locations]
    return dirs


def expand_devices(patterns: Iterable[str]) -> list[str]:
    """Device nodes matching the backend's patterns (``/dev/nvidia*``) that exist here."""
    found: list[str] = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            if path.startswith("/dev/") and path not in found:
                found.append(path)
    return found


@dataclass
class Outcome:
    abi: int
    read_paths: int
    devices: list[str]  #: device nodes granted read-write (and ioctl, ABI 5 and later)
    #: the patterns asked for (``Backend.device_paths``), matched or not
    patterns: list[str] = field(default_factory=list)

    def unmatched(self) -> list[str]:
        """Patterns no node matched when the ruleset was made (nothing of theirs is granted)."""
        return [p for p in self.patterns if not expand_devices([p])]

    def describe(self) -> str:
        parts = [f"ABI {self.abi}", "fs: read-only beneath "
                 f"{self.read_paths} library paths, no write/exec/make/remove"]
        if self.abi >= 2:
            parts.append("refer")
        if self.abi >= 3:
            parts.append("truncate")
        if self.abi >= 5:
            parts.append("ioctl")
        if self.abi >= 4:
            parts.append("net: tcp bind+connect denied")
        if self.abi >= 6:
            parts.append("scopes: abstract unix sockets, signals")
        if self.patterns:
            rights = "rw+ioctl" if self.abi >= 5 else "rw"
            line = f"devices {rights}: " + (" ".join(self.devices) or "none")
            missing = self.unmatched()
            if missing:
                line += " (no node for " + " ".join(missing) + ")"
            parts.append(line)
        return "active: " + ", ".join(parts)


def restrict(read_paths: Iterable[str], device_paths: Iterable[str] = ()) -> Outcome:
    """Restrict the calling thread (and threads it starts later) for good; raise OSError.

    Call it while the process has one thread: Landlock (before ABI 8) binds the calling thread
    only, and threads that already exist stay unrestricted.
    """
    abi = abi_version()
    if abi <= 0:
        raise OSError(38, "Landlock is not supported by this kernel (or disabled at boot)")
    fs = handled_fs(abi)
    attr = _RulesetAttr(fs, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                       ctypes.c_uint32(0))
    try:
        granted = 0
        for path in read_paths:
            granted += _add(ruleset, path, (READ_FILE | READ_DIR) & fs)
        patterns = list(dict.fromkeys(device_paths))
        devices = expand_devices(patterns)
        for dev in devices:
            # GPU drivers talk to their nodes through ioctls: without IOCTL_DEV (handled from
            # ABI 5) every driver call would fail with EACCES although the node opens.
            _add(ruleset, dev, (READ_FILE | WRITE_FILE | IOCTL_DEV) & fs)
        _syscall(SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    return Outcome(abi, granted, devices, patterns)


def _add(ruleset: int, path: str, access: int) -> int:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return 0  # vanished or unreadable: nothing to grant
    try:
        if not os.path.isdir(path):
            access &= FILE_ONLY
        rule = _PathBeneathAttr(access, fd)
        _syscall(SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(RULE_PATH_BENEATH),
                 ctypes.byref(rule), ctypes.c_uint32(0))
        return 1
    finally:
        os.close(fd)
