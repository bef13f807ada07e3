"""The software backend: PyAV (FFmpeg) demuxing and decoding on the CPU.

Composed of parts, each in its own module::

    Demuxer (demux.py) -> decoder (decoder.py: injected) -> DecodeRun (decoderun.py) -> write_frame
        \\__ Pipeline (pipeline.py): opens the container, positions, feeds ___/    (avframes.py)
    IndexBuilder (indexer.py): the index and its verification
    StreamState (damage.py): valid / verifying / indexing / damaged -> threading
    Recheck (recheck.py): a second decoder a run feeds, for codecs that need one

The decoder is FFmpeg's (:class:`~phast.backends.decoder.AvDecoder`); the VAAPI and NVDEC
backends inject theirs and keep everything else. This module decides where to decode from:

* **Warm decoder.** The decoder keeps running between requests. A target whose decode chain is
  already being fed (its start keyframe lies between the current run's start and the next packet)
  is reached by decoding forward; only otherwise does the backend seek.
* **Own seeks** to the index's start packet for the target (``Demuxer.seek``), and to an earlier
  keyframe for a frame that could not be decoded from its own (``avoid``).
* **Every frame checked** against the index as it comes out (``DecodeRun``); frames that cannot be
  valid from this start are dropped, never kept.
* **Kept frames.** Decoded frames stay in an LRU bounded by bytes, so stepping backward through
  the frames just decoded costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from av.video.reformatter import VideoReformatter

from phast.errors import DecodeError, FrameOutOfRange, IndexMismatch
from phast.index import FrameIndex

from .avframes import av, frame_planes, write_frame
from .base import Backend, DecodedFrame, ProbeResult
from .damage import DAMAGE_CHECKS, HARMLESS_AFTER_SEEK, StreamState
from .decoder import PRECISE_SKIP, PROXY_DECODE, AvDecoder
from .decoderun import DEFAULT_KEEP_BYTES, BadStart, KeptFrames
from .demux import HEADER_CHECKS, Demuxer
from .indexer import VERIFY_FRAMES, IndexBuilder
from .pipeline import Pipeline
from .recheck import RECHECK_CODECS


class SoftwareBackend(Backend):
    """PyAV decoding on the CPU with frame threading. Options: ``threads`` (0 = auto),
    ``keep_bytes`` (decoded frames kept for backward stepping), ``recheck`` (default True:
    HEVC frames are served once a second decoder agrees, :mod:`.recheck`; False trades that
    check for half the decoding of frames not seen before).

    Subclasses inject another decoder through :meth:`make_decoder` (hardware backends).
    """

    name = "software"
    device = "cpu"
    #: whether this backend's decoder is the PyAV one :mod:`.recheck` can follow (subclasses
    #: that decode elsewhere -- a GPU -- have their own checks)
    rechecks: ClassVar[bool] = True

    @classmethod
    def probe(cls) -> ProbeResult:
        return ProbeResult(True, details={"pyav": av.__version__,
                                          "ffmpeg": ".".join(map(str, av.ffmpeg_version_info))
                                          if isinstance(av.ffmpeg_version_info, tuple)
                                          else str(av.ffmpeg_version_info)})

    def __init__(self, path: str, *, stream: int, options: Mapping[str, Any],
                 progress: Callable[[], None]) -> None:
        self._path = path
        self._skip_nonref = bool(options.get("skip_nonref", True))
        self._reformatter = VideoReformatter()
        #: the stream's health (valid / verifying / indexing / damaged), threading follows
        self._state = StreamState()
        self._kept = KeptFrames(int(options.get("keep_bytes", DEFAULT_KEEP_BYTES)))
        demux = Demuxer(path, stream, progress)
        decoder: AvDecoder | None = None
        try:
            decoder = self.make_decoder(options)
            self._pipeline = Pipeline(demux, decoder, self._state, self._kept, progress)
            # a second decoder checks the serving one's pictures (backends.recheck): codecs known
            # to read memory they never wrote on damaged input; on by default (an editor that
            # trusts its files may turn it off), never for a proxies-only session
            self._pipeline.rechecks = (self.rechecks and bool(options.get("recheck", True))
                                       and decoder.cc.name in RECHECK_CODECS
                                       and not decoder.proxy_decode)
        except BaseException:
            if decoder is not None:
                decoder.close()
            demux.close()
            raise

    def make_decoder(self, options: Mapping[str, Any]) -> AvDecoder:
        """The decoder this backend injects (called once, from ``__init__``). Proxies only (the
        background builder's session): decoder shortcuts that change a picture invisibly at
        proxy size (``decoder.PROXY_DECODE``); such a session serves no EXACT frame."""
        return AvDecoder(threads=int(options.get("threads", 0)),
                         proxy_decode=bool(options.get("proxy_decode", False)))

    # -- what tests, tools and subclasses read ----------------------------------------------
    @property
    def damage(self) -> tuple[str, str, str] | None:
        """How the stream was found damaged: (check, detail, threading of the decode that found
        it: "frame" or "one"); the check is one of :data:`~phast.backends.damage.DAMAGE_CHECKS`.
        None while the stream is valid."""
        return self._state.damage

    @property
    def _damaged(self) -> bool:
        return self._state.damaged

    @property
    def _frame_threads(self) -> bool:
        """Whether the decoder decodes with frame threads now."""
        return self._pipeline.decoder.frame_threads

    @property
    def _harmless(self) -> int:
        return self._state.harmless

    @property
    def _avoid(self) -> dict[int, int]:
        return self._pipeline.avoid

    @property
    def _index(self) -> FrameIndex | None:
        return self._pipeline.index

    def _drop_kept(self) -> None:
        self._kept.drop()

    def _reset_run(self) -> None:
        """End the current decode run: the next request positions anew."""
        self._pipeline.end_run()

    # -- facts and index --------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        s = self._pipeline.demux.stream
        cc = s.codec_context
        fmt = cc.format
        depth = max((c.bits for c in fmt.components), default=8) if fmt is not None else 8
        rate = s.average_rate or s.guessed_rate
        streams = []
        for st in self._pipeline.demux.container.streams:
            entry: dict[str, Any] = {"index": st.index, "type": st.type,
                                     "codec": st.codec_context.name if st.codec_context else "?"}
            if st.type == "video":
                entry.update(width=st.codec_context.width, height=st.codec_context.height,
                             pix_fmt=st.codec_context.pix_fmt)
            streams.append(entry)
        first = self._kept.first
        codec = getattr(cc.codec, "canonical_name", None) or cc.name  # "av1", not "libdav1d"
        return {
            "codec": codec,
            "width": first.width if first is not None else cc.width,
            "height": first.height if first is not None else cc.height,
            "pix_fmt": first.pix_fmt if first is not None else (cc.pix_fmt or "unknown"),
            "bit_depth": depth,
            "average_rate": [rate.numerator, rate.denominator] if rate else None,
            "rotation": int(first.rotation) if first is not None else 0,
            "stream_index": s.index,
            "streams": streams,
        }

    def build_index(self, *, full_decode: bool = False) -> FrameIndex:
        return IndexBuilder(self._pipeline, self._path).build(full_decode=full_decode)

    def use_index(self, index: FrameIndex) -> None:
        self._pipeline.use_index(index)

    # -- frames -----------------------------------------------------------------------------
    def decode(self, index: int, format: str, out: memoryview) -> DecodedFrame:
        return write_frame(self.av_frame(index), format, out, self._reformatter)

    def av_frame(self, index: int) -> Any:
        """The decoded ``av.VideoFrame`` of display frame ``index`` (kept or decoded now).

        Used inside the worker by proxy building, which downscales it without a conversion.
        """
        self._check_index_current()
        idx = self._index
        if idx is not None and not 0 <= index < idx.frame_count:
            # the contract's range, checked anyway: a re-index may have found fewer frames
            raise FrameOutOfRange(f"{self._path}: frame {index} is not in the stream's "
                                  f"{idx.frame_count} frames")
        if idx is not None and idx.is_damaged(index):
            raise DecodeError(f"{self._path}: frame {index} is damaged in the source (the decoder "
                              "reported errors in its group of pictures); no exact picture exists")
        frame = self._kept.get(index)
        return self._decode_frame(index) if frame is None else frame

    @property
    def _index_stale(self) -> bool:
        """The stream is known damaged and its index is not (it was found outside a request)."""
        return self._state.damaged and self._index is not None and not self._index.damaged

    def _check_index_current(self) -> None:
        """Raise :class:`IndexMismatch` while the stream is known damaged and its index is not.

        Damage found by a decode whose caller cannot re-index (read-ahead, a prefetch) must not
        leave the index of a valid stream serving a damaged one: the next request re-indexes.
        """
        if self._index_stale:
            raise IndexMismatch("the decoder reported damage the index does not mark; re-index "
                                "single-threaded")

    def _decode_frame(self, i: int) -> Any:
        idx = self._index
        if idx is None:
            raise RuntimeError("decode() before build_index()/use_index()")
        if not 0 <= i < idx.frame_count:
            raise IndexError(i)
        p = self._pipeline
        start = self._start_for(i)
        warm = p.reaches(i, start)
        while True:
            if not warm:
                p.position(start).skip_until = self._skip_boundary(i, start)
            warm = False
            try:
                frame = p.run_to(i)
            except BadStart as bad:
                for j in range(bad.first, bad.stop):
                    p.avoid[j] = min(p.avoid.get(j, start), start)
                frame = None
            if frame is not None:
                return frame
            if start == 0:
                raise DecodeError(f"{self._path}: frame {i} cannot be decoded (damaged source?)")
            p.avoid[i] = min(p.avoid.get(i, start), start)
            start = self._start_for(i)

    def _skip_boundary(self, i: int, start: int) -> int:
        """Packets before this position need not be shown: decode them with NONREF skipping.

        Frames no other frame references and that precede the target are pure waste on the way
        to it. The last stretch before the target is decoded in full anyway, as much as the kept
        frames can hold, so stepping backward from the target stays a copy and not a decode.
        """
        decoder = self._pipeline.decoder
        if not self._skip_nonref or self._state.damaged or self._index is None \
                or not decoder.precise_skip:
            return 0
        target = int(self._index.frame_packet[i])
        # before anything is kept, assume 8-bit 4:2:0 at the coded size
        cc = decoder.cc
        frame_bytes = max(1, self._kept.frame_bytes or cc.width * cc.height * 3 // 2)
        window = max(16, self._kept.keep_bytes // frame_bytes)
        return max(start, target - window)

    def prefetch(self, index: int) -> bool:
        idx, p = self._index, self._pipeline
        if self._index_stale:
            return False  # the next request re-indexes (_check_index_current)
        if idx is None or not 0 <= index < idx.frame_count or idx.is_damaged(index):
            return False
        if index in self._kept.frames:
            return True
        if not p.reaches(index, int(idx.frame_start[index])):
            return False
        try:
            return p.run_to(index) is not None
        except BadStart:
            return False

    def advance(self, index: int, *, references_only: bool) -> bool:
        idx, p = self._index, self._pipeline
        if self._index_stale or self._kept.sink is None or idx is None \
                or not 0 <= index < idx.frame_count or idx.is_damaged(index):
            return False
        start = self._start_for(index)
        run = p.run if p.reaches(index, start) else p.position(start)
        assert run is not None
        if references_only and not self._state.damaged and p.decoder.precise_skip:
            # frames that display before the target and nothing references: not decoded
            run.skip_until = max(run.skip_until, int(idx.frame_packet[index]) + 1)
        try:
            p.run_to(index)  # None when the target itself was skipped: that is fine
        except BadStart:
            return False
        return True

    def _start_for(self, i: int) -> int:
        """The index's start packet for frame ``i``, or an earlier keyframe if that one failed."""
        assert self._index is not None
        start = int(self._index.frame_start[i])
        limit = self._pipeline.avoid.get(i)
        if limit is not None and start >= limit:
            keys = self._pipeline.demux.keys
            earlier = keys[keys < limit]
            start = int(earlier[-1]) if len(earlier) else 0
        return start

    def decode_position(self) -> tuple[int, int] | None:
        return self._pipeline.position_now()

    def set_frame_sink(self, sink: Callable[[int, Any], None] | None) -> bool:
        if not self._pipeline.decoder.av_frames:
            return False
        self._kept.sink = sink
        return True

    def close(self) -> None:
        self._pipeline.close()


__all__ = ["DAMAGE_CHECKS", "DEFAULT_KEEP_BYTES", "HARMLESS_AFTER_SEEK", "HEADER_CHECKS",
           "PRECISE_SKIP", "PROXY_DECODE", "VERIFY_FRAMES", "SoftwareBackend", "av",
           "frame_planes", "write_frame"]
