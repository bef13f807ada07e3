"""What the software backend knows about a stream's health, and how it learns it.

A stream is in one of four states (:attr:`StreamState.health`)::

    valid      decoded with frame threads (bit-exact with one thread on valid streams only)
    verifying  the demux-built index's first frames are being checked, on one thread
    indexing   the index is being built by decoding, on one thread
    damaged    some check found damage: one thread from now on, every check of a damaged stream

``verifying`` and ``indexing`` are phases of :meth:`build_index`; ``damaged`` is final. Threading
follows from the state alone (:attr:`StreamState.frame_threads`): one thread unless valid.
Slice threads detect and conceal errors differently from one thread, so on a damaged stream a
frame's pixels would depend on the core count; and the verification and a decode-built index
are the stream's only checks, so they must see every error.

Damage is read from the decoder's exceptions and corrupt flags, and from FFmpeg's log
(:func:`logged_errors`: the worker's pipe, :mod:`phast.avlog`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

from phast import avlog
from phast.errors import IndexMismatch
from phast.index import DAMAGED, KEY

from .avframes import av, picture_crc

#: The checks that find a damaged stream (:attr:`StreamState.damage`): the demuxer's or
#: parser's errors, a packet whose headers do not parse (``demux.HEADER_CHECKS``), a later
#: index disagreeing, the decoder's corrupt flag, its error (exception), its damage messages
#: (:func:`phast.avlog.is_damage`), the prefix decoded otherwise by frame threads, a sequential
#: decode disagreeing with the index, a stored index marked damaged, a second decoder holding
#: nothing giving another picture (:mod:`.recheck`).
DAMAGE_CHECKS = frozenset({"demuxer", "headers", "reindex", "decoder-flag", "decoder-error",
                           "decoder-log", "prefix-threads", "recheck", "disagreed", "index"})

# Messages a decoder logs after starting at a mid-stream keyframe of a valid stream that say
# nothing about the pixels. H.264 "mmco: unref short failure": a memory-management command
# releases a reference picture this decode never had (it precedes the keyframe). A decode from
# the start would release it; either way the picture is gone afterwards, and a keyframe's
# successors do not use it. (Seen on the P-frame after each open-GOP I-frame, x264 open-gop.)
HARMLESS_AFTER_SEEK = frozenset({"h264: mmco: unref short failure"})

Health = Literal["valid", "verifying", "indexing", "damaged"]
Phase = Literal["valid", "verifying", "indexing"]


class StreamState:
    """The stream's health (see the module docstring) and the errors found in it."""

    def __init__(self) -> None:
        #: how the stream was found damaged: (check, detail, threading of the decode that
        #: found it: "frame" or "one"); the check is one of :data:`DAMAGE_CHECKS`. None: valid.
        self.damage: tuple[str, str, str] | None = None
        self.phase: Phase = "valid"
        #: packet positions where the decoder reported errors (read by the index builder)
        self.errors: list[int] = []
        #: mid-stream decode calls whose messages were all harmless (HARMLESS_AFTER_SEEK)
        self.harmless = 0

    @property
    def damaged(self) -> bool:
        return self.damage is not None

    @property
    def health(self) -> Health:
        return "damaged" if self.damage is not None else self.phase

    @property
    def frame_threads(self) -> bool:
        """Whether a decoder opened now may use frame threads."""
        return self.health == "valid"

    @property
    def verifying(self) -> bool:
        return self.phase == "verifying"

    def found(self, check: str, detail: str, *, frame_threads: bool) -> bool:
        """Record damage; True when it is news (the first finding is the one kept).
        ``frame_threads``: the threading of the decode that found it."""
        assert check in DAMAGE_CHECKS, check
        if self.damage is not None:
            return False
        self.damage = (check, detail, "frame" if frame_threads else "one")
        return True

    @contextlib.contextmanager
    def during(self, phase: Phase) -> Iterator[None]:
        """The index builder's phases: one thread while they last."""
        self.phase = phase
        try:
            yield
        finally:
            self.phase = "valid"


