"""Device kernels (OpenCL on PoCL; CUDA when a GPU is present) against the NumPy reference, and
the reference against FFmpeg's swscale.

Tolerances (the reference, :mod:`phast.kernels.reference`, is the spec):

* ``convert`` and ``proxy``: max abs difference ≤ 1 per sample, in under 1% of samples (the
  device does the colour matrix in float32; a value within ~1e-4 of a rounding tie may round the
  other way). In practice rgb24 is exact and rgb48le differs by 1 in ~0.1% of samples.
* ``downscale``: bit-exact (integer weights and sums on both sides).
* reference vs swscale (``interpolation=POINT``, i.e. nearest-sample chroma like ours; even
  sizes): max abs difference ≤ 4, mean ≤ 2.5. Measured: max 3 (8-bit) and 4 (10-bit), mean
  0.3 to 2.0; swscale's fast table-driven path comes out 1 to 2 lower in limited range. (With
  ``ACCURATE_RND | FULL_CHR_H_INT`` on random 4:2:0 input it agrees within 1 with no bias, but
  that path places chroma differently on real frames.)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from av.video.reformatter import ColorRange, Colorspace, Interpolation

from phast.errors import InvalidArgument, KernelUnavailable, MissingDependency
from phast.kernels import reference as ref
from phast.kernels.formats import LAYOUTS, frame_planes
from phast.testing.clips import synthetic_picture

pytest_plugins = ["pytester"]

MATRICES = ("bt601", "bt709")
RANGES = ("limited", "full")
SWS_MATRIX = {"bt601": Colorspace.ITU601, "bt709": Colorspace.ITU709}
SWS_RANGE = {"limited": ColorRange.MPEG, "full": ColorRange.JPEG}
SIZE = (64, 96)  # (height, width) of the encoded clips


# -- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["opencl", pytest.param("cuda", marks=pytest.mark.gpu)])
def runner(request: pytest.FixtureRequest) -> Any:
    try:
        if request.param == "opencl":
            from phast.kernels.opencl import OpenCLKernels

            return OpenCLKernels()
        from phast.kernels.cuda import CudaKernels

        return CudaKernels()
    except (MissingDependency, KernelUnavailable) as e:
        pytest.skip(str(e))


def _encode(path: Path, pix_fmt: str) -> av.VideoFrame:
    """Encode two synthetic frames with libx264 in ``pix_fmt``; decode and return the last."""
    h, w = SIZE
    rng = np.random.default_rng(7)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(synthetic_picture(i, w, h, rng), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with av.open(str(path)) as c:
        return list(c.decode(video=0))[-1]


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> dict[int, av.VideoFrame]:
    """Real decoded frames by bit depth: libx264 yuv420p and yuv420p10le."""
    d = tmp_path_factory.mktemp("kernels")
    return {8: _encode(d / "8bit.mp4", "yuv420p"), 10: _encode(d / "10bit.mp4", "yuv420p10le")}


def real_frame(decoded: dict[int, av.VideoFrame], layout: str, odd: bool) -> av.VideoFrame:
    """A decoded frame repacked into ``layout`` (odd: rescaled to 93x61 first).

    swscale repacks even sizes; odd widths are interleaved here, because swscale's p010le
    packer leaves the last chroma pair of an odd-width row at zero.
    """
    frame = decoded[LAYOUTS[layout].bits]
    if not odd:
        return frame.reformat(format=layout)
    frame = frame.reformat(width=93, height=61)
    lay = LAYOUTS[layout]
    if not lay.semi_planar:
        return frame
    y, u, v = frame_planes(frame)
    uv = np.stack([u, v], axis=-1).reshape(u.shape[0], -1)
    out = av.VideoFrame(frame.width, frame.height, layout)
    for plane, samples in zip(out.planes, (y, uv), strict=True):
        rows = np.zeros((plane.height, plane.line_size // samples.itemsize), samples.dtype)
        rows[:, : samples.shape[1]] = samples << lay.shift
        plane.update(rows.tobytes())
    return out


def random_planes(layout: str, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    lay = LAYOUTS[layout]
    rng = np.random.default_rng(seed)
    ch, cw = (h + 1) // 2, (w + 1) // 2
    shapes = [(h, w), (ch, 2 * cw)] if lay.semi_planar else [(h, w), (ch, cw), (ch, cw)]
    return [(rng.integers(0, 1 << lay.bits, s) << lay.shift).astype(lay.dtype) for s in shapes]


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    assert diff.max() <= 1, f"max abs diff {diff.max()}"
    assert np.count_nonzero(diff) <= 0.01 * diff.size, f"{np.count_nonzero(diff)} samples off"


# -- device kernels vs the reference --------------------------------------------------------

@pytest.mark.parametrize("color_range", RANGES)
@pytest.mark.parametrize("matrix", MATRICES)
@pytest.mark.parametrize("layout", tuple(LAYOUTS))
def test_convert_matches_reference(runner: Any, decoded: dict[int, av.VideoFrame], layout: str,
                                   matrix: str, color_range: str) -> None:
    inputs = [frame_planes(real_frame(decoded, layout, odd)) for odd in (False, True)]
    inputs.append(random_planes(layout, 37, 53))
    for planes in inputs:
        for fmt in ("rgb24", "rgb48le"):
            opts: dict[str, Any] = {"matrix": matrix, "color_range": color_range, "format": fmt}
            got = runner.convert(planes, layout, host=True, **opts)
            assert_close(got, ref.convert(planes, layout, **opts))


@pytest.mark.parametrize("color_range", RANGES)
@pytest.mark.parametrize("matrix", MATRICES)
@pytest.mark.parametrize("layout", tuple(LAYOUTS))
def test_proxy_matches_reference(runner: Any, decoded: dict[int, av.VideoFrame], layout: str,
                                 matrix: str, color_range: str) -> None:
    cases = [(frame_planes(real_frame(decoded, layout, False)), (24, 40)),  # 8/3 x 12/5
             (frame_planes(real_frame(decoded, layout, True)), (17, 31)),  # odd, 61/17 x 3
             (random_planes(layout, 37, 53, seed=1), (37, 52))]  # near-identity
    for planes, size in cases:
        opts: dict[str, Any] = {"matrix": matrix, "color_range": color_range}
        got = runner.proxy(planes, layout, size, host=True, **opts)
        assert_close(got, ref.proxy(planes, layout, size, **opts))
    # rgb48le proxies too, once per layout
    planes = cases[1][0]
    assert_close(runner.proxy(planes, layout, (9, 10), format="rgb48le", host=True),
                 ref.proxy(planes, layout, (9, 10), format="rgb48le"))


@pytest.mark.parametrize(("shape", "size"), [
    ((1080, 1920, 3), (360, 640)),  # 3x, the proxy case
    ((101, 77, 3), (30, 41)),  # non-integer both ways
    ((61, 93, 4), (61, 93)),  # identity
    ((9, 7), (1, 1)),  # one output pixel, 2-D
    ((50, 33, 1), (7, 32)),
])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_downscale_is_bit_exact(runner: Any, shape: tuple[int, ...], size: tuple[int, int],
                                dtype: type) -> None:
    rng = np.random.default_rng(sum(shape))
    image: np.ndarray = rng.integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
    got = runner.downscale(image, size, host=True)
    np.testing.assert_array_equal(got, ref.area_downscale(image, *size))


def test_device_views_with_offsets_and_padded_rows(runner: Any) -> None:
    """One device buffer holding a padded NV12 picture; planes are views into it."""
    h, w, pitch = 31, 45, 64
    y, uv = random_planes("nv12", h, w, seed=3)
    packed = np.zeros((h + (h + 1) // 2, pitch), np.uint8)
    packed[:h, :w], packed[h:, : uv.shape[1]] = y, uv
    dev = runner.to_device(packed)
    planes = [dev[:h, :w], dev[h:, : uv.shape[1]]]
    want = ref.convert([y, uv], "nv12")
    assert_close(runner.convert(planes, "nv12", host=True), want)
    out = runner.empty((h, w, 3), np.uint8)
    assert runner.convert(planes, "nv12", out=out) is out
    assert_close(runner.to_host(out), want)
    assert_close(runner.proxy(planes, "nv12", (10, 11), host=True),
                 ref.area_downscale(want, 10, 11))


def test_layouts_agree(runner: Any, decoded: dict[int, av.VideoFrame]) -> None:
    """Repacking (yuv420p → nv12, yuv420p10le → p010le) changes no pixel."""
    for planar, semi in (("yuv420p", "nv12"), ("yuv420p10le", "p010le")):
        a = ref.convert(frame_planes(real_frame(decoded, planar, True)), planar)
        b = ref.convert(frame_planes(real_frame(decoded, semi, True)), semi)
        np.testing.assert_array_equal(a, b)
        c = runner.convert(frame_planes(real_frame(decoded, semi, True)), semi, host=True)
        assert_close(c, a)


def test_bad_arguments(runner: Any) -> None:
    planes = random_planes("nv12", 8, 10)
    cases: list[tuple[Any, str]] = [
        (lambda: runner.convert(planes, "nv21"), "unknown layout 'nv21'"),
        (lambda: runner.convert(planes, "nv12", matrix="bt2020"), "unknown matrix"),
        (lambda: runner.convert(planes, "nv12", color_range="tv"), "unknown color range"),
        (lambda: runner.convert(planes, "nv12", format="bgr24"), "unknown RGB format"),
        (lambda: runner.convert(planes, "yuv420p"), "yuv420p has 3 planes, got 2"),
        (lambda: runner.convert(planes, "p010le"), "planes are 2-D uint16"),
        (lambda: runner.convert([planes[0], planes[1][:, :8]], "nv12"), "chroma planes must be"),
        (lambda: runner.proxy(planes, "nv12", (9, 10)), "cannot area-downscale 10x8 to 10x9"),
        (lambda: runner.downscale(np.zeros((4, 4, 5), np.uint8), (2, 2)), "(h, w, 1..4)"),
        (lambda: runner.convert(planes, "nv12", out=runner.empty((8, 10, 3), np.uint16)),
         "out must be"),
        (lambda: runner.convert([p.tolist() for p in planes], "nv12"), "planes are 2-D"),
    ]
    for call, message in cases:
        with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
            call()
    with pytest.raises(ValueError, match="cannot area-downscale"):  # the reference, same error
        ref.area_downscale(np.zeros((4, 4), np.uint8), 5, 4)


# -- the reference vs FFmpeg's swscale -------------------------------------------------------

@pytest.mark.parametrize("color_range", RANGES)
@pytest.mark.parametrize("matrix", MATRICES)
@pytest.mark.parametrize("layout", tuple(LAYOUTS))
def test_reference_matches_swscale(decoded: dict[int, av.VideoFrame], layout: str, matrix: str,
                                   color_range: str) -> None:
    """Even sizes only: on odd ones swscale maps chroma by the ratio ceil(w/2)/w, not x // 2."""
    frame = real_frame(decoded, layout, odd=False)
    want = frame.reformat(format="rgb24", src_colorspace=SWS_MATRIX[matrix],
                          src_color_range=SWS_RANGE[color_range],
                          interpolation=Interpolation.POINT).to_ndarray()
    got = ref.convert(frame_planes(frame), layout, matrix=matrix, color_range=color_range)
    diff = np.abs(got.astype(np.int64) - want)
    assert diff.max() <= 4 and diff.mean() <= 2.5, (diff.max(), diff.mean())


