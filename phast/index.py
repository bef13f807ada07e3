"""The frame index: which packet makes which frame, and where a decode of frame i must start.

Built inside a worker (by the backend: with ``backends.base.index_from_packets`` or
``intra_index``, or as the software backend's ``indexer.IndexBuilder`` does, with
:func:`display_order_from_pts`, :func:`compute_starts` and :func:`synthesize_pts` here), shipped
to the editor as plain arrays, validated there (:meth:`FrameIndex.validate`), stored per
source, and sent back to every worker that opens the clip. The editor's copy is the authority:
a worker never invents frame numbers.

Two orders appear everywhere:

* decode order -- one row per packet of the stream (``pkt_*`` arrays, "positions");
* display order -- one row per frame of a plain sequential decode (``frame_*`` arrays, "indices").

``frame_start[i]`` is the decode position to start decoding from for frame ``i``: the latest
keyframe packet at or before frame i's packet that is not *after* frame i in display order (a
leading picture of an open GOP needs the previous keyframe), or position 0 (decode from the very
start) when no keyframe qualifies.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from .errors import MediaError

NOPTS = np.iinfo(np.int64).min  #: marks a missing timestamp in the int64 arrays
KEY = 1  #: ``pkt_flags`` bit: the packet starts a decodable picture (keyframe)
DISCARD = 2  #: ``pkt_flags`` bit: decoded for reference but not displayed (edit lists)
#: ``pkt_flags`` bit: the frame of this packet lies in a stretch where the decoder reported errors.
#: Its pixels depend on decoder internals (error concealment over recycled buffers), so no exact
#: picture exists: such frames are refused with a DecodeError rather than served.
DAMAGED = 4

_ARRAYS = ("pkt_pts", "pkt_dts", "pkt_pos", "pkt_flags", "frame_packet", "frame_pts", "frame_start")
_DTYPES = {name: np.dtype(np.uint8 if name == "pkt_flags" else np.int64) for name in _ARRAYS}
_MAGIC = b"PHIX2"


@dataclass(eq=False)
class FrameIndex:
    """Per-packet and per-frame tables of one video stream. Arrays are read-only after build."""

    pkt_pts: np.ndarray
    pkt_dts: np.ndarray
    pkt_pos: np.ndarray
    pkt_flags: np.ndarray
    frame_packet: np.ndarray
    frame_pts: np.ndarray
    frame_start: np.ndarray
    time_base: Fraction
    method: str  #: "demux" or "decode"
    timestamps: str  #: "container" or "synthesized"
    #: The decoder reported errors: decode single-threaded, as a plain sequential decode does
    #: (frame threading is bit-exact on valid streams only).
    damaged: bool = False
    frame_times: np.ndarray = field(init=False, repr=False)
    packet_frame: np.ndarray = field(init=False, repr=False)
    _duration: float | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        for name in _ARRAYS:
            arr = np.ascontiguousarray(getattr(self, name), dtype=_DTYPES[name])
            arr.setflags(write=False)
            setattr(self, name, arr)
        tb = float(self.time_base)
        # Frame.time and frame_at() must agree to the bit: both use this one computation.
        self.frame_times = self.frame_pts.astype(np.float64) * tb
        self.packet_frame = np.full(len(self.pkt_pts), -1, dtype=np.int64)
        self.packet_frame[self.frame_packet] = np.arange(len(self.frame_packet))

    # -- sizes and lookups -------------------------------------------------------------------
    @property
    def frame_count(self) -> int:
        return len(self.frame_packet)

    @property
    def packet_count(self) -> int:
        return len(self.pkt_pts)

    def keyframes(self) -> np.ndarray:
        """Display indices of frames that start their own decode (frame_start == own packet)."""
        own = self.frame_start == self.frame_packet
        key = (self.pkt_flags[self.frame_packet] & KEY) != 0
        return np.flatnonzero(own & key)

    def is_damaged(self, i: int) -> bool:
        return bool(self.pkt_flags[self.frame_packet[i]] & DAMAGED)

    def frame_time(self, i: int) -> float:
        return float(self.frame_times[i])

    def index_at(self, seconds: float) -> int:
        """Display index of the frame shown at ``seconds`` (stream time); -1 before frame 0.

        With duplicate timestamps the last frame carrying the time is the one on screen.
        """
        # 1e-9 s absorbs float rounding when a caller passes back a Frame.time it was given.
        return int(np.searchsorted(self.frame_times, seconds + 1e-9, side="right")) - 1

    def frame_duration(self) -> float:
        """Typical display duration of one frame in seconds (median pts step)."""
        if self._duration is None:  # computed once: frame_at() asks on every call
            self._duration = self._median_step()
        return self._duration

    def _median_step(self) -> float:
        if self.frame_count < 2:
            return 0.0
        steps = np.diff(self.frame_times)
        steps = steps[steps > 0]
        return float(np.median(steps)) if len(steps) else 0.0

    def is_vfr(self) -> bool:
        """True when frame intervals vary beyond timestamp rounding.

        Rounding to the time base moves a constant rate by at most one tick (33/34 ms at 29.97 fps
        in a 1 ms time base); anything wider, or a spread of more than 5% of the mean interval, is
        a variable rate.
        """
        if self.frame_count < 3 or self.timestamps != "container":
            return False
        steps = np.diff(self.frame_pts)
        spread = int(steps.max() - steps.min())
        mean = float(steps.mean())
        return spread > 1 or (mean > 0 and spread / mean > 0.05)

    # -- validation (the editor does not trust what a worker built) ---------------------------
    def validate(self) -> None:
        """Raise :class:`MediaError` unless the tables are self-consistent."""
        n_pkt, n_frm = self.packet_count, self.frame_count
        if n_frm == 0:
            raise MediaError("the video stream has no decodable frames")
        for name in ("pkt_dts", "pkt_pos", "pkt_flags"):
            if len(getattr(self, name)) != n_pkt:
                raise MediaError(f"frame index: {name} has the wrong length")
        for name in ("frame_pts", "frame_start"):
            if len(getattr(self, name)) != n_frm:
                raise MediaError(f"frame index: {name} has the wrong length")
        fp, fs = self.frame_packet, self.frame_start
        if fp.min() < 0 or fp.max() >= n_pkt or len(np.unique(fp)) != n_frm:
            raise MediaError("frame index: frame_packet is not a set of packet positions")
        if fs.min() < 0 or np.any(fs > fp):
            raise MediaError("frame index: a frame starts decoding after its own packet")
        starts = fs[fs != 0]
        if len(starts) and np.any((self.pkt_flags[starts] & KEY) == 0):
            raise MediaError("frame index: a decode starts at a packet that is not a keyframe")
        if np.any(self.frame_pts == NOPTS) or np.any(np.diff(self.frame_pts) < 0):
            raise MediaError("frame index: frame timestamps are missing or go backwards")
        if self.method not in ("demux", "decode") or self.timestamps not in (
            "container",
            "synthesized",
        ):
            raise MediaError("frame index: unknown method or timestamp kind")
        if self.time_base <= 0:
            raise MediaError("frame index: time base must be positive")

    # -- plain-data serialisation (IPC and the on-disk store; never pickle) --------------------
    def header(self) -> dict[str, Any]:
        return {
            "time_base": [self.time_base.numerator, self.time_base.denominator],
            "method": self.method,
            "timestamps": self.timestamps,
            "damaged": self.damaged,
            "lengths": {name: len(getattr(self, name)) for name in _ARRAYS},
        }

    def blobs(self) -> list[bytes]:
        return [getattr(self, name).astype(_DTYPES[name].newbyteorder("<")).tobytes()
                for name in _ARRAYS]

    @classmethod
    def from_parts(cls, header: dict[str, Any], blobs: list[bytes]) -> FrameIndex:
        """Rebuild from :meth:`header` and :meth:`blobs`; :class:`MediaError` if malformed."""
        try:
            lengths = header["lengths"]
            if len(blobs) != len(_ARRAYS):
                raise ValueError("wrong number of arrays")
            arrays = {}
            for name, blob in zip(_ARRAYS, blobs, strict=True):
                dt = _DTYPES[name].newbyteorder("<")
                n = int(lengths[name])
                if len(blob) != n * dt.itemsize:
                    raise ValueError(f"{name}: {len(blob)} bytes for {n} items")
                arrays[name] = np.frombuffer(blob, dtype=dt).astype(_DTYPES[name])
            num, den = (int(x) for x in header["time_base"])
            index = cls(
                **arrays,
                time_base=Fraction(num, den),
                method=str(header["method"]),
                timestamps=str(header["timestamps"]),
                damaged=header.get("damaged") is True,
            )
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            raise MediaError(f"malformed frame index: {e}") from e
        index.validate()
        return index

    def to_bytes(self) -> bytes:
        head = json.dumps(self.header()).encode()
        parts = self.blobs()
        return b"".join([_MAGIC, struct.pack("<I", len(head)), head, *parts])

    @classmethod
    def from_bytes(cls, data: bytes) -> FrameIndex:
        if not data.startswith(_MAGIC):
            raise MediaError("not a phast frame index")
        (hlen,) = struct.unpack_from("<I", data, len(_MAGIC))
        start = len(_MAGIC) + 4
        try:
            header = json.loads(data[start : start + hlen])
        except ValueError as e:
            raise MediaError(f"malformed frame index header: {e}") from e
        blobs, pos = [], start + hlen
        for name in _ARRAYS:
            size = int(header["lengths"][name]) * _DTYPES[name].itemsize
            blobs.append(data[pos : pos + size])
            pos += size
        if pos != len(data):
            raise MediaError("frame index has trailing or missing bytes")
        return cls.from_parts(header, blobs)


# -- builders (run in workers, by backends) ---------------------------------------------------
#: Most places a picture's display position can differ from its decode position in a valid
#: stream (H.264/HEVC allow 16 pictures of reordering; twice that, for leading pictures of open
#: GOPs and edit lists).
MAX_REORDER = 32


def display_order_from_pts(pkt_pts: np.ndarray, pkt_flags: np.ndarray) -> np.ndarray | None:
    """Display order derived from packet timestamps alone, or None when they cannot give it.

    Packets flagged DISCARD are not displayed. Packets before the first keyframe, and leading
    pictures of the first keyframe (after it in decode order, before it in display order), are
    dropped, as decoders drop them at the start of a stream. Returns None when a displayed packet
    has no timestamp or two share one, or when timestamps move a picture more than
    :data:`MAX_REORDER` places from its decode position: only a decode pass can order those.
    """
    keys = np.flatnonzero(pkt_flags & KEY)
    if len(keys) == 0:
        return None
    first = int(keys[0])
    shown = np.flatnonzero((pkt_flags & DISCARD) == 0)
    shown = shown[shown >= first]
    pts = pkt_pts[shown]
    if np.any(pts == NOPTS):
        return None
    keep = pts >= pkt_pts[first] if pkt_pts[first] != NOPTS else np.ones(len(pts), bool)
    shown, pts = shown[keep], pts[keep]
    if len(np.unique(pts)) != len(pts):
        return None
    order = shown[np.argsort(pts, kind="stable")]
    # Timestamps that move a picture farther from its place in decode order than any decoder
    # reorders (H.264 and HEVC at most 16 pictures) are damaged, not a B-frame pyramid: a
    # corrupted Matroska timestamp put one frame 31 places late, numbering the frames between
    # one off, which a decode from a later keyframe cannot see (fuzz seed 2, weighted, file 1129).
    displaced = np.abs(np.arange(len(order)) - np.argsort(np.argsort(order)))
    if len(order) and int(displaced.max()) > MAX_REORDER:
        return None
    return order


def compute_starts(frame_packet: np.ndarray, pkt_pts: np.ndarray,
                   pkt_flags: np.ndarray) -> np.ndarray:
    """``frame_start`` for every frame: see the module docstring for the rule.

    "Not after frame i in display order" compares timestamps when every key packet and frame has
    one, and display ranks otherwise (a key packet that shows nothing ranks with the next packet
    in decode order that shows a frame).
    """
    n_pkt, n = len(pkt_flags), len(frame_packet)
    keys = np.flatnonzero(pkt_flags & KEY)
    if len(keys) == 0:
        return np.zeros(n, dtype=np.int64)
    if not np.any(pkt_pts[keys] == NOPTS) and not np.any(pkt_pts[frame_packet] == NOPTS):
        key_rank = pkt_pts[keys].astype(np.float64)
        frame_rank = pkt_pts[frame_packet].astype(np.float64)
    else:
        shown_rank = np.full(n_pkt + 1, np.inf)
        shown_rank[frame_packet] = np.arange(n)
        # rank of a packet = rank of the first shown packet at or after it in decode order
        shown_rank = np.minimum.accumulate(shown_rank[::-1])[::-1]
        key_rank = shown_rank[keys]
        frame_rank = np.arange(n, dtype=np.float64)
    j = np.searchsorted(keys, frame_packet, side="right") - 1
    pending = np.flatnonzero(j >= 0)
    while len(pending):
        bad = pending[key_rank[j[pending]] > frame_rank[pending]]
        j[bad] -= 1
        pending = bad[j[bad] >= 0]
    return np.where(j >= 0, keys[np.maximum(j, 0)], 0).astype(np.int64)


def synthesize_pts(count: int, rate: Fraction, time_base: Fraction) -> np.ndarray:
    """Evenly spaced timestamps for a source that carries none (frame i at i / rate)."""
    step = 1 / (rate * time_base)
    return np.array([round(i * step) for i in range(count)], dtype=np.int64)
