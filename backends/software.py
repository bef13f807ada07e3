"""The software backend: PyAV (FFmpeg) demuxing and decoding on the CPU.

Positioning strategy (why random access is cheap and never wrong):

* **Warm decoder.** The decoder keeps running between requests. A target whose decode chain is
  already being fed (its start keyframe lies between the current run's start and the next packet)
  is reached by decoding forward; only otherwise does the backend seek.
* **Own seeks.** A seek goes to the index's start packet for the target. The container is asked
  to seek near it, then packets are identified by byte position and skipped (demux only) until
  exactly that packet; overshoot or an unidentifiable landing falls back to an earlier timestamp,
  then to a rewind from byte 0.
* **Every frame checked.** Packets are tagged with their decode position (FFmpeg's
  ``copy_opaque``); each decoded frame says which packet made it, and the index says which display
  index that is. Frames must come out in exactly display order once synced; anything else raises
  :class:`~phast.errors.IndexMismatch`. Frames that cannot be valid from this start (leading
  pictures of an open GOP) are dropped, never cached.
* **Kept frames.** Decoded frames stay in an LRU bounded by bytes, so stepping backward through
  the frames just decoded costs nothing.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import zlib
from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction
from typing import Any, ClassVar, NamedTuple

import numpy as np

from phast import avlog
from phast.errors import (
    DecodeError,
    FrameOutOfRange,
    IndexMismatch,
    MediaError,
    MissingDependency,
    NoVideoStream,
    SourceNotFound,
    UnsupportedCodec,
)
from phast.index import (
    DAMAGED,
    DISCARD,
    KEY,
    NOPTS,
    FrameIndex,
    compute_starts,
    display_order_from_pts,
    synthesize_pts,
)
from phast.types import PACKED_LAYOUT

from .base import (
    Backend,
    DecodedFrame,
    ProbeResult,
    SlotTooSmall,
    ceil_bytes,
    open_source,
    write_planes,
)
from .recheck import RECHECK_CODECS, Recheck

try:
    import av
    from av.video.reformatter import VideoReformatter
except ImportError as e:  # pragma: no cover - av is a core dependency
    raise MissingDependency("the software backend needs PyAV: pip install av") from e

#: Frames decoded from the start and compared with a demux-built index before it is trusted.
VERIFY_FRAMES = 48
#: Decoders that apply ``skip_frame`` to exactly the packets sent while it is set (FFmpeg's own
#: frame-threaded decoders copy it per packet). Wrappers with their own pipelines (libdav1d,
#: libvpx) apply it late or early, so they never skip.
PRECISE_SKIP = frozenset({"h264", "hevc", "mpeg1video", "mpeg2video", "mpeg4"})
#: Default bytes of decoded frames kept for backward stepping (per open clip).
DEFAULT_KEEP_BYTES = 96 << 20  # ~30 frames of 1080p 4:2:0: scrubbing ±10 stays a copy
#: The checks that find a damaged stream (:attr:`SoftwareBackend.damage`): the demuxer's or
#: parser's errors, a packet whose headers do not parse (:data:`HEADER_CHECKS`), a later index
#: disagreeing, the decoder's corrupt flag, its error (exception), its damage messages
#: (:func:`phast.avlog.is_damage`), the prefix decoded otherwise by frame threads, a sequential
#: decode disagreeing with the index, a stored index marked damaged, a second decoder holding
#: nothing giving another picture (:mod:`.recheck`).
DAMAGE_CHECKS = frozenset({"demuxer", "headers", "reindex", "decoder-flag", "decoder-error",
                           "decoder-log", "prefix-threads", "recheck", "disagreed", "index"})
#: Decoder options of a session that only makes proxies: no deblocking of pictures nothing
#: references (no drift: references decode exactly), and FFmpeg's non-conforming speed-ups.
#: ~10% less CPU on 1080p H.264; the proxies stay >= 50 dB from exact-then-downscale before
#: JPEG (``hwbench proxies --psnr`` measures the whole proxy against exact-then-downscale).
PROXY_DECODE = {"skip_loop_filter": "noref", "flags2": "+fast"}
#: Bitstream filters that parse a codec's headers (parameter sets, slice headers) without
#: decoding: run over every packet while indexing (see ``SoftwareBackend._header_check``).
HEADER_CHECKS = {"h264": "h264_metadata", "hevc": "hevc_metadata", "av1": "av1_metadata",
                 "mpeg2video": "mpeg2_metadata", "vp9": "vp9_metadata"}
#: Frames held back during the second decode of a damaged stream (see ``_unstable_packets``):
#: the decoder then draws other buffers than in the first decode, whose frames were released.
HOLD_FRAMES = 16
#: Packets after its own that a frame may still come out (reordering delay), when checking a
#: damaged stream's decodes from each start packet.
MAX_DELAY = 16


def _plane_row_bytes(frame: av.VideoFrame, plane: int) -> int:
    """Visible bytes per row of one plane (rows are padded to an alignment in FFmpeg buffers)."""
    fmt = frame.format
    width = frame.planes[plane].width
    if len(frame.planes) == 1:
        return ceil_bytes(fmt.padded_bits_per_pixel * width)
    per_pixel = sum(ceil_bytes(c.bits) for c in fmt.components if c.plane == plane)
    return per_pixel * width


def frame_planes(frame: av.VideoFrame) -> list[np.ndarray]:
    """The visible bytes of each plane as (rows, row bytes) uint8 views, no copy."""
    views = []
    for p, plane in enumerate(frame.planes):
        rows, row_bytes = plane.height, _plane_row_bytes(frame, p)
        if row_bytes > plane.line_size:
            raise MediaError(f"unexpected plane layout for {frame.format.name}")
        buf = np.frombuffer(plane, dtype=np.uint8)
        views.append(np.lib.stride_tricks.as_strided(buf, (rows, row_bytes), (plane.line_size, 1)))
    return views


def write_frame(frame: av.VideoFrame, format: str, out: memoryview,
                reformatter: Any = None) -> DecodedFrame:
    """Convert ``frame`` to ``format`` (swscale, as ``to_ndarray`` does); pack it into ``out``.

    Pass a long-lived ``VideoReformatter``: it keeps its swscale context between frames (same
    parameters, same pixels), where ``frame.reformat`` builds a new one every call (~0.9 ms at
    720p, more than the conversion itself).
    """
    if format == "native":
        src = frame
        itemsize = 2 if max((c.bits for c in frame.format.components), default=8) > 8 else 1
    else:
        channels, itemsize = PACKED_LAYOUT[format]
        needed = frame.width * frame.height * channels * itemsize
        if needed > len(out):
            raise SlotTooSmall(needed)  # before paying for the conversion
        src = (reformatter.reformat(frame, format=format) if reformatter is not None
               else frame.reformat(format=format))
    layouts = write_planes(frame_planes(src), out)
    return DecodedFrame(src.width, src.height, src.format.name, itemsize, layouts, frame.key_frame)


class _Tag:
    """A packet's decode position, attached as FFmpeg opaque data and read back off its frame.

    PyAV keys opaque objects by ``id()``: a distinct object per packet keeps two live packets
    with the same position (interned small ints!) from sharing, and freeing, one key.
    """

    __slots__ = ("pos",)

    def __init__(self, pos: int) -> None:
        self.pos = pos


def _frame_pos(f: Any) -> int | None:
    tag = f.opaque
    return tag.pos if isinstance(tag, _Tag) else None


@contextlib.contextmanager
def _logged_errors() -> Iterator[list[str]]:
    """Collect the FFmpeg messages that report damage (:func:`phast.avlog.is_damage`: ERROR and
    worse, and concealment reports below it) logged in the block.

    Many decoders conceal damage without raising and without flagging the frame corrupt: FFV1
    on a slice CRC mismatch copies the slice from the previous picture, MJPEG leaves undecoded
    blocks as they were in a recycled buffer, H.264 conceals a broken macroblock row. Their
    error messages are the only signal; the same goes for demuxers and parsers reading a
    damaged container.

    In a worker the messages come from :mod:`phast.avlog`'s pipe, read once after the block:
    every thread's, including those written since the last read (a frame thread finishing a
    packet fed earlier, the demuxer reading this packet). Without
    the pipe (a backend used in another process) only this thread's messages can be read
    (PyAV's log callback takes the GIL; a frame thread logging through it while the caller
    holds the GIL and waits for that thread would deadlock), so only single-threaded decoding
    and demuxing may rely on them.
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


