"""The worker process: a sandboxed loop that opens sources and decodes frames on request.

Started by :mod:`phast.supervisor` as ``python -m phast.worker FD``, with FD one end of a Unix
socket pair. It confines itself (:func:`phast.sandbox.confine`), says READY, then serves requests
one at a time. It never writes files, and everything it sends is plain data
(:mod:`phast.protocol`): a hostile or broken decoder can at worst crash, hang, or lie, and the
editor checks every record.

Requests (editor -> worker) and replies (worker -> editor); every reply to a failed request is
``{error, type, message, job}`` (``type``: a phast error's class name, ``SlotTooSmall`` with
``needed``, ``DeviceError`` -- then the worker exits -- or ``BackendError`` for anything else)::

    open   {session, path, stream, backend, options}    -> {ok, source, device}
           + the source's read-only fd (the sandbox lets no media path be opened)
    index  {session, full_decode}                       -> {ok, index, source} + index arrays
    adopt  {session, index} + index arrays              -> {ok}
    frame  {session, job, index, format, slot, size,    -> {ok, job, index, slot, frame, at?,
           attempt, byproducts?}                            byproducts?}
           + the slot's fd when new to this worker;         (at: where the decoder stands,
           + with byproducts {width, height, quality,        Backend.decode_position;
             first, count}: a bitmap of the frames from      byproducts: pictures waiting in
             `first` that lack a proxy                       the worker's ByproductSink)
    frame  {session, job, index, format, dslot}         -> {ok, job, index, dslot, frame with a
           (device backends: worker-owned device memory)     "device" part: Backend.decode_device}
    byproducts {session, limit}                         -> {ok, indices} + one JPEG each
    ahead  {session, index, references_only, limit,     -> as byproducts, after decoding on to
           byproducts} + bitmap                            `index` (Backend.advance)
    image  {session, job, index, format, slot, size}    -> {ok, job, index, slot, frame}
           + the stored proxy picture (JPEG)
    proxies {session, indices, width, height, quality}  -> {ok, indices, failed} + one JPEG each
    prepare_images {}                                   -> {ok}  (loads the JPEG decoder)
    selftest {}                                         -> {ok, checks}  (``phast doctor``)
    close  {session}                                    -> {ok}
    exit   {}                                           -> (the process exits)

During long work the worker sends ``{beat}`` records: the supervisor's watchdog kills a worker
that stays silent longer than its hang timeout.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import socket
import sys
import time
import traceback
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from phast import avlog, protocol, sandbox
from phast.errors import CannotHandle, DeviceError, PhastError, SlotTooSmall
from phast.index import FrameIndex

if TYPE_CHECKING:
    from phast.backends.base import Backend

#: The job being served, for diagnostics (and test backends that misbehave on cue).
current_job: dict[str, Any] = {}

BEAT_INTERVAL = 0.2
READ_AHEAD = 3  #: frames decoded ahead of a forward-moving playhead while idle
DEVICE_ERROR_EXIT = 71  #: exit status after a device (CUDA) error


def device_record(rec: Any) -> dict[str, Any]:
    """A device backend's frame description as plain data (see ``phast.devframe``)."""
    return {"width": rec.width, "height": rec.height, "pix_fmt": rec.pix_fmt,
            "itemsize": rec.itemsize, "key_frame": bool(rec.key_frame),
            "device": {"alloc": rec.alloc, "alloc_size": rec.alloc_size,
                       "handle": rec.handle.hex(),
                       "planes": [[p.offset, p.rows, p.row_bytes, p.pitch] for p in rec.planes]}}


