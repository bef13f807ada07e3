"""``hwbench kernels``: device kernel throughput against the NumPy reference and swscale.

On one synthetic 1080p NV12 picture: NV12 → rgb24 and the 1080p → 360p rgb24 proxy, timed on
an OpenCL device (default: PoCL on the CPU; see :mod:`phast.kernels.opencl`), on CUDA when
CuPy sees a GPU, with the NumPy reference (:mod:`phast.kernels.reference`) and PyAV/swscale
(``reformat``). The swscale proxy is one call that converts and area-downscales together
(:func:`swscale_proxy`), as the fused device kernel does, not a full-size conversion followed
by a downscale. swscale runs with its default threads (PyAV: automatic, one slice per core).
Device times include the host → device upload and the device → host download.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np


def _best(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up: compilation, allocation
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


#: The source's colour as the benchmark's NV12 picture is encoded: BT.709, limited range.
SWS_SOURCE = {"src_colorspace": "ITU709", "src_color_range": "MPEG"}


def synthetic_nv12(size: tuple[int, int] = (1080, 1920)) -> Any:
    """A deterministic NV12 ``av.VideoFrame`` of ``size`` (rows, columns): gradients + noise."""
    import av

    h, w = size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1).astype(np.uint8)
    rgb += rng.integers(0, 8, rgb.shape, dtype=np.uint8)
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="nv12")


def swscale_convert(frame: Any) -> np.ndarray:
    """``frame`` (limited-range BT.709 YUV) as full-size rgb24, one swscale call."""
    return frame.reformat(format="rgb24", **SWS_SOURCE).to_ndarray()


def swscale_proxy(frame: Any, proxy: tuple[int, int]) -> np.ndarray:
    """The rgb24 proxy of ``frame`` at ``proxy`` (rows, columns) in one swscale call: colour
    conversion and AREA downscale together, never a full-size RGB picture in between."""
    return frame.reformat(width=proxy[1], height=proxy[0], format="rgb24",
                          interpolation="AREA", **SWS_SOURCE).to_ndarray()


def run(*, size: tuple[int, int] = (1080, 1920), proxy: tuple[int, int] = (360, 640),
        repeat: int = 5) -> list[dict[str, Any]]:
    from phast.errors import KernelUnavailable, MissingDependency
    from phast.kernels import reference as ref
    from phast.kernels.formats import frame_planes

    frame = synthetic_nv12(size)
    planes = [np.ascontiguousarray(p) for p in frame_planes(frame)]
    rows: list[dict[str, Any]] = []
    systems: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        ("numpy reference", lambda: ref.convert(planes, "nv12"),
         lambda: ref.proxy(planes, "nv12", proxy)),
        ("pyav/swscale (proxy: one call, convert + AREA)", lambda: swscale_convert(frame),
         lambda: swscale_proxy(frame, proxy)),
    ]
    for name in ("opencl", "cuda"):
        try:
            if name == "opencl":
                from phast.kernels.opencl import OpenCLKernels

                k: Any = OpenCLKernels()
            else:
                from phast.kernels.cuda import CudaKernels

                k = CudaKernels()
        except (MissingDependency, KernelUnavailable) as e:
            rows.append({"system": name, "skipped": str(e)})
            continue
        systems.insert(0, (f"{name} ({k.device})",
                           partial(k.convert, planes, "nv12", host=True),
                           partial(k.proxy, planes, "nv12", proxy, host=True)))
    for name, convert, make_proxy in systems:
        tc, tp = _best(convert, repeat), _best(make_proxy, repeat)
        rows.append({"system": name, "convert_ms": tc * 1e3, "convert_fps": 1 / tc,
                     "proxy_ms": tp * 1e3, "proxy_fps": 1 / tp})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'system':<52} {'nv12→rgb24 ms':>14} {'fps':>7} {'→360p proxy ms':>15} {'fps':>7}"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['system']:<52} skipped: {r['skipped']}")
        else:
            lines.append(f"{r['system'][:52]:<52} {r['convert_ms']:>14.1f} {r['convert_fps']:>7.1f}"
                         f" {r['proxy_ms']:>15.1f} {r['proxy_fps']:>7.1f}")
    return "\n".join(lines)
