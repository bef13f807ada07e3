"""Proxy pictures: the spec, their size, and what a stored one must look like.

A proxy is one frame downscaled (area filter) to ``height`` rows and stored as one baseline JPEG
(intra-only: any proxy is one read and one small decode, no neighbours). Why 360 rows and JPEG
at quantiser 5, from ``hwbench proxies --sweep`` on the 1080p demo clip (noisy, so a worst
case): 640x360 q5 costs 35.5 KB per frame (64 MB per minute at 30 fps), 1.8 ms to encode and
1.4 ms to decode to rgb24, at 36.3 dB PSNR against the exact downscale; q2 buys 3 dB for 1.8x
the bytes, 960x540 q5 doubles bytes and costs. Editors scrub at 360p-540p; at 360p a 4 GiB
store holds about an hour of such footage.

Only plain arithmetic here: the editor imports this module, and never encodes or decodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidArgument

MAX_PROXY_BYTES = 8 << 20  #: larger compressed pictures are refused as hostile


@dataclass(frozen=True)
class ProxySpec:
    """How proxies are made: ``height`` rows (never upscaled), JPEG quantiser ``quality``."""

    height: int = 360
    quality: int = 5  #: 2 (best) .. 31 (smallest), as ``ffmpeg -q:v``
    #: the builder's decoder may skip what no proxy shows (not part of :attr:`key`: the
    #: pictures differ invisibly, ``hwbench proxies --psnr`` measures by how much)
    shortcuts: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.height, int) and 16 <= self.height <= 4320):
            raise InvalidArgument(f"proxy height must be 16..4320, got {self.height!r}")
        if not (isinstance(self.quality, int) and 2 <= self.quality <= 31):
            raise InvalidArgument(f"proxy quality must be 2..31, got {self.quality!r}")

    @property
    def key(self) -> str:
        """Part of every cache key: a different spec never reads another's entries."""
        return f"jpeg-h{self.height}-q{self.quality}"

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        """Proxy (width, height) for a source size: even, aspect kept, never larger."""
        h = min(self.height, height)
        h -= h % 2
        w = round(width * h / height / 2) * 2
        return max(2, w), max(2, h)


def looks_like_jpeg(data: bytes) -> bool:
    """The cheap structural check the editor can make without decoding."""
    return (16 < len(data) <= MAX_PROXY_BYTES and data[:2] == b"\xff\xd8"
            and data[-2:] == b"\xff\xd9")
