"""A proxy farm: proxies built on a Dask cluster into a shared store (:mod:`phast.sharedstore`).

::

    driver (phast proxy build --dask ADDR --shared-store URL)
      open each FILE with phast (its stored index), read the share's manifests
      frames the share lacks ─► tasks of whole groups of pictures (GOP ranges)
            │ client.submit(build_range, task, retries=N)
            ▼
    Dask worker (any machine that sees FILE at the same path and the share at URL)
      build_range: phast.open(FILE, shared_store=URL, publish=True)   (index from the task)
        └─ phast's own sandboxed build worker decodes, downscales, encodes
      the editor side of phast checks each picture, writes the object, then its manifest shard
            │ frames missing after the build: ProxyBuildFailed (Dask retries the task)
            ▼
    driver: progress per finished task; failures reported per frame; shards compacted

A Dask worker never decodes in its own process: it is a phast editor process whose workers are
sandboxed like any editor's. Tasks are idempotent (objects are content-addressed and written
whole), so a task retried after its worker died, or a build run again, skips what the share
already holds and never exposes a partial object. Needs ``pip install 'phast[farm]'``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InvalidArgument, MediaError, ProxyBuildFailed, _import_extra
from .index import FrameIndex
from .proxy import ProxySpec
from .sharedstore import SharedStore

DEFAULT_CHUNK = 96  #: frames per task, at least (whole groups of pictures)
DEFAULT_RETRIES = 2  #: Dask retries of a failed task before its frames are reported


def _distributed() -> Any:
    return _import_extra("distributed", "a proxy farm needs Dask distributed", "farm")


@dataclass(frozen=True)
class FarmTask:
    """One task: these frames of one source (display indices, whole groups of pictures)."""

    path: str
    identity: str
    backend: str
    stream: int
    height: int
    shortcuts: bool
    frames: tuple[int, ...]
    source: dict[str, Any]
    shared_url: str
    storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class FarmReport:
    """What a farm build did for one source."""

    path: str
    frames: int  #: frames in the clip
    present: int  #: already in the share before the build (skipped)
    built: int = 0
    failed: dict[int, str] = field(default_factory=dict)  #: frame -> why
    tasks: int = 0
    seconds: float = 0.0


def plan(index: FrameIndex, missing: np.ndarray, chunk: int = DEFAULT_CHUNK) -> list[list[int]]:
    """Group the ``missing`` frames by groups of pictures (keyframe to keyframe, from the
    index), whole groups per task, at least ``chunk`` frames each (the last may be smaller)."""
    n = index.frame_count
    bounds = sorted({int(k) for k in index.keyframes()} | {0, n})
    tasks: list[list[int]] = []
    current: list[int] = []
    for lo, hi in itertools.pairwise(bounds):
        current += [i for i in range(lo, hi) if missing[i]]
        if len(current) >= chunk:
            tasks.append(current)
            current = []
    if current:
        tasks.append(current)
    return tasks


# -- in the Dask worker ---------------------------------------------------------------------------
_shares: dict[tuple[str, str], SharedStore] = {}


def build_range(task: FarmTask, index_blob: bytes) -> dict[str, Any]:
    """Build ``task``'s frames into the shared store (runs in a Dask worker). Returns a small
    summary; raises :class:`ProxyBuildFailed` naming the frames the share still lacks."""
    from .clip import open as open_clip
    from .levels import LayeredStore
    from .session import _store_for
    from .store import source_identity

    try:
        local = os.path.join(_distributed().get_worker().local_directory, "phast-cache")
    except ValueError:  # not in a Dask worker (called directly)
        local = os.path.join(os.path.expanduser("~"), ".cache", "phast-farm")
    share_key = (task.shared_url, repr(sorted(task.storage_options.items())))
    shared = _shares.get(share_key)
    if shared is None:
        shared = _shares[share_key] = SharedStore(task.shared_url, **task.storage_options)
    identity = source_identity(task.path)
    differs = f"{task.path} differs on this machine from the driver's copy"
    if identity != task.identity:
        raise MediaError(differs)
    store = _store_for(local, shared, True)
    assert isinstance(store, LayeredStore)
    # this worker's local level holds the index only: its proxies are for the share (a second
    # copy on the worker's disk would cost a write per proxy and never be read)
    store.keep_local = False
    if store.get_index(identity, task.backend, task.stream) is None:  # the driver's index
        store.put_index(identity, task.backend, task.stream, FrameIndex.from_bytes(index_blob),
                        task.source)
    spec = ProxySpec(height=task.height, shortcuts=task.shortcuts)
    with open_clip(task.path, backend=task.backend, stream=task.stream, cache_dir=local,
                   proxies=False, proxy_height=task.height, proxy_shortcuts=task.shortcuts,
                   budget="off", shared_store=shared, publish=True) as clip:
        if clip._session.identity != identity:  # rewritten since: not the frames planned
            raise MediaError(differs)
        clip.build_proxies(frames=task.frames)
        n = len(clip)
    have = shared.manifest(identity, task.stream, spec.key, n, fresh=True)
    failed = tuple(i for i in task.frames if not have[i])
    if failed:
        raise ProxyBuildFailed(f"{len(failed)} of {len(task.frames)} frames of {task.path} "
                               "were not built", failed)
    return {"frames": len(task.frames), "pid": os.getpid()}


# -- the driver -----------------------------------------------------------------------------------
@contextlib.contextmanager
def connect(address: str) -> Any:
    """A Dask ``Client`` for a scheduler ``address``, or ``local:N``: a LocalCluster of N
    single-threaded worker processes (closed on exit)."""
    distributed = _distributed()
    if address.startswith("local:"):
        try:
            n = int(address.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise InvalidArgument(f"--dask local:N needs N >= 1, got {address!r}")
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster, \
                distributed.Client(cluster) as client:
            yield client
    else:
        with distributed.Client(address) as client:
            yield client


def build(files: Sequence[str], client: Any, shared: SharedStore, *, height: int = 360,
          shortcuts: bool = True, chunk: int | None = None, retries: int | None = None,
          cache_dir: str | None = None, backend: str = "auto",
          progress: Callable[[int, int], None] | None = None,
          on_task_done: Callable[[Any], None] | None = None) -> list[FarmReport]:
    """Build every frame of ``files`` the share lacks on ``client``'s cluster; one report per
    file. ``progress(done, total)`` counts frames as tasks finish; ``on_task_done(future)`` is
    called for each finished task (tests use it to kill a worker mid-build). ``chunk`` and
    ``retries``: None for :data:`DEFAULT_CHUNK` and :data:`DEFAULT_RETRIES` (the command lines
    pass theirs through without importing this module)."""
    from .clip import open as open_clip

    chunk = DEFAULT_CHUNK if chunk is None else chunk
    retries = DEFAULT_RETRIES if retries is None else retries

    distributed = _distributed()
    spec = ProxySpec(height=height, shortcuts=shortcuts)
    reports: list[FarmReport] = []
    sources: list[tuple[str, int, int]] = []
    jobs: dict[Any, tuple[FarmReport, FarmTask]] = {}
    t0 = time.monotonic()
    for path in files:
        path = os.path.abspath(path)
        with open_clip(path, backend=backend, cache_dir=cache_dir, proxies=False,
                       proxy_height=height, budget="off") as clip:
            session = clip._session
            index, identity = session.index, session.identity
            assert index is not None and identity is not None
            have = shared.manifest(identity, session.stream, spec.key, index.frame_count,
                                   fresh=True)
            report = FarmReport(path, index.frame_count, int(have.sum()))
            base = FarmTask(path, identity, session.backend, session.stream, height, shortcuts,
                            (), dict(session.source), shared.url, dict(shared.storage_options))
            blob = index.to_bytes()
        reports.append(report)
        sources.append((identity, base.stream, index.frame_count))
        for frames in plan(index, ~have, chunk):
            task = dataclasses.replace(base, frames=tuple(frames))
            key = f"phast-proxies-{identity[-8:]}-{frames[0]}-{uuid.uuid4().hex[:8]}"
            future = client.submit(build_range, task, blob, retries=retries, key=key,
                                   pure=False)
            jobs[future] = (report, task)
            report.tasks += 1
    total, done = sum(len(t.frames) for _r, t in jobs.values()), 0
    if progress is not None:
        progress(0, total)
    for future in distributed.as_completed(list(jobs)):
        report, task = jobs[future]
        try:
            future.result()
            report.built += len(task.frames)
        except ProxyBuildFailed as e:
            report.built += len(task.frames) - len(e.frames)
            report.failed.update({i: str(e) for i in e.frames})
        except Exception as e:  # the task failed every try (or its workers kept dying)
            report.failed.update({i: f"{type(e).__name__}: {e}" for i in task.frames})
        done += len(task.frames)
        if progress is not None:
            progress(done, total)
        if on_task_done is not None:
            on_task_done(future)
        report.seconds = time.monotonic() - t0
    for identity, stream, n in sources:  # one shard per source again (writers left one each)
        with contextlib.suppress(Exception):
            shared.compact(identity, stream, spec.key, n)
    return reports


def run_cli(args: Any, progress: Callable[[int, int], None]) -> int:
    """``phast proxy build FILE... --dask ADDRESS --shared-store URL``: exit status 1 when any
    frame failed (each listed on stderr)."""
    import sys

    from .sharedstore import open_shared

    shared = open_shared(args.shared_store)
    if shared is None:
        raise InvalidArgument("--dask needs --shared-store URL (or $PHAST_SHARED_STORE)")
    with connect(args.dask) as client:
        reports = build(args.files, client, shared, height=args.height, chunk=args.chunk,
                        retries=args.retries, cache_dir=args.cache_dir, progress=progress)
    finish = getattr(progress, "finish", None)
    if callable(finish):
        finish()
    status = 0
    for r in reports:
        print(f"{os.path.basename(r.path)}: {r.built} proxies built, {r.present} already in "
              f"{shared.url}, {len(r.failed)} frames failed, {r.frames} frames in the clip "
              f"({r.tasks} tasks, {r.seconds:.1f} s)")
        for i, why in sorted(r.failed.items()):
            print(f"  frame {i}: {why}", file=sys.stderr)
        status = status or (1 if r.failed else 0)
    return status
