"""Frames view shared memory without copies; leases keep slots alive; nothing is left behind."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest

import phast
from phast.shm import Lease
from phast.testing.conformance import shm_entries, shm_left
from tests.reference import reference_frames

CLIP = "h264_bpyramid_longgop"


def _base_chain(a: np.ndarray) -> list[object]:
    chain = []
    while a is not None:
        chain.append(a)
        a = a.base if isinstance(a, np.ndarray) else None
    return chain


def test_array_is_a_read_only_view_of_a_leased_slot(make, cache_dir, pool) -> None:
    with phast.open(make(CLIP), cache_dir=cache_dir, pool=pool) as clip:
        f = clip.frame(3)
        assert isinstance(f.array.base, Lease)  # numpy over the slot, no copy
        assert not f.array.flags.writeable
        with pytest.raises(ValueError):
            f.array[0, 0, 0] = 1
        assert "array" not in repr(f) and "index=3" in repr(f)


def test_derived_arrays_keep_the_slot_until_they_are_gone(make, cache_dir, pool) -> None:
    ref = reference_frames(make(CLIP))
    with phast.open(make(CLIP), cache_dir=cache_dir, pool=pool, max_slots=2) as clip:
        f = clip.frame(10)
        crop = f.array[10:20, 5:15]
        f.release()
        # The slot cannot be reused while `crop` views it: later frames go elsewhere.
        for i in range(20, 26):
            with clip.frame(i) as g:
                assert np.array_equal(g.array, ref[i])
        assert np.array_equal(crop, ref[10][10:20, 5:15])
        session = clip._session
        assert session.slots.leased == 1
        del crop
        gc.collect()
        assert session.slots.leased == 0


def test_slots_exhausted_is_typed_and_recoverable(make, cache_dir, pool) -> None:
    with phast.open(make(CLIP), cache_dir=cache_dir, pool=pool, max_slots=3) as clip:
        held = [clip.frame(i) for i in range(3)]
        with pytest.raises(phast.SlotsExhausted, match="release"):
            clip.frame(5)
        copies = [h.copy() for h in held]
        for h in held:
            h.release()
        assert clip.frame(5).index == 5
        assert copies[1].array.base is None or not isinstance(copies[1].array.base, Lease)
        assert copies[2].index == 2


def test_frames_outlive_their_clip(make, cache_dir, pool) -> None:
    ref = reference_frames(make(CLIP))
    clip = phast.open(make(CLIP), cache_dir=cache_dir, pool=pool)
    f = clip.frame(33)
    clip.close()
    assert np.array_equal(f.array, ref[33])
    with pytest.raises(phast.ClipClosed):
        clip.frame(1)


def test_native_planes_share_one_slot(make, cache_dir, pool) -> None:
    with phast.open(make(CLIP), cache_dir=cache_dir, pool=pool) as clip:
        f = clip.frame(4, format="native")
        assert f.pix_fmt == "yuv420p" and len(f.planes) == 3
        assert f.planes[0].shape == (96, 160) and f.planes[1].shape == (48, 80)
        assert all(p.base is f.planes[0].base for p in f.planes)
        assert f.array.ndim == 1 and f.array.size == 160 * 96 * 3 // 2


EDITOR_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import phast
    clip = phast.open(sys.argv[1], cache_dir=sys.argv[2])
    frames = [clip.frame(i) for i in (0, 45, 89)]
    print(json.dumps({"editor_imported_av": "av" in sys.modules,
                      "worker": clip.worker_pid, "sandbox": clip.sandbox,
                      "pid": os.getpid()}))
    if sys.argv[3] == "crash":
        os.kill(clip.worker_pid, 9)
        clip.frame(10)
    print(clip.worker_pid, flush=True)
    if sys.argv[3] == "killed":
        os.kill(os.getpid(), 9)
    # exit without closing anything: cleanup must not depend on the caller's manners
""")


