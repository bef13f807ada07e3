"""A decode run: the frames that come out of the decoder from one start packet, checked against
the index, held until they may be served, and kept.

Every decoded frame says which packet made it (``avframes.Tag``), and the index says which
display index that is. Once synced, frames must come out in exactly display order; anything
else is :class:`~phast.errors.IndexMismatch` from a decode from the very start (only that decode
defines the truth) and :class:`BadStart` from a mid-stream start (a keyframe flag is a
container's claim). Frames that cannot be valid from this start (leading pictures of an open
GOP) are dropped, never kept.

**A frame is served only once every packet decoded before it has come out** (:meth:`DecodeRun.
hold`): a decoder flags the picture it concealed, not the pictures that reference it, and a
B-frame displayed before its forward reference comes out first. Messages need no wait: they
are read when a packet finishes decoding, before any picture that references it comes out.

**Errors are bounded by packet** (:meth:`DecodeRun.logged`): which packet a message is about
is known within the decoder's threading lag, and a frame is refused from this start when its
own group of pictures may have seen one.

**A second decoder may have to agree** (:mod:`.recheck`): for codecs that can read memory they
never wrote, a run is followed by a decoder holding nothing, and a frame is served only once
both gave the same picture (:meth:`DecodeRun.confirmed`), or it is already *stable*.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from phast.errors import IndexMismatch
from phast.index import FrameIndex

from .avframes import FrameFacts, av, frame_pos, picture_crc
from .damage import HARMLESS_AFTER_SEEK, PrefixCheck, StreamState
from .recheck import Recheck

#: Default bytes of decoded frames kept for backward stepping (per open clip).
DEFAULT_KEEP_BYTES = 96 << 20  # ~30 frames of 1080p 4:2:0: scrubbing ±10 stays a copy


class BadStart(Exception):
    """Frames ``first`` to ``stop - 1`` cannot be decoded from the current run's start packet.

    A keyframe flag is a container's claim; a non-IDR H.264 "keyframe" may not be a clean
    random-access point. Those frames are then decoded from an earlier start.
    """

    def __init__(self, first: int, stop: int) -> None:
        super().__init__(f"frames {first}..{stop - 1} are not decodable from this start")
        self.first, self.stop = first, stop


class KeptFrames:
    """Served frames by display index, an LRU bounded by bytes (stepping backward through what
    was just decoded is a copy, not a decode), and the frame sink that sees each one."""

    def __init__(self, keep_bytes: int) -> None:
        self.keep_bytes = keep_bytes
        self.frames: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self.bytes = 0
        self.frame_bytes = 0  #: bytes of the latest frame kept (0: none yet)
        #: what frame 0 says about the stream (``describe``): its facts, never the frame
        self.first: FrameFacts | None = None
        #: ``Backend.set_frame_sink``'s sink: sees every served ``av.VideoFrame``
        self.sink: Callable[[int, Any], None] | None = None

    def get(self, j: int) -> Any:
        frame = self.frames.get(j)
        if frame is not None:
            self.frames.move_to_end(j)
        return frame

    def serve(self, j: int, frame: Any) -> None:
        """Frame ``j`` may be served: keep it, and show it to the sink."""
        size = _size(frame)
        again = self.frames.pop(j, None)  # served again (a later run): count it once
        if again is not None:
            self.bytes -= _size(again)
        self.frames[j] = frame
        self.bytes += size
        self.frame_bytes = size
        while self.bytes > self.keep_bytes and len(self.frames) > 1:
            _, old = self.frames.popitem(last=False)
            self.bytes -= _size(old)
        if self.sink is not None and isinstance(frame, av.VideoFrame):
            self.sink(j, frame)

    def drop(self) -> None:
        self.frames.clear()
        self.bytes = 0


def _size(frame: Any) -> int:
    return sum(p.buffer_size for p in frame.planes)


class DecodeRun:
    """The frames of one decode run from packet ``start`` (see the module docstring).

    ``index``/``start`` None is an index pass: there is no index to check frames against, and
    every error the decoder reports is the stream's. ``avoid`` (frame -> a start packet it must
    decode from before) and ``stable`` (frames two differently held decodes gave the same
    picture) are shared by the runs of a backend; ``frame_threads``/``lag`` are the decoder's
    threading; ``prefix`` checks the verified prefix's pictures; ``recheck`` is the second
    decoder following this run, if any (the run owns it: :meth:`close`).
    """

    def __init__(self, index: FrameIndex | None, start: int | None, state: StreamState,
                 kept: KeptFrames, avoid: dict[int, int], *, frame_threads: bool, lag: int,
                 stable: np.ndarray | None = None, prefix: PrefixCheck | None = None,
                 recheck: Recheck | None = None) -> None:
        self.index, self.start, self.state, self.kept = index, start, state, kept
        self.avoid, self.frame_threads, self.lag, self.prefix = avoid, frame_threads, lag, prefix
        self.stable, self.recheck = stable, recheck
        self.expected = 0  #: display index the next valid frame must have
        if index is not None and start:
            self.expected = int(np.flatnonzero(index.frame_start >= start)[0])
        self.synced = False
        self.eof = False
        self.skip_until = 0  #: packets before this position are fed with skip_frame=NONREF
        # Where in this run the decoder reported errors: the latest packet a message may be
        # about, and the latest packet one is surely at or after (frame threads: see logged;
        # otherwise the two are equal).
        self.error: int | None = None
        self.error_min: int | None = None
        # Frames that came out of this run but are not served yet (see hold): display index ->
        # (frame, its packet); per fed packet whose frame is valid from this start, the highest
        # display index of such packets fed before it; the highest display index come out.
        self.pending: dict[int, tuple[Any, int]] = {}
        self.need: dict[int, int] = {}
        self.fed_max = -1
        self.shown_max = -1

    def close(self) -> None:
        """The run is over: its second decoder goes with it."""
        if self.recheck is not None:
            self.recheck.close()
            self.recheck = None

    # -- packets in -------------------------------------------------------------------------
    def recheck_feed(self, packet: Any, skip: bool) -> None:
        """Feed ``packet`` (None: the flush) to the second decoder too, skipping as the serving
        decoder did (the same packet object: the same decode position)."""
        if self.recheck is not None:
            self.recheck.feed(packet, "NONREF" if skip else "DEFAULT")

    def fed(self, pos: int) -> None:
        """Packet ``pos`` goes to the decoder: note what frame a picture from it must wait for.

        Output is in display order, so once a frame with display index >= ``need[pos]`` has
        come out, every packet fed before ``pos`` (that is valid from this start and was not
        skipped) has come out too, flags and all (see :meth:`hold`).
        """
        idx = self.index
        if idx is None or self.start is None or not 0 <= pos < len(idx.packet_frame):
            return
        j = int(idx.packet_frame[pos])
        if j < 0 or idx.frame_start[j] < self.start:
            return  # shows nothing, or a leading picture no frame valid from here references
        self.need[pos] = self.fed_max
        self.fed_max = max(self.fed_max, j)

    def logged(self, pos: int, messages: list[str]) -> None:
        """The decoder logged errors by the time packet ``pos`` was decoded.

        A decode from the start, the index's own decodes and damaged streams treat them as
        :meth:`failed` does. A decode from a mid-stream keyframe goes on: valid streams log
        errors there too, about an open GOP's pictures whose references precede the keyframe.
        Those that cannot change a picture (:data:`~phast.backends.damage.HARMLESS_AFTER_SEEK`)
        are ignored; for the others ("Missing reference picture") :meth:`accept` refuses the
        frames whose own group of pictures may have seen them.

        Which packet the messages are about: with one thread or slice threads, ``pos`` (they
        are written during the call). With frame threads, a packet still in flight: at most
        ``thread_count`` packets are, and every packet before them has finished, messages
        included, before the call that fed ``pos - 1`` returned (it needed a free thread).
        """
        if self.start in (None, 0) or self.state.damaged:
            self.failed(pos, messages[0], "decoder-log")
            return
        messages = [m for m in messages if m not in HARMLESS_AFTER_SEEK]
        if not messages:
            self.state.harmless += 1
            return
        self.error = pos
        self.error_min = max(self.error_min or 0, pos - self.lag)

    def failed(self, pos: int, why: str, check: str = "decoder-error") -> None:
        """The decoder rejected packet ``pos`` or reported errors while decoding it.

        On a stream not yet known to be damaged, that is news: raise :class:`IndexMismatch`, to
        re-index single-threaded. Otherwise record it (the index marks the frames it touches).
        """
        if not self.state.damaged:
            self.state.found(check, f"packet {pos}: {why}", frame_threads=self.frame_threads)
            raise IndexMismatch(f"decoder error ({why}); re-index single-threaded")
        self.state.errors.append(pos)
        self.error = self.error_min = pos

    # -- frames out -------------------------------------------------------------------------
    def until(self, target: int, feed: Iterable[tuple[int | None, list[Any]]]) -> Any:
        """Take ``feed``'s frames until frame ``target`` may be served (it came out, and so did
        every packet decoded before it: see :meth:`hold`); None if it came out but may not be
        served from this start, or the stream ends first."""
        idx = self.index
        assert idx is not None and self.start is not None
        for pos, frames in feed:
            for f in frames:
                self.accept(f)
            found = self.release(target, final=pos is None)
            if found is not None:
                return found
            if self.expected > target and target not in self.pending:
                return None  # it came out, but not from a start it may be served from
        self.eof = True
        if self.start != 0 and self.expected <= target:
            raise BadStart(self.expected, target + 1)
        if self.start == 0 and self.expected < idx.frame_count:
            self.disagreed()
            raise IndexMismatch(f"a sequential decode ended after {self.expected} frames; the "
                                f"index has {idx.frame_count}")
        return None

    def accept(self, f: Any) -> int | None:
        """Check one decoded frame against the index; hold it. Returns its display index."""
        idx, start, state = self.index, self.start, self.state
        assert idx is not None and start is not None
        pos = frame_pos(f)
        j = int(idx.packet_frame[pos]) if pos is not None and 0 <= pos < len(
            idx.packet_frame) else -1
        sequential = start == 0
        if j < 0:
            if sequential or self.synced:
                if sequential:
                    self.disagreed()
                raise IndexMismatch(f"the decoder showed packet {pos}, which the index hides")
            return None
        self.shown_max = max(self.shown_max, j)
        if not sequential and idx.frame_start[j] < start:
            return None  # a leading picture that needs an earlier keyframe: not valid from here
        if f.is_corrupt and sequential and not state.damaged:
            # Concealed decoder errors: a frame-threaded decode of a damaged stream need not
            # match a sequential one. Re-index and decode single-threaded from now on.
            state.found("decoder-flag", f"frame {j}", frame_threads=self.frame_threads)
            raise IndexMismatch("the decoder flagged a damaged frame; re-index single-threaded")
        if j > self.expected and self.skipped(self.expected, j):
            self.expected = j  # non-reference frames skipped on purpose (see skip_until)
        if j != self.expected:
            if not sequential:
                # Only a decode from the very start defines the truth; from a mid-stream start
                # a skipped frame means the start was not a clean entry point.
                raise BadStart(self.expected, max(j, self.expected) + 1)
            self.disagreed()
            raise IndexMismatch(f"expected frame {self.expected}, the decoder produced {j}")
        self.synced = True
        self.expected += 1
        own_start = int(idx.frame_start[j])
        # Errors reported in the frame's own group of pictures (from its start packet up to
        # now: a second field or a concealment at output can come after the frame's packet).
        # Errors before its start belong to an earlier group: a keyframe's successors do not
        # reference what precedes it, and on a damaged stream such frames are not served.
        maybe = self.error is not None and self.error >= own_start
        surely = self.error_min is not None and self.error_min >= own_start
        if f.is_corrupt and not sequential and not state.damaged:
            assert pos is not None  # j >= 0
            self.hold(pos)
        if not sequential and (f.is_corrupt or maybe):
            if surely and not state.damaged and own_start > start:
                # Its group was reached through the one before, so its references were all
                # decoded: the damage is in the group itself.
                self.failed(int(self.error_min or 0), f"errors decoding frame {j}", "decoder-log")
            # From this start the frame is not trusted; it is decoded from an earlier one.
            self.avoid[j] = min(self.avoid.get(j, start), start)
            return None
        if self.kept.first is None and j == 0:
            self.kept.first = FrameFacts.of(f)
        if self.prefix is not None:
            self.prefix.check(j, f)
        if state.damaged and not sequential and idx.frame_start[j] != start:
            return None  # from an earlier start than its own: unchecked (see Pipeline.reaches)
        self.pending[j] = (f, pos if pos is not None else -1)
        return j

    def hold(self, pos: int) -> None:
        """A frame of this run came out flagged corrupt (packet ``pos``): the frames waiting for
        it are not served from this start.

        Why frames wait at all: a decoder flags the picture it concealed, not the pictures that
        reference it, and a B-frame displayed before its forward reference comes out before it
        (H.264: a P-frame with a broken slice is flagged, the B-frames between it and the
        previous P come out first, unflagged, with the concealed rows in their prediction). So
        a frame is served only once every packet decoded before it has come out and been
        checked; until then it is pending.
        """
        assert self.start is not None
        for j, (_f, p) in list(self.pending.items()):
            if p > pos:
                del self.pending[j]
                self.need.pop(p, None)
                self.avoid[j] = min(self.avoid.get(j, self.start), self.start)

    def release(self, target: int | None = None, *, final: bool = False) -> Any:
        """Serve the pending frames whose earlier packets have all come out (all of them at the
        end of the stream): keep them. Returns ``target``'s frame if it is among them."""
        found = None
        for j, (f, p) in list(self.pending.items()):
            if final or self.shown_max >= self.need.get(p, -1):
                confirmed = self.confirmed(j, f, p, final)
                if confirmed is None:
                    continue  # the second decoder has not given this picture yet
                del self.pending[j]
                self.need.pop(p, None)
                if not confirmed:
                    assert self.start is not None
                    self.avoid[j] = min(self.avoid.get(j, self.start), self.start)
                    continue
                if not self.state.verifying:  # (the prefix's first pass keeps nothing)
                    self.kept.serve(j, f)
                if j == target:
                    found = f
        return found

    def confirmed(self, j: int, f: Any, p: int, final: bool) -> bool | None:
        """May frame ``j`` (from packet ``p``) be served from this run? True when no second
        decoder follows the run, the frame is stable, or the second decoder gave the same
        picture; None while that picture is still to come; False when it cannot come from this
        run (the second decoder did not decode ``p``). Two pictures that differ are damage no
        decoder reports: the stream is re-indexed as damaged (:class:`IndexMismatch`)."""
        recheck = self.recheck
        if recheck is None or (self.stable is not None and self.stable[j]):
            return True
        crc = recheck.crc(p)
        if crc is None:
            return False if final else None
        recheck.forget(p)
        if crc != picture_crc(f):
            self.state.found("recheck", f"frame {j}", frame_threads=self.frame_threads)
            raise IndexMismatch(f"frame {j} decodes to other pixels when the decoder's buffers "
                                "are held otherwise (it read memory it never wrote)")
        if self.stable is not None:
            self.stable[j] = True
        return True

    def disagreed(self) -> None:
        """A decode from the very start disagrees with an index that was accepted.

        A demux-built index whose first frames were verified, then contradicted further on (a
        packet that shows no frame, frames in another order), means damage the decoder kept to
        itself: the re-index is single-threaded, with the checks of a damaged stream. While the
        prefix is still being verified, a disagreement only means the timestamps do not give
        the decoder's order.
        """
        if not self.state.verifying and not self.state.damaged:
            self.state.found("disagreed", f"at frame {self.expected}",
                             frame_threads=self.frame_threads)

    def skipped(self, first: int, stop: int) -> bool:
        """Were frames ``first`` .. ``stop - 1`` all fed with NONREF skipping?"""
        assert self.index is not None
        packets = self.index.frame_packet[first:stop]
        return bool(len(packets)) and int(packets.max()) < self.skip_until


__all__ = ["DEFAULT_KEEP_BYTES", "BadStart", "DecodeRun", "KeptFrames"]
