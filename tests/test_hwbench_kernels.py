"""``hwbench kernels``: what its swscale rows compute (speed is the benchmark's business)."""

from __future__ import annotations

import numpy as np

from hwbench import kernels


def test_the_swscale_proxy_is_one_call_converting_and_downscaling() -> None:
    from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

    from phast.kernels import reference
    from phast.kernels.formats import frame_planes

    frame = kernels.synthetic_nv12((270, 480))
    got = kernels.swscale_proxy(frame, (90, 160))
    assert got.shape == (90, 160, 3) and got.dtype == np.uint8
    source = {"src_colorspace": Colorspace.ITU709, "src_color_range": ColorRange.MPEG}
    one_call = VideoReformatter().reformat(frame, width=160, height=90, format="rgb24",
                                           interpolation=Interpolation.AREA, **source)
    assert np.array_equal(got, one_call.to_ndarray())
    # not a full-size conversion followed by a downscale (swscale rounds those differently)
    full = VideoReformatter().reformat(frame, format="rgb24", **source)
    two_pass = VideoReformatter().reformat(full, width=160, height=90,
                                           interpolation=Interpolation.AREA).to_ndarray()
    assert not np.array_equal(got, two_pass)
    # and it is the same picture as phast's reference proxy (BT.709, limited range)
    planes = [np.ascontiguousarray(p) for p in frame_planes(frame)]
    ref = reference.proxy(planes, "nv12", (90, 160)).astype(np.int16)
    assert np.abs(got.astype(np.int16) - ref).mean() < 4
    assert kernels.swscale_convert(frame).shape == (270, 480, 3)
