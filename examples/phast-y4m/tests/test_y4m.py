"""What the conformance suite cannot know about YUV4MPEG2: headers, damage, options."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import phast
import pytest
from phast.errors import CannotHandle, InvalidArgument, MediaError, UnsupportedCodec
from phast.testing import make_clip, reference_frames

from phast_y4m import Y4MBackend
from phast_y4m.header import parse_header


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip("y4m_420", tmp_path_factory.mktemp("clips"))


@pytest.fixture
def pool() -> Iterator[phast.WorkerPool]:
    p = phast.WorkerPool(max_workers=1)
    yield p
    p.shutdown()


def _open(path: Path, tmp_path: Path, pool: phast.WorkerPool, **options: object) -> phast.Clip:
    return phast.open(path, backend="y4m", cache_dir=tmp_path / "cache", pool=pool,
                      backend_options=options)


@pytest.mark.parametrize(("line", "expected"), [
    (b"YUV4MPEG2 W4 H2 F30000:1001 Ip A1:1 C420jpeg\n", (4, 2, 30000 / 1001, "yuv420p", 12)),
    (b"YUV4MPEG2 W5 H3\n", (5, 3, 25.0, "yuv420p", 15 + 2 * 3 * 2)),  # FFmpeg's defaults
    (b"YUV4MPEG2 W8 H8 F25:1 Cmono XYSCSS=ignored\n", (8, 8, 25.0, "gray", 64)),
    (b"YUV4MPEG2 W6 H2 F24:1 C422 XCOLORRANGE=FULL\n", (6, 2, 24.0, "yuv422p", 12 + 2 * 6)),
])
def test_header(line: bytes, expected: tuple[object, ...]) -> None:
    h = parse_header(line + b"FRAME\n")
    assert (h.width, h.height, float(h.rate), h.pix_fmt, h.frame_size) == expected
    assert h.length == len(line)
    assert h.full_range == (b"FULL" in line)


@pytest.mark.parametrize(("data", "error"), [
    (b"RIFF....AVI ", CannotHandle),
    (b"YUV4MPEG2 W16 H16 C420p10\n", CannotHandle),  # a colourspace another backend may read
    (b"YUV4MPEG2 W16 H16", MediaError),  # no end of line: truncated
    (b"YUV4MPEG2 H16 F25:1\n", MediaError),
    (b"YUV4MPEG2 W0 H16\n", MediaError),
    (b"YUV4MPEG2 W99999 H16\n", MediaError),
    (b"YUV4MPEG2 W16 H16 \xff\n", MediaError),
])
def test_bad_headers(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_header(data)


def test_not_y4m_is_cannot_handle_so_auto_moves_on(tmp_path: Path) -> None:
    path = tmp_path / "x.y4m"
    path.write_bytes(b"not a y4m file\n")
    with pytest.raises(CannotHandle):
        Y4MBackend(str(path), stream=0, options={}, progress=lambda: None)


def test_explicit_backend_turns_cannot_handle_into_unsupported_codec(tmp_path: Path,
                                                                     pool: phast.WorkerPool,
                                                                     ) -> None:
    path = tmp_path / "x.y4m"
    path.write_bytes(b"RIFF not a y4m file\n")
    with pytest.raises(UnsupportedCodec, match="y4m: not a YUV4MPEG2 file"):
        _open(path, tmp_path, pool)


def test_truncated_tail_keeps_the_complete_frames(clip: Path, tmp_path: Path,
                                                  pool: phast.WorkerPool) -> None:
    data = clip.read_bytes()
    frame = parse_header(data).frame_size + len(b"FRAME\n")
    cut = tmp_path / "cut.y4m"
    cut.write_bytes(data[: parse_header(data).length + 3 * frame + frame // 2])
    ref = reference_frames(cut, format="native")
    assert len(ref) == 3  # FFmpeg leaves the cut frame out too
    with _open(cut, tmp_path, pool) as c:
        assert len(c) == 3
        for i in range(3):
            assert np.array_equal(c.frame(i, format="native").planes[0], ref[i][0])


def test_damaged_frame_marker_is_a_media_error(clip: Path, tmp_path: Path,
                                               pool: phast.WorkerPool) -> None:
    data = bytearray(clip.read_bytes())
    h = parse_header(bytes(data))
    second = h.length + h.frame_size + len(b"FRAME\n")
    data[second : second + 5] = b"JUNK!"
    bad = tmp_path / "bad.y4m"
    bad.write_bytes(bytes(data))
    with pytest.raises(MediaError, match="no FRAME line at byte"):
        _open(bad, tmp_path, pool)
    assert pool.workers[0].restarts == 0  # a typed error, not a crash


def test_file_changed_after_indexing(clip: Path, tmp_path: Path, pool: phast.WorkerPool) -> None:
    copy = tmp_path / "copy.y4m"
    copy.write_bytes(clip.read_bytes())
    with _open(copy, tmp_path, pool) as c:
        n = len(c)
        with copy.open("r+b") as f:  # cut it short behind phast's back
            f.truncate(copy.stat().st_size // 2)
        with pytest.raises(MediaError):
            c.frame(n - 1)
        c.frame(0).release()  # what is still there still decodes


def test_options_are_checked(clip: Path, tmp_path: Path, pool: phast.WorkerPool) -> None:
    with pytest.raises(InvalidArgument, match="matrix"):
        _open(clip, tmp_path, pool, matrix="bt2020")
    with pytest.raises(InvalidArgument, match="unknown y4m option"):
        _open(clip, tmp_path, pool, matrx="bt709")


def test_bt709_changes_rgb_not_native(clip: Path, tmp_path: Path, pool: phast.WorkerPool) -> None:
    with _open(clip, tmp_path, pool) as a, _open(clip, tmp_path, pool, matrix="bt709") as b:
        assert np.array_equal(a.frame(3, format="native").array, b.frame(3, format="native").array)
        assert not np.array_equal(a.frame(3).array, b.frame(3).array)


def test_undeclared_format_is_invalid_argument(clip: Path, tmp_path: Path,
                                               pool: phast.WorkerPool) -> None:
    with _open(clip, tmp_path, pool) as c:
        for fmt in ("bgr24", "bgra", "rgb48le"):
            with pytest.raises(InvalidArgument, match="cannot write format"):
                c.frame(0, format=fmt)
        c.frame(0, format="rgba").release()  # and the clip goes on serving
