"""The one kernel source, and the dialect preludes that let CUDA and OpenCL compile it.

The body (:data:`BODY`) is plain C written against a handful of macros; a prelude per dialect
defines them, and :func:`program` glues prelude, the sample/pixel types of one variant, and the
body together. Both runners compile exactly this text (CuPy ``RawModule`` with NVRTC, PyOpenCL
``Program``), so the two devices cannot drift apart.

=============  ==============================  ====================================
macro          CUDA                            OpenCL
=============  ==============================  ====================================
``KERNEL``     ``extern "C" __global__ void``  ``__kernel void``
``GLOBAL``     (nothing)                       ``__global``
``DEVICE``     ``__device__ __forceinline__``  ``static inline``
``GID_X/Y``    ``blockIdx * blockDim + tid``   ``get_global_id(0/1)``
``u64``        ``unsigned long long``          ``ulong``
=============  ==============================  ====================================

Kernels (the maths is :mod:`phast.kernels.reference`'s, in float32 for the colour matrix and
exact integers for the area filter):

* ``yuv420_to_rgb``: one thread per output pixel.
* ``area_downscale``: one thread per output pixel, summing its source footprint with integer
  overlap weights (bit-exact with the reference).
* ``yuv420_proxy``: the two fused: each output pixel converts and sums its own footprint, so the
  full-size RGB picture never exists in device memory.

Array arguments come as (pointer, element offset, row pitch in elements): OpenCL cannot offset a
buffer handle, and decoders hand out planes with padded rows.
"""

from __future__ import annotations

from typing import Literal

Dialect = Literal["cuda", "opencl"]

_PRELUDES: dict[str, str] = {
    "cuda": r"""
#define KERNEL extern "C" __global__ void
#define GLOBAL
#define DEVICE __device__ __forceinline__
#define GID_X ((int)(blockIdx.x * blockDim.x + threadIdx.x))
#define GID_Y ((int)(blockIdx.y * blockDim.y + threadIdx.y))
typedef unsigned char uchar;
typedef unsigned short ushort;
typedef unsigned long long u64;
""",
    "opencl": r"""
#define KERNEL __kernel void
#define GLOBAL __global
#define DEVICE static inline
#define GID_X ((int)get_global_id(0))
#define GID_Y ((int)get_global_id(1))
typedef ulong u64;
""",
}

