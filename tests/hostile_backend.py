"""A test-only backend that attacks its sandbox from inside the worker (never installed).

It decodes like the software backend, but on cue runs one attack (:data:`ATTACKS`, ``attack``
option) during ``open`` (``at=-1``) or while decoding frame ``at``. An attack either:

* is refused by the kernel: the backend raises :class:`HostileOutcome` ``"<attack> denied:
  <ERRNO>"`` (a non-contract exception, so the editor kills the worker and the message reaches it
  in :class:`~phast.errors.WorkerCrashed`), or ``"<attack> ALLOWED: ..."`` when it got through;
* or is one the sandbox cannot refuse (memory, spinning, lying on the socket): the worker must
  be contained by the supervisor.

:class:`DeviceHostileBackend` declares a device node (``/dev/full``), so a pool naming it grants
that node read-write with device ioctls, as GPU backends' nodes are.

Options: ``attack``, ``at``, ``always`` (attack on every attempt; default: only the first, so a
retry on a fresh worker succeeds), ``target`` (a path the file attacks use).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from phast import sandbox, worker
from phast.backends.base import DecodedFrame
from phast.backends.software import SoftwareBackend
from tests import crashy_backend


class HostileOutcome(Exception):
    """What an attack achieved, as the editor will read it."""


def _socket_inet(target: str) -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.close()
    return "created an AF_INET socket"


def _socket_unix(target: str) -> str:
    a, b = socket.socketpair()
    a.close()
    b.close()
    return "created a socket pair"


def _exec(target: str) -> str:
    os.execv("/bin/true", ["/bin/true"])  # on success the worker *becomes* /bin/true and exits
    return "exec returned"


def _fork(target: str) -> str:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return f"forked child {pid}"


def _fork_bomb(target: str) -> str:
    while True:  # only ever run where seccomp is active: the first fork fails
        if os.fork() == 0:
            continue


def _write(target: str) -> str:
    with open(target, "w") as f:
        f.write("written from the worker")
    return f"wrote {target}"


def _read(target: str) -> str:
    with open(target, "rb") as f:
        return f"read {len(f.read())} bytes of {target}"


def _read_passwd(target: str) -> str:
    return _read("/etc/passwd")


def _ptrace_parent(target: str) -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    ptrace_attach = 16
    if libc.ptrace(ptrace_attach, os.getppid(), None, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return "attached to the editor"


def _signal_parent(target: str) -> str:
    os.kill(os.getppid(), 0)  # signal 0: the permission check only, harmless if allowed
    return "may signal the editor"


def _open_device(target: str) -> str:
    fd = os.open(target, os.O_RDWR | os.O_CLOEXEC)
    os.close(fd)
    return f"opened {target} read-write"


def _ioctl_device(target: str) -> str:
    """Open ``target`` read-only and send it a harmless ioctl; Landlock refuses with EACCES."""
    return sandbox.device_ioctl(target, os.O_RDONLY)


def _threads(target: str) -> str:
    """Not an attack: threads must still work (decoders need them). Reports them as "denied"
    only if starting one fails."""
    ran = []
    t = threading.Thread(target=lambda: ran.append(1))
    t.start()
    t.join()
    tasks = len(os.listdir("/proc/self/task"))
    raise HostileOutcome(f"threads work: python thread ran={bool(ran)}, tasks={tasks}")


#: attack name -> the code that runs it inside the worker
ATTACKS: dict[str, Callable[[str], str]] = {
    "socket_inet": _socket_inet,
    "socket_unix": _socket_unix,
    "exec": _exec,
    "fork": _fork,
    "fork_bomb": _fork_bomb,
    "write": _write,
    "read_secret": _read,
    "read_passwd": _read_passwd,
    "ptrace": _ptrace_parent,
    "signal_parent": _signal_parent,
    "threads": _threads,
    "open_device": _open_device,
    "ioctl_device": _ioctl_device,
}


def _spin() -> None:
    while True:  # CPU burn without heartbeats: only the watchdog ends it
        pass


def _huge_header() -> None:
    os.write(int(sys.argv[1]), struct.pack("!II", 0xFFFFFFFF, 0xFFFFFFFF))
    time.sleep(3600)


def _not_an_object() -> None:
    body = b"[1,2,3]"
    os.write(int(sys.argv[1]), struct.pack("!II", len(body), 0) + body)
    time.sleep(3600)


def _send_fd() -> None:
    """Hand the editor a descriptor (here: the worker's own stdin, /dev/null)."""
    body = b'{"ok":true}'
    sock = socket.socket(fileno=os.dup(int(sys.argv[1])))
    sock.sendmsg([struct.pack("!II", len(body), 0) + body],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", 0))])
    time.sleep(3600)


#: Misbehaviour no layer can refuse: the supervisor contains it (kills the worker).
CONTAINED: dict[str, Callable[[], None]] = {
    "memory": crashy_backend.MODES["memory"],
    "spin": _spin,
    "garbage_bytes": crashy_backend.MODES["garbage_bytes"],
    "huge_header": _huge_header,
    "not_an_object": _not_an_object,
    "send_fd": _send_fd,
}


def attack(name: str, target: str) -> None:
    """Run attack ``name``; always raises HostileOutcome saying what happened."""
    try:
        result = ATTACKS[name](target)
    except OSError as e:
        code = errno.errorcode.get(e.errno or 0, str(e.errno))
        raise HostileOutcome(f"{name} denied: {code}") from e
    raise HostileOutcome(f"{name} ALLOWED: {result}")


class HostileBackend(SoftwareBackend):
    name = "hostile"

    def __init__(self, path: str, *, stream: int, options: Mapping[str, Any],
                 progress: Callable[[], None]) -> None:
        self.attack = str(options.get("attack", ""))
        self.at = int(options.get("at", -1))
        self.always = bool(options.get("always", False))
        self.target = str(options.get("target", ""))
        super().__init__(path, stream=stream, options=options, progress=progress)
        if self.at == -1:
            self._misbehave()

    def _misbehave(self) -> None:
        if self.attack in ATTACKS:
            attack(self.attack, self.target)
        elif self.attack in CONTAINED:
            CONTAINED[self.attack]()

    def decode(self, index: int, format: str, out: memoryview) -> DecodedFrame:
        triggered = index == self.at and (self.always or worker.current_job.get("attempt") == 0)
        if triggered and self.attack in crashy_backend.LIES:
            decoded = super().decode(index, format, out)
            crashy_backend._forge_next_record(self.attack, len(out))
            return decoded
        if triggered:
            self._misbehave()
        return super().decode(index, format, out)


class DeviceHostileBackend(HostileBackend):
    """The hostile backend with a device node of its own, as GPU backends declare theirs:
    ``/dev/full`` (every Linux has it; reading gives zeros, writing fails with ENOSPC)."""

    name = "hostile-dev"
    device_paths = ("/dev/full",)
