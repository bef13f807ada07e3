"""The software backend's index builder, and the checks that make an index trustworthy.

::

    demux pass (Demuxer.scan) -- damage seen? ----------------------------.
         | timestamps give a display order                                 |
         v                                                                 v
    verify the first VERIFY_FRAMES by decoding: same order (one thread),   index by decoding
    same pictures (frame threads)  -- disagreement, damage? -------------> (one thread; a
         |                                                                 damaged stream twice;
         v                                                                 a valid one's prefix
    the demux-built index                                                  verified as well)

Each step is a phase of the stream's state (``damage.StreamState``: verifying, indexing), and
the threading follows from it. A stream found damaged on the way is indexed by decoding as a
damaged stream: errors recorded per packet (frames they can touch are marked ``DAMAGED``), and
every group of pictures decoded again from its own start (:meth:`IndexBuilder.unstable_packets`).
"""

from __future__ import annotations

import collections
import itertools
from fractions import Fraction
from typing import Any

import numpy as np

from phast.errors import DecodeError, IndexMismatch, MediaError
from phast.index import DAMAGED, FrameIndex, compute_starts, display_order_from_pts, synthesize_pts

from .avframes import FrameFacts, frame_pos, picture_crc
from .damage import PrefixCheck, mark_damaged
from .demux import Packets
from .pipeline import Pipeline

#: Frames decoded from the start and compared with a demux-built index before it is trusted.
VERIFY_FRAMES = 48
#: Frames held back during the second decode of a damaged stream (see ``unstable_packets``):
#: the decoder then draws other buffers than in the first decode, whose frames were released.
HOLD_FRAMES = 16
#: Packets after its own that a frame may still come out (reordering delay), when checking a
#: damaged stream's decodes from each start packet.
MAX_DELAY = 16


