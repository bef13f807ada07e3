"""The backend conformance suite: one pytest mixin every backend, built-in or plugin, subclasses.

::

    from phast.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        backend = "mycodec"                  # the registry / entry-point name
        clip_kinds = ("h264", "y4m_420")     # phast.testing.CLIP_KINDS, or your make_clip's

What it checks, for every clip kind (against a plain sequential PyAV decode,
:mod:`phast.testing.reference`):

* declarations: the class the registry names is a ``Backend`` whose capabilities are well
  formed; its probe answers plainly, in process and in a child interpreter (``phast backends``);
* the contract in process: ``describe()`` keys and types, ``build_index()`` (with heartbeats)
  giving frame ``i`` = sequential frame ``i``, an index that survives its plain-data round trip
  and ``use_index()``, ``SlotTooSmall`` raised before writing, ``prefetch`` never raising;
* through phast, sandboxed: every frame in shuffled order bit-exact in ``native`` and within the
  declared tolerance in each packed format; backward and random order; timestamps and
  ``frame_at``; a reopen that adopts the stored index in a fresh worker; two clips sharing one
  worker;
* crashes: the worker killed between requests, and stopped (the watchdog must recover);
* bad input (text, garbage, truncated, header only): a typed ``MediaError`` or exact frames,
  never a crashed worker;
* leaks: ``close()`` closes the source in the worker, frames held across it stay valid, and
  after ``shutdown()`` no worker process and no ``/dev/shm`` entry remains; the editor process
  never imports the backend's module.

An unavailable backend (its probe says why) skips the suite, unless ``PHAST_REQUIRE_BACKEND=1``
turns that into a failure (for runs on the hardware a backend needs).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import psutil
import pytest

import phast
from phast import registry
from phast.backends.base import DESCRIBE_KEYS, Backend, DecodedFrame, ProbeResult, SlotTooSmall
from phast.errors import (
    FrameQuarantined,
    InvalidArgument,
    MediaError,
    PhastError,
    WorkerCrashed,
)
from phast.index import FrameIndex
from phast.types import OUTPUT_FORMATS, PACKED_LAYOUT, Quality

from . import clips, reference

__all__ = ["BackendConformance"]

REQUIRE_ENV = "PHAST_REQUIRE_BACKEND"


# -- helpers --------------------------------------------------------------------------------------


def shm_entries() -> set[str]:
    """Names in ``/dev/shm`` (phast uses memfd: it must never add any)."""
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


def shm_left(before: set[str]) -> set[str]:
    """Entries added to ``/dev/shm`` since ``before`` that no other live process holds.

    ``/dev/shm`` is the whole machine's: on a shared host other programs (a multiprocessing
    pool's semaphores, a browser) add and remove entries while a test runs. An entry another
    process still has mapped or open is theirs; one nobody but this process holds -- or nobody
    at all, as what a dead worker leaked -- is a leak. Matched by inode: glibc maps a semaphore
    under a temporary name before linking it to its own.
    """
    added: dict[tuple[int, int], str] = {}
    for name in shm_entries() - before:
        with contextlib.suppress(OSError):  # removed meanwhile: not left
            st = os.stat(f"/dev/shm/{name}")
            added[(st.st_dev, st.st_ino)] = name
    shm_dev = {dev for dev, _ in added}
    me = os.getpid()
    for pid in psutil.pids():
        if not added:
            break
        if pid == me:
            continue
        for key in _shm_held(pid, shm_dev):
            added.pop(key, None)
    return set(added.values())


def _shm_held(pid: int, devices: set[int]) -> set[tuple[int, int]]:
    """(device, inode) of the ``/dev/shm`` files process ``pid`` maps or has open."""
    held: set[tuple[int, int]] = set()
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split(None, 5)
                if len(fields) == 6 and fields[5].startswith("/dev/shm/"):
                    major, minor = (int(x, 16) for x in fields[3].split(":"))
                    held.add((os.makedev(major, minor), int(fields[4])))
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return held  # gone, or not ours to read
    for fd in fds:
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{pid}/fd/{fd}")
            if st.st_dev in devices:
                held.add((st.st_dev, st.st_ino))
    return held


def open_paths(pid: int) -> set[str] | None:
    """Regular files process ``pid`` has open, or None when that cannot be read here."""
    try:
        return {f.path for f in psutil.Process(pid).open_files()}
    except (psutil.AccessDenied, psutil.NoSuchProcess, NotImplementedError):
        return None


def worker_processes() -> set[int]:
    """Live phast worker processes descending from this one."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "phast.worker" in child.cmdline():
                found.add(child.pid)
        except psutil.Error:
            continue  # it ended while we looked
    return found


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def as_bytes(plane: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(plane).view(np.uint8).reshape(shape)


def assert_within(got: np.ndarray, want: np.ndarray, tolerance: int, what: str) -> None:
    """Equal shapes and dtypes, and no sample further than ``tolerance`` apart."""
    assert got.shape == want.shape, f"{what}: shape {got.shape}, reference {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, reference {want.dtype}"
    if tolerance == 0:
        assert np.array_equal(got, want), f"{what}: differs from the reference (must be exact)"
        return
    diff = int(np.abs(got.astype(np.int64) - want.astype(np.int64)).max())
    assert diff <= tolerance, f"{what}: max difference {diff} > declared tolerance {tolerance}"


def _decode_into(backend: Backend, index: int, fmt: str) -> tuple[DecodedFrame, bytearray]:
    """Decode through the in-process contract, growing the buffer as ``SlotTooSmall`` asks."""
    size = 64
    for _ in range(4):
        buf = bytearray(size)
        try:
            return backend.decode(index, fmt, memoryview(buf)), buf
        except SlotTooSmall as e:
            assert e.needed > size, f"SlotTooSmall({e.needed}) for a {size}-byte buffer"
            size = e.needed
    raise AssertionError("decode kept raising SlotTooSmall with the size it asked for")


# -- the suite ------------------------------------------------------------------------------------


class BackendConformance:
    """Mixin: subclass it as ``Test...`` with :attr:`backend` and :attr:`clip_kinds` set.

    Override :meth:`make_clip` to test on clips of your own (kinds :mod:`phast.testing.clips`
    does not know), and :meth:`reference` when FFmpeg cannot decode your format.
    """

    #: Registry name of the backend under test (an entry point, a built-in, or registered).
    backend: ClassVar[str] = ""
    #: Clip kinds to run on (``phast.testing.CLIP_KINDS`` names, or your :meth:`make_clip`'s).
    #: The first one also serves the crash, bad-input and leak tests.
    clip_kinds: ClassVar[tuple[str, ...]] = ()
    #: ``backend_options`` every clip is opened with.
    backend_options: ClassVar[Mapping[str, Any]] = {}
    #: Overrides the backend class's ``conversion_tolerance`` when not None.
    tolerance: ClassVar[Mapping[str, int] | None] = None
    #: Bad inputs derived from the first clip kind (``phast.testing.clips.BAD_INPUTS``).
    bad_inputs: ClassVar[tuple[str, ...]] = clips.BAD_INPUTS
    #: Watchdog timeout (seconds) of the pool the stopped-worker test uses.
    hang_timeout: ClassVar[float] = 1.5
    #: Random requests per clip in the random-order test.
    random_requests: ClassVar[int] = 40

    # -- hooks ------------------------------------------------------------------------------------
    def make_clip(self, kind: str, directory: Path) -> Path:
        """Write (once) and return a clip of ``kind`` in ``directory``."""
        return clips.make_clip(kind, directory)

    def reference(self, path: Path, format: str, *, partial: bool = False) -> list[Any]:
        """Frames of a sequential decode: arrays, or plane tuples for ``native``."""
        return reference.reference_frames(path, format=format, partial=partial)

    def reference_pts(self, path: Path) -> list[int | None]:
        return reference.reference_pts(path)

    def reference_pix_fmt(self, path: Path) -> str:
        return reference.reference_pix_fmt(path)

    # -- parametrisation and fixtures -------------------------------------------------------------
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "clip_kind" in metafunc.fixturenames:
            if not self.clip_kinds:
                raise pytest.UsageError(f"{type(self).__name__}: set clip_kinds")
            metafunc.parametrize("clip_kind", self.clip_kinds)
        if "bad_input" in metafunc.fixturenames:
            metafunc.parametrize("bad_input", self.bad_inputs)

    @pytest.fixture(scope="class")
    @classmethod
    def backend_class(cls) -> type[Backend]:
        spec = registry.available().get(cls.backend)
        if spec is None:
            pytest.fail(f"backend {cls.backend!r} is not registered (known: "
                        f"{', '.join(sorted(registry.available()))}); is its distribution "
                        "installed, or PHAST_NO_PLUGINS set?")
        return registry.load(spec)

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _backend_available(cls, backend_class: type[Backend]) -> None:
        result = backend_class.probe()
        if not result.available:
            message = f"backend {cls.backend!r} is unavailable here: {result.reason}"
            if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
                pytest.fail(message)
            pytest.skip(message)

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_dir(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tmp_path_factory.mktemp(f"conformance-{cls.backend}")

    @pytest.fixture
    def clip_path(self, clip_kind: str, conformance_dir: Path) -> Path:
        return self.make_clip(clip_kind, conformance_dir)

    @pytest.fixture
    def first_clip(self, conformance_dir: Path) -> Path:
        return self.make_clip(self.clip_kinds[0], conformance_dir)

    @pytest.fixture
    def phast_cache(self, tmp_path: Path) -> Path:
        return tmp_path / "phast-cache"

    @pytest.fixture(scope="class")
    @classmethod
    def shared_pool(cls) -> Iterator[phast.WorkerPool]:
        """One worker for the class's exactness tests (clips take turns on it)."""
        pool = phast.WorkerPool(max_workers=1, config=phast.WorkerConfig(idle_timeout=5.0))
        yield pool
        pool.shutdown()

    @pytest.fixture
    def own_pool(self) -> Iterator[phast.WorkerPool]:
        """A private one-worker pool with a short watchdog; checks it leaves nothing behind."""
        shm_before, workers_before = shm_entries(), worker_processes()
        pool = phast.WorkerPool(max_workers=1, config=phast.WorkerConfig(
            hang_timeout=self.hang_timeout, idle_timeout=30.0))
        yield pool
        pool.shutdown()
        assert not shm_left(shm_before), "entries appeared in /dev/shm"
        left = worker_processes() - workers_before
        assert not left, f"worker processes {sorted(left)} outlived pool.shutdown()"

    def open_clip(self, path: Path, *, pool: phast.WorkerPool, cache_dir: Path,
                  **kwargs: Any) -> phast.Clip:
        return phast.open(path, backend=self.backend, backend_options=dict(self.backend_options),
                          pool=pool, cache_dir=cache_dir, **kwargs)

    def tolerances(self, backend_class: type[Backend]) -> Mapping[str, int]:
        return backend_class.conversion_tolerance if self.tolerance is None else self.tolerance

    # -- declarations -----------------------------------------------------------------------------
    def test_declared_capabilities(self, backend_class: type[Backend]) -> None:
        cls = backend_class
        assert cls.name == self.backend, f"{cls.__name__}.name is {cls.name!r}, registered as " \
                                         f"{self.backend!r}"
        assert isinstance(cls.device, str) and cls.device
        for attr in ("codecs", "pix_fmts"):
            value = getattr(cls, attr)
            assert isinstance(value, frozenset) and all(isinstance(v, str) for v in value), attr
        formats = tuple(cls.formats)
        unknown = set(formats) - set(OUTPUT_FORMATS)
        assert not unknown, f"formats phast does not know: {unknown}"
        assert {"native", "rgb24"} <= set(formats), "every backend writes native and rgb24"
        for fmt, tol in self.tolerances(cls).items():
            assert fmt in formats and fmt != "native", f"tolerance declared for {fmt!r}"
            assert isinstance(tol, int) and tol >= 0, f"tolerance for {fmt!r}: {tol!r}"

    def test_probe(self, backend_class: type[Backend]) -> None:
        t = time.monotonic()
        result = backend_class.probe()
        assert time.monotonic() - t < 10, "probe() must be quick"
        assert isinstance(result, ProbeResult)
        assert isinstance(result.available, bool) and isinstance(result.reason, str)
        json.dumps(dict(result.details))
        from phast.probe import probe_backend

        spec = registry.available()[self.backend]
        child = probe_backend(spec, timeout=60)  # what `phast backends` shows
        assert child["available"] is True, child["reason"]

    # -- the contract, in process -----------------------------------------------------------------
    def test_contract_in_process(self, clip_path: Path, backend_class: type[Backend]) -> None:
        beats: list[float] = []
        b = backend_class(str(clip_path), stream=0, options=dict(self.backend_options),
                          progress=lambda: beats.append(time.monotonic()))
        try:
            self._check_describe(b.describe(), clip_path)
            index = b.build_index()
            assert isinstance(index, FrameIndex)
            index.validate()
            assert beats, "build_index() never called progress(): long scans would look hung"
            ref = self.reference(clip_path, "native")
            assert index.frame_count == len(ref), "frame count differs from a sequential decode"
            self._check_describe(b.describe(), clip_path)
            # What phast stores and sends back to every later worker: plain data.
            b.use_index(FrameIndex.from_parts(index.header(), index.blobs()))
            last = index.frame_count - 1
            for fmt in ("native", "rgb24"):
                tiny = bytearray(b"\xa5" * 16)
                with pytest.raises(SlotTooSmall) as info:
                    b.decode(last, fmt, memoryview(tiny))
                assert info.value.needed > len(tiny)
                assert tiny == bytearray(b"\xa5" * 16), "decode wrote before raising SlotTooSmall"
            for i in (last, 0, last // 2):
                decoded, buf = _decode_into(b, i, "native")
                self._check_native_record(decoded, buf, ref[i], f"frame {i}")
                assert decoded.pix_fmt == self.reference_pix_fmt(clip_path)
            missing = [f for f in OUTPUT_FORMATS if f not in backend_class.formats]
            for fmt in missing[:1]:
                with pytest.raises(InvalidArgument):
                    b.decode(0, fmt, memoryview(bytearray(1 << 22)))
            for i in (index.frame_count, 10**9, -1):
                assert b.prefetch(i) in (True, False)
        finally:
            b.close()

    def _check_describe(self, desc: dict[str, Any], path: Path) -> None:
        json.dumps(desc)
        missing = [k for k in DESCRIBE_KEYS if k not in desc]
        assert not missing, f"describe() lacks {missing}"
        for key in ("width", "height", "bit_depth", "rotation", "stream_index"):
            assert isinstance(desc[key], int) and not isinstance(desc[key], bool), key
        for key in ("codec", "pix_fmt"):
            assert isinstance(desc[key], str) and desc[key], key
        rate = desc["average_rate"]
        assert rate is None or (isinstance(rate, list) and len(rate) == 2
                                and all(isinstance(v, int) and v > 0 for v in rate))
        assert isinstance(desc["streams"], list)
        first = self.reference(path, "native")[0]
        assert desc["height"] == first[0].shape[0], "describe() height"

    def _check_native_record(self, d: DecodedFrame, buf: bytearray, want: tuple[np.ndarray, ...],
                             what: str) -> None:
        assert isinstance(d, DecodedFrame)
        assert d.itemsize in (1, 2) and len(d.planes) == len(want), what
        end = 0
        for plane, ref_plane in zip(d.planes, want, strict=True):
            assert plane.offset >= end and plane.offset + plane.nbytes <= len(buf), what
            end = plane.offset + plane.nbytes
            got = np.frombuffer(buf, np.uint8, plane.nbytes, plane.offset)
            got = got.reshape(plane.rows, plane.row_bytes)
            assert got.shape == ref_plane.shape, f"{what}: plane {got.shape} vs {ref_plane.shape}"
            assert np.array_equal(got, ref_plane), f"{what}: native plane differs"

    # -- through phast, sandboxed -----------------------------------------------------------------
    def test_open_runs_sandboxed(self, clip_path: Path, shared_pool: phast.WorkerPool,
                                 phast_cache: Path) -> None:
        ref = self.reference(clip_path, "rgb24")
        with self.open_clip(clip_path, pool=shared_pool, cache_dir=phast_cache) as clip:
            assert clip.backend == self.backend
            info = clip.info
            assert info.frame_count == len(ref)
            assert (info.height, info.width) == ref[0].shape[:2]
            assert info.pix_fmt == self.reference_pix_fmt(clip_path)
            clip.frame(0).release()
            pid = clip.worker_pid
            assert pid is not None and pid != os.getpid()
            assert "phast.worker" in " ".join(psutil.Process(pid).cmdline())
            assert "rlimits" in clip.sandbox, "the worker reported no confinement"

    def test_native_exact_shuffled(self, clip_path: Path, shared_pool: phast.WorkerPool,
                                   phast_cache: Path) -> None:
        ref = self.reference(clip_path, "native")
        pix_fmt = self.reference_pix_fmt(clip_path)
        order = list(range(len(ref)))
        random.Random(11).shuffle(order)
        with self.open_clip(clip_path, pool=shared_pool, cache_dir=phast_cache) as clip:
            for i in order:
                with clip.frame(i, format="native") as f:
                    assert f.index == i and f.pix_fmt == pix_fmt
                    assert len(f.planes) == len(ref[i]), f"frame {i}: plane count"
                    for p, (got, want) in enumerate(zip(f.planes, ref[i], strict=True)):
                        assert np.array_equal(as_bytes(got, want.shape), want), \
                            f"frame {i} plane {p} differs from a sequential decode"

    def test_rgb24_shuffled(self, clip_path: Path, shared_pool: phast.WorkerPool,
                            phast_cache: Path, backend_class: type[Backend]) -> None:
        ref = self.reference(clip_path, "rgb24")
        pts = self.reference_pts(clip_path)
        tol = self.tolerances(backend_class).get("rgb24", 0)
        order = list(range(len(ref)))
        random.Random(7).shuffle(order)
        with self.open_clip(clip_path, pool=shared_pool, cache_dir=phast_cache) as clip:
            container_times = clip.info.timestamps == "container"
            for i in order:
                with clip.frame(i) as f:
                    assert f.index == i and f.quality is Quality.EXACT
                    assert_within(f.array, ref[i], tol, f"frame {i} rgb24")
                    if container_times:
                        assert f.pts == pts[i], f"frame {i}: pts {f.pts}, reference {pts[i]}"

    def test_packed_formats(self, clip_path: Path, shared_pool: phast.WorkerPool,
                            phast_cache: Path, backend_class: type[Backend]) -> None:
        tolerances = self.tolerances(backend_class)
        formats = [f for f in backend_class.formats if f in PACKED_LAYOUT and f != "rgb24"]
        with self.open_clip(clip_path, pool=shared_pool, cache_dir=phast_cache) as clip:
            n = len(clip)
            for fmt in formats:
                ref = self.reference(clip_path, fmt)
                for i in sorted({0, n // 2, n - 1}):
                    with clip.frame(i, format=fmt) as f:
                        assert f.pix_fmt == fmt
                        assert_within(f.array, ref[i], tolerances.get(fmt, 0), f"frame {i} {fmt}")

    def test_backward_and_random_order(self, clip_path: Path, shared_pool: phast.WorkerPool,
                                       phast_cache: Path, backend_class: type[Backend]) -> None:
        ref = self.reference(clip_path, "rgb24")
        tol = self.tolerances(backend_class).get("rgb24", 0)
        n = len(ref)
        rng = random.Random(3)
        order = list(range(n - 1, -1, -1)) + [rng.randrange(n) for _ in
                                               range(self.random_requests)]
        order += [n - 1, 0, n - 1, 0]  # the two ends, alternately
        with self.open_clip(clip_path, pool=shared_pool, cache_dir=phast_cache) as clip:
            for i in order:
                with clip.frame(i) as f:
                    assert_within(f.array, ref[i], tol, f"frame {i} (order {order.index(i)})")

    def test_timestamps_and_frame_at(self, clip_path: Path, shared_pool: phast.WorkerPool,
                                     phast_cache: Path) -> None:
        with self.open_clip(clip_path, pool=shared_pool, cache_dir=phast_cache) as clip:
            n = len(clip)
            times = []
            for i in range(n):
                with clip.frame(i, format="gray") as f:
                    times.append(f.time)
            assert times == sorted(times), "frame times go backwards"
            assert clip.info.start_time == times[0]
            for i in random.Random(5).sample(range(n), min(6, n)):
                with clip.frame_at(times[i]) as f:
                    assert f.index == i

    def test_reopen_adopts_stored_index(self, first_clip: Path, phast_cache: Path,
                                        backend_class: type[Backend]) -> None:
        ref = self.reference(first_clip, "rgb24")
        tol = self.tolerances(backend_class).get("rgb24", 0)
        infos = []
        for seed in (1, 2):  # the second open finds the index stored: use_index() in a new worker
            pool = phast.WorkerPool(max_workers=1)
            try:
                with self.open_clip(first_clip, pool=pool, cache_dir=phast_cache) as clip:
                    infos.append(clip.info)
                    order = random.Random(seed).sample(range(len(ref)), min(10, len(ref)))
                    for i in order:
                        with clip.frame(i) as f:
                            assert_within(f.array, ref[i], tol, f"frame {i} after reopen")
            finally:
                pool.shutdown()
        assert infos[0] == infos[1]

    def test_two_clips_share_one_worker(self, conformance_dir: Path, shared_pool: phast.WorkerPool,
                                        phast_cache: Path) -> None:
        kinds = (self.clip_kinds * 2)[:2]
        paths = [self.make_clip(k, conformance_dir) for k in kinds]
        refs = [self.reference(p, "native") for p in paths]
        with self.open_clip(paths[0], pool=shared_pool, cache_dir=phast_cache) as a, \
                self.open_clip(paths[1], pool=shared_pool, cache_dir=phast_cache) as b:
            rng = random.Random(9)
            for _ in range(20):
                for clip, ref in ((a, refs[0]), (b, refs[1])):
                    i = rng.randrange(len(ref))
                    with clip.frame(i, format="native") as f:
                        for got, want in zip(f.planes, ref[i], strict=True):
                            assert np.array_equal(as_bytes(got, want.shape), want), i
            assert a.worker_pid == b.worker_pid

    # -- crashes --------------------------------------------------------------------------------
    def test_worker_killed_between_requests(self, first_clip: Path, own_pool: phast.WorkerPool,
                                            phast_cache: Path,
                                            backend_class: type[Backend]) -> None:
        ref = self.reference(first_clip, "rgb24")
        tol = self.tolerances(backend_class).get("rgb24", 0)
        n = len(ref)
        with self.open_clip(first_clip, pool=own_pool, cache_dir=phast_cache) as clip:
            assert_within(clip.frame(n // 2).array, ref[n // 2], tol, "before the kill")
            pid = clip.worker_pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            for i in (n // 2 + 1, n // 2 - 1, n - 1, 0):
                with clip.frame(i) as f:
                    assert_within(f.array, ref[i], tol, f"frame {i} after the kill")
            assert clip.worker_pid != pid
            assert not clip.quarantined

    def test_stopped_worker_is_replaced(self, first_clip: Path, own_pool: phast.WorkerPool,
                                        phast_cache: Path, backend_class: type[Backend]) -> None:
        ref = self.reference(first_clip, "rgb24")
        tol = self.tolerances(backend_class).get("rgb24", 0)
        with self.open_clip(first_clip, pool=own_pool, cache_dir=phast_cache) as clip:
            clip.frame(1).release()
            pid = clip.worker_pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:
                with clip.frame(len(ref) - 1) as f:
                    assert_within(f.array, ref[-1], tol, "after the watchdog")
            finally:
                if not gone(pid):
                    os.kill(pid, signal.SIGCONT)
            assert clip.worker_pid != pid
            assert "sent no" in (own_pool.workers[0].last_failure or "")

    # -- bad input ------------------------------------------------------------------------------
    def test_bad_input_is_typed(self, bad_input: str, first_clip: Path,
                                own_pool: phast.WorkerPool, phast_cache: Path,
                                backend_class: type[Backend]) -> None:
        bad = clips.make_bad_input(bad_input, first_clip)
        tol = self.tolerances(backend_class).get("rgb24", 0)
        try:
            clip = self.open_clip(bad, pool=own_pool, cache_dir=phast_cache)
        except MediaError:
            pass  # the expected answer for most bad inputs (UnsupportedCodec included)
        except PhastError as e:
            pytest.fail(f"{bad_input}: open raised {type(e).__name__} ({e}), not a MediaError")
        else:
            with clip:  # it opened (a damaged tail, say): what it serves must be right
                ref = self.reference(bad, "rgb24", partial=True)
                for i in range(len(clip)):
                    try:
                        with clip.frame(i) as f:
                            assert i < len(ref), f"frame {i} served; a decode gives {len(ref)}"
                            assert_within(f.array, ref[i], tol, f"{bad_input}: frame {i}")
                    except (FrameQuarantined, WorkerCrashed) as e:
                        pytest.fail(f"{bad_input}: frame {i} crashed workers: {e}")
                    except MediaError:
                        pass  # a frame refused with a typed error
        restarts = sum(w.restarts for w in own_pool.workers)
        assert restarts == 0, f"{bad_input}: bad input crashed a worker (use typed errors): " \
                              f"{[w.last_failure for w in own_pool.workers]}"
        ref = self.reference(first_clip, "native")
        with self.open_clip(first_clip, pool=own_pool, cache_dir=phast_cache) as clip, \
                clip.frame(len(ref) - 1, format="native") as f:
            for got, want in zip(f.planes, ref[-1], strict=True):
                assert np.array_equal(as_bytes(got, want.shape), want)

    # -- leaks ------------------------------------------------------------------------------------
    def test_close_releases_everything(self, first_clip: Path, own_pool: phast.WorkerPool,
                                       phast_cache: Path) -> None:
        ref = self.reference(first_clip, "native")
        clip = self.open_clip(first_clip, pool=own_pool, cache_dir=phast_cache)
        held = clip.frame(1, format="native")
        pid = clip.worker_pid
        assert pid is not None
        before = open_paths(pid)
        clip.close()
        clip.close()  # idempotent
        after = open_paths(pid)
        source = str(first_clip.resolve())
        if before is not None and after is not None and source in before and not gone(pid):
            assert source not in after, "backend.close() left the source open in the worker"
        for got, want in zip(held.planes, ref[1], strict=True):  # leased frames outlive close()
            assert np.array_equal(as_bytes(got, want.shape), want)
        held.release()
        with pytest.raises(phast.ClipClosed):
            clip.frame(0)

    def test_editor_never_imports_the_backend(self, first_clip: Path, tmp_path: Path) -> None:
        spec = registry.available()[self.backend]
        script = textwrap.dedent(f"""
            import json, os, sys
            import phast
            with phast.open({str(first_clip)!r}, backend={self.backend!r},
                            backend_options={dict(self.backend_options)!r}) as clip:
                clip.frame(0, format="native").release()
                clip.frame(len(clip) - 1).release()
                pid = clip.worker_pid
            print(json.dumps({{"modules": sorted(sys.modules), "worker": pid,
                              "me": os.getpid()}}))
        """)
        env = dict(os.environ, PHAST_CACHE_DIR=str(tmp_path / "cache"),
                   PYTHONPATH=os.pathsep.join(p for p in sys.path if p and os.path.exists(p)))
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=env, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        module = spec.partition(":")[0]
        assert module not in seen["modules"], f"the editor process imported {module}"
        assert seen["worker"] != seen["me"]
