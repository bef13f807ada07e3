"""``hwbench compare`` and ``hwbench report`` on a small generated clip.

The compare run is real: phast's workers, in-process PyAV (and OpenCV when installed) on torture's
schedule, then a sequential reference decode that checks every returned frame. A deliberately
wrong peer (the neighbouring frame, claimed exact) shows that the check really checks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import pytest

from hwbench import compare
from hwbench.baseline import PyAVPlayer
from hwbench.cli import main
from hwbench.democlip import DemoSpec, write_demo
from hwbench.torture import Look, TortureConfig

FRAMES = 90
HAVE_OPENCV = importlib.util.find_spec("cv2") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
PNG = b"\x89PNG\r\n\x1a\n"
PYAV = ["pyav-player", "pyav-naive"]
OPENCV = ["opencv-player", "opencv-naive"] if HAVE_OPENCV else []


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """320x180, 90 frames, GOP 30, 3 B-frames (reordered decode), moving picture + noise."""
    path = tmp_path_factory.mktemp("compare-clip") / "small.mp4"
    write_demo(DemoSpec(kind="small", width=320, height=180, seconds=FRAMES / 30, gop=30),
               path, progress=False)
    return path


class NeighbourPeer:
    """A broken decoder: returns the *next* frame (the previous one at the end), claims EXACT."""

    def __init__(self, path: str, cfg: TortureConfig, pool: Any, frames: int) -> None:
        self.base = PyAVPlayer(path)
        self.frames = frames
        self.height, self.width = self.base.frame(0).shape[:2]

    def __len__(self) -> int:
        return self.frames

    def fetch(self, i: int, deadline: float | None, look: Look | None = None) -> str:
        pixels = self.base.frame(i + 1 if i + 1 < self.frames else i - 1)
        if look is not None:
            look(pixels)
        return "exact"

    def proxy_progress(self) -> None:
        return None

    def close(self) -> None:
        self.base.close()


@pytest.fixture(scope="module")
def compared(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cfg = TortureConfig(rate=10, duration=3, pattern="mixed", seed=7, progress=False,
                        cache_dir=str(tmp_path_factory.mktemp("compare-cache")))
    peers = ["phast", *PYAV, *OPENCV, "neighbour", "nosuch"]
    return compare.run_compare(str(clip), cfg, peers,
                               extra_peers={"neighbour": NeighbourPeer})


def test_every_peer_has_the_figures(compared: dict[str, Any]) -> None:
    ran = ["phast", *PYAV, *OPENCV, "neighbour"]
    assert list(compared["peers"]) == ran
    assert "unknown peer" in compared["skipped"]["nosuch"]
    assert compared["same_schedule"] is True
    assert compared["clip"]["frames"] == FRAMES
    for name, row in compared["peers"].items():
        for key in ("on_time", "exact_share", "exact_on_time", "wrong_frames", "latency_ms",
                    "budget_share", "cpu_share", "verified_requests", "pictures_checked"):
            assert key in row, (name, key)
        assert set(row["latency_ms"]) >= {"p50", "p95", "p99"}
        assert 29 <= row["requests"] <= 31 and row["verified_requests"] == row["requests"]
        assert 0 <= row["exact_on_time"] <= row["exact_share"] <= 1
        # a player on this small clip costs less than the idle baseline's noise: only >= 0
        assert row["budget_share"] >= 0 and row["cpu_share"] > 0
    assert compared["peers"]["phast"]["budget_share"] > 0
    assert compared["verification"]["frames_fingerprinted"] > 0
    assert compared["meter"] == "cpu-time-model"


def test_exact_shares_are_verified(compared: dict[str, Any]) -> None:
    phast = compared["peers"]["phast"]
    # phast's EXACT answers all showed the requested frame: its exact share is its EXACT share
    exact_claimed = phast["quality_mix"].get("exact", 0) * phast["completed"]
    assert phast["wrong_frames"] == 0
    assert phast["exact_share"] == pytest.approx(exact_claimed / phast["requests"])
    assert phast["exact_share"] > 0
    for name in (*PYAV, *OPENCV):
        row = compared["peers"][name]
        assert row["wrong_frames"] == 0, name
        assert row["pictures_checked"] == row["completed"] > 0, name
        assert row["exact_share"] == pytest.approx(row["completed"] / row["requests"]), name


def test_a_peer_returning_wrong_frames_gets_no_exact_share(compared: dict[str, Any]) -> None:
    row = compared["peers"]["neighbour"]
    assert row["completed"] > 0 and row["quality_mix"] == {"exact": 1.0}
    assert row["exact_share"] == 0.0 and row["exact_on_time"] == 0.0
    assert row["wrong_frames"] == row["pictures_checked"] == row["completed"]


def test_fingerprint_tells_neighbouring_frames_apart(clip: Path) -> None:
    with av.open(str(clip)) as c:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(6), c.decode(video=0),
                                                                   strict=False)]
    refs = {i: compare.fingerprint(a) for i, a in enumerate(frames)}
    for i in range(6):
        assert compare.is_frame(compare.fingerprint(frames[i]), i, refs)
        for j in range(6):
            if j != i:
                assert not compare.is_frame(refs[j], i, refs), (i, j)
    # a proxy-sized copy of the same picture still maps to the same grid
    assert compare.fingerprint(frames[2][::2, ::2]).shape == refs[2].shape
    with pytest.raises(ValueError):
        compare.fingerprint(frames[0][:4, :4])


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG, path
    assert len(data) > 5000, (path, len(data))


@pytest.mark.skipif(not HAVE_MPL, reason="needs matplotlib (the bench extra)")
def test_report_from_a_torture_run(clip: Path, tmp_path: Path) -> None:
    run = tmp_path / "torture.json"
    assert main(["torture", str(clip), "--rate", "10", "--duration", "2", "--json", str(run),
                 "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out)]) == 0
    for name in ("power.png", "tiers.png", "distance.png", "latency.png"):
        _assert_png(out / name)
    md = (out / "report.md").read_text()
    rep = json.loads(run.read_text())
    assert f"| budget share (marginal power / TDP) | {100 * rep['budget_share']:.1f}% |" in md
    assert "cpu-time-model" in md and "PROXY or better" in md
    assert "![power](power.png)" in md and "![distance](distance.png)" in md
    d = rep["distance_s"]
    assert f"| distance of the picture shown, p50 / p95 | {d['p50']:.2f} s / {d['p95']:.2f} s |" \
        in md


@pytest.mark.skipif(not HAVE_MPL, reason="needs matplotlib (the bench extra)")
def test_report_from_a_compare_run(compared: dict[str, Any], tmp_path: Path) -> None:
    run = tmp_path / "compare.json"
    compare.write_json(compared, str(run))
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out)]) == 0
    for name in ("peers_latency.png", "peers_power.png"):
        _assert_png(out / name)
    md = (out / "report.md").read_text()
    assert "| neighbour test |" in md
    assert "nosuch | skipped" in md


def test_report_rejects_other_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"tool": "something else"}))
    assert main(["report", str(bad)]) == 2
    assert "not a torture or compare JSON" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.json")]) == 2


def test_compare_cli_rejects_unknown_peers(clip: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(clip), "--peers", "phast,vlc", "--quiet"]) == 2
    assert "unknown peer(s) vlc" in capsys.readouterr().err
    # the names of the naive peers before the players existed are refused, with their new names
    assert main(["compare", str(clip), "--peers", "pyav", "--quiet"]) == 2
    assert "pyav is now pyav-player or pyav-naive" in capsys.readouterr().err


def test_help_does_not_import_heavy_modules() -> None:
    code = ("import sys\nfrom hwbench.cli import main\n"
            "for argv in (['compare', '--help'], ['report', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "heavy = {'av', 'matplotlib', 'cv2', 'torch'} & set(sys.modules)\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert "--verify-every" in done.stdout and "RUN.json" in done.stdout


def test_the_table_prints_every_peer_and_the_budget(compared: dict[str, Any]) -> None:
    table = compare.format_table(compared)
    for name in compared["peers"]:
        assert any(line.startswith(name) for line in table.splitlines()), name
    budget = compared["budget"]
    assert f"budget {100 * budget:g}% = {budget * compared['tdp_w']:.2f} W" in table