class IndexBuilder:
    """Builds the index of the stream ``pipeline`` reads (see the module docstring)."""

    def __init__(self, pipeline: Pipeline, path: str) -> None:
        self.pipeline = pipeline
        self.state = pipeline.state
        self.path = path

    def _found(self, check: str, detail: str) -> None:
        self.state.found(check, detail, frame_threads=self.pipeline.decoder.frame_threads)

    def build(self, *, full_decode: bool = False) -> FrameIndex:
        """The stream's index (``Backend.build_index``); the pipeline uses it on return."""
        p, state = self.pipeline, self.state
        p.fresh()
        packets: Packets = p.demux.scan(self._found, check_headers=not state.damaged)
        pkt_pts, pkt_dts, pkt_pos, pkt_flags = packets
        tb = p.demux.stream.time_base or Fraction(1, 90000)
        if full_decode:
            # An index built earlier disagreed with a decode from the start: damage the decoder
            # did not report. Index it as a damaged stream (one thread, errors read, twice).
            self._found("reindex", "asked to index by decoding")
        # A damaged stream decodes to fewer frames than it has packets: only decoding can tell.
        order = None if state.damaged else display_order_from_pts(pkt_pts, pkt_flags)
        if order is not None and len(order):
            index = FrameIndex(pkt_pts, pkt_dts, pkt_pos, pkt_flags, order, pkt_pts[order],
                               compute_starts(order, pkt_pts, pkt_flags), tb, "demux", "container")
            try:
                index.validate()
                p.use_index(index)
                self.verify_prefix()
                return index
            except (IndexMismatch, MediaError, DecodeError):
                pass  # timestamps alone do not give the decoder's order: decode it
        index = self.by_decoding(packets, tb)
        p.use_index(index)
        if not state.damaged:
            # The one decode that built the index compared nothing: its prefix gets the same two
            # differently threaded and held decodes as a demux-built index's (fuzz seed 1,
            # weighted, hevc_open_gop file 1650: pixels that depend on which buffers are free).
            try:
                self.verify_prefix()
            except IndexMismatch:
                index = self.by_decoding(packets, tb)
                p.use_index(index)
        return index

    def verify_prefix(self) -> None:
        """Decode the first frames from the very start and check them against the index; then
        check that the configured threading decodes them to the same pictures.

        The second check catches damage no decoder reports that frame threads decode otherwise
        than one thread (an HEVC bit flip: no message at any level, no flag, other pictures
        with frame threads; ``hwbench fuzz --seed 3``, file 182), and damage that leaves parts
        of pictures unwritten: their pixels are whatever the recycled buffer held, so the first
        pass keeps no frame (as a plain sequential decode) while the second keeps them all, and
        the buffers differ (an HEVC CRA turned IDR by a bit flip, frames 21-47; ``hwbench fuzz
        --seed 2 --weight hevc_open_gop=3``, file 449). It covers the prefix only.
        """
        p = self.pipeline
        assert p.index is not None
        last = min(VERIFY_FRAMES, p.index.frame_count) - 1
        prefix = PrefixCheck(self.state, p.stable)
        try:
            with self.state.during("verifying"):
                p.position(0, prefix)  # from byte 0: the decoder opens on one thread
                p.run_to(last)
            if self.state.damaged:
                return
            p.position(0, prefix)  # frame threads again
            p.run_to(last)
        finally:
            p.end_run()

    def by_decoding(self, packets: Packets, tb: Fraction) -> FrameIndex:
        """Index by a sequential decode on one thread, reading the decoder's error messages.

        One thread because this decode is the stream's only check: a stream indexed by demuxing
        gets its first frames verified, this one is never compared with anything. Frame threads
        would hide errors the decoder only logs (H.264 "co located POCs unavailable", HEVC
        "Could not find ref"), and a frame's corrupt flag races with its output there.

        A stream not known to be damaged is decoded as a valid one; the first error the decoder
        reports marks it damaged (raising :class:`IndexMismatch`), and it is decoded again as a
        damaged stream.
        """
        with self.state.during("indexing"):
            if not self.state.damaged:
                try:
                    return self._decode_all(packets, tb, damaged=False)
                except IndexMismatch:
                    if not self.state.damaged:
                        raise
            return self._decode_all(packets, tb, damaged=True)

    def _decode_all(self, packets: Packets, tb: Fraction, *, damaged: bool) -> FrameIndex:
        p, state = self.pipeline, self.state
        pkt_pts, pkt_dts, pkt_pos, pkt_flags = packets
        p.index_pass()
        shown: list[int] = []
        frame_pts: list[int | None] = []
        n_pkt = len(pkt_pts)
        state.errors = []
        hashes: list[int] | None = [] if damaged else None
        for pos, frames in p.feed():
            if pos is not None and pos >= n_pkt:
                break
            for f in frames:
                if f.is_corrupt:
                    if not state.damaged:
                        self._found("decoder-flag", f"packet {frame_pos(f)}")
                        raise IndexMismatch("the decoder flagged a damaged frame")
                    state.errors.append(frame_pos(f) or 0)
                fpos = frame_pos(f)
                if fpos is not None and 0 <= fpos < n_pkt:
                    if p.kept.first is None:
                        p.kept.first = FrameFacts.of(f)
                    shown.append(fpos)
                    frame_pts.append(f.pts)
                    if hashes is not None:
                        hashes.append(picture_crc(f))
        if not shown:
            raise MediaError(f"{self.path}: no frame of the video stream could be decoded")
        if len(set(shown)) != len(shown):
            raise MediaError(f"{self.path}: a packet decoded to several frames; unsupported")
        frame_packet = np.array(shown, np.int64)
        if any(t is None for t in frame_pts) or any(
            b < a for a, b in itertools.pairwise(frame_pts)  # type: ignore[operator]
        ):
            stream = p.demux.stream
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            fpts, stamps = synthesize_pts(len(shown), Fraction(rate), tb), "synthesized"
        else:
            fpts, stamps = np.array(frame_pts, np.int64), "container"
        starts = compute_starts(frame_packet, pkt_pts, pkt_flags)
        index = FrameIndex(pkt_pts, pkt_dts, pkt_pos, pkt_flags, frame_packet, fpts, starts, tb,
                           "decode", stamps, damaged=state.damaged)
        index.validate()
        if hashes is None:
            return index
        unstable = self.unstable_packets(index, hashes)
        if not (state.errors or unstable):
            return index
        flags = mark_damaged(pkt_flags, frame_packet, starts, state.errors)
        flags[unstable] |= DAMAGED
        index = FrameIndex(pkt_pts, pkt_dts, pkt_pos, flags, frame_packet, fpts, starts, tb,
                           "decode", stamps, damaged=True)
        index.validate()
        return index

    def unstable_packets(self, index: FrameIndex, hashes: list[int]) -> list[int]:
        """Packets of a damaged stream whose picture a decode from its start packet does not
        reproduce exactly.

        The first decode went sequentially from packet 0. This one decodes each group of frames
        that share a start packet from that packet, after a flush, as a seek does, so:

        * damage a decoder does not notice but that carries over a keyframe (a parameter set,
          a reference the keyframe's successors still use) shows as a different picture;
        * damage that leaves parts of a picture unwritten (an HEVC slice header bit flip; no
          error, no corrupt flag) shows too: those parts keep whatever the recycled buffer
          held, which depends on the frames someone still holds, and this decode holds the
          last ``HOLD_FRAMES`` where the first released every frame at once.

        Either way no exact picture exists from that start. Only damaged streams pay for this.
        """
        p, state = self.pipeline, self.state
        first = dict(zip(index.frame_packet.tolist(), hashes, strict=True))
        errors = list(state.errors)
        held: collections.deque[Any] = collections.deque(maxlen=HOLD_FRAMES)
        unstable: set[int] = set()
        p.use_index(index)  # positioning by the index's byte positions and timestamps
        for start in np.unique(index.frame_start).tolist():
            members = set(index.frame_packet[index.frame_start == start].tolist())
            last = max(members)
            try:
                p.position(start)
            except DecodeError:  # the demuxer does not get there again: no decode from there
                unstable |= members
                continue
            for pos, frames in p.feed():
                for f in frames:
                    fpos = frame_pos(f)
                    if fpos is not None and fpos in members:
                        members.discard(fpos)
                        if picture_crc(f) != first[fpos]:
                            unstable.add(fpos)
                    held.append(f)
                # a frame that has not come out well after its packet never will from here
                if not members or pos is None or pos > last + MAX_DELAY:
                    break
            unstable |= members
        p.index = None
        state.errors = errors  # the same errors again, and errors of concealment from a seek
        return sorted(unstable)


__all__ = ["HOLD_FRAMES", "MAX_DELAY", "VERIFY_FRAMES", "IndexBuilder"]
