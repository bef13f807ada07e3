"""A second decoder of the same packets, holding nothing: whether a picture depends on memory
the decoder never wrote.

FFmpeg's HEVC decoder, fed damaged slice data, can leave parts of a picture undecoded, or
predict from them, without an error, a corrupt flag or a message: those samples are whatever
the recycled buffer held, so the picture depends on which frames the caller still holds (a
plain sequential decode, which releases every frame at once, gets other pixels than phast's
decoder, which keeps frames for stepping back). No exact picture exists; the only way to see it
is to decode the same packets twice with buffers held differently and compare
(``hwbench fuzz --seed 1 --weight hevc_open_gop=3``, file 2428: frames 54-71, past the verified
prefix).

:class:`Recheck` is that second decoder: fed every packet the serving decoder is fed during a
run (the same packet objects, so the same decode positions), on one thread, releasing each
frame as soon as its checksum is taken. The software backend serves a frame of a codec in
:data:`RECHECK_CODECS` only once both decoders gave the same picture for it (or an earlier run
did: the frame is then *stable*).
"""

from __future__ import annotations

import contextlib
from typing import Any

import av

from .avframes import frame_pos, picture_crc

#: Codecs whose decoder can read picture memory it never wrote, on damaged input, without a
#: report (found by fuzzing: HEVC). H.264 and MPEG-2 conceal and say so; extending the set is
#: adding a name here.
RECHECK_CODECS = frozenset({"hevc"})


class Recheck:
    """One thread, nothing held; see the module docstring. ``template`` is the serving
    decoder's codec context (its codec and extradata are copied)."""

    def __init__(self, template: Any) -> None:
        cc = av.CodecContext.create(template.codec.name, "r")
        if template.extradata:
            cc.extradata = template.extradata
        cc.thread_type = "SLICE"
        cc.thread_count = 1
        cc.copy_opaque = True  # the packets carry their decode position (the serving tags)
        self._cc = cc
        self._crcs: dict[int, int] = {}

    def feed(self, pkt: Any, skip_frame: str) -> None:
        """Decode ``pkt`` (None: the flush) as the serving decoder did (``skip_frame``), and
        keep each output frame's picture checksum by the position of the packet that made it.
        Errors are the serving decoder's to report: a packet this one rejects simply gives no
        frame here."""
        if pkt is not None and self._cc.skip_frame != skip_frame:
            self._cc.skip_frame = skip_frame
        with contextlib.suppress(av.FFmpegError):
            for frame in self._cc.decode(pkt):
                pos = frame_pos(frame)
                if pos is not None:
                    self._crcs[pos] = picture_crc(frame)
                del frame  # nothing held: the point of this decoder

    def crc(self, pos: int) -> int | None:
        """The checksum of the picture packet ``pos`` decoded to here, if it came out yet."""
        return self._crcs.get(pos)

    def forget(self, pos: int) -> None:
        self._crcs.pop(pos, None)

    def close(self) -> None:
        with contextlib.suppress(av.FFmpegError):
            self._cc.flush_buffers()
        self._crcs.clear()


__all__ = ["RECHECK_CODECS", "Recheck"]
