"""The ``phast`` command line, with real decoding: ``main([...])`` in-process, plus one
``python -m phast`` run in a subprocess."""

from __future__ import annotations

import functools
import io
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from phast import registry
from phast.cli import main
from phast.png import encode_png

WIDTH, HEIGHT, FRAMES, GOP = 160, 96, 30, 10


def _write_clip(path: Path, *, audio_first: bool = False) -> Path:
    """H.264 160x96, 30 frames at 30 fps, a keyframe every 10; optionally an AAC stream first."""
    with av.open(str(path), "w") as container:
        audio = container.add_stream("aac", rate=48000) if audio_first else None
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.gop_size = GOP
        video.codec_context.options = {"preset": "veryfast",
                                       "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0"}
        x = np.arange(WIDTH, dtype=np.int64)[None, :]
        y = np.arange(HEIGHT, dtype=np.int64)[:, None]
        for i in range(FRAMES):
            rgb = np.stack([(3 * x + 7 * i) % 256 + 0 * y, (2 * y + 5 * i) % 256 + 0 * x,
                            (x + y + 11 * i) % 256], axis=-1).astype(np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(video.encode())
        if audio is not None:
            for i in range(47):
                samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32),
                                                     format="fltp", layout="mono")
                samples.sample_rate, samples.pts = 48000, i * 1024
                container.mux(audio.encode(samples))
            container.mux(audio.encode())
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_clip(tmp_path_factory.mktemp("cli") / "clip.mp4")


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return str(tmp_path)


@functools.lru_cache(maxsize=8)
def _sequential(path: str, fmt: str = "rgb24") -> tuple[tuple[np.ndarray, ...], tuple[int, ...],
                                                        Fraction]:
    """Plain sequential PyAV decode: (frames as ``fmt`` arrays, pts, time base)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return (tuple(f.to_ndarray(format=fmt) for f in frames), tuple(f.pts for f in frames),
                stream.time_base)


def _read_png(path: Path, fmt: str = "rgb24") -> np.ndarray:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format=fmt)


def _fields(text: str) -> dict[str, str]:
    """``key: value`` lines of a text report (the first occurrence of each key)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            out.setdefault(key, value.strip())
    return out


def _assert_one_error_line(err: str) -> None:
    assert err.startswith("phast: error: ")
    assert err.count("\n") == 1 and err.endswith("\n")
    assert "Traceback" not in err


# -- info ------------------------------------------------------------------------------------


def test_info_text(clip: Path, cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(clip), "--cache-dir", cache]) == 0
    out = capsys.readouterr().out
    fields = _fields(out)
    frames, _, time_base = _sequential(str(clip))
    assert fields["path"] == str(clip)
    assert int(fields["frames"]) == len(frames) == FRAMES
    assert fields["size"] == f"{WIDTH}x{HEIGHT}"
    assert fields["codec"] == "h264"
    assert fields["pix_fmt"] == "yuv420p"
    assert fields["bit depth"] == "8"
    assert fields["VFR"] == "no"
    assert fields["time base"] == f"{time_base.numerator}/{time_base.denominator}"
    assert fields["average rate"].startswith("30/1")
    assert fields["keyframes"] == str(FRAMES // GOP)
    assert fields["keyframe interval"] == f"min {GOP}, mean {GOP:.2f}, max {GOP} frames"
    assert fields["index method"] in ("demux", "decode")
    assert fields["timestamps"] == "container"
    assert fields["backend"] == "software"
    assert "#0 video" in out and "<- selected" in out


def test_info_json(clip: Path, cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(clip), "--json", "--cache-dir", cache]) == 0
    data = json.loads(capsys.readouterr().out)
    frames, pts, time_base = _sequential(str(clip))
    assert data["frame_count"] == len(frames)
    assert (data["width"], data["height"], data["codec"]) == (WIDTH, HEIGHT, "h264")
    assert data["time_base"] == f"{time_base.numerator}/{time_base.denominator}"
    assert Fraction(data["average_rate"]) == 30
    assert data["start_time"] == pytest.approx(float(pts[0] * time_base))
    assert data["duration"] == pytest.approx(FRAMES / 30)
    assert data["keyframe_count"] == FRAMES // GOP
    assert data["keyframe_interval"] == {"min": GOP, "mean": GOP, "max": GOP}
    assert data["is_vfr"] is False and data["rotation"] == 0
    assert data["backend"] == "software"
    assert data["stream"] == 0 and data["stream_index"] == 0
    assert data["streams"] == [{"index": 0, "type": "video", "codec": "h264", "width": WIDTH,
                                "height": HEIGHT, "pix_fmt": "yuv420p"}]


