"""Plain value types shared by the editor side and the workers."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, get_args

#: Output formats ``Clip.frame`` accepts. ``"native"`` gives the decoder's planes untouched
#: (no conversion, rows cropped to the visible width); every other name is a packed format that
#: FFmpeg's swscale converts to, exactly as ``av.VideoFrame.to_ndarray(format=...)`` would.
OutputFormat = Literal["rgb24", "bgr24", "rgba", "bgra", "gray", "gray16le", "rgb48le", "native"]
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)

#: Channels and bytes per sample of each packed output format (native is described per frame).
PACKED_LAYOUT: dict[str, tuple[int, int]] = {
    "rgb24": (3, 1),
    "bgr24": (3, 1),
    "rgba": (4, 1),
    "bgra": (4, 1),
    "gray": (1, 1),
    "gray16le": (1, 2),
    "rgb48le": (3, 2),
}


class Quality(enum.Enum):
    """How faithful a returned frame is to the requested one, best first.

    ``Frame.shows`` is the display index whose pixels a frame holds: the requested index for
    EXACT and PROXY, another frame's for NEAREST, -1 for BLANK.
    """

    EXACT = "exact"  #: the real frame at full resolution, bit-identical to a sequential decode
    PROXY = "proxy"  #: the real frame, downscaled, from the proxy store
    #: another frame's picture: the nearest one phast has (before or after; a proxy, or an
    #: exact frame in memory); ``shows`` says which
    NEAREST = "nearest"
    #: the old name of NEAREST, which showed the keyframe the frame's decode starts from
    KEYFRAME = "nearest"
    BLANK = "blank"  #: a placeholder of the right size: phast has no picture near enough

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value: object) -> Quality | None:
        return cls.NEAREST if value == "keyframe" else None  # reports written before 0.2


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a source, as ``phast info`` lists it."""

    index: int
    type: str
    codec: str
    width: int | None = None
    height: int | None = None
    pix_fmt: str | None = None


@dataclass(frozen=True)
class ClipInfo:
    """What phast knows about the video stream of an open clip.

    Times are stream times in seconds (``pts * time_base``), the same clock as ``Frame.time``;
    ``start_time`` is the time of frame 0, so clip-relative time is ``time - start_time``.
    """

    path: str
    stream: int  #: video stream number as passed to ``phast.open`` (0 = first video stream)
    stream_index: int  #: index of that stream among all of the source's streams
    codec: str
    width: int  #: coded size of frame 0 (a stream may change size mid-way)
    height: int
    pix_fmt: str
    bit_depth: int
    frame_count: int  #: frames of a plain sequential decode, in display order
    time_base: Fraction
    start_time: float
    duration: float
    average_rate: Fraction
    is_vfr: bool
    keyframes: tuple[int, ...]  #: display indices of the frames a decode may start from
    rotation: int  #: display rotation in degrees (metadata only; never applied to pixels)
    index_method: str  #: "demux" (one demux pass, verified) or "decode" (full decode pass)
    timestamps: str  #: "container" or "synthesized" (the source has none)
    streams: tuple[StreamInfo, ...] = field(default=(), repr=False)

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    @property
    def keyframe_interval(self) -> tuple[int, float, int]:
        """(min, mean, max) frames between consecutive keyframes.

        With fewer than two keyframes there is no interval: (n, n, n) with n = frame_count.
        """
        k = self.keyframes
        gaps = [b - a for a, b in itertools.pairwise(k)] or [self.frame_count]
        return (min(gaps), sum(gaps) / len(gaps), max(gaps))
