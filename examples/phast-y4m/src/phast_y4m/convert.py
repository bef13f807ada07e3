"""Colour conversion of 8-bit Y'CbCr planes to phast's packed formats, in numpy.

It follows FFmpeg's swscale (what ``av.VideoFrame.to_ndarray`` gives) closely but not bit for
bit; the measured difference is declared as ``Y4MBackend.conversion_tolerance``. Matching rules:

* matrix: BT.601 unless the caller picks BT.709 (YUV4MPEG2 has no matrix field; FFmpeg then uses
  BT.601); range: limited (16-235/240) unless the header says ``XCOLORRANGE=FULL``;
* chroma: with an even height, each chroma sample covers its 2x2 (4:2:0) or 2x1 (4:2:2) block
  (swscale's fast path); with an odd height, swscale takes its general path, which interpolates
  chroma linearly (centred samples) vertically, and horizontally too when the width is odd;
* gray sources are full range: R = G = B = Y; ``gray``/``gray16le`` from Y'CbCr expand the
  limited luma range to the full one.
"""

from __future__ import annotations

import numpy as np

#: (Kr, Kb) luma coefficients of each matrix.
MATRICES: dict[str, tuple[float, float]] = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}

#: Packed RGB formats written, with their channel count (rgba's alpha is opaque).
RGB_CHANNELS: dict[str, int] = {"rgb24": 3, "rgba": 4}


def _linear(c: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Resample ``c`` to ``size`` along ``axis`` linearly, samples centred (as swscale does)."""
    n = c.shape[axis]
    src = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    shape = [1, 1]
    shape[axis] = size
    w = (src - lo).astype(np.float32).reshape(shape)
    return np.take(c, lo, axis) * (1 - w) + np.take(c, hi, axis) * w


def _upsample(chroma: np.ndarray, height: int, width: int) -> np.ndarray:
    """Chroma at full resolution, following swscale's choice of path (module docstring)."""
    rows, cols = chroma.shape
    c = chroma.astype(np.float32)
    general = height % 2 == 1
    if cols != width:
        if general and width % 2 == 1:
            c = _linear(c, width, 1)
        else:
            c = np.repeat(c, -(-width // cols), axis=1)[:, :width]
    if rows != height:
        c = _linear(c, height, 0) if general else np.repeat(c, 2, axis=0)[:height]
    return c


def to_rgb(planes: list[np.ndarray], *, full_range: bool, matrix: str) -> np.ndarray:
    """``(height, width, 3)`` float32 RGB on the 0..255 scale, not yet rounded or clipped."""
    y = planes[0].astype(np.float32)
    if len(planes) == 1:
        return np.repeat(y[:, :, None], 3, axis=2)
    height, width = y.shape
    cb = _upsample(planes[1], height, width) - 128
    cr = _upsample(planes[2], height, width) - 128
    if not full_range:
        y = (y - 16) * np.float32(255 / 219)
        cb *= np.float32(255 / 224)
        cr *= np.float32(255 / 224)
    kr, kb = MATRICES[matrix]
    kg = 1 - kr - kb
    out = np.empty((height, width, 3), np.float32)
    out[..., 0] = y + np.float32(2 * (1 - kr)) * cr
    out[..., 1] = (y - np.float32(2 * kb * (1 - kb) / kg) * cb
                   - np.float32(2 * kr * (1 - kr) / kg) * cr)
    out[..., 2] = y + np.float32(2 * (1 - kb)) * cb
    return out


def to_gray(planes: list[np.ndarray], *, full_range: bool) -> np.ndarray:
    """``(height, width)`` float32 full-range luma on the 0..255 scale."""
    y = planes[0].astype(np.float32)
    if len(planes) == 1 or full_range:
        return y
    return (y - 16) * np.float32(255 / 219)


def _quantize(values: np.ndarray, scale: float, dtype: type[np.generic]) -> np.ndarray:
    top = 65535 if dtype is np.uint16 else 255
    return np.clip(np.floor(values * np.float32(scale) + np.float32(0.5)), 0, top).astype(dtype)


def write_packed(planes: list[np.ndarray], format: str, out: np.ndarray, *, full_range: bool,
                 matrix: str) -> None:
    """Convert ``planes`` into ``out``, shaped ``(h, w)`` or ``(h, w, channels)`` of the format's
    sample type (uint8, or little-endian uint16 for ``gray16le``). ``format`` is one of
    ``gray``, ``gray16le`` and the keys of :data:`RGB_CHANNELS`."""
    if format in ("gray", "gray16le"):
        gray = to_gray(planes, full_range=full_range)
        if format == "gray":
            out[...] = _quantize(gray, 1, np.uint8)
        elif len(planes) == 1:
            out[...] = planes[0].astype(np.uint16) * 257  # 8 to 16 bits, exactly as swscale
        else:
            out[...] = _quantize(gray, 65535 / 255, np.uint16)
        return
    out[..., :3] = _quantize(to_rgb(planes, full_range=full_range, matrix=matrix), 1, np.uint8)
    if RGB_CHANNELS[format] == 4:
        out[..., 3] = 255
