"""The demuxer of the software backend's three parts: the source's container and video stream,
read as packets numbered by decode position.

* **One pass for the index** (:meth:`Demuxer.scan`): every packet's pts, dts, byte position and
  flags, with the demuxer's and parser's complaints and a header check
  (:data:`HEADER_CHECKS`) reported as damage.
* **Packets by position** (:meth:`Demuxer.seek`): never trust a container seek nor a keyframe
  flag. The container is asked to seek near the packet wanted, the landing packet is identified
  by byte position, and packets are skipped (demux only) up to exactly the one wanted; an
  overshoot or an unidentifiable landing tries earlier timestamps, then gives up (the caller
  rewinds from byte 0).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from phast.errors import DecodeError, MediaError, NoVideoStream, SourceNotFound, UnsupportedCodec
from phast.index import DISCARD, KEY, NOPTS, FrameIndex

from .avframes import Tag, av
from .base import open_source
from .damage import logged_errors

#: Bitstream filters that parse a codec's headers (parameter sets, slice headers) without
#: decoding: run over every packet while indexing (see :meth:`Demuxer.header_check`).
HEADER_CHECKS = {"h264": "h264_metadata", "hevc": "hevc_metadata", "av1": "av1_metadata",
                 "mpeg2video": "mpeg2_metadata", "vp9": "vp9_metadata"}

#: Called with (check, detail) when the demux pass finds damage (see ``damage.DAMAGE_CHECKS``).
Found = Callable[[str, str], None]
#: Per packet in decode order: pts, dts, byte position, flags (:meth:`Demuxer.scan`).
Packets = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class Demuxer:
    """Video stream number ``number`` of ``path``, read through the descriptor the editor
    granted (:func:`~phast.backends.base.open_source`)."""

    def __init__(self, path: str, number: int, progress: Callable[[], None]) -> None:
        self.path = path
        self.number = number
        self.progress = progress
        self.container: Any = None
        self.stream: Any = None
        self._packets: Iterator[Any] | None = None
        #: decode position of the next packet :meth:`next_packet` returns
        self.next_pos = 0
        #: nothing was read from the container since it was opened
        self.fresh = False
        self._pos_known = False
        self._pos_order = self._pos_sorted = self.keys = np.zeros(0, np.int64)
        try:
            self._fd = open_source(path)
        except FileNotFoundError as e:
            raise SourceNotFound(f"no such file: {path}") from e
        except OSError as e:
            raise MediaError(f"{path}: cannot be read ({e})") from e

    # -- the container ----------------------------------------------------------------------
    def open(self, **options: Any) -> None:
        """(Re)open the container from byte 0, positioned at packet 0; ``options`` go to
        ``av.open`` (a hardware device). Raises the media errors of ``Backend.__init__``."""
        if self.container is not None:
            self.container.close()
        # FFmpeg's fd: protocol reads the granted descriptor (it dups it, sharing the offset:
        # one container at a time, each from byte 0).
        os.lseek(self._fd, 0, os.SEEK_SET)
        try:
            self.container = av.open("fd:", options={"fd": str(self._fd)},
                                     metadata_errors="ignore", **options)
        except (av.FFmpegError, UnicodeDecodeError, OSError) as e:
            raise MediaError(f"{self.path}: not a readable media file ({e})") from e
        videos = self.container.streams.video
        if len(videos) <= self.number:
            raise NoVideoStream(f"{self.path}: has {len(videos)} video stream(s); asked for "
                                f"video stream {self.number}")
        self.stream = videos[self.number]
        cc = self.stream.codec_context
        if cc is None or not cc.is_decoder:
            codec = cc.name if cc else "unknown"
            raise UnsupportedCodec(f"{self.path}: no decoder for codec {codec!r} in this FFmpeg")
        # Decode only our stream; the demuxer still reads others' bytes but never decodes them.
        for other in self.container.streams:
            if other is not self.stream:
                with contextlib.suppress(AttributeError, ValueError, TypeError):
                    other.discard = type(other.discard).all
        self._packets = None
        self.next_pos = 0
        self.fresh = True

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- the index pass ---------------------------------------------------------------------
    def scan(self, found: Found, *, check_headers: bool = True) -> Packets:
        """Demux every packet of the stream from a fresh container: (pts, dts, pos, flags)
        arrays in decode order. Damage seen on the way is reported to ``found``; headers are
        checked (:meth:`header_check`) while ``check_headers`` and nothing was found.

        A demuxer or parser that logs an error saw a damaged container or bitstream (a Matroska
        element overrunning its parent, cut or inserted bytes): the packets it gives may not be
        the ones a decoder turns into frames one to one, so the stream is indexed as damaged.
        """
        assert self.fresh, "scan() reads from byte 0: open() first"
        self.fresh = False
        pts, dts, pos, flags = [], [], [], []
        damaged = not check_headers

        def report(check: str, detail: str) -> None:
            nonlocal damaged
            damaged = True
            found(check, detail)

        try:
            with logged_errors() as logged:
                headers = self.header_check()
                for n, pkt in enumerate(self.container.demux(self.stream)):
                    if pkt.size == 0:
                        continue
                    if n % 64 == 0:
                        self.progress()
                    pts.append(NOPTS if pkt.pts is None else pkt.pts)
                    dts.append(NOPTS if pkt.dts is None else pkt.dts)
                    pos.append(-1 if pkt.pos is None else pkt.pos)
                    flags.append((KEY if pkt.is_keyframe else 0)
                                 | (DISCARD if pkt.is_discard else 0))
                    if pkt.is_corrupt:
                        report("demuxer", f"packet {n} flagged corrupt")
                    if headers is not None and not damaged:
                        try:
                            headers.filter(pkt)  # last: it takes the packet's data
                        except av.FFmpegError as e:
                            report("headers", f"packet {len(pts) - 1}: {e}")
        except av.FFmpegError as e:
            report("demuxer", str(e))  # a damaged tail: index what could be read
        if logged:
            bsf = HEADER_CHECKS.get(self.stream.codec_context.name)
            ours = [m for m in logged if bsf is not None and m.startswith(bsf + ":")]
            report("headers" if ours else "demuxer", (ours or logged)[0])
        if not pts:
            raise MediaError(f"{self.path}: the video stream has no packets")
        return (np.array(pts, np.int64), np.array(dts, np.int64), np.array(pos, np.int64),
                np.array(flags, np.uint8))

    def header_check(self) -> Any:
        """A bitstream filter that parses every packet's headers (FFmpeg's coded-bitstream
        readers, :data:`HEADER_CHECKS`), or None for other codecs.

        A packet whose headers do not parse (a slice naming a parameter set that does not
        exist) decodes to no frame, and a demux-built index would number every later frame one
        too high -- which a decode from a later keyframe cannot see, and the verified prefix
        does not reach. Such a stream is indexed by decoding. Slice data is not parsed: damage
        there still decodes to a (concealed) frame, found by the decoder's own checks.
        """
        name = HEADER_CHECKS.get(self.stream.codec_context.name)
        if name is None:
            return None
        try:
            return av.BitStreamFilterContext(name, self.stream)
        except (av.FFmpegError, ValueError):  # a build without the filter: no check
            return None

    # -- packets by position ----------------------------------------------------------------
    def use_index(self, index: FrameIndex) -> None:
        """Identify packets by the byte positions of ``index`` (when they are all known and
        distinct; otherwise every seek rewinds)."""
        pos = index.pkt_pos
        self._pos_known = bool(np.all(pos >= 0)) and len(np.unique(pos)) == len(pos)
        if self._pos_known:
            self._pos_order = np.argsort(pos, kind="stable")
            self._pos_sorted = pos[self._pos_order]
        self.keys = np.flatnonzero(index.pkt_flags & KEY)

    @property
    def can_seek(self) -> bool:
        return self._pos_known

    def start(self) -> None:
        """Read from packet 0 of the container just opened."""
        self._packets = self.container.demux(self.stream)
        self.next_pos = 0
        self.fresh = False

    def read(self) -> tuple[int, Any] | None:
        """The next packet to decode, tagged with its decode position (``avframes.Tag``: the
        frames it makes say so), and that position; None at the end of the stream."""
        pkt = self.next_packet()
        if pkt is None:
            return None
        pos = self.next_pos
        pkt.opaque = Tag(pos)
        self.next_pos += 1
        return pos, pkt

    def next_packet(self) -> Any:
        """The next non-empty packet of our stream, or None at the end (damage ends it too)."""
        assert self._packets is not None
        while True:
            try:
                pkt = next(self._packets)
            except (StopIteration, av.FFmpegError):
                return None
            if pkt.size:
                return pkt

    def seek(self, start: int, index: FrameIndex) -> bool:
        """Position the demuxer so that the next packet read is at decode position ``start``
        or before it (then :meth:`skip_to`); False when no container seek lands there."""
        self.fresh = False
        for candidate in self._seek_candidates(start, index):
            try:
                self.container.seek(int(candidate), stream=self.stream, backward=True)
            except av.FFmpegError:
                continue
            self._packets = self.container.demux(self.stream)
            pkt = self.next_packet()
            where = self._identify(pkt) if pkt is not None else None
            if where is not None and where <= start:
                # the landing packet is the first of the stream from here: read it again
                self.next_pos = where
                self._packets = _chain_one(pkt, self._packets)
                return True
        return False

    def skip_to(self, start: int) -> None:
        """Demux (without decoding) until the next packet to read is at ``start``."""
        while self.next_pos < start:
            if self.next_packet() is None:
                raise DecodeError(f"{self.path}: the stream ended before packet {start}")
            self.next_pos += 1
            if self.next_pos % 256 == 0:
                self.progress()

    def _identify(self, pkt: Any) -> int | None:
        """Decode position of a demuxed packet, by byte position; None if unknown."""
        if not self._pos_known or pkt.pos is None or pkt.pos < 0:
            return None
        j = int(np.searchsorted(self._pos_sorted, pkt.pos))
        if j < len(self._pos_sorted) and self._pos_sorted[j] == pkt.pos:
            return int(self._pos_order[j])
        return None

    def _seek_candidates(self, start: int, index: FrameIndex) -> list[int]:
        out = []
        earlier = self.keys[self.keys < start]
        for pos in [start, *(earlier[-2:][::-1].tolist())]:
            ts = index.pkt_dts[pos] if index.pkt_dts[pos] != NOPTS else index.pkt_pts[pos]
            if ts != NOPTS:
                out.append(int(ts))
        return out


def _chain_one(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


__all__ = ["HEADER_CHECKS", "Demuxer", "Found", "Packets"]
