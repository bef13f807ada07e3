"""NumPy reference kernels: the definition every device kernel is compared with.

Vectorised float64/int64 NumPy, written from the definitions below and sharing no arithmetic
with the device source, so a device kernel and the reference agreeing means something.

**YUV 4:2:0 → RGB** (:func:`convert`). Stored samples are brought to their value (P010's
``>> 6``), normalised — limited range: ``Y' = (Y - 16·2^(n-8)) / (219·2^(n-8))``,
``C' = (C - 128·2^(n-8)) / (224·2^(n-8))``; full range: ``Y' = Y / (2^n - 1)``,
``C' = (C - 2^(n-1)) / (2^n - 1)`` for ``n``-bit samples — and mapped to R'G'B' by the inverse
of the matrix's RGB → Y'CbCr definition (``Y' = Kr R + Kg G + Kb B``,
``Cb = (B - Y') / (2 (1 - Kb))``, ``Cr = (R - Y') / (2 (1 - Kr))``). Each component is clipped to
[0, 1], scaled to the output's maximum (255 or 65535) and rounded half up.

Chroma siting: nearest sample. Pixel (x, y) takes chroma sample (x // 2, y // 2), i.e. the
chroma of its 2x2 block is replicated (MPEG-2/H.264 default "left" siting read without
interpolation). It is cheap and exact to reproduce on any device; for proxies, which are
area-downscaled right after, interpolation would change nothing visible.

**Area downscale** (:func:`area_downscale`). Output pixel (i, j) of a ``dh`` x ``dw`` picture
covers the source rectangle ``[i·H/dh, (i+1)·H/dh) x [j·W/dw, (j+1)·W/dw)``; its value is the
mean of the source pixels weighted by the area of each that it covers, rounded half up. All of
it is done in integers (coordinates scaled by ``dh``/``dw``), so the result is exact for any
ratio, integer or not, and a device kernel can match it bit for bit.

**Proxy** (:func:`proxy`): ``area_downscale(convert(...))``: the rounded RGB picture,
area-downscaled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .formats import (
    MATRICES,
    RGB_FORMATS,
    ColorRange,
    Matrix,
    RGBFormat,
    check_options,
    check_size,
    picture_size,
)

__all__ = ["area_downscale", "convert", "proxy"]


def convert(planes: Sequence[np.ndarray], layout: str, *, matrix: Matrix = "bt709",
            color_range: ColorRange = "limited", format: RGBFormat = "rgb24") -> np.ndarray:
    """YUV 4:2:0 planes (see :mod:`phast.kernels.formats`) → packed RGB (h, w, 3)."""
    lay = check_options(layout, matrix, color_range, format)
    h, w = picture_size(planes, lay)
    y = planes[0].astype(np.int64) >> lay.shift
    if lay.semi_planar:
        u, v = planes[1][:, 0::2], planes[1][:, 1::2]
    else:
        u, v = planes[1], planes[2]
    u, v = (np.repeat(np.repeat(c.astype(np.int64) >> lay.shift, 2, 0), 2, 1)[:h, :w]
            for c in (u, v))
    n = lay.bits
    if color_range == "limited":
        unit = 1 << (n - 8)
        yn = (y - 16 * unit) / (219 * unit)
        un, vn = ((c - 128 * unit) / (224 * unit) for c in (u, v))
    else:
        top = (1 << n) - 1
        yn = y / top
        un, vn = ((c - (1 << (n - 1))) / top for c in (u, v))
    kr, kb = MATRICES[matrix]
    luma = np.array([kr, 1.0 - kr - kb, kb])
    forward = np.stack([luma,
                        (np.array([0.0, 0.0, 1.0]) - luma) / (2 * (1 - kb)),
                        (np.array([1.0, 0.0, 0.0]) - luma) / (2 * (1 - kr))])
    rgb = np.stack([yn, un, vn], axis=-1) @ np.linalg.inv(forward).T
    dtype = RGB_FORMATS[format]
    top_out = np.iinfo(dtype).max
    return np.floor(np.clip(rgb, 0.0, 1.0) * top_out + 0.5).astype(dtype)


def area_downscale(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Box-filter ``image`` (H x W or H x W x C, unsigned integer) down to ``height`` x ``width``.

    Each output pixel is the mean of the input pixels its footprint covers, weighted by the
    covered fraction of each (exact area resampling), rounded half up. Upscaling is refused
    (:class:`~phast.errors.InvalidArgument`, a ``ValueError``).
    """
    src_h, src_w = image.shape[:2]
    height, width = check_size((src_h, src_w), (height, width))
    wy = _weights(src_h, height)
    wx = _weights(src_w, width)
    # Integer weights and pixels below 2**53 make these float64 products and sums exact.
    img = image.astype(np.float64)
    out = np.tensordot(wy, img, axes=(1, 0))  # (height, src_w, ...)
    out = np.tensordot(wx, np.moveaxis(out, 1, 0), axes=(1, 0))  # (width, height, ...)
    acc = np.moveaxis(out, 0, 1).astype(np.int64)
    total = src_h * src_w  # the sum of each output pixel's weights
    return ((2 * acc + total) // (2 * total)).astype(image.dtype)


def proxy(planes: Sequence[np.ndarray], layout: str, size: tuple[int, int], *,
          matrix: Matrix = "bt709", color_range: ColorRange = "limited",
          format: RGBFormat = "rgb24") -> np.ndarray:
    """A proxy picture: the planes converted to RGB, area-downscaled to ``size`` (h, w)."""
    rgb = convert(planes, layout, matrix=matrix, color_range=color_range, format=format)
    return area_downscale(rgb, *size)


def _weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) integer matrix: the overlap of output pixel i with source pixel j.

    In coordinates scaled by ``dst`` (source pixel j spans ``[j·dst, (j+1)·dst)``, output pixel
    i spans ``[i·src, (i+1)·src)``), so every overlap is an integer and each row sums to ``src``.
    """
    i = np.arange(dst)[:, None]
    j = np.arange(src)[None, :]
    overlap = np.minimum((i + 1) * src, (j + 1) * dst) - np.maximum(i * src, j * dst)
    return np.maximum(overlap, 0).astype(np.float64)