def test_info_lists_every_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_clip(tmp_path / "audio_first.mp4", audio_first=True)
    assert main(["info", str(path), "--json", "--cache-dir", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(s["index"], s["type"]) for s in data["streams"]] == [(0, "audio"), (1, "video")]
    assert data["streams"][0]["codec"] == "aac"
    assert data["stream"] == 0 and data["stream_index"] == 1  # first video stream = index 1
    assert main(["info", str(path), "--cache-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    selected = [line for line in lines if "<- selected" in line]
    assert len(selected) == 1 and selected[0].strip().startswith("#1 video")


def test_python_m_phast_info(clip: Path, cache: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "phast", "info", str(clip), "--json",
                           "--cache-dir", cache], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["frame_count"] == FRAMES


def test_import_is_light() -> None:
    code = ("import sys, phast.cli\n"
            "heavy = [m for m in ('numpy', 'av', 'phast.clip', 'phast.supervisor') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


# -- frame -----------------------------------------------------------------------------------


def test_frame_by_index_is_exact(clip: Path, cache: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.png"
    assert main(["frame", str(clip), "--index", "7", "-o", str(out), "--cache-dir", cache]) == 0
    frames, pts, time_base = _sequential(str(clip))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(_read_png(out), frames[7])
    fields = _fields(capsys.readouterr().out)
    assert fields["frame"] == "7"
    assert int(fields["pts"]) == pts[7]
    assert float(fields["time"]) == pytest.approx(float(pts[7] * time_base), abs=1e-6)
    assert fields["quality"] == "exact"


@pytest.mark.parametrize("fmt", ["rgba", "gray", "gray16le", "rgb48le"])
def test_frame_formats(clip: Path, cache: str, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"{fmt}.png"
    assert main(["frame", str(clip), "--index", "-1", "--format", fmt, "-o", str(out),
                 "--cache-dir", cache]) == 0
    frames, _, _ = _sequential(str(clip), fmt)
    np.testing.assert_array_equal(_read_png(out, fmt), frames[-1])


def test_frame_by_time_between_frames(clip: Path, cache: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    frames, pts, time_base = _sequential(str(clip))
    t = float((pts[12] + pts[13]) * time_base / 2)
    out = tmp_path / "t.png"
    assert main(["frame", str(clip), "--time", repr(t), "-o", str(out),
                 "--cache-dir", cache]) == 0
    assert _fields(capsys.readouterr().out)["frame"] == "12"
    np.testing.assert_array_equal(_read_png(out), frames[12])


def test_printed_time_selects_the_same_frame(clip: Path, cache: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f.png"
    for i in (1, 7, 29):
        assert main(["frame", str(clip), "--index", str(i), "-o", str(out),
                     "--cache-dir", cache]) == 0
        printed = _fields(capsys.readouterr().out)["time"]
        assert main(["frame", str(clip), "--time", printed, "-o", str(out),
                     "--cache-dir", cache]) == 0
        assert _fields(capsys.readouterr().out)["frame"] == str(i)


def test_encode_png_roundtrip() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)  # odd, non-square
    with av.open(io.BytesIO(encode_png(image)), format="png_pipe") as container:
        decoded = next(container.decode(video=0)).to_ndarray(format="rgb24")
    np.testing.assert_array_equal(decoded, image)
    with pytest.raises(ValueError):
        encode_png(np.zeros((2, 2), np.float32))


# -- errors ----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.mp4"
    assert main(["info", str(missing), "--cache-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    _assert_one_error_line(captured.err)
    assert str(missing) in captured.err and captured.out == ""


def test_index_out_of_range(clip: Path, cache: str, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "none.png"
    assert main(["frame", str(clip), "--index", str(FRAMES), "-o", str(out),
                 "--cache-dir", cache]) == 2
    _assert_one_error_line(capsys.readouterr().err)
    assert not out.exists()
    assert main(["frame", str(clip), "--time", "1000", "-o", str(out),
                 "--cache-dir", cache]) == 2
    _assert_one_error_line(capsys.readouterr().err)


def test_text_file_is_a_media_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("This is not a video file.\nJust some text.\n")
    assert main(["info", str(text), "--cache-dir", str(tmp_path)]) == 1
    _assert_one_error_line(capsys.readouterr().err)


def test_unknown_backend(clip: Path, cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(clip), "--backend", "no-such-backend", "--cache-dir", cache]) == 2
    _assert_one_error_line(capsys.readouterr().err)


def test_unwritable_output(clip: Path, cache: str, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "no" / "such" / "dir" / "x.png"
    assert main(["frame", str(clip), "--index", "0", "-o", str(out), "--cache-dir", cache]) == 1
    err = capsys.readouterr().err
    _assert_one_error_line(err)
    assert "cannot write" in err


def test_argparse_errors_keep_argparse_behaviour(clip: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frame", str(clip), "-o", "x.png"])  # neither --index nor --time
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


# -- backends --------------------------------------------------------------------------------


def test_backends_lists_software(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    software = next(row for row in rows if row[0] == "software")
    assert software[1:3] == ["yes", "built-in"] and software[5] == "available"
    assert main(["backends", "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["software"]["available"] is True
    assert entries["software"]["origin"] == "built-in"
    assert entries["software"]["spec"] == registry.BUILTIN["software"]


def test_backends_reports_broken_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "phast_cli_slow_backend.py").write_text("import time\ntime.sleep(60)\n")
    (tmp_path / "phast_cli_crashing_backend.py").write_text("import os\nos.abort()\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # probe children get this process's sys.path
    registry.register("cli-missing", "phast_cli_no_such_module:Backend")
    registry.register("cli-slow", "phast_cli_slow_backend:Backend")
    registry.register("cli-crash", "phast_cli_crashing_backend:Backend")
    try:
        assert main(["backends", "--json", "--timeout", "1"]) == 0
        entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
        missing, slow, crash = entries["cli-missing"], entries["cli-slow"], entries["cli-crash"]
        assert missing["available"] is False and "ModuleNotFoundError" in missing["reason"]
        assert slow["available"] is False and "timed out" in slow["reason"]
        assert crash["available"] is False and "SIGABRT" in crash["reason"]
        assert main(["backends", "--timeout", "1"]) == 0
        out = capsys.readouterr().out
        assert "unavailable: ModuleNotFoundError" in out and "unavailable: probe timed out" in out
    finally:
        registry.unregister("cli-missing")
        registry.unregister("cli-slow")
        registry.unregister("cli-crash")


def test_backends_loads_as_a_worker_does(capsys: pytest.CaptureFixture[str]) -> None:
    """The probe child loads the spec with ``registry.load``: a class that is not a ``Backend``
    is unavailable for that reason (it is never asked for a probe it does not have)."""
    registry.register("cli-not-a-backend", "fractions:Fraction")
    try:
        assert main(["backends", "--json"]) == 0
        entry = {e["name"]: e for e in json.loads(capsys.readouterr().out)}["cli-not-a-backend"]
        assert entry["available"] is False
        assert "not a phast.backends.base.Backend subclass" in entry["reason"], entry["reason"]
    finally:
        registry.unregister("cli-not-a-backend")