class PrefixCheck:
    """The verified prefix's pictures on one thread, compared with frame threads' (see
    ``indexer.IndexBuilder.verify_prefix``). While :attr:`StreamState.verifying` the pictures
    are recorded; afterwards each is compared, and a frame whose two decodes agree is *stable*
    (``stable[j]``: no second decoder need check it again, see :mod:`.recheck`)."""

    def __init__(self, state: StreamState, stable: np.ndarray) -> None:
        self.state = state
        self.stable = stable
        self.crcs: dict[int, int] = {}

    def check(self, j: int, frame: Any) -> None:
        crc = picture_crc(frame)
        if self.state.verifying:
            self.crcs[j] = crc
        elif self.crcs.get(j) == crc:
            self.stable[j] = True  # two decodes, held differently, agree
        elif j in self.crcs:
            self.state.found("prefix-threads", f"frame {j}", frame_threads=True)
            raise IndexMismatch(f"frame {j} decodes to other pixels with frame threads than on "
                                "one thread (damage the decoder does not report)")


@contextlib.contextmanager
def logged_errors() -> Iterator[list[str]]:
    """Collect the FFmpeg messages that report damage (:func:`phast.avlog.is_damage`: ERROR and
    worse, and concealment reports below it) logged in the block.

    Many decoders conceal damage without raising and without flagging the frame corrupt: FFV1
    on a slice CRC mismatch copies the slice from the previous picture, MJPEG leaves undecoded
    blocks as they were in a recycled buffer, H.264 conceals a broken macroblock row. Their
    error messages are the only signal; the same goes for demuxers and parsers reading a
    damaged container.

    In a worker the messages come from :mod:`phast.avlog`'s pipe, read once after the block:
    every thread's, including those written since the last read (a frame thread finishing a
    packet fed earlier, the demuxer reading this packet). Without the pipe (a backend used in
    another process) only this thread's messages can be read (PyAV's log callback takes the
    GIL; a frame thread logging through it while the caller holds the GIL and waits for that
    thread would deadlock), so only single-threaded decoding and demuxing may rely on them.
    """
    pipe = avlog.installed()
    if pipe is not None:
        logged: list[str] = []
        yield logged
        logged += [f"{m.source}: {m.text}" for m in pipe.damage()]
        return
    level, repeated = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.INFO)  # concealment is reported at INFO (avlog.is_damage)
    av.logging.set_skip_repeated(False)  # the same message on the next packet still counts
    try:
        with av.logging.Capture(local=True) as logs:
            captured: list[str] = []
            yield captured
            captured += [f"{name}: {text.strip()}" for lvl, name, text in logs
                         if avlog.is_damage(name or "", text.strip(), lvl)]
    finally:
        av.logging.set_level(level)
        av.logging.set_skip_repeated(repeated)


def discard_log() -> None:
    """Forget logged messages: the decoder was flushed or closed, its threads are done."""
    pipe = avlog.installed()
    if pipe is not None:
        pipe.discard()


def mark_damaged(pkt_flags: np.ndarray, frame_packet: np.ndarray, starts: np.ndarray,
                 errors: list[int]) -> np.ndarray:
    """Flag the frames a decoder error can have touched.

    Those are the frames from the erroneous packet (decode order) to the next keyframe, and the
    leading pictures of that keyframe, which still reference the damaged group. Frames decoded
    before the error cannot depend on it: references only point to earlier decoded pictures.
    """
    flags = pkt_flags.copy()
    keys = np.flatnonzero(pkt_flags & KEY)
    bounds = np.concatenate([[0], keys, [len(pkt_flags)]])
    for e in set(errors):
        k = int(np.searchsorted(bounds, e, side="right")) - 1
        lo, hi = bounds[k], bounds[k + 1]
        hit = (frame_packet >= e) & ((frame_packet < hi) | ((starts >= lo) & (starts < hi)))
        flags[frame_packet[hit]] |= DAMAGED
    return flags


__all__ = ["DAMAGE_CHECKS", "HARMLESS_AFTER_SEEK", "Health", "PrefixCheck", "StreamState",
           "discard_log", "logged_errors", "mark_damaged"]
