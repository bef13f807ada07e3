"""The proxy store never lies: bounded, shared, damage is a miss, a changed source is new."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import phast
from phast.cli import main as cli_main
from phast.store import Store, source_identity

JPEG = b"\xff\xd8" + b"x" * 40_000 + b"\xff\xd9"


def test_eviction_keeps_the_byte_bound(tmp_path) -> None:
    limit = 1 << 20
    store = Store(tmp_path, size_limit=limit)
    for i in range(100):  # ~4 MB offered to a 1 MB store
        store.put_proxy("src", 0, "spec", i, 8, 8, JPEG)
    assert store.stats()["bytes"] <= limit * 1.1
    assert store.get_proxy("src", 0, "spec", 99) is not None  # the newest survive
    assert store.get_proxy("src", 0, "spec", 0) is None  # the oldest went first
    store.close()


WRITER = textwrap.dedent("""
    import sys
    from phast.store import Store
    store = Store(sys.argv[1])
    data = b"\\xff\\xd8" + bytes([int(sys.argv[2])]) * 30000 + b"\\xff\\xd9"
    for i in range(200):
        store.put_proxy("src", 0, "spec", i, 8, 8, data)
        assert store.get_proxy("src", 0, "spec", i) is not None
    store.close()
""")


def test_two_processes_share_one_store(tmp_path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(n)])
             for n in (1, 2)]
    assert [p.wait(120) for p in procs] == [0, 0]
    store = Store(tmp_path)
    for i in range(200):
        w, h, data = store.get_proxy("src", 0, "spec", i)
        assert (w, h) == (8, 8) and len(data) == 30004 and data[2] in (1, 2)
        assert data[2:-2] == bytes([data[2]]) * 30000  # one writer's picture, whole
    store.close()


def _value_files(store: Store) -> list[Path]:
    return [p for p in (store.directory / "store").rglob("*.val")]


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "delete"])
def test_damaged_entries_are_misses(damage, tmp_path) -> None:
    store = Store(tmp_path)
    for i in range(5):
        store.put_proxy("src", 0, "spec", i, 8, 8, JPEG)
    files = _value_files(store)
    assert len(files) == 5  # large values live in files: the parts that can be damaged
    for f in files:
        if damage == "truncate":
            f.write_bytes(f.read_bytes()[:1000])
        elif damage == "corrupt":
            raw = bytearray(f.read_bytes())
            raw[5000] ^= 0xFF
            f.write_bytes(bytes(raw))
        else:
            f.unlink()
    for i in range(5):
        assert store.get_proxy("src", 0, "spec", i) is None
    store.put_proxy("src", 0, "spec", 0, 8, 8, JPEG)  # and the store still works
    assert store.get_proxy("src", 0, "spec", 0)[2] == JPEG
    store.close()


def test_changed_source_never_reads_old_proxies(make, tmp_path, cache_dir) -> None:
    target = tmp_path / "clip.mp4"
    target.write_bytes(make("h264_bpyramid_longgop").read_bytes())
    with phast.open(target, cache_dir=cache_dir, proxies=False, proxy_height=48) as clip:
        assert clip.build_proxies(full=False) == (2, 0)
        old = clip._session.identity
    target.write_bytes(make("vfr_mkv").read_bytes())  # rewritten in place
    assert source_identity(target) != old
    with phast.open(target, cache_dir=cache_dir, proxies=False, proxy_height=48) as clip:
        s = clip._session
        assert s.identity != old
        assert not any(s.store.has_proxy(s.identity, 0, s.proxy_spec.key, k)
                       for k in s.index.keyframes())


def test_cli_proxy_build_stats_and_clear(make, cache_dir, capsys) -> None:
    path = str(make("h264_bpyramid_longgop"))
    assert cli_main(["proxy", "build", path, "--height", "48", "--full", "--quiet",
                     "--cache-dir", str(cache_dir)]) == 0
    assert "90 proxies built" in capsys.readouterr().out
    assert cli_main(["cache", "stats", "--json", "--cache-dir", str(cache_dir)]) == 0
    import json

    stats = json.loads(capsys.readouterr().out)
    assert stats["proxies"] == 90 and stats["clips"] == 1 and stats["bytes"] > 0
    assert cli_main(["cache", "clear", path, "--cache-dir", str(cache_dir)]) == 0
    # 90 proxies, the frame index and the map of which frames have a proxy
    assert "removed 92 entries" in capsys.readouterr().out
    assert cli_main(["cache", "stats", "--json", "--cache-dir", str(cache_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 0
    assert os.path.exists(path)


def test_statistics_are_diskcache_s_and_shared(tmp_path) -> None:
    """Hits and misses are diskcache's own statistics: every lookup, by every process using the
    store, and none lost to eviction (the counters are not entries)."""
    store = Store(tmp_path, size_limit=1 << 20)
    store.put_proxy("src", 0, "spec", 0, 8, 8, JPEG)
    assert store.get_proxy("src", 0, "spec", 0) is not None
    assert store.get_proxy("src", 0, "spec", 1) is None
    code = ("import sys; from phast.store import Store; s = Store(sys.argv[1]); "
            "s.get_proxy('src', 0, 'spec', 0); s.get_proxy('src', 0, 'spec', 2); s.close()")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    stats = store.stats()
    assert (stats["hits"], stats["misses"]) == (2, 2) and stats["hit_rate"] == 0.5
    for i in range(1, 100):  # ~4 MB through a 1 MB store: eviction runs, the counts stay
        store.put_proxy("src", 0, "spec", i, 8, 8, JPEG)
    assert store.stats()["hits"] == 2 and store.stats()["misses"] == 2
    store.clear()
    assert store.stats()["hits"] == store.stats()["misses"] == 0
    store.close()


def test_clearing_a_source_uses_its_tag(tmp_path) -> None:
    """Every entry is tagged with its source; clearing one source removes exactly its entries,
    through diskcache's tag index."""
    store = Store(tmp_path)
    for src in ("a", "b"):
        for i in range(3):
            store.put_proxy(src, 0, "spec", i, 8, 8, JPEG)
    store.put_index("a", "software", 0, _an_index(), {"codec": "h264"})
    sql = store._cache._sql
    assert sql("SELECT name FROM sqlite_master WHERE name = 'Cache_tag_rowid'").fetchall()
    assert store.clear("a") == 4
    assert store.get_index("a", "software", 0) is None
    assert all(store.get_proxy("b", 0, "spec", i) is not None for i in range(3))
    store.close()


def _an_index():  # type: ignore[no-untyped-def]
    from fractions import Fraction

    import numpy as np

    from phast.index import KEY, FrameIndex

    n = 4
    frames = np.arange(n, dtype=np.int64)
    return FrameIndex(frames, frames, frames * 100, np.full(n, KEY, np.uint8), frames, frames,
                      frames, Fraction(1, 25), "demux", "container")
