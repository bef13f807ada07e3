"""The proxy farm and the shared store: Dask LocalClusters, a directory store, an S3 store on a
local moto server, editors reading the share, a worker killed mid-build, planted objects."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import phast
from phast.proxy import ProxySpec
from phast.sharedstore import MAX_OBJECT, SharedStore, open_object, seal_object
from phast.store import Store, source_identity

distributed = pytest.importorskip("distributed", reason="needs phast[farm]")
simplejpeg = pytest.importorskip("simplejpeg")

from phast import farm  # noqa: E402

CLIP = "h264_open_gop"  # 96 frames, open GOPs of 24: ranges must start a frame earlier
SPEC = ProxySpec().key


#: A LocalCluster in a process of its own (the test process must have no children but phast
#: workers: other modules check that; multiprocessing would leave its resource tracker).
CLUSTER = """
import sys
from distributed import LocalCluster
with LocalCluster(n_workers=int(sys.argv[1]), threads_per_worker=1, processes=True,
                  dashboard_address=":0") as cluster:
    print(cluster.scheduler_address, flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[Any]:
    """A Client of a LocalCluster of ``workers`` single-threaded worker processes."""
    proc = subprocess.Popen([sys.executable, "-c", CLUSTER, str(workers)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://"), address
        with farm.connect(address) as c:
            c.wait_for_workers(workers, timeout=60)
            yield c
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """Two single-threaded Dask workers (shared by this module)."""
    with local_cluster(2) as c:
        yield c


def _objects(share: Path) -> list[Path]:
    return [p for p in (share / "phast-v1" / "objects").rglob("*") if p.is_file()]


def _decoded(entry: tuple[int, int, bytes] | None) -> np.ndarray:
    assert entry is not None
    return simplejpeg.decode_jpeg(entry[2], colorspace="RGB")


def test_two_workers_build_what_a_local_build_makes(make, tmp_path: Path, client: Any) -> None:
    clip = str(make(CLIP))
    shared = SharedStore(str(tmp_path / "share"))
    done: list[tuple[int, int]] = []
    [report] = farm.build([clip], client, shared, chunk=24, cache_dir=str(tmp_path / "drv"),
                          progress=lambda d, t: done.append((d, t)))
    assert (report.frames, report.present, report.built, report.failed) == (96, 0, 96, {})
    assert report.tasks == 4 and done[-1] == (96, 96)
    # the workers' results, pixel for pixel, against this machine's own build
    with phast.open(clip, cache_dir=tmp_path / "local", proxies=False) as c:
        assert c.build_proxies(full=True) == (96, 0)
    local = Store(tmp_path / "local")
    ident = source_identity(clip)
    try:
        for i in range(96):
            want = _decoded(local.get_proxy(ident, 0, SPEC, i))
            np.testing.assert_array_equal(_decoded(shared.get(ident, 0, SPEC, i)), want)
    finally:
        local.close()
    assert shared.manifest(ident, 0, SPEC, 96, fresh=True).all()
    # one manifest shard left (the workers' shards compacted)
    shards = list((tmp_path / "share").rglob("*.phm"))
    assert len(shards) == 1


def test_resume_skips_what_the_share_has(make, tmp_path: Path, client: Any) -> None:
    clip = str(make(CLIP))
    share = tmp_path / "share"
    # keyframes only, published from this machine (phast proxy build --shared-store)
    out = subprocess.run([sys.executable, "-m", "phast", "proxy", "build", clip, "--quiet",
                          "--cache-dir", str(tmp_path / "c1"), "--shared-store", str(share)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    keys = len(_objects(share))
    assert keys == 4  # one keyframe per group of 24
    before = {p: p.stat().st_mtime_ns for p in _objects(share)}
    shared = SharedStore(str(share))
    [report] = farm.build([clip], client, shared, chunk=24, cache_dir=str(tmp_path / "drv"))
    assert (report.present, report.built, report.failed) == (keys, 96 - keys, {})
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # not rewritten
    [again] = farm.build([clip], client, shared, chunk=24, cache_dir=str(tmp_path / "drv"))
    assert (again.present, again.built, again.tasks) == (96, 0, 0)
    # phast cache stats shows both levels
    out = subprocess.run([sys.executable, "-m", "phast", "cache", "stats", "--json",
                          "--cache-dir", str(tmp_path / "c1"), "--shared-store", str(share)],
                         capture_output=True, text=True, timeout=60)
    stats = json.loads(out.stdout)
    assert stats["proxies"] == keys and stats["shared"]["proxies"] == 96
    assert stats["shared"]["sources"] == 1 and stats["shared"]["bytes"] > 96 * 1000


EDITOR = """
import json, sys, phast
from phast.store import source_identity
clip, share, cache = sys.argv[1:4]
qualities = []
with phast.open(clip, cache_dir=cache, proxies=False, shared_store=share) as c:
    c._session.pool.prepare_images(30)  # the image worker booted: what is measured is the share
    for i in range(0, len(c), 3):
        with c.frame(i, deadline=0.05) as f:
            qualities.append(str(f.quality))
    stats = c._session.store.stats()
print(json.dumps({"qualities": qualities, "local": stats["proxies"], "shared": stats["shared"]}))
"""


def test_two_editor_processes_read_one_share(make, tmp_path: Path, client: Any) -> None:
    clip = str(make(CLIP))
    share = tmp_path / "share"
    farm.build([clip], client, SharedStore(str(share)), chunk=48,
               cache_dir=str(tmp_path / "drv"))
    procs = [subprocess.Popen([sys.executable, "-c", EDITOR, clip, str(share),
                               str(tmp_path / f"editor{k}")], stdout=subprocess.PIPE, text=True)
             for k in range(2)]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    for r in results:
        assert set(r["qualities"]) <= {"exact", "proxy"}, r["qualities"]
        assert r["qualities"].count("proxy") >= len(r["qualities"]) // 2
        assert r["shared"]["hits"] >= r["qualities"].count("proxy")
        assert r["local"] >= r["qualities"].count("proxy")  # shared hits filled the local level


def test_worker_killed_mid_build(make, tmp_path: Path) -> None:
    clip = str(make(CLIP))
    share = tmp_path / "share"
    killed: dict[str, Any] = {}
    finished: dict[str, int] = {}

    with local_cluster(2) as c:
        pids = c.run(os.getpid)

        def on_done(future: Any) -> None:
            if future.status == "finished":
                finished[future.key] = future.result()["pid"]
            if killed:
                return
            for _ in range(200):  # the other worker is busy with a task: kill it there
                busy = {w: keys for w, keys in c.processing().items() if keys}
                if busy:
                    worker, keys = next(iter(busy.items()))
                    killed.update(pid=pids[worker], keys=set(keys))
                    os.kill(pids[worker], signal.SIGKILL)
                    return
                time.sleep(0.01)

        [report] = farm.build([clip], c, SharedStore(str(share)), chunk=8,
                              cache_dir=str(tmp_path / "drv"), on_task_done=on_done)
    assert killed, "no task was running to kill"
    assert (report.built, report.failed) == (96, {})  # nothing lost
    for key in killed["keys"]:  # the killed task ran again, elsewhere
        assert finished[key] != killed["pid"]
    ident = source_identity(clip)
    shared = SharedStore(str(share))
    assert shared.manifest(ident, 0, SPEC, 96, fresh=True).all()
    # no partial object visible: every file under an object's name opens whole
    objects = [p for p in _objects(share) if not p.name.startswith(".tmp-")]
    assert len(objects) == 96
    for p in objects:
        index = int(p.stem)
        assert open_object(p.read_bytes(), f"{ident}/0/{SPEC}/{index}") is not None


def test_planted_objects_are_misses(make, tmp_path: Path) -> None:
    clip = str(make(CLIP))
    ident = source_identity(clip)
    share = tmp_path / "share"
    shared = SharedStore(str(share))
    with phast.open(clip, cache_dir=tmp_path / "build", proxies=False) as c:
        c.build_proxies(full=False)
        w, h = c._session.proxy_size()
    build = Store(tmp_path / "build")
    jpeg = build.get_proxy(ident, 0, SPEC, 0)
    build.close()
    assert jpeg is not None
    shared.put_many(ident, 0, SPEC, 96, [(0, w, h, jpeg[2])])
    assert shared.get(ident, 0, SPEC, 0) is not None

    def path(i: int) -> Path:
        return Path(shared._object_path(ident, 0, SPEC, i))

    good = path(0).read_bytes()
    planted = {
        1: good[:-1] + bytes([good[-1] ^ 1]),  # damaged (a flipped bit)
        2: good,  # foreign: frame 0's object under frame 2's name
        3: good[: len(good) // 2],  # truncated
        4: seal_object(f"{ident}/0/{SPEC}/4", w, h, b"\x80\x04pickle" * 4),  # not a JPEG
        5: seal_object(f"{ident}/0/{SPEC}/5", w, h, b"\xff\xd8" + b"\0" * MAX_OBJECT
                       + b"\xff\xd9"),  # oversized
        6: b"\x80\x04\x95" + os.urandom(64),  # a pickle, say
    }
    for i, data in planted.items():
        path(i).parent.mkdir(parents=True, exist_ok=True)
        path(i).write_bytes(data)
        assert shared.get(ident, 0, SPEC, i) is None, i
    # a planted manifest shard (damaged, or claiming every frame under another key) is skipped
    mdir = Path(shared._manifest_dir(ident, 0, SPEC))
    (mdir / "planted.phm").write_bytes(b"PHSM1" + os.urandom(80))
    assert shared.manifest(ident, 0, SPEC, 96, fresh=True).sum() == 1
    # an editor with an empty local level: planted objects are never served nor copied locally
    with phast.open(clip, cache_dir=tmp_path / "editor", proxies=False, budget="off",
                    shared_store=shared) as c:
        store = c._session.store
        assert store is not None
        for i in planted:
            assert store.get_proxy(ident, 0, SPEC, i) is None
        assert store.get_proxy(ident, 0, SPEC, 0) is not None  # the valid one, filled locally
        assert store.stats()["proxies"] == 1


def test_s3_store_on_moto(make, tmp_path: Path, client: Any) -> None:
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        options = {"key": "testing", "secret": "testing",
                   "client_kwargs": {"endpoint_url": f"http://{host}:{port}"}}
        shared = SharedStore("s3://phast-proxies/studio", **options)
        shared.fs.mkdir("phast-proxies")
        clip = str(make(CLIP))
        [report] = farm.build([clip], client, shared, chunk=48,
                              cache_dir=str(tmp_path / "drv"))
        assert (report.built, report.failed) == (96, {})
        ident = source_identity(clip)
        reader = SharedStore("s3://phast-proxies/studio", **options)
        assert reader.manifest(ident, 0, SPEC, 96).all()
        assert reader.stats()["proxies"] == 96
        objects = reader.fs.find("phast-proxies/studio/phast-v1/objects")
        assert len(objects) == 96 and not any(".tmp-" in o for o in objects)
        with phast.open(clip, cache_dir=tmp_path / "editor", proxies=False,
                        shared_store=reader) as c:
            c._session.pool.prepare_images(30)
            with c.frame(50, deadline=0.05) as f:
                assert f.quality in (phast.Quality.PROXY, phast.Quality.EXACT)
            store = c._session.store
            assert store is not None and store.get_proxy(ident, 0, SPEC, 51) is not None
    finally:
        server.stop()


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(phast.MissingDependency, match=r"phast\[farm\]"):
        SharedStore("/tmp/nowhere")


def test_environment_names_the_share(make, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHAST_SHARED_STORE", str(tmp_path / "share"))
    with phast.open(make(CLIP), cache_dir=tmp_path / "c", proxies=False) as c:
        store = c._session.store
        assert isinstance(getattr(store, "shared", None), SharedStore)
    with pytest.raises(phast.InvalidArgument):
        monkeypatch.delenv("PHAST_SHARED_STORE")
        phast.open(make(CLIP), cache_dir=tmp_path / "c", publish=True)


def test_cli_dask_and_hwbench_farm(make, tmp_path: Path) -> None:
    clip = str(make(CLIP))
    share = tmp_path / "share"
    out = subprocess.run([sys.executable, "-m", "phast", "proxy", "build", clip, "--quiet",
                          "--dask", "local:1", "--shared-store", str(share), "--chunk", "48",
                          "--cache-dir", str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "96 proxies built, 0 already in" in out.stdout and "0 frames failed" in out.stdout
    assert len(_objects(share)) == 96

    out = subprocess.run([sys.executable, "-m", "hwbench.cli", "farm", clip, "--workers", "1",
                          "--repeat", "1", "--chunk", "48", "--torture-s", "1", "--quiet",
                          "--json", str(tmp_path / "farm.json")],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "PROXY-or-better" in out.stdout
    result = json.loads((tmp_path / "farm.json").read_text())
    [row] = result["rows"]
    assert (row["frames"], row["failed"]) == (96, 0) and row["proxies_per_s"] > 0
    assert result["torture"]["store_at_start"]["proxies"] == 96
    assert result["torture"]["proxy_or_better"] is not None


def test_failed_tasks_are_retried_then_reported_per_frame(make, tmp_path: Path,
                                                          client: Any) -> None:
    # a copy of the clip rewritten in place mid-build: tasks that start after it fail every
    # try (another identity on the worker than the driver's), and are reported frame by frame
    clip = tmp_path / "clip.mkv"
    clip.write_bytes(make(CLIP).read_bytes())
    ident = source_identity(clip)
    share = tmp_path / "share"
    touched: list[bool] = []

    def rewrite(_future: Any) -> None:
        if not touched:
            touched.append(True)
            clip.write_bytes(clip.read_bytes() + b"\0" * 4096)  # junk after the end

    [report] = farm.build([str(clip)], client, SharedStore(str(share)), chunk=8, retries=1,
                          cache_dir=str(tmp_path / "drv"), on_task_done=rewrite)
    assert report.failed and report.built + len(report.failed) == 96
    assert all("differs on this machine" in why for why in report.failed.values())
    # what was reported built is in the share, what failed is not (a task that saw the new
    # file after its check may have stored proxies of it: under the new identity)
    built = {int(p.stem) for p in _objects(share) if ident in p.parts}
    assert len(built) == report.built and not built & set(report.failed)