BODY = r"""
/* Colour parameters, precomputed by the host for one (layout, matrix, range, format):
   out = clamp(k[0]*(Y-y0) + ..., 0, k[7]); see phast/kernels/_runner.py:colour_params. */
#define NPARAMS 8

DEVICE int clamp_round(float x, float top)
{
    x = x < 0.0f ? 0.0f : (x > top ? top : x);
    return (int)(x + 0.5f);  /* x >= 0: truncation is floor, so this rounds half up */
}

/* RGB of picture pixel (x, y), nearest-sample chroma (the 2x2 block's). */
DEVICE void yuv_pixel(const GLOBAL SAMPLE_T* yp, int y_pitch,
                      const GLOBAL SAMPLE_T* up, const GLOBAL SAMPLE_T* vp, int c_pitch,
                      int semi, int shift, const float* k, int x, int y, int* rgb)
{
    int ci = (y >> 1) * c_pitch;
    float cb, cr;
    if (semi) {
        ci += 2 * (x >> 1);
        cb = (float)(up[ci] >> shift);
        cr = (float)(up[ci + 1] >> shift);
    } else {
        ci += x >> 1;
        cb = (float)(up[ci] >> shift);
        cr = (float)(vp[ci] >> shift);
    }
    float l = k[2] * ((float)(yp[y * y_pitch + x] >> shift) - k[0]);
    cb -= k[1];
    cr -= k[1];
    rgb[0] = clamp_round(l + k[3] * cr, k[7]);
    rgb[1] = clamp_round(l + k[4] * cb + k[5] * cr, k[7]);
    rgb[2] = clamp_round(l + k[6] * cb, k[7]);
}

/* Half-open footprint [*lo, *hi) of output index i (of dst) in a source of src samples. */
DEVICE void footprint(int i, int src, int dst, int* lo, int* hi)
{
    *lo = (int)(((u64)i * src) / dst);
    *hi = (int)(((u64)(i + 1) * src + dst - 1) / dst);
}

/* Overlap of output i with source j, in units of 1/dst source pixel (exact integers). */
DEVICE int overlap(int i, int j, int src, int dst)
{
    int a = i * src, b = (i + 1) * src, c = j * dst, d = (j + 1) * dst;
    return (b < d ? b : d) - (a > c ? a : c);
}

#define COLOUR_ARGS float k0, float k1, float k2, float k3, float k4, float k5, float k6, float k7
#define LOAD_COLOUR float k[NPARAMS] = {k0, k1, k2, k3, k4, k5, k6, k7}

KERNEL yuv420_to_rgb(const GLOBAL SAMPLE_T* yp, int y_off, int y_pitch,
                     const GLOBAL SAMPLE_T* up, int u_off,
                     const GLOBAL SAMPLE_T* vp, int v_off, int c_pitch,
                     int semi, int shift, int width, int height,
                     GLOBAL PIXEL_T* out, int o_off, int o_pitch, COLOUR_ARGS)
{
    int x = GID_X, y = GID_Y;
    if (x >= width || y >= height) return;
    LOAD_COLOUR;
    int rgb[3];
    yuv_pixel(yp + y_off, y_pitch, up + u_off, vp + v_off, c_pitch, semi, shift, k, x, y, rgb);
    GLOBAL PIXEL_T* o = out + o_off + y * o_pitch + 3 * x;
    o[0] = (PIXEL_T)rgb[0];
    o[1] = (PIXEL_T)rgb[1];
    o[2] = (PIXEL_T)rgb[2];
}

KERNEL yuv420_proxy(const GLOBAL SAMPLE_T* yp, int y_off, int y_pitch,
                    const GLOBAL SAMPLE_T* up, int u_off,
                    const GLOBAL SAMPLE_T* vp, int v_off, int c_pitch,
                    int semi, int shift, int width, int height,
                    GLOBAL PIXEL_T* out, int o_off, int o_pitch, int dst_w, int dst_h,
                    COLOUR_ARGS)
{
    int ox = GID_X, oy = GID_Y;
    if (ox >= dst_w || oy >= dst_h) return;
    LOAD_COLOUR;
    int x0, x1, y0, y1;
    footprint(ox, width, dst_w, &x0, &x1);
    footprint(oy, height, dst_h, &y0, &y1);
    u64 acc[3] = {0, 0, 0};
    int rgb[3];
    for (int y = y0; y < y1; ++y) {
        int wy = overlap(oy, y, height, dst_h);
        for (int x = x0; x < x1; ++x) {
            u64 w = (u64)wy * (u64)overlap(ox, x, width, dst_w);
            yuv_pixel(yp + y_off, y_pitch, up + u_off, vp + v_off, c_pitch, semi, shift, k,
                      x, y, rgb);
            acc[0] += w * (u64)rgb[0];
            acc[1] += w * (u64)rgb[1];
            acc[2] += w * (u64)rgb[2];
        }
    }
    u64 total = (u64)width * (u64)height;
    GLOBAL PIXEL_T* o = out + o_off + oy * o_pitch + 3 * ox;
    for (int c = 0; c < 3; ++c) o[c] = (PIXEL_T)((2 * acc[c] + total) / (2 * total));
}

/* Area downscale of an interleaved image with 1..4 channels of PIXEL_T. */
KERNEL area_downscale(const GLOBAL PIXEL_T* in, int i_off, int i_pitch,
                      int width, int height, int channels,
                      GLOBAL PIXEL_T* out, int o_off, int o_pitch, int dst_w, int dst_h)
{
    int ox = GID_X, oy = GID_Y;
    if (ox >= dst_w || oy >= dst_h) return;
    int x0, x1, y0, y1;
    footprint(ox, width, dst_w, &x0, &x1);
    footprint(oy, height, dst_h, &y0, &y1);
    u64 acc[4] = {0, 0, 0, 0};
    for (int y = y0; y < y1; ++y) {
        int wy = overlap(oy, y, height, dst_h);
        const GLOBAL PIXEL_T* row = in + i_off + y * i_pitch;
        for (int x = x0; x < x1; ++x) {
            u64 w = (u64)wy * (u64)overlap(ox, x, width, dst_w);
            for (int c = 0; c < channels; ++c) acc[c] += w * (u64)row[x * channels + c];
        }
    }
    u64 total = (u64)width * (u64)height;
    GLOBAL PIXEL_T* o = out + o_off + oy * o_pitch + channels * ox;
    for (int c = 0; c < channels; ++c) o[c] = (PIXEL_T)((2 * acc[c] + total) / (2 * total));
}
"""

#: numpy dtype name -> C type name, the same in both dialects (after the prelude).
C_TYPES = {"uint8": "uchar", "uint16": "ushort"}


def program(dialect: Dialect, sample: str, pixel: str) -> str:
    """Full source of one variant: ``sample``/``pixel`` are numpy dtype names (uint8/uint16)."""
    return "".join((
        _PRELUDES[dialect],
        f"#define SAMPLE_T {C_TYPES[sample]}\n#define PIXEL_T {C_TYPES[pixel]}\n",
        BODY,
    ))