def _discard_log() -> None:
    """Forget logged messages: the decoder was flushed or closed, its threads are done."""
    pipe = avlog.installed()
    if pipe is not None:
        pipe.discard()


def _picture_crc(f: Any) -> int:
    """CRC-32 of a decoded frame's visible bytes (row padding excluded: it is never written):
    whether two decodes of the same frame agree, five times cheaper than BLAKE2 at 1080p."""
    crc = 0
    for view in frame_planes(f):
        crc = zlib.crc32(np.ascontiguousarray(view).data, crc)
    return crc


# Messages a decoder logs after starting at a mid-stream keyframe of a valid stream that say
# nothing about the pixels. H.264 "mmco: unref short failure": a memory-management command
# releases a reference picture this decode never had (it precedes the keyframe). A decode from
# the start would release it; either way the picture is gone afterwards, and a keyframe's
# successors do not use it. (Seen on the P-frame after each open-GOP I-frame, x264 open-gop.)
HARMLESS_AFTER_SEEK = frozenset({"h264: mmco: unref short failure"})


class _FrameFacts(NamedTuple):
    """What a decoded frame says about its stream (``describe``), kept instead of the frame."""

    width: int
    height: int
    pix_fmt: str
    rotation: int

    @classmethod
    def of(cls, f: Any) -> _FrameFacts:
        return cls(int(f.width), int(f.height), str(f.format.name),
                   int(getattr(f, "rotation", 0) or 0))


class _BadStart(Exception):
    """Frames ``first`` to ``stop - 1`` cannot be decoded from the current run's start packet.

    A keyframe flag is a container's claim; a non-IDR H.264 "keyframe" may not be a clean
    random-access point. Those frames are then decoded from an earlier start.
    """

    def __init__(self, first: int, stop: int) -> None:
        super().__init__(f"frames {first}..{stop - 1} are not decodable from this start")
        self.first, self.stop = first, stop


