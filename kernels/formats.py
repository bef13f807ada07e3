"""The vocabulary every kernel runner and the reference share: layouts, matrices, ranges.

This module is data and argument checks only (numpy-free apart from dtypes): the maths lives in
:mod:`phast.kernels.reference` (the spec) and in the device source (:mod:`phast.kernels.source`).

Planes, for a picture of ``height`` x ``width`` (odd sizes allowed; chroma is
``ch = ceil(height / 2)`` x ``cw = ceil(width / 2)`` samples):

========================  ======================================  ============================
layout                    planes                                  samples
========================  ======================================  ============================
``"yuv420p"``             Y (h, w), U (ch, cw), V (ch, cw)        uint8
``"nv12"``                Y (h, w), UV (ch, 2*cw) interleaved     uint8
``"yuv420p10le"``         Y (h, w), U (ch, cw), V (ch, cw)        uint16, 10 bits LSB-aligned
``"p010le"``              Y (h, w), UV (ch, 2*cw) interleaved     uint16, 10 bits MSB-aligned
========================  ======================================  ============================

Outputs are packed RGB: ``"rgb24"`` (uint8) or ``"rgb48le"`` (uint16, native byte order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from phast.errors import InvalidArgument

Matrix = Literal["bt601", "bt709"]
ColorRange = Literal["limited", "full"]
RGBFormat = Literal["rgb24", "rgb48le"]


@dataclass(frozen=True)
class Layout:
    """How one YUV 4:2:0 layout stores its samples."""

    name: str
    planes: int  # 3 planar, 2 semi-planar (interleaved UV)
    bits: int  # significant bits per sample
    shift: int  # right shift that brings a stored sample to its value (P010: 6)
    dtype: type[np.unsignedinteger[Any]]

    @property
    def semi_planar(self) -> bool:
        return self.planes == 2


LAYOUTS = MappingProxyType({layout.name: layout for layout in (
    Layout("yuv420p", 3, 8, 0, np.uint8),
    Layout("nv12", 2, 8, 0, np.uint8),
    Layout("yuv420p10le", 3, 10, 0, np.uint16),
    Layout("p010le", 2, 10, 6, np.uint16),
)})

#: (Kr, Kb) luma coefficients of each matrix (ITU-R BT.601 and BT.709).
MATRICES = MappingProxyType({"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)})
RANGES = ("limited", "full")
#: Output format -> numpy dtype.
RGB_FORMATS: Mapping[str, type[np.unsignedinteger[Any]]] = MappingProxyType(
    {"rgb24": np.uint8, "rgb48le": np.uint16})


def _choice(kind: str, value: object, table: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in table:
        raise InvalidArgument(f"unknown {kind} {value!r}; expected one of {', '.join(table)}")
    return value


def check_options(layout: str, matrix: str, color_range: str, format: str) -> Layout:
    """Validate the option strings; return the :class:`Layout`."""
    _choice("matrix", matrix, tuple(MATRICES))
    _choice("color range", color_range, RANGES)
    _choice("RGB format", format, tuple(RGB_FORMATS))
    return LAYOUTS[_choice("layout", layout, tuple(LAYOUTS))]


def picture_size(planes: Sequence[Any], layout: Layout) -> tuple[int, int]:
    """(height, width) of the picture the planes hold; InvalidArgument if they do not fit.

    Works on anything with ``shape`` and ``dtype`` (numpy, CuPy and PyOpenCL arrays).
    """
    if len(planes) != layout.planes:
        raise InvalidArgument(f"{layout.name} has {layout.planes} planes, got {len(planes)}")
    for p in planes:
        shape, dtype = getattr(p, "shape", None), getattr(p, "dtype", None)
        if shape is None or len(shape) != 2 or np.dtype(dtype) != np.dtype(layout.dtype):
            raise InvalidArgument(f"{layout.name} planes are 2-D {np.dtype(layout.dtype)} "
                                  f"arrays, got {type(p).__name__} {dtype} {shape}")
    h, w = planes[0].shape
    ch, cw = (h + 1) // 2, (w + 1) // 2
    want = [(ch, 2 * cw)] if layout.semi_planar else [(ch, cw), (ch, cw)]
    got = [tuple(p.shape) for p in planes[1:]]
    if h == 0 or w == 0 or got != want:
        raise InvalidArgument(f"{layout.name} {w}x{h}: chroma planes must be {want}, got {got}")
    return h, w


def check_size(src: tuple[int, int], size: Sequence[int]) -> tuple[int, int]:
    """Validate a downscale target (height, width) against a source (height, width)."""
    try:
        h, w = (int(size[0]), int(size[1]))
    except (TypeError, ValueError, IndexError) as e:
        raise InvalidArgument(f"size must be (height, width), got {size!r}") from e
    if len(size) != 2 or not (0 < h <= src[0] and 0 < w <= src[1]):
        raise InvalidArgument(f"cannot area-downscale {src[1]}x{src[0]} to {size[1]}x{size[0]} "
                              "(height, width): only downscaling to a non-empty size")
    return h, w


def frame_planes(frame: Any) -> list[np.ndarray]:
    """The planes of a PyAV ``VideoFrame`` in one of :data:`LAYOUTS`, as numpy views.

    No copy: the views keep the frame's row padding (their ``strides[0]`` is the line size),
    which the runners accept as a row pitch.
    """
    layout = LAYOUTS[_choice("layout", frame.format.name, tuple(LAYOUTS))]
    itemsize = np.dtype(layout.dtype).itemsize
    out = []
    for i, plane in enumerate(frame.planes):
        rows = np.frombuffer(memoryview(plane), dtype=layout.dtype)
        rows = rows.reshape(plane.height, plane.line_size // itemsize)
        samples = plane.width * (2 if layout.semi_planar and i == 1 else 1)
        out.append(rows[:, :samples])
    return out
