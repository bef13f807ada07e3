"""YUV4MPEG2 stream headers: ``YUV4MPEG2 W160 H96 F30000:1001 Ip A1:1 C420jpeg`` + ``\\n``.

The format in one paragraph: a text header line (space-separated tagged fields), then for each
frame a ``FRAME`` line (optionally with parameters) and the frame's planes, raw, 8 bits per
sample, Y then Cb then Cr (or Y alone), rows packed without padding. Every frame has the same
size, and every frame is a keyframe.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from phast.errors import CannotHandle, MediaError

MAGIC = b"YUV4MPEG2 "
FRAME = b"FRAME"
MAX_HEADER = 4096  #: longest header line accepted (FFmpeg's limit is 1024 bytes)
MAX_FRAME_HEADER = 256  #: longest ``FRAME`` line accepted
MAX_SIDE = 32768


@dataclass(frozen=True)
class Layout:
    """How one colourspace tag stores a frame: FFmpeg's pix_fmt, chroma subsampling shifts."""

    pix_fmt: str
    shift_x: int  #: chroma width = ceil(width / 2**shift_x)
    shift_y: int
    planes: int  #: 3 (Y, Cb, Cr) or 1 (Y)


#: Supported ``C`` tags (8 bits per sample). The four 4:2:0 tags differ in chroma siting only,
#: which FFmpeg's conversions ignore; so do ours.
COLORSPACES: dict[str, Layout] = {
    "420jpeg": Layout("yuv420p", 1, 1, 3),
    "420mpeg2": Layout("yuv420p", 1, 1, 3),
    "420paldv": Layout("yuv420p", 1, 1, 3),
    "420": Layout("yuv420p", 1, 1, 3),
    "422": Layout("yuv422p", 1, 0, 3),
    "444": Layout("yuv444p", 0, 0, 3),
    "mono": Layout("gray", 0, 0, 1),
}
DEFAULT_COLORSPACE = "420jpeg"  #: a header without a C field (as FFmpeg reads it)
DEFAULT_RATE = Fraction(25)  #: a header without a usable F field (as FFmpeg reads it)


@dataclass(frozen=True)
class Header:
    """The parsed stream header."""

    width: int
    height: int
    rate: Fraction
    colorspace: str
    layout: Layout
    full_range: bool  #: ``XCOLORRANGE=FULL``
    length: int  #: bytes of the header line, newline included: frame 0's marker starts here

    @property
    def pix_fmt(self) -> str:
        return self.layout.pix_fmt

    @property
    def plane_shapes(self) -> tuple[tuple[int, int], ...]:
        """(rows, bytes per row) of each plane."""
        luma = (self.height, self.width)
        if self.layout.planes == 1:
            return (luma,)
        sx, sy = self.layout.shift_x, self.layout.shift_y
        chroma = (-(-self.height >> sy), -(-self.width >> sx))
        return (luma, chroma, chroma)

    @property
    def frame_size(self) -> int:
        return sum(rows * cols for rows, cols in self.plane_shapes)


def parse_header(data: bytes) -> Header:
    """Parse the header at the start of ``data`` (the file's first bytes).

    Raises :class:`CannotHandle` when ``data`` is not YUV4MPEG2 or uses a colourspace this
    backend does not decode (another backend may), and :class:`MediaError` when it is YUV4MPEG2
    but the header is damaged or truncated.
    """
    if not data.startswith(MAGIC):
        raise CannotHandle("not a YUV4MPEG2 file (no 'YUV4MPEG2 ' signature)")
    end = data.find(b"\n", 0, MAX_HEADER)
    if end < 0:
        raise MediaError(f"YUV4MPEG2 header line is not terminated within {MAX_HEADER} bytes "
                         "(truncated or damaged file)")
    try:
        text = data[len(MAGIC) : end].decode("ascii")
    except UnicodeDecodeError as e:
        raise MediaError(f"YUV4MPEG2 header is not ASCII: {e}") from e
    fields: dict[str, str] = {}
    extensions: dict[str, str] = {}
    for token in text.split():
        key, value = token[0], token[1:]
        if key == "X":
            name, _, ext = value.partition("=")
            extensions[name] = ext
        else:
            fields.setdefault(key, value)
    width, height = _side(fields, "W"), _side(fields, "H")
    tag = fields.get("C", DEFAULT_COLORSPACE)
    layout = COLORSPACES.get(tag)
    if layout is None:
        raise CannotHandle(f"YUV4MPEG2 colourspace C{tag} is not supported by phast-y4m "
                           f"(it reads C{', C'.join(COLORSPACES)})")
    return Header(width, height, _rate(fields.get("F", "")), tag, layout,
                  extensions.get("COLORRANGE", "").upper() == "FULL", end + 1)


def _side(fields: dict[str, str], key: str) -> int:
    value = fields.get(key)
    if value is None or not value.isdigit() or not 0 < int(value) <= MAX_SIDE:
        raise MediaError(f"YUV4MPEG2 header: {key}{value or ''} is not a size in 1..{MAX_SIDE}")
    return int(value)


def _rate(value: str) -> Fraction:
    num, _, den = value.partition(":")
    if num.isdigit() and den.isdigit() and int(num) > 0 and int(den) > 0:
        return Fraction(int(num), int(den))
    return DEFAULT_RATE
