"""What the CUDA and OpenCL runners share: argument checks, colour parameters, launches.

A runner subclass supplies five device primitives (upload, download, allocate, describe an
array as pointer/offset/pitch, launch a kernel over a 2-D grid); everything else — validation,
the colour parameters, which kernel gets which arguments — is here once.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np

from phast.errors import InvalidArgument

from .formats import (
    MATRICES,
    RGB_FORMATS,
    ColorRange,
    Layout,
    Matrix,
    RGBFormat,
    check_options,
    check_size,
    picture_size,
)


def colour_params(layout: Layout, matrix: str, color_range: str, format: str) -> list[float]:
    """The 8 floats ``yuv_pixel`` in the kernel source reads (closed-form BT.601/709 inverse).

    ``[y_offset, c_offset, y_gain, r_cr, g_cb, g_cr, b_cb, top]``, gains already scaled to the
    output's maximum ``top``.
    """
    kr, kb = MATRICES[matrix]
    kg = 1.0 - kr - kb
    n = layout.bits
    top = float(np.iinfo(RGB_FORMATS[format]).max)
    if color_range == "limited":
        unit = float(1 << (n - 8))
        y0, c0, y_span, c_span = 16 * unit, 128 * unit, 219 * unit, 224 * unit
    else:
        y0, c0 = 0.0, float(1 << (n - 1))
        y_span = c_span = float((1 << n) - 1)
    g = top / c_span
    return [y0, c0, top / y_span, 2 * (1 - kr) * g, -2 * kb * (1 - kb) / kg * g,
            -2 * kr * (1 - kr) / kg * g, 2 * (1 - kb) * g, top]


def scalar_arg(arg: Any) -> Any:
    """A Python int/float as the kernel's ``int``/``float`` (both dialects want fixed widths)."""
    if isinstance(arg, bool | int):
        return np.int32(arg)
    if isinstance(arg, float):
        return np.float32(arg)
    return arg


