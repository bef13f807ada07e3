"""``phast serve``: the editor-side objects (``phast.open``, ``Clip``) behind a Unix socket.

Editors that are not Python (MLT producers, C/C++ applications) get phast through this server;
the wire format is specified in ``docs/protocol.md``. It is not a second implementation: every
request is a ``Clip`` call in this process, with the default worker pool, store and governor::

    client (C library, tests/serve_client.py)          phast serve (this module)
    ┌──────────────────────────┐   Unix socket   ┌──────────────────────────────────┐
    │ open / info / frame /    │  JSON records   │ Connection: its clips, its leases│
    │ release / close          │◄───────────────►│   Clip.frame / request / info    │
    │ maps slots read-only     │ memfds, once    │ WorkerPool, Store, Governor      │
    └──────────────────────────┘ (SCM_RIGHTS)    └───────────────┬──────────────────┘
                                                                 ▼ sandboxed workers

A frame reply names the shared-memory slot its pixels are in and where each plane starts; the
first reply naming a slot carries the slot's memfd, reopened read-only, so the client maps the
very memory the worker wrote (no copy). The frame stays leased -- its slot out of circulation --
until the client releases it or disconnects.

Two ways to run: as a client's child over a socketpair (``--fd N``; the server exits when that
client goes), or shared at a path (``--socket PATH``, mode 0600 in a 0700 directory; each peer's
credentials are checked and another user is refused).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import math
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np

from . import protocol
from .clip import Clip
from .clip import open as open_clip
from .errors import (
    BackendNotFound,
    BackendUnavailable,
    ClipClosed,
    DecodeError,
    FrameOutOfRange,
    FrameQuarantined,
    InvalidArgument,
    MediaError,
    NoVideoStream,
    PhastError,
    ProtocolViolation,
    SlotsExhausted,
    SourceNotFound,
    UnsupportedCodec,
    WorkerCrashed,
)
from .frame import Frame
from .shm import Slot, SlotPool
from .types import OUTPUT_FORMATS, Quality

#: The handshake's version string: a client naming another one is refused (``VERSION``).
VERSION = "phast-serve-1"
#: Frames one connection may hold leased at once (each keeps a slot out of circulation).
MAX_LEASES = 64
#: Clips one connection may have open.
MAX_CLIPS = 64
#: Longest path a client may name (bytes, as UTF-8).
MAX_PATH = 4096
#: Largest record a client may send; requests are small.
MAX_REQUEST = 64 << 10

#: Exception class -> error code on the wire, most specific first (docs/protocol.md lists them).
ERROR_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (SourceNotFound, "NOT_FOUND"),
    (NoVideoStream, "NO_VIDEO"),
    (UnsupportedCodec, "UNSUPPORTED"),
    (DecodeError, "DECODE"),
    (MediaError, "MEDIA"),
    (FrameOutOfRange, "OUT_OF_RANGE"),
    (FrameQuarantined, "QUARANTINED"),
    (InvalidArgument, "INVALID"),
    (BackendNotFound, "BACKEND"),
    (BackendUnavailable, "BACKEND"),
    (SlotsExhausted, "LIMIT"),
    (ClipClosed, "NO_CLIP"),
    (WorkerCrashed, "WORKER"),
    (PhastError, "INTERNAL"),
)

log = logging.getLogger(__name__)


class RequestError(Exception):
    """A request the server refuses, with its wire code (``BAD_REQUEST``, ``NO_CLIP``...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def error_code(error: BaseException) -> str:
    """The wire code of ``error`` (``INTERNAL`` for anything not in :data:`ERROR_CODES`)."""
    if isinstance(error, RequestError):
        return error.code
    for cls, code in ERROR_CODES:
        if isinstance(error, cls):
            return code
    return "INTERNAL"


class Server:
    """Serves connections; shares one worker pool, store and governor among their clips.

    ``cache_dir`` is passed to every ``phast.open``. Thread-safe: one thread per connection.
    """

    def __init__(self, *, cache_dir: str | None = None) -> None:
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self._connections: set[Connection] = set()
        self._ids = itertools.count(1)
        self.idle = threading.Event()  #: set while no connection is open
        self.idle.set()
        self.idle_since = time.monotonic()

    def serve_connection(self, sock: socket.socket) -> None:
        """Serve one client on ``sock`` until it disconnects (blocks); then free what it held."""
        conn = Connection(self, sock, next(self._ids))
        with self._lock:
            self._connections.add(conn)
            self.idle.clear()
        try:
            conn.run()
        finally:
            conn.close()
            with self._lock:
                self._connections.discard(conn)
                if not self._connections:
                    self.idle_since = time.monotonic()
                    self.idle.set()

    def stats(self) -> dict[str, int]:
        """Connections, open clips and leased frames across the server (for tests and tools)."""
        with self._lock:
            conns = list(self._connections)
        return {"connections": len(conns), "clips": sum(len(c.clips) for c in conns),
                "leases": sum(len(c.leases) for c in conns)}


class Connection:
    """One client: its clips (handle -> Clip), its leased frames and the slots it has seen."""

    def __init__(self, server: Server, sock: socket.socket, conn_id: int) -> None:
        self.server = server
        self.sock = sock
        self.id = conn_id
        self.clips: dict[int, Clip] = {}
        self.leases: dict[int, Frame] = {}
        self._handles = itertools.count(1)
        self._lease_ids = itertools.count(1)
        self._slot_ids = itertools.count(1)
        # Slots this client has a descriptor of: wire id by slot, and back (weakly: a slot
        # that is gone is reported as dropped on the next reply).
        self._slot_wire: weakref.WeakKeyDictionary[Slot, int] = weakref.WeakKeyDictionary()
        self._wire_slot: dict[int, weakref.ref[Slot]] = {}
        self._send_lock = threading.Lock()
        self._greeted = False
        self._spare: SlotPool | None = None  # for frames that own their memory (BLANK)
        self._handlers: dict[str, Callable[[dict[str, Any]], tuple[dict[str, Any], list[int]]]]
        self._handlers = {"hello": self._hello, "ping": self._ping, "open": self._open,
                          "info": self._info, "frame": self._frame, "close": self._close,
                          "stats": self._stats}

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            try:
                msg, blobs, fds = protocol.recv(self.sock, max_blobs=0)
            except (protocol.ChannelClosed, ConnectionError, OSError):
                return
            except ProtocolViolation as e:  # framing is lost: answer once, then hang up
                self.send({"ok": False, "id": None,
                           "error": {"code": "BAD_REQUEST", "message": str(e)}})
                return
            for fd in fds:  # clients pass no descriptors
                os.close(fd)
            op = msg.get("op")
            if op == "release":
                self._release(msg)  # no reply: releasing must cost the client no round trip
                continue
            rid = msg.get("id")
            if not isinstance(rid, int) or isinstance(rid, bool) or not 0 <= rid < 1 << 53:
                self.send({"ok": False, "id": None, "error": {
                    "code": "BAD_REQUEST", "message": "a request needs an integer id"}})
                continue
            try:
                if blobs or fds:
                    raise RequestError("BAD_REQUEST", "requests carry no blobs or descriptors")
                handler = self._handlers.get(op) if isinstance(op, str) else None
                if handler is None:
                    raise RequestError("BAD_REQUEST", f"unknown op {op!r}")
                if not self._greeted and op != "hello":
                    raise RequestError("BAD_REQUEST", "the first request must be hello")
                reply, out_fds = handler(msg)
                reply = {"ok": True, "id": rid, **reply}
            except Exception as e:
                if not isinstance(e, (PhastError, RequestError)):
                    log.exception("request %r failed", op)
                reply, out_fds = {"ok": False, "id": rid, "error": {
                    "code": error_code(e), "type": type(e).__name__,
                    "message": " ".join(str(e).splitlines())[:2000] or type(e).__name__}}, []
            dropped = self._dropped_slots()
            if dropped:
                reply["drop"] = dropped
            try:
                self.send(reply, out_fds)
            except OSError:
                return
            finally:
                for fd in out_fds:
                    os.close(fd)
            if reply.get("ok") is False and op == "hello":
                return  # a client of another version gets its answer, then the door

    def send(self, msg: dict[str, Any], fds: list[int] = ()) -> None:  # type: ignore[assignment]
        with self._send_lock:
            protocol.send(self.sock, msg, fds=list(fds))

    def close(self) -> None:
        """Release every lease and close every clip of this client (it disconnected)."""
        for frame in self.leases.values():
            frame.release()
        self.leases.clear()
        for clip in self.clips.values():
            with contextlib.suppress(Exception):
                clip.close()
        self.clips.clear()
        if self._spare is not None:
            self._spare.close()
        with contextlib.suppress(OSError):
            self.sock.close()

    # -- requests ---------------------------------------------------------------------------
    def _hello(self, msg: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        if msg.get("version") != VERSION:
            raise RequestError("VERSION", f"this server speaks {VERSION}, "
                                          f"not {msg.get('version')!r}")
        self._greeted = True
        from . import __version__
        return {"version": VERSION, "phast": __version__, "pid": os.getpid(),
                "max_leases": MAX_LEASES}, []

    def _ping(self, msg: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        return {}, []

    def _stats(self, msg: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        return {"stats": self.server.stats()}, []

    def _open(self, msg: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        path = msg.get("path")
        if not isinstance(path, str) or not path.startswith("/") or \
                len(path.encode("utf-8", "surrogatepass")) > MAX_PATH or "\0" in path:
            raise RequestError("BAD_REQUEST", "path must be an absolute path string")
        if len(self.clips) >= MAX_CLIPS:
            raise RequestError("LIMIT", f"a connection may have {MAX_CLIPS} clips open")
        kwargs: dict[str, Any] = {"cache_dir": self.server.cache_dir}
        for key, kinds in (("stream", (int,)), ("backend", (str,)), ("proxies", (bool,)),
                           ("budget", (int, float, str))):
            if key in msg and msg[key] is not None:
                value = msg[key]
                if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                    raise RequestError("BAD_REQUEST", f"open option {key!r} has the wrong type")
                kwargs[key] = value
        clip = open_clip(path, **kwargs)
        handle = next(self._handles)
        self.clips[handle] = clip
        return {"clip": handle, "info": info_record(clip)}, []

    def _clip(self, msg: dict[str, Any]) -> Clip:
        handle = msg.get("clip")
        clip = self.clips.get(handle) if isinstance(handle, int) else None
        if clip is None:
            raise RequestError("NO_CLIP", f"no open clip {handle!r} on this connection")
        return clip

    def _info(self, msg: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        return {"info": info_record(self._clip(msg))}, []

    def _close(self, msg: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        clip = self._clip(msg)
        del self.clips[msg["clip"]]
        clip.close()
        return {}, []

    def _frame(self, msg: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        clip = self._clip(msg)
        fmt = msg.get("format", "rgb24")
        if fmt not in OUTPUT_FORMATS:
            raise RequestError("INVALID", f"format must be one of {', '.join(OUTPUT_FORMATS)}")
        deadline = _number(msg, "deadline")
        if deadline is not None and not (deadline > 0 and math.isfinite(deadline)):
            raise RequestError("INVALID", "deadline must be positive seconds or null")
        index = msg.get("index")
        if "time" in msg:
            seconds = _number(msg, "time")
            if seconds is None or index is not None:
                raise RequestError("BAD_REQUEST", "a frame request names an index or a time")
            index = clip.index_at(seconds)
        elif not isinstance(index, int) or isinstance(index, bool):
            raise RequestError("BAD_REQUEST", "a frame request needs an integer index")
        if len(self.leases) >= MAX_LEASES:
            raise RequestError("LIMIT", f"{MAX_LEASES} frames are leased on this connection: "
                                        "release some")
        if deadline is None:
            frame = clip.frame(index, format=fmt)
        else:
            req = clip.request(index, deadline=deadline, format=fmt)
            frame = req.frame()
            if msg.get("notify") is True and frame.quality is not Quality.EXACT:
                handle, i = msg["clip"], req.index
                req.exact.add_done_callback(lambda f: self._refined(f, handle, i, fmt))
        return self._describe(frame)

    def _release(self, msg: dict[str, Any]) -> None:
        leases = msg.get("leases")
        if isinstance(leases, list):
            for lease in leases[:MAX_LEASES]:
                frame = self.leases.pop(lease, None) if isinstance(lease, int) else None
                if frame is not None:
                    frame.release()

    def _refined(self, future: Any, handle: int, index: int, fmt: str) -> None:
        """The EXACT decode behind a lower-tier answer landed: tell the client (it asks again,
        and the frame is then a RAM hit)."""
        if future.cancelled() or future.exception() is not None or handle not in self.clips:
            return
        with contextlib.suppress(OSError):
            self.send({"event": "refined", "clip": handle, "index": index, "format": fmt})

    # -- frames on the wire -------------------------------------------------------------------
    def _describe(self, frame: Frame) -> tuple[dict[str, Any], list[int]]:
        """Lease ``frame`` to the client: its record, and the slot's descriptor if new to it."""
        if frame.slot is None:
            frame = self._in_spare_slot(frame)
        slot = frame.slot
        assert slot is not None
        planes = [[slot.offset_of(p), int(p.strides[0]), int(p.shape[0]),
                   int(p.shape[1] * (p.shape[2] if p.ndim == 3 else 1) * p.itemsize)]
                  for p in frame.planes]
        fds: list[int] = []
        wire = self._slot_wire.get(slot)
        if wire is None:
            wire = next(self._slot_ids)
            assert slot.fd is not None
            # Read-only: a client maps what workers wrote, and can never write it back.
            fds.append(os.open(f"/proc/self/fd/{slot.fd}", os.O_RDONLY | os.O_CLOEXEC))
            self._slot_wire[slot] = wire
            self._wire_slot[wire] = weakref.ref(slot)
        lease = next(self._lease_ids)
        self.leases[lease] = frame
        return {"lease": lease, "slot": {"id": wire, "size": slot.size, "new": bool(fds)},
                "planes": planes, "width": frame.width, "height": frame.height,
                "format": frame.format, "pix_fmt": frame.pix_fmt,
                "itemsize": int(frame.planes[0].itemsize), "quality": frame.quality.value,
                "index": frame.index, "shows": frame.shows, "pts": frame.pts,
                "time": frame.time, "key_frame": frame.key_frame}, fds

    def _in_spare_slot(self, frame: Frame) -> Frame:
        """A frame that owns its memory (a BLANK picture), copied into a slot of this
        connection so that every frame reaches the client the same way."""
        if self._spare is None:
            self._spare = SlotPool(max_slots=4)
        planes = frame.planes
        sizes = [(p.nbytes + 63) // 64 * 64 for p in planes]
        slot = self._spare.grant(sum(sizes))
        lease = self._spare.lease(slot)
        views, offset = [], 0
        for p, size in zip(planes, sizes, strict=True):
            target = np.frombuffer(slot.map, np.uint8, p.nbytes, offset).reshape(p.shape[0], -1)
            target[:] = np.ascontiguousarray(p).reshape(p.shape[0], -1).view(np.uint8)
            views.append(lease.view(offset, p.shape, p.dtype))
            offset += size
        return Frame(array=views[0], planes=tuple(views), index=frame.index, pts=frame.pts,
                     time=frame.time, quality=frame.quality, format=frame.format,
                     pix_fmt=frame.pix_fmt, width=frame.width, height=frame.height,
                     key_frame=frame.key_frame, shows=frame.shows, lease=lease)

    def _dropped_slots(self) -> list[int]:
        """Wire ids of slots that were closed since the client got them (it unmaps them)."""
        gone = [wire for wire, ref in self._wire_slot.items()
                if (slot := ref()) is None or slot.fd is None]
        for wire in gone:
            del self._wire_slot[wire]
        return gone


def _number(msg: dict[str, Any], name: str) -> float | None:
    value = msg.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError("BAD_REQUEST", f"{name} must be a number")
    return float(value)


def info_record(clip: Clip) -> dict[str, Any]:
    """What ``info`` answers: ``ClipInfo`` as plain data (rates as [num, den])."""
    info = clip.info

    def ratio(f: Fraction) -> list[int]:
        return [f.numerator, f.denominator]

    return {"path": info.path, "codec": info.codec, "width": info.width,
            "height": info.height, "pix_fmt": info.pix_fmt, "bit_depth": info.bit_depth,
            "frame_count": info.frame_count, "time_base": ratio(info.time_base),
            "start_time": info.start_time, "duration": info.duration,
            "average_rate": ratio(info.average_rate), "is_vfr": info.is_vfr,
            "keyframe_count": len(info.keyframes), "rotation": info.rotation,
            "index_method": info.index_method, "backend": clip.backend}


# -- running it ----------------------------------------------------------------------------------


def default_socket_path() -> str:
    """``$XDG_RUNTIME_DIR/phast/serve.sock`` (else ``/tmp/phast-UID/serve.sock``)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    folder = os.path.join(base, "phast") if base else f"/tmp/phast-{os.geteuid()}"
    return os.path.join(folder, "serve.sock")


def _private_dir(folder: str) -> None:
    """Create ``folder`` 0700, or check that an existing one is ours and private."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(f"{folder} must be a directory of this user, mode 0700")


def listen(path: str) -> socket.socket:
    """A listening socket at ``path`` (mode 0600 in a private directory). A stale socket file
    (no server answers on it) is replaced; a live one is an error (``EADDRINUSE``)."""
    _private_dir(os.path.dirname(path) or ".")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: a dead server's leftover
        else:
            sock.close()
            raise OSError(errno.EADDRINUSE, f"a server already listens at {path}")
        finally:
            probe.close()
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


_UCRED = struct.Struct("3i")  # pid, uid, gid


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    _pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                    _UCRED.size))
    return uid


def serve_path(server: Server, path: str, *, idle_exit: float | None = None) -> None:
    """Accept clients at ``path`` until SIGTERM/SIGINT (or ``idle_exit`` seconds with none)."""
    sock = listen(path)
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        stop.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if idle_exit is not None:
        threading.Thread(target=_exit_when_idle, args=(server, idle_exit, on_signal),
                         daemon=True, name="phast-serve-idle").start()
    try:
        while not stop.is_set():
            try:
                peer, _ = sock.accept()
            except OSError:
                if stop.is_set():
                    break
                raise
            if peer_uid(peer) != os.geteuid():
                threading.Thread(target=_refuse, args=(peer,), daemon=True,
                                 name="phast-serve-refuse").start()
                continue
            threading.Thread(target=server.serve_connection, args=(peer,), daemon=True,
                             name="phast-serve-conn").start()
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _refuse(peer: socket.socket) -> None:
    """Tell another user's process why it is refused; it has a moment to send its hello
    first (closing at once would answer that with EPIPE, not with the reason)."""
    with contextlib.suppress(OSError):
        protocol.send(peer, {"ok": False, "id": None, "error": {
            "code": "PERMISSION", "message": "this server serves its own user only"}})
        peer.shutdown(socket.SHUT_WR)
        peer.settimeout(1.0)
        for _ in range(16):  # nothing it says is read, only drained (a little) until it goes
            if not peer.recv(4096):
                break
    peer.close()


def _exit_when_idle(server: Server, seconds: float, stop: Callable[[], None]) -> None:
    """Call ``stop`` once no client has been connected for ``seconds``."""
    while True:
        server.idle.wait()
        left = seconds - (time.monotonic() - server.idle_since)
        if left <= 0:
            stop()
            return
        time.sleep(min(left, 1.0))


def serve_fd(server: Server, fd: int) -> None:
    """Serve the one client at the other end of socketpair descriptor ``fd``; return when it
    goes (the client's child: it lives exactly as long as its client)."""
    sock = socket.socket(fileno=fd)
    server.serve_connection(sock)


def main(fd: int | None, path: str | None, cache_dir: str | None,
         idle_exit: float | None) -> int:
    """``phast serve``: child mode with ``fd``, else shared at ``path`` (default path)."""
    server = Server(cache_dir=cache_dir)
    if fd is not None:
        serve_fd(server, fd)
    else:
        serve_path(server, path or default_socket_path(), idle_exit=idle_exit)
    sys.stdout.flush()
    return 0


__all__ = ["ERROR_CODES", "VERSION", "Connection", "Server", "error_code", "info_record",
           "listen", "main", "peer_uid", "serve_fd", "serve_path"]