class SoftwareBackend(Backend):
    """PyAV decoding on the CPU with frame threading. Options: ``threads`` (0 = auto),
    ``keep_bytes`` (decoded frames kept for backward stepping), ``recheck`` (default True:
    HEVC frames are served once a second decoder agrees, :mod:`.recheck`; False trades that
    check for half the decoding of frames not seen before)."""

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
        self._stream_number = stream
        self._progress = progress
        self._threads = int(options.get("threads", 0))
        self._skip_nonref = bool(options.get("skip_nonref", True))
        self._keep_bytes = int(options.get("keep_bytes", DEFAULT_KEEP_BYTES))
        # proxies only (the background builder's session): decoder shortcuts that change a
        # picture invisibly at proxy size (PROXY_DECODE); such a session serves no EXACT frame
        self._proxy_decode = bool(options.get("proxy_decode", False))
        # backends.recheck on (the default): a codec that can read memory it never wrote is
        # decoded twice until each frame was seen agree; an editor that trusts its files (or
        # its budget more) may turn it off
        self._recheck_option = bool(options.get("recheck", True))
        self._container: Any = None
        try:
            self._fd = open_source(path)
        except FileNotFoundError as e:
            raise SourceNotFound(f"no such file: {path}") from e
        except OSError as e:
            raise MediaError(f"{path}: cannot be read ({e})") from e
        self._damaged = False
        #: how the stream was found damaged: (check, detail, threading of the decode that
        #: found it: "frame" or "one"); the check is one of :data:`DAMAGE_CHECKS`
        self.damage: tuple[str, str, str] | None = None
        self._verifying = False  # decoding the index's verification prefix (single-threaded)
        self._indexing = False  # building an index by decoding (single-threaded)
        self._errors: list[int] = []  # packet positions where the decoder reported errors
        self._harmless = 0  # mid-stream decode calls whose messages were all harmless
        self._prefix_crcs: dict[int, int] | None = None  # pictures of the verified prefix
        try:
            self._open_container()
        except BaseException:
            os.close(self._fd)
            raise
        self._kept: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self._kept_bytes = 0
        self._frame_bytes = 0
        self._reformatter = VideoReformatter()
        self._index: FrameIndex | None = None
        # what the first frame says about the stream (size, pixel format, rotation): plain
        # data, never the frame -- holding a decoded frame changes which buffers the decoder
        # reuses, and the checks that compare two decodes rely on one of them holding nothing
        self._first_frame: _FrameFacts | None = None
        self._avoid: dict[int, int] = {}  # frame -> a start packet it must decode from before
        self._sink: Callable[[int, Any], None] | None = None  # see set_frame_sink

    # -- container and decoder -----------------------------------------------------------
    def _open_container(self) -> None:
        if self._container is not None:
            self._container.close()
        # FFmpeg's fd: protocol reads the granted descriptor (it dups it, sharing the offset:
        # one container at a time, each from byte 0).
        os.lseek(self._fd, 0, os.SEEK_SET)
        try:
            self._container = self._open_av()
        except (av.FFmpegError, UnicodeDecodeError, OSError) as e:
            raise MediaError(f"{self._path}: not a readable media file ({e})") from e
        videos = self._container.streams.video
        if len(videos) <= self._stream_number:
            raise NoVideoStream(
                f"{self._path}: has {len(videos)} video stream(s); asked for video stream "
                f"{self._stream_number}"
            )
        self._stream = videos[self._stream_number]
        cc = self._stream.codec_context
        if cc is None or not cc.is_decoder:
            codec = self._stream.codec_context.name if cc else "unknown"
            raise UnsupportedCodec(f"{self._path}: no decoder for codec {codec!r} in this FFmpeg")
        # Threading is bit-exact with a single-threaded decode on valid streams only. On a
        # damaged one, which frames survive differs with frame threads, and error detection and
        # concealment differ with the number of slice threads (the pixels of a damaged frame
        # would depend on the machine's core count): damaged streams decode on one thread.
        # The index's prefix is verified on one thread too, and an index built by decoding is
        # built on one thread: they are the stream's only checks.
        single = self._damaged or self._verifying or self._indexing
        cc.thread_type = "SLICE" if single else "AUTO"
        cc.thread_count = 1 if single else self._threads
        cc.copy_opaque = True  # every frame says which packet it came from
        # a second decoder checks the serving one's pictures (backends.recheck): codecs known
        # to read memory they never wrote on damaged input; not for a proxies-only session
        self._rechecks = (self.rechecks and self._recheck_option and cc.name in RECHECK_CODECS
                          and not self._proxy_decode)
        if self._proxy_decode:
            cc.options = dict(PROXY_DECODE)
        self._cc = cc
        self._frame_threads = not single
        # Messages are read where they are reliable: always with the worker's pipe, else only
        # on one thread (see _logged_errors).
        self._reads_log = single or avlog.installed() is not None
        # Decode only our stream; the demuxer still reads others' bytes but never decodes them.
        for other in self._container.streams:
            if other is not self._stream:
                with contextlib.suppress(AttributeError, ValueError, TypeError):
                    other.discard = type(other.discard).all
        _discard_log()  # about the closed decoder's runs
        self._reset_run()  # a new container: no decode run is in progress

    def _open_av(self, **kwargs: Any) -> Any:
        """Open the container from the granted descriptor; subclasses add options here
        (hardware acceleration)."""
        return av.open("fd:", options={"fd": str(self._fd)}, metadata_errors="ignore", **kwargs)

    def _decode_packet(self, pkt: Any) -> list[Any]:
        """Feed one tagged packet (None: flush at the end) and return the frames that came out.

        Subclasses that decode elsewhere (a GPU) return objects with the frame attributes this
        class reads: ``opaque``, ``pts``, ``is_corrupt``, ``key_frame``, ``planes``.
        """
        return list(self._cc.decode(pkt))

    def _flush_decoder(self) -> None:
        """Drop the decoder's state before a seek."""
        with contextlib.suppress(av.FFmpegError):
            self._cc.flush_buffers()
        _discard_log()  # about pictures the flush dropped

    def _reset_run(self) -> None:
        self._packets: Any = None  # demux iterator positioned at self._next_pos
        self._next_pos = 0
        self._run_start: int | None = None  # start position of the current decode run
        self._expected = 0  # display index the next valid frame must have
        self._synced = False
        self._eof = False
        self._skip_until = 0  # packets before this position are fed with skip_frame=NONREF
        # Where in this run the decoder reported errors: the latest packet a message may be
        # about, and the latest packet one is surely at or after (frame threads: see
        # _decoder_logged; otherwise the two are equal).
        self._run_error: int | None = None
        self._run_error_min: int | None = None
        # Frames that came out of this run but are not served yet (see _hold): display index ->
        # (frame, its packet); per fed packet whose frame is valid from this start, the highest
        # display index of such packets fed before it; the highest display index come out.
        self._pending: dict[int, tuple[Any, int]] = {}
        self._need: dict[int, int] = {}
        self._fed_max = -1
        self._shown_max = -1
        recheck = getattr(self, "_recheck", None)
        if recheck is not None:
            recheck.close()
        self._recheck: Recheck | None = None  # the second decoder following this run, if any

    def describe(self) -> dict[str, Any]:
        s, cc = self._stream, self._cc
        fmt = cc.format
        depth = max((c.bits for c in fmt.components), default=8) if fmt is not None else 8
        rate = s.average_rate or s.guessed_rate
        streams = []
        for st in self._container.streams:
            entry: dict[str, Any] = {"index": st.index, "type": st.type,
                                     "codec": st.codec_context.name if st.codec_context else "?"}
            if st.type == "video":
                entry.update(width=st.codec_context.width, height=st.codec_context.height,
                             pix_fmt=st.codec_context.pix_fmt)
            streams.append(entry)
        first = self._first_frame
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

    # -- index ----------------------------------------------------------------------------
    def _demux_packets(self) -> tuple[np.ndarray, ...]:
        pts, dts, pos, flags = [], [], [], []
        try:
            # A demuxer or parser that logs an error saw a damaged container or bitstream (a
            # Matroska element overrunning its parent, cut or inserted bytes): the packets it
            # gives may not be the ones a decoder turns into frames one to one, so the stream
            # is indexed as damaged (by decoding, on one thread, twice).
            with _logged_errors() as logged:
                headers = self._header_check()
                for n, pkt in enumerate(self._container.demux(self._stream)):
                    if pkt.size == 0:
                        continue
                    if n % 64 == 0:
                        self._progress()
                    pts.append(NOPTS if pkt.pts is None else pkt.pts)
                    dts.append(NOPTS if pkt.dts is None else pkt.dts)
                    pos.append(-1 if pkt.pos is None else pkt.pos)
                    flags.append((KEY if pkt.is_keyframe else 0)
                                 | (DISCARD if pkt.is_discard else 0))
                    if pkt.is_corrupt:
                        self._found_damage("demuxer", f"packet {n} flagged corrupt")
                    if headers is not None and not self._damaged:
                        try:
                            headers.filter(pkt)  # last: it takes the packet's data
                        except av.FFmpegError as e:
                            self._found_damage("headers", f"packet {len(pts) - 1}: {e}")
        except av.FFmpegError as e:
            self._found_damage("demuxer", str(e))  # a damaged tail: index what could be read
        if logged:
            bsf = HEADER_CHECKS.get(self._cc.name)
            ours = [m for m in logged if bsf is not None and m.startswith(bsf + ":")]
            self._found_damage("headers" if ours else "demuxer", (ours or logged)[0])
        if not pts:
            raise MediaError(f"{self._path}: the video stream has no packets")
        return (np.array(pts, np.int64), np.array(dts, np.int64), np.array(pos, np.int64),
                np.array(flags, np.uint8))

    def _header_check(self) -> Any:
        """A bitstream filter that parses every packet's headers (FFmpeg's coded-bitstream
        readers, :data:`HEADER_CHECKS`), or None for other codecs.

        A packet whose headers do not parse (a slice naming a parameter set that does not
        exist) decodes to no frame, and a demux-built index would number every later frame one
        too high -- which a decode from a later keyframe cannot see, and the verified prefix
        does not reach. Such a stream is indexed by decoding. Slice data is not parsed: damage
        there still decodes to a (concealed) frame, found by the decoder's own checks.
        """
        name = HEADER_CHECKS.get(self._cc.name)
        if name is None:
            return None
        try:
            return av.BitStreamFilterContext(name, self._stream)
        except (av.FFmpegError, ValueError):  # a build without the filter: no check
            return None

    def build_index(self, *, full_decode: bool = False) -> FrameIndex:
        pkt_pts, pkt_dts, pkt_pos, pkt_flags = self._demux_packets()
        tb = self._stream.time_base or Fraction(1, 90000)
        if full_decode:
            # An index built earlier disagreed with a decode from the start: damage the decoder
            # did not report. Index it as a damaged stream (one thread, errors read, twice).
            self._found_damage("reindex", "asked to index by decoding")
        # A damaged stream decodes to fewer frames than it has packets: only decoding can tell.
        trust_demux = not (full_decode or self._damaged)
        order = display_order_from_pts(pkt_pts, pkt_flags) if trust_demux else None
        if order is not None and len(order):
            index = FrameIndex(pkt_pts, pkt_dts, pkt_pos, pkt_flags, order, pkt_pts[order],
                               compute_starts(order, pkt_pts, pkt_flags), tb, "demux", "container")
            try:
                index.validate()
                self.use_index(index)
                self._verify_prefix()
                return index
            except (IndexMismatch, MediaError, DecodeError):
                pass  # timestamps alone do not give the decoder's order: decode it
        try:
            index = self._index_by_decoding(pkt_pts, pkt_dts, pkt_pos, pkt_flags, tb)
        except IndexMismatch:  # the decoder reported errors: index it single-threaded
            index = self._index_by_decoding(pkt_pts, pkt_dts, pkt_pos, pkt_flags, tb)
        self.use_index(index)
        if not self._damaged:
            # The one decode that built the index compared nothing: its prefix gets the same two
            # differently threaded and held decodes as a demux-built index's (fuzz seed 1,
            # weighted, hevc_open_gop file 1650: pixels that depend on which buffers are free).
            try:
                self._verify_prefix()
            except IndexMismatch:
                index = self._index_by_decoding(pkt_pts, pkt_dts, pkt_pos, pkt_flags, tb)
                self.use_index(index)
        return index

    def _verify_prefix(self) -> None:
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
        assert self._index is not None
        last = min(VERIFY_FRAMES, self._index.frame_count) - 1
        self._verifying = True
        self._prefix_crcs = {}
        try:
            self._seek(0)  # a rewind reopens the decoder: single-threaded while verifying
            self._decode_run(last)
        finally:
            self._verifying = False
            self._open_container()  # back to the configured threading
        if not self._frame_threads or self._damaged:
            self._prefix_crcs = None
            return
        try:
            self._seek(0)
            self._decode_run(last)
        finally:
            self._prefix_crcs = None
            self._reset_run()

    def _index_by_decoding(self, pkt_pts: np.ndarray, pkt_dts: np.ndarray, pkt_pos: np.ndarray,
                           pkt_flags: np.ndarray, tb: Fraction) -> FrameIndex:
        """Index by a sequential decode on one thread, reading the decoder's error messages.

        One thread because this decode is the stream's only check: a stream indexed by demuxing
        gets its first frames verified, this one is never compared with anything. Frame threads
        would hide errors the decoder only logs (H.264 "co located POCs unavailable", HEVC
        "Could not find ref"), and a frame's corrupt flag races with its output there.
        """
        self._indexing = True
        try:
            return self._decode_all(pkt_pts, pkt_dts, pkt_pos, pkt_flags, tb)
        finally:
            self._indexing = False
            self._open_container()  # back to the configured threading

    def _decode_all(self, pkt_pts: np.ndarray, pkt_dts: np.ndarray, pkt_pos: np.ndarray,
                    pkt_flags: np.ndarray, tb: Fraction) -> FrameIndex:
        self._index = None
        self._rewind()
        shown: list[int] = []
        frame_pts: list[int | None] = []
        n_pkt = len(pkt_pts)
        self._errors = []
        hashes: list[int] | None = [] if self._damaged else None
        for pos, frames in self._feed_all():
            if pos is not None and pos >= n_pkt:
                break
            for f in frames:
                if f.is_corrupt:
                    if not self._damaged:
                        self._found_damage("decoder-flag", f"packet {_frame_pos(f)}")
                        raise IndexMismatch("the decoder flagged a damaged frame")
                    self._errors.append(_frame_pos(f) or 0)
                fpos = _frame_pos(f)
                if fpos is not None and 0 <= fpos < n_pkt:
                    if self._first_frame is None:
                        self._first_frame = _FrameFacts.of(f)
                    shown.append(fpos)
                    frame_pts.append(f.pts)
                    if hashes is not None:
                        hashes.append(_picture_crc(f))
        if not shown:
            raise MediaError(f"{self._path}: no frame of the video stream could be decoded")
        if len(set(shown)) != len(shown):
            raise MediaError(f"{self._path}: a packet decoded to several frames; unsupported")
        frame_packet = np.array(shown, np.int64)
        if any(p is None for p in frame_pts) or any(
            b < a for a, b in itertools.pairwise(frame_pts)  # type: ignore[operator]
        ):
            rate = self._stream.average_rate or self._stream.guessed_rate or Fraction(25)
            fpts, stamps = synthesize_pts(len(shown), Fraction(rate), tb), "synthesized"
        else:
            fpts, stamps = np.array(frame_pts, np.int64), "container"
        starts = compute_starts(frame_packet, pkt_pts, pkt_flags)
        index = FrameIndex(pkt_pts, pkt_dts, pkt_pos, pkt_flags, frame_packet, fpts, starts, tb,
                           "decode", stamps, damaged=self._damaged)
        index.validate()
        if hashes is None:
            return index
        unstable = self._unstable_packets(index, hashes)
        if not (self._errors or unstable):
            return index
        flags = _mark_damaged(pkt_flags, frame_packet, starts, self._errors)
        flags[unstable] |= DAMAGED
        index = FrameIndex(pkt_pts, pkt_dts, pkt_pos, flags, frame_packet, fpts, starts, tb,
                           "decode", stamps, damaged=True)
        index.validate()
        return index

    def _unstable_packets(self, index: FrameIndex, hashes: list[int]) -> list[int]:
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
        first = dict(zip(index.frame_packet.tolist(), hashes, strict=True))
        errors = list(self._errors)
        held: collections.deque[Any] = collections.deque(maxlen=HOLD_FRAMES)
        unstable: set[int] = set()
        self.use_index(index)  # _seek positions by the index's byte positions and timestamps
        for start in np.unique(index.frame_start).tolist():
            members = set(index.frame_packet[index.frame_start == start].tolist())
            last = max(members)
            try:
                self._seek(start)
            except DecodeError:  # the demuxer does not get there again: no decode from there
                unstable |= members
                continue
            for pos, frames in self._feed_all():
                for f in frames:
                    fpos = _frame_pos(f)
                    if fpos in members:
                        members.discard(fpos)
                        if _picture_crc(f) != first[fpos]:
                            unstable.add(fpos)
                    held.append(f)
                # a frame that has not come out well after its packet never will from here
                if not members or pos is None or pos > last + MAX_DELAY:
                    break
            unstable |= members
        self._index = None
        self._errors = errors  # the same errors again, and errors of concealment from a seek
        return sorted(unstable)

    def use_index(self, index: FrameIndex) -> None:
        if index.damaged and not self._damaged:
            self._found_damage("index", "the stored index marks the stream damaged")
            self._open_container()  # threading is fixed when the decoder opens
        self._index = index
        pos = index.pkt_pos
        self._pos_known = bool(np.all(pos >= 0)) and len(np.unique(pos)) == len(pos)
        if self._pos_known:
            self._pos_order = np.argsort(pos, kind="stable")
            self._pos_sorted = pos[self._pos_order]
        self._keys = np.flatnonzero(index.pkt_flags & KEY)
        #: frames two differently held decodes gave the same picture (see backends.recheck)
        self._stable = np.zeros(index.frame_count, bool)
        self._avoid.clear()
        self._drop_kept()
        self._reset_run()

    # -- packet feeding ---------------------------------------------------------------------
    def _identify(self, pkt: Any) -> int | None:
        """Decode position of a demuxed packet, by byte position; None if unknown."""
        if not self._pos_known or pkt.pos is None or pkt.pos < 0:
            return None
        j = int(np.searchsorted(self._pos_sorted, pkt.pos))
        if j < len(self._pos_sorted) and self._pos_sorted[j] == pkt.pos:
            return int(self._pos_order[j])
        return None

    def _next_packet(self) -> Any:
        """The next non-empty packet of our stream, or None at the end (damage ends it too)."""
        while True:
            try:
                pkt = next(self._packets)
            except (StopIteration, av.FFmpegError):
                return None
            if pkt.size:
                return pkt

    def _rewind(self) -> None:
        self._skip_until = 0
        self._open_container()
        self._packets = self._container.demux(self._stream)
        self._next_pos = 0

    def _feed_all(self) -> Any:
        """Yield (position, decoded frames) feeding every remaining packet, then the flush."""
        while True:
            self._progress()
            pkt = self._next_packet()
            if pkt is None:
                yield None, self._flush_frames()
                return
            pos = self._next_pos
            pkt.opaque = _Tag(pos)
            self._next_pos += 1
            self._fed(pos)
            mode = "NONREF" if pos < self._skip_until else "DEFAULT"
            if mode != self._cc.skip_frame:
                self._cc.skip_frame = mode
            logged: list[str] = []
            try:
                if self._reads_log:
                    with _logged_errors() as logged:
                        frames = self._decode_packet(pkt)
                        self._recheck_feed(pkt, mode)
                else:
                    frames = self._decode_packet(pkt)
                    self._recheck_feed(pkt, mode)
            except av.FFmpegError as e:
                self._decoder_failed(pos, str(e))
                frames = []  # as a sequential decode does: skip the packet, go on
            else:
                if logged:  # concealed: the frames come out, but the decoder saw damage
                    self._decoder_logged(pos, logged)
            yield pos, frames

    def _flush_frames(self) -> list[Any]:
        """The frames still in the decoder at the end of the stream, messages read: frame
        threads finish the last packets during the flush, and log their damage then."""
        logged: list[str] = []
        frames: list[Any] = []
        with contextlib.suppress(av.FFmpegError):
            if self._reads_log:
                with _logged_errors() as logged:
                    frames = self._decode_packet(None)
                    self._recheck_feed(None, "DEFAULT")
            else:
                frames = self._decode_packet(None)
                self._recheck_feed(None, "DEFAULT")
        if logged:
            self._decoder_logged(self._next_pos - 1, logged)  # about one of the last packets
        return frames

    def _fed(self, pos: int) -> None:
        """Packet ``pos`` goes to the decoder: note what frame a picture from it must wait for.

        Output is in display order, so once a frame with display index >= ``_need[pos]`` has
        come out, every packet fed before ``pos`` (that is valid from this start and was not
        skipped) has come out too, flags and all (see :meth:`_hold`).
        """
        idx = self._index
        if idx is None or self._run_start is None or not 0 <= pos < len(idx.packet_frame):
            return
        j = int(idx.packet_frame[pos])
        if j < 0 or idx.frame_start[j] < self._run_start:
            return  # shows nothing, or a leading picture no frame valid from here references
        self._need[pos] = self._fed_max
        self._fed_max = max(self._fed_max, j)

    def _decoder_logged(self, pos: int, messages: list[str]) -> None:
        """The decoder logged errors by the time packet ``pos`` was decoded.

        A decode from the start, the index's own decodes and damaged streams treat them as
        :meth:`_decoder_failed` does. A decode from a mid-stream keyframe goes on: valid
        streams log errors there too, about an open GOP's pictures whose references precede
        the keyframe. Those that cannot change a picture (:data:`HARMLESS_AFTER_SEEK`) are
        ignored; for the others ("Missing reference picture") ``_accept`` refuses the frames
        whose own group of pictures may have seen them.

        Which packet the messages are about: with one thread or slice threads, ``pos`` (they
        are written during the call). With frame threads, a packet still in flight: at most
        ``thread_count`` packets are, and every packet before them has finished, messages
        included, before the call that fed ``pos - 1`` returned (it needed a free thread).
        """
        if self._run_start in (None, 0) or self._damaged:
            self._decoder_failed(pos, messages[0], "decoder-log")
            return
        messages = [m for m in messages if m not in HARMLESS_AFTER_SEEK]
        if not messages:
            self._harmless += 1
            return
        lag = max(1, self._cc.thread_count) + 1 if self._frame_threads else 0
        self._run_error = pos
        self._run_error_min = max(self._run_error_min or 0, pos - lag)

    def _decoder_failed(self, pos: int, why: str, check: str = "decoder-error") -> None:
        """The decoder rejected packet ``pos`` or reported errors while decoding it.

        On a stream not yet known to be damaged, that is news: raise :class:`IndexMismatch`, to
        re-index single-threaded. Otherwise record it (the index marks the frames it touches).
        """
        if not self._damaged:
            self._found_damage(check, f"packet {pos}: {why}")
            self._open_container()
            raise IndexMismatch(f"decoder error ({why}); re-index single-threaded")
        self._errors.append(pos)
        self._run_error = self._run_error_min = pos

    def _seek(self, start: int) -> None:
        """Position the demuxer at packet ``start`` with a flushed decoder."""
        index = self._index
        assert index is not None
        self._reset_run()
        if start == 0 or not self._pos_known:
            self._rewind()
        else:
            if self._damaged:
                # A fresh decoder: a flushed one keeps what it parsed before (HEVC parameter
                # sets), so on a damaged stream its pictures from here would depend on which
                # requests came before; fresh, they are the ones the index checked.
                self._open_container()
            landed = False
            for candidate in self._seek_candidates(start):
                try:
                    self._container.seek(int(candidate), stream=self._stream, backward=True)
                except av.FFmpegError:
                    continue
                self._packets = self._container.demux(self._stream)
                pkt = self._next_packet()
                where = self._identify(pkt) if pkt is not None else None
                if where is not None and where <= start:
                    # the landing packet is the first of the stream from here: read it again
                    self._next_pos = where
                    self._packets = _chain_one(pkt, self._packets)
                    landed = True
                    break
            if not landed:
                self._rewind()
        self._flush_decoder()
        self._skip_to(start)
        self._run_start = start
        self._expected = int(np.flatnonzero(index.frame_start >= start)[0]) if start else 0
        self._start_recheck()

    def _seek_candidates(self, start: int) -> list[int]:
        index = self._index
        assert index is not None
        out = []
        earlier = self._keys[self._keys < start]
        for pos in [start, *(earlier[-2:][::-1].tolist())]:
            ts = index.pkt_dts[pos] if index.pkt_dts[pos] != NOPTS else index.pkt_pts[pos]
            if ts != NOPTS:
                out.append(int(ts))
        return out

    def _skip_to(self, start: int) -> None:
        """Demux (without decoding) until the next packet to read is at ``start``."""
        while self._next_pos < start:
            if self._next_packet() is None:
                raise DecodeError(f"{self._path}: the stream ended before packet {start}")
            self._next_pos += 1
            if self._next_pos % 256 == 0:
                self._progress()

    # -- decoding ---------------------------------------------------------------------------
    def decode(self, index: int, format: str, out: memoryview) -> DecodedFrame:
        return write_frame(self.av_frame(index), format, out, self._reformatter)

    def av_frame(self, index: int) -> Any:
        """The decoded ``av.VideoFrame`` of display frame ``index`` (kept or decoded now).

        Used inside the worker by proxy building, which downscales it without a conversion.
        """
        self._check_index_current()
        if self._index is not None and not 0 <= index < self._index.frame_count:
            # the contract's range, checked anyway: a re-index may have found fewer frames
            raise FrameOutOfRange(f"{self._path}: frame {index} is not in the stream's "
                                  f"{self._index.frame_count} frames")
        if self._index is not None and self._index.is_damaged(index):
            raise DecodeError(f"{self._path}: frame {index} is damaged in the source (the decoder "
                              "reported errors in its group of pictures); no exact picture exists")
        frame = self._kept.get(index)
        if frame is None:
            return self._decode_frame(index)
        self._kept.move_to_end(index)
        return frame

    @property
    def _index_stale(self) -> bool:
        """The stream is known damaged and its index is not (it was found outside a request)."""
        return self._damaged and self._index is not None and not self._index.damaged

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
        start = self._start_for(i)
        warm = self._warm_for(i, start)
        while True:
            if not warm:
                self._seek(start)
                self._skip_until = self._skip_boundary(i, start)
            warm = False
            try:
                frame = self._decode_run(i)
            except _BadStart as bad:
                for j in range(bad.first, bad.stop):
                    self._avoid[j] = min(self._avoid.get(j, start), start)
                frame = None
            if frame is not None:
                return frame
            if start == 0:
                raise DecodeError(f"{self._path}: frame {i} cannot be decoded (damaged source?)")
            self._avoid[i] = min(self._avoid.get(i, start), start)
            start = self._start_for(i)

    def _skip_boundary(self, i: int, start: int) -> int:
        """Packets before this position need not be shown: decode them with NONREF skipping.

        Frames no other frame references and that precede the target are pure waste on the way
        to it. The last stretch before the target is decoded in full anyway, as much as the kept
        frames can hold, so stepping backward from the target stays a copy and not a decode.
        """
        if (not self._skip_nonref or self._damaged or self._index is None
                or self._cc.codec.name not in PRECISE_SKIP):
            return 0
        target = int(self._index.frame_packet[i])
        # before anything is kept, assume 8-bit 4:2:0 at the coded size
        frame_bytes = max(1, self._frame_bytes or self._cc.width * self._cc.height * 3 // 2)
        window = max(16, self._keep_bytes // frame_bytes)
        return max(start, target - window)

    def prefetch(self, index: int) -> bool:
        idx = self._index
        if self._index_stale:
            return False  # the next request re-indexes (_check_index_current)
        if idx is None or not 0 <= index < idx.frame_count or idx.is_damaged(index):
            return False
        if index in self._kept:
            return True
        if not self._warm_for(index, int(idx.frame_start[index])):
            return False
        try:
            return self._decode_run(index) is not None
        except _BadStart:
            return False

    def advance(self, index: int, *, references_only: bool) -> bool:
        idx = self._index
        if self._index_stale or self._sink is None or idx is None \
                or not 0 <= index < idx.frame_count or idx.is_damaged(index):
            return False
        start = self._start_for(index)
        if not self._warm_for(index, start):
            self._seek(start)
        if references_only and not self._damaged and self._cc.codec.name in PRECISE_SKIP:
            # frames that display before the target and nothing references: not decoded
            self._skip_until = max(self._skip_until, int(idx.frame_packet[index]) + 1)
        try:
            self._decode_run(index)  # None when the target itself was skipped: that is fine
        except _BadStart:
            return False
        return True

    def _warm_for(self, i: int, start: int) -> bool:
        """Can the current decode run reach frame ``i`` (start packet ``start``) by going on?

        On a damaged stream only a run from the very start or from the frame's own start packet
        qualifies: those are the decodes the index checked (``_unstable_packets``); a run from an
        earlier keyframe carries decoder state over the damage that no decode compared.
        """
        if i in self._pending:
            return True  # out of this run already, waiting for earlier packets (see _hold)
        run = self._run_start
        if run is None or self._eof or not run <= start <= self._next_pos or i < self._expected:
            return False
        return not self._damaged or run in (0, start)

    def _start_for(self, i: int) -> int:
        """The index's start packet for frame ``i``, or an earlier keyframe if that one failed."""
        assert self._index is not None
        start = int(self._index.frame_start[i])
        limit = self._avoid.get(i)
        if limit is not None and start >= limit:
            earlier = self._keys[self._keys < limit]
            start = int(earlier[-1]) if len(earlier) else 0
        return start

    def _decode_run(self, target: int) -> Any:
        """Feed packets until frame ``target`` may be served (it came out, and so did every
        packet decoded before it: see :meth:`_hold`); None if it came out but may not be served
        from this start, or the stream ends first."""
        idx = self._index
        assert idx is not None and self._run_start is not None
        for pos, frames in self._feed_all():
            for f in frames:
                self._accept(f)
            found = self._release(target, final=pos is None)
            if found is not None:
                return found
            if self._expected > target and target not in self._pending:
                return None  # it came out, but not from a start it may be served from
        self._eof = True
        if self._run_start != 0 and self._expected <= target:
            raise _BadStart(self._expected, target + 1)
        if self._run_start == 0 and self._expected < idx.frame_count:
            self._disagreed()
            raise IndexMismatch(
                f"a sequential decode ended after {self._expected} frames; the index has "
                f"{idx.frame_count}"
            )
        return None

    def _accept(self, f: Any) -> int | None:
        """Check one decoded frame against the index; keep it. Returns its display index."""
        idx = self._index
        assert idx is not None and self._run_start is not None
        pos = _frame_pos(f)
        j = int(idx.packet_frame[pos]) if pos is not None and 0 <= pos < len(
            idx.packet_frame) else -1
        sequential = self._run_start == 0
        if j < 0:
            if sequential or self._synced:
                if sequential:
                    self._disagreed()
                raise IndexMismatch(f"the decoder showed packet {pos}, which the index hides")
            return None
        self._shown_max = max(self._shown_max, j)
        if not sequential and idx.frame_start[j] < self._run_start:
            return None  # a leading picture that needs an earlier keyframe: not valid from here
        if f.is_corrupt and sequential and not self._damaged:
            # Concealed decoder errors: a frame-threaded decode of a damaged stream need not
            # match a sequential one. Re-index and decode single-threaded from now on.
            self._found_damage("decoder-flag", f"frame {j}")
            self._open_container()
            raise IndexMismatch("the decoder flagged a damaged frame; re-index single-threaded")
        if j > self._expected and self._skipped(self._expected, j):
            self._expected = j  # non-reference frames skipped on purpose (see _skip_boundary)
        if j != self._expected:
            if not sequential:
                # Only a decode from the very start defines the truth; from a mid-stream start
                # a skipped frame means the start was not a clean entry point.
                raise _BadStart(self._expected, max(j, self._expected) + 1)
            self._disagreed()
            raise IndexMismatch(f"expected frame {self._expected}, the decoder produced {j}")
        self._synced = True
        self._expected += 1
        own_start = int(idx.frame_start[j])
        # Errors reported in the frame's own group of pictures (from its start packet up to
        # now: a second field or a concealment at output can come after the frame's packet).
        # Errors before its start belong to an earlier group: a keyframe's successors do not
        # reference what precedes it, and on a damaged stream such frames are not served.
        maybe = self._run_error is not None and self._run_error >= own_start
        surely = self._run_error_min is not None and self._run_error_min >= own_start
        if f.is_corrupt and not sequential and not self._damaged:
            self._hold(int(pos))  # pos is known: j >= 0
        if not sequential and (f.is_corrupt or maybe):
            if surely and not self._damaged and own_start > self._run_start:
                # Its group was reached through the one before, so its references were all
                # decoded: the damage is in the group itself.
                self._decoder_failed(int(self._run_error_min or 0), f"errors decoding frame {j}",
                                     "decoder-log")
            # From this start the frame is not trusted; it is decoded from an earlier one.
            self._avoid[j] = min(self._avoid.get(j, self._run_start), self._run_start)
            return None
        if self._first_frame is None and j == 0:
            self._first_frame = _FrameFacts.of(f)
        if self._prefix_crcs is not None:
            self._check_prefix(j, f)
        if self._damaged and not sequential and idx.frame_start[j] != self._run_start:
            return None  # from an earlier start than its own: unchecked (see _warm_for)
        self._pending[j] = (f, pos if pos is not None else -1)
        return j

    def _hold(self, pos: int) -> None:
        """A frame of this run came out flagged corrupt (packet ``pos``): the frames waiting for
        it are not served from this start.

        Why frames wait at all: a decoder flags the picture it concealed, not the pictures that
        reference it, and a B-frame displayed before its forward reference comes out before it
        (H.264: a P-frame with a broken slice is flagged, the B-frames between it and the
        previous P come out first, unflagged, with the concealed rows in their prediction). So
        a frame is served only once every packet decoded before it has come out and been
        checked; until then it is pending. Messages need no wait: they are read when a packet
        finishes decoding, before any picture that references it comes out.
        """
        assert self._run_start is not None
        for j, (_f, p) in list(self._pending.items()):
            if p > pos:
                del self._pending[j]
                self._need.pop(p, None)
                self._avoid[j] = min(self._avoid.get(j, self._run_start), self._run_start)

    def _release(self, target: int | None = None, *, final: bool = False) -> Any:
        """Serve the pending frames whose earlier packets have all come out (all of them at the
        end of the stream): keep them. Returns ``target``'s frame if it is among them."""
        found = None
        for j, (f, p) in list(self._pending.items()):
            if final or self._shown_max >= self._need.get(p, -1):
                confirmed = self._confirmed(j, f, p, final)
                if confirmed is None:
                    continue  # the second decoder has not given this picture yet
                del self._pending[j]
                self._need.pop(p, None)
                if not confirmed:
                    assert self._run_start is not None
                    self._avoid[j] = min(self._avoid.get(j, self._run_start), self._run_start)
                    continue
                if not self._verifying:  # (see _verify_prefix: the first pass keeps nothing)
                    self._keep(j, f)
                    if self._sink is not None and isinstance(f, av.VideoFrame):
                        self._sink(j, f)
                if j == target:
                    found = f
        return found

    def _check_prefix(self, j: int, f: Any) -> None:
        """Record frame ``j``'s picture while verifying; compare it on the threaded pass."""
        assert self._prefix_crcs is not None
        crc = _picture_crc(f)
        if self._verifying:
            self._prefix_crcs[j] = crc
        elif self._prefix_crcs.get(j) == crc:
            self._stable[j] = True  # two decodes, held differently, agree (see recheck)
        elif j in self._prefix_crcs:
            self._found_damage("prefix-threads", f"frame {j}")
            self._open_container()
            raise IndexMismatch(f"frame {j} decodes to other pixels with frame threads than on "
                                "one thread (damage the decoder does not report)")

    # -- the second decoder (backends.recheck) ------------------------------------------------
    def _start_recheck(self) -> None:
        """A run starts: a second decoder follows it while the codec needs one
        (:data:`RECHECK_CODECS`) and frames of the stream are not stable yet."""
        if self._recheck is not None:
            self._recheck.close()
            self._recheck = None
        if (self._rechecks and not self._damaged and not self._verifying and not self._indexing
                and self._prefix_crcs is None and not self._stable.all()):
            self._recheck = Recheck(self._cc)

    def _recheck_feed(self, pkt: Any, mode: str) -> None:
        if self._recheck is not None:
            self._recheck.feed(pkt, mode, _picture_crc, _frame_pos)

    def _confirmed(self, j: int, f: Any, p: int, final: bool) -> bool | None:
        """May frame ``j`` (from packet ``p``) be served from this run? True when it is stable
        or the second decoder gave the same picture; None while that picture is still to come;
        False when it cannot come from this run (the second decoder did not decode ``p``).
        Two pictures that differ are damage no decoder reports: the stream is re-indexed as
        damaged."""
        recheck = self._recheck
        if recheck is None or self._stable[j] or not self._rechecks:
            return True
        crc = recheck.crc(p)
        if crc is None:
            return False if final else None
        recheck.forget(p)
        if crc != _picture_crc(f):
            self._found_damage("recheck", f"frame {j}")
            self._open_container()
            raise IndexMismatch(f"frame {j} decodes to other pixels when the decoder's buffers "
                                "are held otherwise (it read memory it never wrote)")
        self._stable[j] = True
        return True

    def _found_damage(self, check: str, detail: str) -> None:
        """The stream is damaged: from now on it decodes on one thread, with every check of a
        damaged stream. The first finding is kept in :attr:`damage` (what found it, and where).
        Callers reopen the decoder when its threading must change at once."""
        assert check in DAMAGE_CHECKS, check
        if not self._damaged:
            self._damaged = True
            self.damage = (check, detail, "frame" if self._frame_threads else "one")

    def _disagreed(self) -> None:
        """A decode from the very start disagrees with an index that was accepted.

        A demux-built index whose first frames were verified, then contradicted further on (a
        packet that shows no frame, frames in another order), means damage the decoder kept to
        itself: the re-index is single-threaded, with the checks of a damaged stream. While the
        prefix is still being verified, a disagreement only means the timestamps do not give
        the decoder's order.
        """
        if not self._verifying and not self._damaged:
            self._found_damage("disagreed", f"at frame {self._expected}")
            self._open_container()

    def _skipped(self, first: int, stop: int) -> bool:
        """Were frames ``first`` .. ``stop - 1`` all fed with NONREF skipping?"""
        assert self._index is not None
        packets = self._index.frame_packet[first:stop]
        return bool(len(packets)) and int(packets.max()) < self._skip_until

    def decode_position(self) -> tuple[int, int] | None:
        if self._run_start is None or self._eof:
            return None
        return self._run_start, self._next_pos

    def set_frame_sink(self, sink: Callable[[int, Any], None] | None) -> bool:
        self._sink = sink
        return True

    def _keep(self, j: int, f: Any) -> None:
        size = sum(p.buffer_size for p in f.planes)
        self._kept[j] = f
        self._kept_bytes += size
        self._frame_bytes = size
        while self._kept_bytes > self._keep_bytes and len(self._kept) > 1:
            _, old = self._kept.popitem(last=False)
            self._kept_bytes -= sum(p.buffer_size for p in old.planes)

    def _drop_kept(self) -> None:
        self._kept.clear()
        self._kept_bytes = 0

    def close(self) -> None:
        self._drop_kept()
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _mark_damaged(pkt_flags: np.ndarray, frame_packet: np.ndarray, starts: np.ndarray,
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


def _chain_one(first: Any, rest: Any) -> Any:
    yield first
    yield from rest


