"""NumPy reference kernels: the definition every device kernel is compared with."""

from __future__ import annotations

import numpy as np


def area_downscale(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Box-filter ``image`` (H x W or H x W x C, integer) down to ``height`` x ``width``.

    Each output pixel is the mean of the input pixels its footprint covers, weighted by the
    covered fraction of each (exact area resampling), rounded half up. Upscaling is refused.
    """
    src_h, src_w = image.shape[:2]
    if not (0 < height <= src_h and 0 < width <= src_w):
        raise ValueError(f"cannot area-downscale {src_w}x{src_h} to {width}x{height}")
    wy = _weights(src_h, height)
    wx = _weights(src_w, width)
    img = image.astype(np.float64)
    out = np.tensordot(wy, img, axes=(1, 0))  # (height, src_w, ...)
    out = np.tensordot(wx, np.moveaxis(out, 1, 0), axes=(1, 0))  # (width, height, ...)
    out = np.moveaxis(out, 0, 1)
    info = np.iinfo(image.dtype) if np.issubdtype(image.dtype, np.integer) else None
    out = np.floor(out + 0.5)
    if info is not None:
        out = np.clip(out, info.min, info.max)
    return out.astype(image.dtype)


def _weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix: row i holds the coverage of each source pixel by output pixel i."""
    scale = src / dst
    w = np.zeros((dst, src))
    for i in range(dst):
        a, b = i * scale, (i + 1) * scale
        lo, hi = int(np.floor(a)), min(src, int(np.ceil(b)))
        for j in range(lo, hi):
            w[i, j] = min(b, j + 1) - max(a, j)
        w[i] /= w[i].sum()
    return w
