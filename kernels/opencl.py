"""The kernels on an OpenCL device through PyOpenCL (``pip install "phast[opencl]"``).

Runs anywhere an OpenCL driver does; the ``opencl`` extra brings PoCL
(``pocl-binary-distribution``), a CPU driver, so it runs on any machine.

Device choice (:func:`choose_device`): ``$PYOPENCL_CTX`` when set (PyOpenCL's own syntax,
e.g. ``0`` or ``0:1``); otherwise the first GPU device of any platform; otherwise the first
device of the PoCL platform; otherwise the first device there is. Pass ``context=`` to
:class:`OpenCLKernels` to choose yourself.

A runner is not thread-safe (kernel arguments are set on shared kernel objects): give each
thread its own.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from phast.errors import KernelUnavailable, MissingDependency

from ._runner import KernelRunner, scalar_arg
from .source import program

__all__ = ["OpenCLKernels", "choose_device", "convert", "default", "downscale", "proxy"]

POCL_PLATFORM = "Portable Computing Language"


def _cl() -> Any:
    try:
        import pyopencl
        import pyopencl.array
    except ImportError as e:
        raise MissingDependency('OpenCL kernels need PyOpenCL and an OpenCL driver: '
                                'pip install "phast[opencl]"') from e
    return pyopencl


def choose_device() -> Any:
    """A ``pyopencl.Context`` on the device described in the module docstring."""
    cl = _cl()
    if os.environ.get("PYOPENCL_CTX"):
        return cl.create_some_context(interactive=False)
    try:
        platforms = cl.get_platforms()
    except cl.Error as e:  # the ICD loader found no platform at all
        raise KernelUnavailable(f"no OpenCL platform: {e}; "
                                'pip install "phast[opencl]" brings PoCL') from e
    found = [(p, d) for p in platforms for d in p.get_devices()]
    if not found:
        raise KernelUnavailable("OpenCL platforms have no device: "
                                + ", ".join(p.name for p in platforms))

    def rank(pd: tuple[Any, Any]) -> int:
        platform, device = pd
        if device.type & cl.device_type.GPU:
            return 0
        return 1 if platform.name == POCL_PLATFORM else 2

    return cl.Context([min(found, key=rank)[1]])


class OpenCLKernels(KernelRunner):
    """The kernels on one OpenCL context (default: :func:`choose_device`).

    Device arrays are ``pyopencl.array.Array``; views with an offset are fine.
    """

    dialect = "opencl"

    def __init__(self, context: Any = None, queue: Any = None) -> None:
        self._cl = _cl()
        self.context = context if context is not None else choose_device()
        self.queue = queue if queue is not None else self._cl.CommandQueue(self.context)
        self._kernels: dict[tuple[str, str, str], Any] = {}

    @property
    def device(self) -> str:
        d = self.context.devices[0]
        return f"{d.platform.name}: {d.name}"

    def to_device(self, array: np.ndarray) -> Any:
        return self._cl.array.to_device(self.queue, np.ascontiguousarray(array))

    def to_host(self, array: Any) -> np.ndarray:
        return array.get(queue=self.queue) if self._is_device(array) else np.asarray(array)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self._cl.array.empty(self.queue, shape, dtype)

    def finish(self) -> None:
        """Wait for every queued kernel (for timing)."""
        self.queue.finish()

    def _is_device(self, array: Any) -> bool:
        return isinstance(array, self._cl.array.Array)

    def _pointer(self, array: Any) -> tuple[Any, int]:
        return array.base_data, array.offset // np.dtype(array.dtype).itemsize

    def _launch(self, name: str, sample: str, pixel: str, grid: tuple[int, int],
                args: list[Any]) -> None:
        key = (name, sample, pixel)
        kernel = self._kernels.get(key)
        if kernel is None:
            prg = _build(self.context, sample, pixel)  # once per variant and runner
            for k in prg.all_kernels():
                self._kernels[(k.function_name, sample, pixel)] = k
            kernel = self._kernels[key]
        kernel(self.queue, grid, None, *map(scalar_arg, args))


def _build(context: Any, sample: str, pixel: str) -> Any:
    cl = _cl()
    return cl.Program(context, program("opencl", sample, pixel)).build()



@functools.lru_cache(maxsize=1)
def default() -> OpenCLKernels:
    """The process's shared runner on :func:`choose_device`'s device (created on first use)."""
    return OpenCLKernels()


def convert(planes: Sequence[Any], layout: str, **options: Any) -> Any:
    """:meth:`OpenCLKernels.convert` on :func:`default`."""
    return default().convert(planes, layout, **options)


def downscale(image: Any, size: Sequence[int], **options: Any) -> Any:
    """:meth:`OpenCLKernels.downscale` on :func:`default`."""
    return default().downscale(image, size, **options)


def proxy(planes: Sequence[Any], layout: str, size: Sequence[int], **options: Any) -> Any:
    """:meth:`OpenCLKernels.proxy` on :func:`default`."""
    return default().proxy(planes, layout, size, **options)