@pytest.mark.parametrize("ending", ["normal", "crash", "killed"])
def test_editor_process_never_decodes_and_leaves_nothing(ending, make, cache_dir) -> None:
    before = shm_entries()
    out = subprocess.run([sys.executable, "-c", EDITOR_SCRIPT, str(make(CLIP)), str(cache_dir),
                          ending], capture_output=True, text=True, timeout=120)
    assert out.returncode == (-9 if ending == "killed" else 0), out.stderr
    report = json.loads(out.stdout.splitlines()[0])
    last_worker = int(out.stdout.splitlines()[1])
    assert report["editor_imported_av"] is False  # demuxing and decoding happen in workers only
    assert report["worker"] != report["pid"]
    assert report["sandbox"]["no_new_privs"] == "active"
    assert report["sandbox"]["rlimits"].startswith("active")
    assert not shm_left(before)
    for pid in {report["worker"], last_worker}:  # no worker outlives its editor
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_slot_dropped_without_close_closes_its_descriptor() -> None:
    from phast.shm import SlotPool

    slots = SlotPool(max_slots=2)
    slot = slots.grant(4096)
    fd, inode = slot.fd, os.fstat(slot.fd).st_ino
    del slots, slot
    gc.collect()
    try:
        reused = os.fstat(fd).st_ino != inode  # the number went to another file meanwhile
    except OSError:
        reused = True  # closed
    assert reused


def test_a_closed_clip_gives_every_slot_back(make, cache_dir, pool) -> None:
    """Decodes that finish after close(), delayed or not, leave no slot mapped or open."""
    clip = phast.open(make(CLIP), cache_dir=cache_dir, pool=pool, proxies=False)
    session = clip._session
    made: list[object] = []
    grant = session.slots.grant
    session.slots.grant = lambda n: made.append(grant(n)) or made[-1]  # type: ignore[method-assign]
    clip.frame(2)
    for i in (30, 50, 70, 85):
        clip._exact_job(i, "rgb24", supersedable=False, delay=0.01 * (i % 7))
    time.sleep(0.1)
    clip.close()
    time.sleep(0.5)
    gc.collect()
    assert made and all(s.fd is None for s in made), [s.fd for s in made]


def test_a_blocking_frame_does_not_wait_for_a_delayed_decode(make, cache_dir, pool) -> None:
    ref = reference_frames(make(CLIP))
    with phast.open(make(CLIP), cache_dir=cache_dir, pool=pool, proxies=False) as clip:
        held = clip._exact_job(40, "rgb24", supersedable=True, delay=60.0)
        t = time.monotonic()
        f = clip.frame(40)
        assert time.monotonic() - t < 30  # not the 60 s delay (a decode takes milliseconds)
        assert held.future.done() and np.array_equal(f.array, ref[40])


def test_delayed_calls_do_not_keep_their_arguments() -> None:
    import weakref

    from phast.clip import _later

    class Owner:
        pass

    ran, forgotten = Owner(), Owner()
    seen = []
    _later.call(0.0, seen.append, ran)
    _later.call(60.0, seen.append, forgotten)
    refs = weakref.ref(ran), weakref.ref(forgotten)
    _later.forget(forgotten)
    del ran, forgotten
    end = time.monotonic() + 10
    while not seen and time.monotonic() < end:
        time.sleep(0.01)
    seen.clear()
    time.sleep(0.05)
    gc.collect()
    assert refs[0]() is None and refs[1]() is None


def test_shm_left_tells_a_leak_from_another_programs_entry(tmp_path) -> None:
    """The leak check the fixtures use: /dev/shm is the machine's, other programs use it."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm here")
    before = shm_entries()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import multiprocessing as mp, sys\n"
         "lock = mp.get_context('spawn').Lock()\nprint('ready', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    leaked = f"/dev/shm/phast-test-{os.getpid()}"
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        assert shm_entries() - before, "the other program's semaphore is in /dev/shm"
        assert not shm_left(before)  # held by a live process that is not ours
        with open(leaked, "w"):
            pass
        assert shm_left(before) == {os.path.basename(leaked)}  # held by nobody: a leak
    finally:
        holder.communicate(timeout=30)  # ends on end of input, releasing its semaphore
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leaked)
