"""The decoder of the software backend's three parts (demuxer -> decoder -> converter).

:class:`AvDecoder` is FFmpeg's (PyAV): the stream's own codec context. Hardware backends inject
another into :class:`~phast.backends.software.SoftwareBackend` (``make_decoder``): VAAPI is
FFmpeg's with a hardware device (``vaapi.VaapiDecoder``), NVDEC PyNvVideoCodec's
(``nvdec_decoder.NvdecDecoder``). Everything else -- demuxing, positioning, the index, the checks
-- stays the software backend's, so every backend numbers and checks frames the same way.

A decoder is bound to a container when the backend opens one (:meth:`AvDecoder.attach`), with
the threading the stream's state calls for (:class:`~phast.backends.damage.StreamState`); it
never chooses threading itself.
"""

from __future__ import annotations

import contextlib
from typing import Any

from phast import avlog

from .avframes import av
from .damage import discard_log

#: Decoders that apply ``skip_frame`` to exactly the packets sent while it is set (FFmpeg's own
#: frame-threaded decoders copy it per packet). Wrappers with their own pipelines (libdav1d,
#: libvpx) apply it late or early, so they never skip.
PRECISE_SKIP = frozenset({"h264", "hevc", "mpeg1video", "mpeg2video", "mpeg4"})
#: Decoder options of a session that only makes proxies: no deblocking of pictures nothing
#: references (no drift: references decode exactly), and FFmpeg's non-conforming speed-ups.
#: ~10% less CPU on 1080p H.264; the proxies stay >= 50 dB from exact-then-downscale before
#: JPEG (``hwbench proxies --psnr`` measures the whole proxy against exact-then-downscale).
PROXY_DECODE = {"skip_loop_filter": "noref", "flags2": "+fast"}


class AvDecoder:
    """FFmpeg's decoder for the stream (PyAV), configured anew for every container.

    ``threads``: frame threads when the state allows them (0 = auto); ``proxy_decode``: the
    shortcuts of :data:`PROXY_DECODE` (a session that serves no EXACT frame).
    """

    #: Frames are ``av.VideoFrame`` in host memory: they can be served to a frame sink and
    #: converted by swscale.
    av_frames = True
    #: Whether ``skip_frame`` may drop non-reference frames on the way to a target.
    can_skip = True

    def __init__(self, *, threads: int = 0, proxy_decode: bool = False) -> None:
        self.threads = threads
        self.proxy_decode = proxy_decode
        self.cc: Any = None
        self.frame_threads = False
        #: whether FFmpeg's messages are read around each decode call: always with the
        #: worker's pipe, else only on one thread (see ``damage.logged_errors``)
        self.reads_log = False

    def open_options(self) -> dict[str, Any]:
        """Extra ``av.open`` arguments (VAAPI: its hardware device)."""
        return {}

    def attach(self, stream: Any, *, frame_threads: bool) -> None:
        """Bind to ``stream`` of a freshly opened container, with the threading the stream's
        state calls for (threading is fixed when the decoder opens)."""
        cc = stream.codec_context
        cc.thread_type = "AUTO" if frame_threads else "SLICE"
        cc.thread_count = self.threads if frame_threads else 1
        cc.copy_opaque = True  # every frame says which packet it came from
        if self.proxy_decode:
            cc.options = dict(PROXY_DECODE)
        self.cc = cc
        self.frame_threads = frame_threads
        self.reads_log = not frame_threads or avlog.installed() is not None

    @property
    def lag(self) -> int:
        """Packets a message read after feeding one may lag behind it: with frame threads, at
        most ``thread_count`` packets are in flight (see ``DecodeRun.logged``)."""
        return max(1, self.cc.thread_count) + 1 if self.frame_threads else 0

    @property
    def precise_skip(self) -> bool:
        return self.can_skip and self.cc.codec.name in PRECISE_SKIP

    def skip_nonref(self, skip: bool) -> None:
        """Drop (True) or decode (False) the non-reference frames of the packets fed next."""
        mode = "NONREF" if skip else "DEFAULT"
        if mode != self.cc.skip_frame:
            self.cc.skip_frame = mode

    def decode(self, packet: Any) -> list[Any]:
        """Feed one tagged packet (None: flush at the end) and return the frames that came out.

        Decoders that decode elsewhere (a GPU) return objects with the frame attributes the
        backend reads: ``opaque``, ``pts``, ``is_corrupt``, ``key_frame``, ``planes``.
        """
        return list(self.cc.decode(packet))

    def flush(self) -> None:
        """Drop the decoder's state before a seek."""
        with contextlib.suppress(av.FFmpegError):
            self.cc.flush_buffers()
        discard_log()  # about pictures the flush dropped

    def close(self) -> None:
        """Release what the decoder holds beyond its container (hardware sessions)."""


__all__ = ["PRECISE_SKIP", "PROXY_DECODE", "AvDecoder"]
