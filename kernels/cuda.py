"""The kernels on an NVIDIA GPU through CuPy (``pip install "phast[cuda]"``).

The same source as :mod:`phast.kernels.opencl` (see :mod:`phast.kernels.source`), compiled by
NVRTC through ``cupy.RawModule``; same API. Device arrays are ``cupy.ndarray`` (views and
padded rows are fine); work goes to the current CuPy device and stream.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from phast.errors import KernelUnavailable, MissingDependency

from ._runner import KernelRunner, scalar_arg
from .source import program

__all__ = ["CudaKernels", "convert", "default", "downscale", "proxy"]

BLOCK = (16, 16, 1)


def _cupy() -> Any:
    try:
        import cupy
    except ImportError as e:
        raise MissingDependency('CUDA kernels need CuPy: pip install "phast[cuda]"') from e
    return cupy


def gpu_count() -> int:
    """Number of CUDA devices CuPy sees (0 without a driver or a GPU; MissingDependency
    without CuPy)."""
    cp = _cupy()
    try:
        return int(cp.cuda.runtime.getDeviceCount())
    except cp.cuda.runtime.CUDARuntimeError:
        return 0


class CudaKernels(KernelRunner):
    """The kernels on the current CUDA device."""

    dialect = "cuda"

    def __init__(self) -> None:
        self._cp = _cupy()
        if gpu_count() == 0:
            raise KernelUnavailable("CUDA kernels need an NVIDIA GPU and driver; none found")
        self._functions: dict[tuple[str, str, str], Any] = {}

    @property
    def device(self) -> str:
        props = self._cp.cuda.runtime.getDeviceProperties(self._cp.cuda.Device().id)
        return f"CUDA: {props['name'].decode()}"

    def to_device(self, array: np.ndarray) -> Any:
        return self._cp.asarray(array)

    def to_host(self, array: Any) -> np.ndarray:
        return self._cp.asnumpy(array)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self._cp.empty(shape, dtype=dtype)

    def finish(self) -> None:
        """Wait for every queued kernel (for timing)."""
        self._cp.cuda.get_current_stream().synchronize()

    def _is_device(self, array: Any) -> bool:
        return isinstance(array, self._cp.ndarray)

    def _pointer(self, array: Any) -> tuple[Any, int]:
        return array, 0  # CuPy passes a view's own data pointer

    def _launch(self, name: str, sample: str, pixel: str, grid: tuple[int, int],
                args: list[Any]) -> None:
        key = (name, sample, pixel)
        fn = self._functions.get(key)
        if fn is None:
            fn = self._functions[key] = _module(sample, pixel).get_function(name)
        blocks = ((grid[0] + BLOCK[0] - 1) // BLOCK[0], (grid[1] + BLOCK[1] - 1) // BLOCK[1])
        fn(blocks, BLOCK, tuple(scalar_arg(a) for a in args))


@functools.cache
def _module(sample: str, pixel: str) -> Any:
    return _cupy().RawModule(code=program("cuda", sample, pixel), options=("--std=c++11",))



@functools.lru_cache(maxsize=1)
def default() -> CudaKernels:
    """The process's shared runner on the current CUDA device (created on first use)."""
    return CudaKernels()


def convert(planes: Sequence[Any], layout: str, **options: Any) -> Any:
    """:meth:`CudaKernels.convert` on :func:`default`."""
    return default().convert(planes, layout, **options)


def downscale(image: Any, size: Sequence[int], **options: Any) -> Any:
    """:meth:`CudaKernels.downscale` on :func:`default`."""
    return default().downscale(image, size, **options)


def proxy(planes: Sequence[Any], layout: str, size: Sequence[int], **options: Any) -> Any:
    """:meth:`CudaKernels.proxy` on :func:`default`."""
    return default().proxy(planes, layout, size, **options)