# -- optional dependencies and the hardware switch -------------------------------------------

@pytest.mark.parametrize(("module", "blocked", "extra"), [
    ("phast.kernels.opencl", "pyopencl", "phast[opencl]"),
    ("phast.kernels.cuda", "cupy", "phast[cuda]"),
])
def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch, module: str,
                                         blocked: str, extra: str) -> None:
    import importlib

    mod = importlib.import_module(module)  # importing the runner never needs the library
    monkeypatch.setitem(sys.modules, blocked, None)  # makes `import blocked` raise ImportError
    monkeypatch.setattr(mod, "default", mod.default.__wrapped__)  # no cached runner
    with pytest.raises(MissingDependency, match=extra.replace("[", r"\[").replace("]", r"\]")):
        mod.convert(random_planes("nv12", 4, 4), "nv12")


GATED = """
import pytest

@pytest.mark.gpu
def test_needs_gpu():
    pytest.skip("no GPU here")

def test_plain_skip():
    pytest.skip("not hardware")
"""


@pytest.fixture
def gated(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    pytester.makeconftest('pytest_plugins = ["tests.gpu_gate"]')
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    pytester.makepyfile(GATED)
    yield pytester


def test_hardware_skip_without_require_gpu(gated: pytest.Pytester,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHAST_REQUIRE_GPU", raising=False)
    gated.runpytest("-p", "no:cacheprovider").assert_outcomes(skipped=2)


def test_require_gpu_turns_hardware_skips_into_failures(gated: pytest.Pytester,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHAST_REQUIRE_GPU", "1")
    result = gated.runpytest("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    # the gate finds the GPU missing at collection (a setup error) or the test's own skip turns
    # into a failure: either way not a pass, and the plain skip stays a skip
    assert outcomes.get("skipped") == 1
    assert outcomes.get("failed", 0) + outcomes.get("errors", outcomes.get("error", 0)) == 1
    result.stdout.fnmatch_lines(["*PHAST_REQUIRE_GPU=1 but the hardware*"])


GATED_KINDS = """
import pytest

@pytest.mark.gpu
def test_needs_gpu():
    pass

@pytest.mark.vaapi
def test_needs_vaapi():
    pass
"""


@pytest.mark.parametrize(("setting", "failed", "skipped"), [
    ("1", {"test_needs_gpu"}, {"test_needs_vaapi"}),  # an NVIDIA runner need not have VAAPI
    ("vaapi", {"test_needs_vaapi"}, {"test_needs_gpu"}),
    ("all", {"test_needs_gpu", "test_needs_vaapi"}, set()),
])
def test_require_gpu_names_the_hardware_it_requires(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, setting: str,
        failed: set[str], skipped: set[str]) -> None:
    from phast import registry

    # This host's hardware must not decide the outcome: every kind is missing here.
    monkeypatch.setattr(registry, "host_check", lambda name: f"no {name} (faked)")
    monkeypatch.setattr("tests.gpu_gate._missing", lambda marker: f"no {marker} (faked)")
    pytester.makeconftest('pytest_plugins = ["tests.gpu_gate"]')
    pytester.makeini("[pytest]\nmarkers =\n    gpu: a GPU\n    vaapi: VAAPI\n")
    pytester.makepyfile(GATED_KINDS)
    monkeypatch.setenv("PHAST_REQUIRE_GPU", setting)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rA")
    out = result.stdout.str()
    for name in failed:
        assert f"ERROR test_require_gpu_names_the_hardware_it_requires.py::{name}" in out \
            or f"FAILED test_require_gpu_names_the_hardware_it_requires.py::{name}" in out, out
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) == len(skipped), out
    assert outcomes.get("failed", 0) + outcomes.get("errors", outcomes.get("error", 0)) \
        == len(failed), out