class KernelRunner(abc.ABC):
    """The kernels on one device. Arrays in and out are the device's own array type.

    Inputs may also be numpy arrays (uploaded first). Results stay on the device; call
    :meth:`to_host` (or pass ``host=True``) for numpy. Planes and images need contiguous rows
    (``strides[-1] == itemsize``; RGB pixels packed); rows may be padded (any row pitch).
    """

    #: "cuda" or "opencl".
    dialect: str

    # -- device primitives -------------------------------------------------------------------
    @abc.abstractmethod
    def to_device(self, array: np.ndarray) -> Any:
        """Copy a numpy array to the device."""

    @abc.abstractmethod
    def to_host(self, array: Any) -> np.ndarray:
        """Copy a device array to a numpy array."""

    @abc.abstractmethod
    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """A new contiguous device array."""

    @abc.abstractmethod
    def _is_device(self, array: Any) -> bool: ...

    @abc.abstractmethod
    def _pointer(self, array: Any) -> tuple[Any, int]:
        """(kernel argument for the buffer, element offset of the array's first element)."""

    @abc.abstractmethod
    def _launch(self, name: str, sample: str, pixel: str, grid: tuple[int, int],
                args: list[Any]) -> None:
        """Run kernel ``name`` of variant (sample, pixel) over ``grid`` = (x, y) threads."""

    # -- kernels -------------------------------------------------------------------------------
    def convert(self, planes: Sequence[Any], layout: str, *, matrix: Matrix = "bt709",
                color_range: ColorRange = "limited", format: RGBFormat = "rgb24",
                out: Any = None, host: bool = False) -> Any:
        """YUV 4:2:0 planes → packed RGB (h, w, 3); see :func:`phast.kernels.reference.convert`.

        ``out``, if given, is a device array of that shape and dtype (written and returned).
        """
        lay = check_options(layout, matrix, color_range, format)
        h, w = picture_size(planes, lay)
        out = self._output(out, (h, w, 3), RGB_FORMATS[format])
        args = [*self._plane_args(planes, lay), w, h, *self._array_args(out)]
        self._launch("yuv420_to_rgb", lay.dtype.__name__, out.dtype.name, (w, h),
                     [*args, *colour_params(lay, matrix, color_range, format)])
        return self.to_host(out) if host else out

    def downscale(self, image: Any, size: Sequence[int], *, out: Any = None,
                  host: bool = False) -> Any:
        """Area-downscale an (h, w) or (h, w, c ≤ 4) uint8/uint16 image to ``size`` (h, w).

        Bit-exact with :func:`phast.kernels.reference.area_downscale`.
        """
        shape = tuple(image.shape)
        dtype = np.dtype(image.dtype)
        if len(shape) not in (2, 3) or dtype.name not in ("uint8", "uint16") or (
                len(shape) == 3 and not 1 <= shape[2] <= 4):
            raise InvalidArgument("downscale takes an (h, w) or (h, w, 1..4) uint8/uint16 "
                                  f"image, got {dtype} {shape}")
        channels = shape[2] if len(shape) == 3 else 1
        dh, dw = check_size(shape[:2], size)
        image = self._device(image)
        if channels > 1 and image.strides[1] != channels * dtype.itemsize:
            raise InvalidArgument("downscale needs packed pixels (strides[1] == c * itemsize)")
        out = self._output(out, (dh, dw, *shape[2:]), dtype)
        self._launch("area_downscale", "uint8", dtype.name, (dw, dh),
                     [*self._array_args(image), shape[1], shape[0], channels,
                      *self._array_args(out), dw, dh])
        return self.to_host(out) if host else out

    def proxy(self, planes: Sequence[Any], layout: str, size: Sequence[int], *,
              matrix: Matrix = "bt709", color_range: ColorRange = "limited",
              format: RGBFormat = "rgb24", out: Any = None, host: bool = False) -> Any:
        """Fused :meth:`convert` + :meth:`downscale` to ``size`` (h, w), in one pass.

        Equals ``reference.proxy`` within 1 (the colour matrix is float32 on the device).
        """
        lay = check_options(layout, matrix, color_range, format)
        h, w = picture_size(planes, lay)
        dh, dw = check_size((h, w), size)
        out = self._output(out, (dh, dw, 3), RGB_FORMATS[format])
        args = [*self._plane_args(planes, lay), w, h, *self._array_args(out), dw, dh]
        self._launch("yuv420_proxy", lay.dtype.__name__, out.dtype.name, (dw, dh),
                     [*args, *colour_params(lay, matrix, color_range, format)])
        return self.to_host(out) if host else out

    # -- helpers -------------------------------------------------------------------------------
    def _device(self, array: Any) -> Any:
        if isinstance(array, np.ndarray):
            return self.to_device(np.ascontiguousarray(array))
        if not self._is_device(array):
            raise InvalidArgument(f"{self.dialect} kernels take numpy or {self.dialect} device "
                                  f"arrays, got {type(array).__name__}")
        return array

    def _array_args(self, array: Any) -> list[Any]:
        """[buffer, element offset, row pitch in elements] of a row-contiguous array."""
        itemsize = np.dtype(array.dtype).itemsize
        if array.strides[-1] != itemsize or array.strides[0] % itemsize:
            raise InvalidArgument(f"{self.dialect} kernels need contiguous rows, got strides "
                                  f"{tuple(array.strides)} for {array.dtype}")
        buf, offset = self._pointer(array)
        return [buf, offset, array.strides[0] // itemsize]

    def _plane_args(self, planes: Sequence[Any], lay: Layout) -> list[Any]:
        devs = [self._device(p) for p in planes]
        y, u = self._array_args(devs[0]), self._array_args(devs[1])
        v = self._array_args(devs[2]) if len(devs) == 3 else u
        if v[2] != u[2]:
            raise InvalidArgument("U and V planes must share one row pitch")
        return [*y, *u[:2], *v[:2], u[2], int(lay.semi_planar), lay.shift]

    def _output(self, out: Any, shape: tuple[int, ...], dtype: Any) -> Any:
        if out is None:
            return self.empty(shape, dtype)
        if not self._is_device(out) or tuple(out.shape) != shape or \
                np.dtype(out.dtype) != np.dtype(dtype):
            raise InvalidArgument(f"out must be a {self.dialect} device array {shape} "
                                  f"{np.dtype(dtype)}, got {type(out).__name__} "
                                  f"{getattr(out, 'dtype', '')} {tuple(getattr(out, 'shape', ()))}")
        if shape[2:] and out.strides[1] != shape[2] * np.dtype(dtype).itemsize:
            raise InvalidArgument("out needs packed pixels (strides[1] == channels * itemsize)")
        return out