class Server:
    """The worker process's request loop: one request at a time, backends by session."""

    def __init__(self, sock: socket.socket, devices: tuple[str, ...] = (),
                 memory_bound: str = sandbox.ADDRESS_SPACE) -> None:
        self.sock = sock
        self.devices = devices  #: device-node patterns the sandbox grants (Backend.device_paths)
        self.memory_bound = memory_bound  #: how the sandbox bounds memory (sandbox.RESIDENT...)
        self.sessions: dict[int, Backend] = {}
        self.slots: dict[tuple[int, int], mmap.mmap] = {}
        self._last_beat = 0.0
        self._last: dict[int, int] = {}  # last frame index served, per session
        self._ahead: tuple[int, int, int] | None = None
        self._images: Any = None
        self._sinks: dict[int, Any] = {}  # session -> ByproductSink

    def beat(self) -> None:
        now = time.monotonic()
        if now - self._last_beat >= BEAT_INTERVAL:
            self._last_beat = now
            protocol.send(self.sock, {"beat": current_job.get("job", 0)})

    def reply(self, msg: dict[str, Any], blobs: list[bytes] | None = None) -> None:
        protocol.send(self.sock, msg, blobs or [])

    # -- requests -------------------------------------------------------------------------
    def op_open(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        from phast.registry import load

        # A plugin that cannot be imported, is not a Backend, or whose probe says no (or raises)
        # is a typed BackendUnavailable naming its module, not a crash to retry.
        path = str(msg["path"])
        try:
            cls = load(str(msg["backend"]), probe=True)
            self._check_devices(cls)
            # The backend dups the granted descriptor in __init__ (open_source); the worker's
            # own copy is closed right after, so none outlives the request.
            if fds:
                sandbox.grant_source(path, fds[0])
                fds = []
            backend = cls(path, stream=int(msg["stream"]), options=msg.get("options") or {},
                          progress=self.beat)
        finally:
            sandbox.revoke_sources()
            for fd in fds:
                os.close(fd)
        source = backend.describe()
        refusal = cls.capabilities(source)  # codec, profile, depth, size: CannotHandle for auto
        if refusal:
            backend.close()
            raise CannotHandle(f"{cls.name or msg['backend']}: {refusal}")
        self.sessions[msg["session"]] = backend
        self.reply({"ok": True, "source": source, "device": cls.device})

    def _check_devices(self, cls: type[Backend]) -> None:
        """A backend that needs device nodes the sandbox did not grant, or no address-space
        cap where this worker has one, cannot run here."""
        from phast.errors import BackendUnavailable

        missing = [p for p in cls.device_paths if p not in self.devices]
        if missing:
            raise BackendUnavailable(
                f"backend {cls.__module__}:{cls.__qualname__} needs device nodes {missing} that "
                "this worker's sandbox does not grant; start the pool with "
                "WorkerConfig(backends=(spec, ...)) naming it")
        if not cls.address_space_limit and self.memory_bound == sandbox.ADDRESS_SPACE:
            raise BackendUnavailable(
                f"backend {cls.__module__}:{cls.__qualname__} cannot run under this worker's "
                "address-space cap (its libraries reserve more); start the pool with "
                "WorkerConfig(backends=(spec, ...)) naming it: its workers are bounded by "
                "resident memory instead")

    def op_index(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        backend = self.sessions[msg["session"]]
        index = backend.build_index(full_decode=bool(msg.get("full_decode")))
        self.reply({"ok": True, "index": index.header(), "source": backend.describe()},
                   index.blobs())

    def op_adopt(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        self.sessions[msg["session"]].use_index(FrameIndex.from_parts(msg["index"], blobs))
        self.reply({"ok": True})

    def _slot(self, msg: dict[str, Any], fds: list[int]) -> mmap.mmap:
        """The granted slot's mapping (mapping the descriptor that came with it, if any)."""
        key = (msg["session"], msg["slot"])
        if fds:
            prev = self.slots.pop(key, None)
            if prev is not None:
                prev.close()
            self.slots[key] = mmap.mmap(fds[0], msg["size"], mmap.MAP_SHARED,
                                        mmap.PROT_READ | mmap.PROT_WRITE)
            os.close(fds[0])
        return self.slots[key]

    def _reply_frame(self, msg: dict[str, Any], decoded: Any, sink: Any = None) -> None:
        record = asdict(decoded)
        record["planes"] = [[p["offset"], p["rows"], p["row_bytes"]] for p in record["planes"]]
        reply = {"ok": True, "job": msg["job"], "index": msg["index"], "slot": msg["slot"],
                 "frame": record}
        if sink is not None:
            reply["byproducts"] = sink.pending
        backend = self.sessions.get(msg["session"])
        at = backend.decode_position() if backend is not None else None
        if at is not None:
            reply["at"] = [int(at[0]), int(at[1])]
        self.reply(reply)

    def _byproducts(self, msg: dict[str, Any], blobs: list[bytes]) -> Any:
        """The session's by-product sink, told which frames lack a proxy; None when the
        request asks for none (the editor's budget) or the backend cannot give its frames."""
        spec, session = msg.get("byproducts"), msg["session"]
        backend = self.sessions[session]
        sink = self._sinks.get(session)
        if not spec or not blobs:
            if sink is not None:
                backend.set_frame_sink(None)
                del self._sinks[session]
            return None
        from phast.proxywork import ByproductSink

        size = (int(spec["width"]), int(spec["height"]), int(spec["quality"]))
        if sink is None or sink.spec != size:
            sink = ByproductSink(*size)
            if not backend.set_frame_sink(sink):
                return None
            self._sinks[session] = sink
        sink.want(int(spec["first"]), blobs[0], int(spec["count"]))
        return sink

    def op_ahead(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        """Decode on to frame ``index`` for its by-product proxies (``references_only``: skip
        what nothing references), and return up to ``limit`` of them, like ``byproducts``."""
        session = msg["session"]
        sink = self._byproducts(msg, blobs)
        if sink is not None:
            self.sessions[session].advance(int(msg["index"]),
                                           references_only=bool(msg.get("references_only")))
        self.op_byproducts(msg, [], [])

    def op_byproducts(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        """Encode the session's waiting by-product pictures (up to ``limit``) as JPEGs."""
        sink = self._sinks.get(msg["session"])
        indices, pictures = ([], []) if sink is None else sink.take(int(msg["limit"]),
                                                                    self.beat)
        self.reply({"ok": True, "indices": indices}, pictures)

    def op_frame(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        session = msg["session"]
        if "dslot" in msg:  # a device backend: the frame goes to a worker-owned device slot
            rec = self.sessions[session].decode_device(msg["index"], msg["format"], msg["dslot"])
            self.reply({"ok": True, "job": msg["job"], "index": msg["index"],
                        "dslot": msg["dslot"], "frame": device_record(rec)})
        else:
            sink = self._byproducts(msg, blobs)
            out = memoryview(self._slot(msg, fds))
            try:
                decoded = self.sessions[session].decode(msg["index"], msg["format"], out)
            finally:
                out.release()
            self._reply_frame(msg, decoded, sink)
        i = msg["index"]
        if self._last.get(session) == i - 1:  # playing forward: read ahead
            self._ahead = (session, i + 1, i + 1 + READ_AHEAD)
        self._last[session] = i

    def _image_decoder(self) -> Any:
        if self._images is None:
            from phast.proxywork import ImageDecoder

            self._images = ImageDecoder()
        return self._images

    def op_prepare_images(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        """Load the JPEG decoder (and PyAV) ahead of the first fallback request."""
        self._image_decoder()
        self.reply({"ok": True})

    def op_image(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        """Decode a stored proxy picture (sent as the only blob) into the granted slot."""
        out = memoryview(self._slot(msg, fds))
        try:
            decoded = self._image_decoder().decode(blobs[0], msg["format"], out)
        finally:
            out.release()
        self._reply_frame(msg, decoded)

    def op_proxies(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        """Decode frames ``indices`` (in order: sequential is cheap) and return their proxies."""
        from phast.proxywork import ProxyEncoder, frame_from_rgb

        backend = self.sessions[msg["session"]]
        width, height = int(msg["width"]), int(msg["height"])
        encoder = ProxyEncoder(width, height, int(msg["quality"]))
        sink = self._sinks.get(msg["session"])
        if sink is not None:  # these come back in this reply: not again as by-products
            sink.forget(msg["indices"])
        done, failed, pictures = [], [], []
        scratch: memoryview | None = None
        for i in msg["indices"]:
            self.beat()
            try:
                # where the backend's frames live (a GPU), only the small picture is made and
                # crosses to the host; else the host frame, else the packed rgb24 output
                picture = backend.proxy_picture(i, width, height)
                frame = None if picture is None else frame_from_rgb(picture)
                if frame is None and backend.device == "cpu":
                    frame = backend.av_frame(i)
                if frame is None:
                    scratch = scratch or memoryview(bytearray(width * height * 3))
                    frame = self._rgb_frame(backend, i, scratch, frame_from_rgb)
                pictures.append(encoder.encode(frame))
                done.append(i)
            except PhastError:
                failed.append(i)  # damaged or undecodable: that frame simply has no proxy
        self.reply({"ok": True, "indices": done, "failed": failed}, pictures)

    @staticmethod
    def _rgb_frame(backend: Any, i: int, scratch: memoryview, wrap: Any) -> Any:
        while True:
            try:
                d = backend.decode(i, "rgb24", scratch)
                break
            except SlotTooSmall as e:
                scratch = memoryview(bytearray(e.needed))
        import numpy as np

        rgb = np.frombuffer(scratch, np.uint8, d.width * d.height * 3)
        return wrap(rgb.reshape(d.height, d.width, 3))

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
        if backend is None:
            return
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        while nxt < stop and not poller.poll(0):
            try:
                if not backend.prefetch(nxt):
                    return
            except Exception:  # the real request will meet the error, if any
                return
            nxt += 1

    def op_selftest(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        """Try what the sandbox forbids (``phast doctor``); report each outcome, never raise."""
        self.reply({"ok": True, "checks": sandbox.selftest()})

    def op_close(self, msg: dict[str, Any], blobs: list[bytes], fds: list[int]) -> None:
        backend = self.sessions.pop(msg["session"], None)
        self._sinks.pop(msg["session"], None)
        for key in [k for k in self.slots if k[0] == msg["session"]]:
            self.slots.pop(key).close()
        if backend is not None:
            backend.close()
        self.reply({"ok": True})

    # -- loop -------------------------------------------------------------------------------
    def serve(self) -> None:
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
            except DeviceError as e:
                # A CUDA context may be poisoned after an error: say so, then make way for a
                # fresh process (the editor restarts it; nothing is retried in this one).
                with contextlib.suppress(OSError):
                    self.reply({"error": True, "type": "DeviceError", "message": str(e)[:2000],
                                "job": msg.get("job", 0)})
                os._exit(DEVICE_ERROR_EXIT)
            except SlotTooSmall as e:  # before PhastError: its own record type
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
    if len(argv) > 3 and int(argv[3]):
        os.nice(int(argv[3]))  # background work (proxy building) yields the cores
    limits = {}
    if os.environ.get("PHAST_WORKER_MEMORY"):
        limits["memory"] = int(os.environ["PHAST_WORKER_MEMORY"])
    # FFmpeg's error messages go to a pipe this process reads (phast.avlog); a worker started
    # with a real stderr (PHAST_WORKER_DEBUG) copies them there as well.
    avlog.install(forward=not _is_devnull(2))
    devices, bound, preload_error = _preload(os.environ.get("PHAST_WORKER_BACKENDS", ""))
    report = sandbox.confine(limits, devices, bound)
    if preload_error:
        report["preload"] = preload_error
    protocol.send(sock, {"ready": True, "pid": os.getpid(), "sandbox": report,
                         "protocol": protocol.VERSION})
    Server(sock, devices, bound).serve()
    return 0


def _is_devnull(fd: int) -> bool:
    try:
        st, null = os.fstat(fd), os.stat(os.devnull)
    except OSError:
        return True
    return (st.st_dev, st.st_ino) == (null.st_dev, null.st_ino)


def _preload(specs: str) -> tuple[tuple[str, ...], str, str]:
    """Import the backends named (``spec,spec``) before confinement: their device patterns,
    the memory bound they need (:data:`phast.sandbox.RESIDENT` if any of them declares
    ``address_space_limit = False``), and the load errors.

    Needed only by backends with ``device_paths`` or no address-space cap (GPU decoders): the
    sandbox must know both before it closes. A backend that fails to load is reported, and its
    open later fails with the usual typed error.
    """
    from phast.errors import PhastError
    from phast.registry import load

    devices: list[str] = []
    bound = sandbox.ADDRESS_SPACE
    errors = []
    for spec in filter(None, specs.split(",")):
        try:
            cls = load(spec)
        except PhastError as e:
            errors.append(str(e))
            continue
        devices += [p for p in cls.device_paths if p not in devices]
        if not cls.address_space_limit:
            bound = sandbox.RESIDENT
    return tuple(devices), bound, "; ".join(errors)


if __name__ == "__main__":
    # Run from the importable module, not from __main__: backends that look at
    # ``phast.worker.current_job`` must see the same module the loop updates.
    from phast.worker import main as _main

    sys.exit(_main(sys.argv))
