"""A minimal lossless PNG writer for packed images (``phast frame``): filter 0 and zlib, 8- or
16-bit samples, gray, gray+alpha, RGB or RGBA. No decoder, no dependency beyond numpy."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def _png_chunk(tag: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(tag + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", crc)


def encode_png(array: np.ndarray, level: int = 6) -> bytes:
    """Encode a packed image as PNG: ``(h, w)`` gray or ``(h, w, c)`` with c in 1..4.

    uint8 arrays give 8-bit samples, uint16 arrays (any byte order) 16-bit ones. Filter 0 and
    zlib only: lossless, so decoding the file gives back ``array`` exactly.
    """
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or not 1 <= array.shape[2] <= 4 or array.shape[0] < 1 \
            or array.shape[1] < 1:
        raise ValueError(f"cannot store an array of shape {array.shape} as PNG")
    height, width, channels = array.shape
    if array.dtype.kind != "u" or array.dtype.itemsize not in (1, 2):
        raise ValueError(f"cannot store {array.dtype} samples as PNG")
    depth = 8 * array.dtype.itemsize
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    samples = np.ascontiguousarray(array, dtype=">u2" if depth == 16 else np.uint8)
    rows = samples.reshape(height, width * channels).view(np.uint8)
    raw = np.zeros((height, rows.shape[1] + 1), dtype=np.uint8)  # column 0: filter type 0
    raw[:, 1:] = rows
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"".join((
        b"\x89PNG\r\n\x1a\n",
        _png_chunk(b"IHDR", header),
        _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), level)),
        _png_chunk(b"IEND", b""),
    ))


__all__ = ["encode_png"]
