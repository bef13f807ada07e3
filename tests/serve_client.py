"""A Python client of ``phast serve`` (docs/protocol.md), written from the document.

It shares the framing code (``phast.protocol``) but none of the server: it maps slots itself,
tracks leases and slot ids, and restarts a server it spawned when that server dies (the C
library's behaviour, tested here in Python too).
"""

from __future__ import annotations

import mmap
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phast import protocol

VERSION = "phast-serve-1"


class ServeError(Exception):
    """An error reply: ``code`` is the wire code (``OUT_OF_RANGE``...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class RemoteFrame:
    record: dict[str, Any]
    planes: list[np.ndarray]
    lease: int
    generation: int

    @property
    def quality(self) -> str:
        return str(self.record["quality"])

    def packed(self) -> np.ndarray:
        """The picture of a packed format as (h, w[, c]) (a copy)."""
        r = self.record
        p = self.planes[0]
        channels = p.shape[1] // r["width"] // r["itemsize"]
        dtype = np.uint8 if r["itemsize"] == 1 else np.dtype("<u2")
        arr = np.ascontiguousarray(p).view(dtype).reshape(r["height"], r["width"], channels)
        return arr[:, :, 0] if channels == 1 else arr


@dataclass
class _Clip:
    path: str
    options: dict[str, Any]
    handle: int


@dataclass
class Client:
    sock: socket.socket
    proc: subprocess.Popen[bytes] | None = None
    cache_dir: str | None = None
    generation: int = 0
    restarts: int = 0
    slots: dict[int, mmap.mmap] = field(default_factory=dict)
    clips: dict[int, _Clip] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    _next_id: int = 1
    _next_clip: int = 1
    server: dict[str, Any] = field(default_factory=dict)

    # -- starting -------------------------------------------------------------------------------
    @classmethod
    def spawn(cls, cache_dir: str | None = None) -> Client:
        """Start ``phast serve --fd 3`` as this process's child over a socketpair."""
        client = cls(sock=socket.socket(), cache_dir=cache_dir)
        client.sock.close()
        client._start()
        return client

    @classmethod
    def connect(cls, path: str) -> Client:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        client = cls(sock=sock)
        client._hello()
        return client

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [sys.executable, "-m", "phast", "serve", "--fd", str(theirs.fileno())]
        if self.cache_dir:
            cmd += ["--cache-dir", self.cache_dir]
        self.proc = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        theirs.close()
        self.sock = ours
        self.generation += 1
        self.slots.clear()  # a new server names slots anew (mapped frames stay readable)
        self._hello()

    def _hello(self) -> None:
        self.server = self._call({"op": "hello", "version": VERSION}, restart=False)

    # -- the wire -------------------------------------------------------------------------------
    def _call(self, msg: dict[str, Any], *, restart: bool = True) -> dict[str, Any]:
        try:
            return self._roundtrip(msg)
        except (protocol.ChannelClosed, ConnectionError, OSError):
            if not restart or self.proc is None:
                raise
        self._restart()  # the server died: a new one, the clips reopened, the request again
        return self._roundtrip(msg)

    def _roundtrip(self, msg: dict[str, Any]) -> dict[str, Any]:
        rid = self._next_id
        self._next_id += 1
        msg = dict(msg, id=rid)
        if "clip" in msg:
            msg["clip"] = self.clips[msg["clip"]].handle
        protocol.send(self.sock, msg)
        while True:
            reply, _blobs, fds = protocol.recv(self.sock)
            if "event" in reply:
                self.events.append(reply)
                for fd in fds:
                    os.close(fd)
                continue
            break
        self._last_fds = fds
        for wire in reply.get("drop", []):
            self.slots.pop(wire, None)
        if reply.get("id") != rid:
            raise ServeError("PROTOCOL", f"reply {reply.get('id')} to request {rid}")
        if not reply.get("ok"):
            for fd in fds:
                os.close(fd)
            err = reply.get("error", {})
            raise ServeError(err.get("code", "?"), err.get("message", ""))
        return reply

    def _restart(self) -> None:
        assert self.proc is not None
        self.proc.wait()
        self.restarts += 1
        self._start()
        for clip in self.clips.values():
            clip.handle = self._call({"op": "open", "path": clip.path, **clip.options},
                                     restart=False)["clip"]

    # -- API ------------------------------------------------------------------------------------
    def open(self, path: str, **options: Any) -> tuple[int, dict[str, Any]]:
        reply = self._call({"op": "open", "path": os.path.abspath(path), **options})
        key = self._next_clip
        self._next_clip += 1
        self.clips[key] = _Clip(os.path.abspath(path), options, reply["clip"])
        return key, reply["info"]

    def info(self, clip: int) -> dict[str, Any]:
        return self._call({"op": "info", "clip": clip})["info"]

    def stats(self) -> dict[str, int]:
        return self._call({"op": "stats"})["stats"]

    def frame(self, clip: int, index: int | None = None, *, time: float | None = None,
              format: str = "rgb24", deadline: float | None = None,
              notify: bool = False) -> RemoteFrame:
        msg: dict[str, Any] = {"op": "frame", "clip": clip, "format": format,
                               "deadline": deadline, "notify": notify}
        if time is None:
            msg["index"] = index
        else:
            msg["time"] = time
        reply = self._call(msg)
        fds = self._last_fds
        slot = reply["slot"]
        if slot["new"]:
            assert len(fds) == 1 and slot["id"] not in self.slots
            try:
                self.slots[slot["id"]] = mmap.mmap(fds[0], slot["size"], mmap.MAP_SHARED,
                                                   mmap.PROT_READ)
            finally:
                os.close(fds[0])
        else:
            assert not fds
        buf = self.slots[slot["id"]]
        planes = [np.ndarray((rows, row_bytes), np.uint8, buffer=buf, offset=off,
                             strides=(stride, 1))
                  for off, stride, rows, row_bytes in reply["planes"]]
        return RemoteFrame(reply, planes, reply["lease"], self.generation)

    def release(self, frame: RemoteFrame) -> None:
        if frame.generation == self.generation:  # an old server's leases died with it
            protocol.send(self.sock, {"op": "release", "leases": [frame.lease]})

    def close_clip(self, clip: int) -> None:
        self._call({"op": "close", "clip": clip})
        del self.clips[clip]

    def close(self) -> None:
        self.sock.close()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
