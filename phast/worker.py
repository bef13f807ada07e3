"""The worker process: a sandboxed loop that opens sources and decodes frames on request.

Started by :mod:`phast.supervisor` as ``python -m phast.worker FD``, with FD one end of a Unix
socket pair. It confines itself (:func:`phast.sandbox.confine`), says READY, then serves requests
one at a time. It never writes files, and everything it sends is plain data
(:mod:`phast.protocol`): a hostile or broken decoder can at worst crash, hang, or lie, and the
editor checks every record.

Requests (editor -> worker) and replies (worker -> editor)::

    open   {session, path, stream, backend, options}      -> {ok, source}
    index  {session, method?}                             -> {ok, source, index} + arrays
    adopt  {session, index} + arrays                      -> {ok}
    frame  {session, job, index, format, slot, size}      -> {ok, job, index, slot, frame record}
           (+ the slot's fd when new to this worker)      or {error, type, message[, needed]}
    close  {session}                                      -> {ok}
    exit   {}                                             -> (process exits)

During long work the worker sends ``{beat}`` records: the supervisor's watchdog kills a worker
that stays silent longer than its hang timeout.
"""

from __future__ import annotations

import importlib
import mmap
import os
import select
import socket
import sys
import time
import traceback
from dataclasses import asdict
from typing import Any

from phast import protocol, sandbox
from phast.errors import PhastError
from phast.index import FrameIndex

#: The job being served, for diagnostics (and test backends that misbehave on cue).
current_job: dict[str, Any] = {}

BEAT_INTERVAL = 0.2
READ_AHEAD = 3  #: frames decoded ahead of a forward-moving playhead while idle


class Worker:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sessions: dict[int, Any] = {}
        self.slots: dict[tuple[int, int], mmap.mmap] = {}
        self._last_beat = 0.0
        self._last: dict[int, int] = {}  # last frame index served, per session
        self._ahead: tuple[int, int, int] | None = None

    def beat(self) -> None:
        now = time.monotonic()
        if now - self._last_beat >= BEAT_INTERVAL:
            self._last_beat = now
            protocol.send(self.sock, {"beat": current_job.get("job", 0)})

    def reply(self, msg: dict[str, Any], blobs: list[bytes] | None = None) -> None:
        protocol.send(self.sock, msg, blobs or [])

    # -- requests -------------------------------------------------------------------------
    def op_open(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        module_name, _, attr = msg["backend"].partition(":")
        cls = getattr(importlib.import_module(module_name), attr)
        backend = cls(msg["path"], stream=int(msg["stream"]), options=msg.get("options") or {},
                      progress=self.beat)
        self.sessions[msg["session"]] = backend
        self.reply({"ok": True, "source": backend.describe()})

    def op_index(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        backend = self.sessions[msg["session"]]
        index = backend.build_index(full_decode=bool(msg.get("full_decode")))
        self.reply({"ok": True, "index": index.header(), "source": backend.describe()},
                   index.blobs())

    def op_adopt(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        self.sessions[msg["session"]].use_index(FrameIndex.from_parts(msg["index"], blobs))
        self.reply({"ok": True})

    def op_frame(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        session = msg["session"]
        for slot_id in msg.get("unmap", []):
            old = self.slots.pop((session, slot_id), None)
            if old is not None:
                old.close()
        key = (session, msg["slot"])
        if fds:
            prev = self.slots.pop(key, None)
            if prev is not None:
                prev.close()
            self.slots[key] = mmap.mmap(fds[0], msg["size"], mmap.MAP_SHARED,
                                        mmap.PROT_READ | mmap.PROT_WRITE)
            os.close(fds[0])
        out = memoryview(self.slots[key])
        try:
            decoded = self.sessions[session].decode(msg["index"], msg["format"], out)
        finally:
            out.release()
        record = asdict(decoded)
        record["planes"] = [[p["offset"], p["rows"], p["row_bytes"]] for p in record["planes"]]
        self.reply({"ok": True, "job": msg["job"], "index": msg["index"], "slot": msg["slot"],
                    "frame": record})
        i = msg["index"]
        if self._last.get(session) == i - 1:  # playing forward: read ahead
            self._ahead = (session, i + 1, i + 1 + READ_AHEAD)
        self._last[session] = i

    def read_ahead(self) -> None:
        """While no request is waiting, decode a few frames past a forward-moving playhead.

        Playback asks for i, i+1, i+2...: decoding i+1 while the editor handles frame i overlaps
        the two. The backend only continues its current decode run (``prefetch``), never seeks,
        and a waiting request always comes first.
        """
        plan = self._ahead
        self._ahead = None
        if plan is None:
            return
        session, nxt, stop = plan
        backend = self.sessions.get(session)
        prefetch = getattr(backend, "prefetch", None)
        if prefetch is None:
            return
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        while nxt < stop and not poller.poll(0):
            try:
                if not prefetch(nxt):
                    return
            except Exception:  # the real request will meet the error, if any
                return
            nxt += 1

    def op_close(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        backend = self.sessions.pop(msg["session"], None)
        for key in [k for k in self.slots if k[0] == msg["session"]]:
            self.slots.pop(key).close()
        if backend is not None:
            backend.close()
        self.reply({"ok": True})

    # -- loop -------------------------------------------------------------------------------
    def serve(self) -> None:
        from phast.backends.base import SlotTooSmall as _SlotTooSmall

        while True:
            self.read_ahead()
            try:
                msg, blobs, fds = protocol.recv(self.sock)
            except protocol.ChannelClosed:
                return
            op = msg.get("op")
            if op == "exit":
                return
            handler = getattr(self, f"op_{op}", None)
            current_job.clear()
            current_job.update(job=msg.get("job", 0), attempt=msg.get("attempt", 0),
                               index=msg.get("index"))
            try:
                if handler is None:
                    raise PhastError(f"unknown request {op!r}")
                handler(msg, blobs, fds)
            except MemoryError:
                os._exit(70)  # the decoder's state cannot be trusted after this
            except _SlotTooSmall as e:
                self.reply({"error": True, "type": "SlotTooSmall", "needed": e.needed,
                            "job": msg.get("job", 0), "message": str(e)})
            except PhastError as e:
                self.reply({"error": True, "type": type(e).__name__, "message": str(e),
                            "job": msg.get("job", 0)})
            except Exception as e:
                self.reply({"error": True, "type": "BackendError", "job": msg.get("job", 0),
                            "message": f"{type(e).__name__}: {e}",
                            "trace": traceback.format_exc(limit=8)[-4000:]})


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[1]))
    if len(argv) > 2:
        sandbox.die_with_parent(int(argv[2]))
    limits = {}
    if os.environ.get("PHAST_WORKER_MEMORY"):
        limits["address_space"] = int(os.environ["PHAST_WORKER_MEMORY"])
    report = sandbox.confine(limits)
    protocol.send(sock, {"ready": True, "pid": os.getpid(), "sandbox": report})
    Worker(sock).serve()
    return 0


if __name__ == "__main__":
    # Run from the importable module, not from __main__: backends that look at
    # ``phast.worker.current_job`` must see the same module the loop updates.
    from phast.worker import main as _main

    sys.exit(_main(sys.argv))
