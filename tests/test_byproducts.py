"""Pictures phast has, spent well: proxies as a by-product of decoding, the store's map of which
frames have one, the builder building where the user is, and the nearest picture shown."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import phast
from phast.kernels.reference import area_downscale
from phast.session import _nearest_set
from phast.store import Store, source_identity
from tests.reference import reference_frames
from tests.test_tiers import PROXY, PROXY_PSNR, psnr

CLIP = "h264_bpyramid_longgop"  # 160x96, 90 frames, keyframes at 0 and 60


def _wait(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_frames_decoded_for_a_request_become_proxies(make, cache_dir, pool) -> None:
    """A far EXACT request decodes every frame from its keyframe: each becomes a proxy of
    itself (checked against the exact frame, downscaled), stored and found by a fresh open."""
    path = make(CLIP)
    ref = reference_frames(path)
    with phast.open(path, cache_dir=cache_dir, pool=pool, proxy_height=48, budget="off",
                    proxies=True) as clip:
        assert clip._builder is not None
        clip._builder.stop()  # by-products only: the background builder is not what is tested
        clip.frame(80).release()  # frames 60..80 decoded from the keyframe at 60
        assert _wait(lambda: clip.proxies_stored >= 21)
    store = Store(cache_dir)
    ident = source_identity(path)
    have = store.proxy_map(ident, 0, "jpeg-h48-q5", 90)
    assert have[60:81].all()
    import simplejpeg

    for i in (60, 67, 79, 80):
        w, h, data = store.get_proxy(ident, 0, "jpeg-h48-q5", i)  # type: ignore[misc]
        picture = simplejpeg.decode_jpeg(data)
        right = psnr(picture, area_downscale(ref[i], *PROXY))
        wrong = psnr(picture, area_downscale(ref[i - 3], *PROXY))
        assert (h, w) == PROXY and right > PROXY_PSNR and right > wrong + 2, (i, right, wrong)
    store.close()
    with phast.open(path, cache_dir=cache_dir, pool=pool, proxy_height=48, budget="off",
                    proxies=False) as clip:
        assert clip.proxies_stored >= 21  # the map, read once at open
        pool.prepare_images(30)
        os.kill(clip.worker_pid, signal.SIGSTOP)
        f = clip.frame(75, deadline=0.2)
        assert f.quality is phast.Quality.PROXY and f.shows == 75


def test_no_byproducts_without_room_in_the_budget(make, cache_dir, pool) -> None:
    """By-products are optional work: a clip whose budget has no room for building asks its
    worker for none (and a clip opened without proxies never does)."""
    path = make(CLIP)
    with phast.open(path, cache_dir=cache_dir, pool=pool, proxy_height=48, budget=0.05,
                    proxies=True) as clip:
        s = clip._session
        assert s._byproducts_wanted(80) is not None
        assert s.account is not None
        s.account.level_j = -10.0  # in debt: nothing optional until it is repaid
        assert s._byproducts_wanted(80) is None
    with phast.open(path, cache_dir=cache_dir, pool=pool, budget="off", proxies=False) as clip:
        assert clip._session._byproducts_wanted(80) is None


def test_the_store_map_is_what_the_store_holds(make, cache_dir, tmp_path) -> None:
    store = Store(tmp_path / "s")
    ident = source_identity(make(CLIP))
    jpeg = b"\xff\xd8" + bytes(40) + b"\xff\xd9"
    store.put_proxies(ident, 0, "spec", 90, [(3, 8, 8, jpeg), (60, 8, 8, jpeg)])
    store.put_proxies(ident, 0, "spec", 90, [(4, 8, 8, jpeg)])
    assert np.flatnonzero(store.proxy_map(ident, 0, "spec", 90)).tolist() == [3, 4, 60]
    assert not store.proxy_map(ident, 0, "spec", 91).any()  # another frame count: no claim
    assert not store.proxy_map(ident, 0, "other", 90).any()
    # a store written before maps (or whose map was evicted): scanned once, then mapped
    store._cache.delete(store._map_key(ident, 0, "spec"))
    assert np.flatnonzero(store.proxy_map(ident, 0, "spec", 90)).tolist() == [3, 4, 60]
    assert store._map_key(ident, 0, "spec") in store._cache
    store.close()


def test_nearest_set_finds_the_nearest_before_or_after() -> None:
    have = np.zeros(1000, bool)
    have[[0, 100, 130, 999]] = True
    assert _nearest_set(have, 120, 2) == [130, 100]
    assert _nearest_set(have, 115, 3) == [100, 130, 0]  # ties go to the earlier frame
    assert _nearest_set(have, 100, 1) == [130]  # never the frame itself
    assert _nearest_set(have, 700, 4) == [999, 130, 100, 0]
    assert _nearest_set(np.zeros(5, bool), 2, 3) == []


@pytest.mark.parametrize(("playhead", "first_runs"), [(None, 0), (75, 60), (20, 0)])
def test_the_builder_builds_where_the_user_is(make, cache_dir, pool, playhead,
                                              first_runs) -> None:
    """Keyframes first (nearest the playhead first), then the playhead's group of pictures:
    the plan follows the user, not the file order."""
    from phast.builder import ProxyBuilder

    path = make(CLIP)
    with phast.open(path, cache_dir=cache_dir, pool=pool, proxy_height=48, budget="off",
                    proxies=False) as clip:
        builder = ProxyBuilder(clip._session.twin(),
                               playhead=lambda: () if playhead is None else (playhead,))
        try:
            keys = [builder._next_chunk(), builder._next_chunk()]
            assert sorted(c[0] for c in keys if c) == [0, 60]
            if playhead == 75:
                assert keys[0] == [60]  # the nearest keyframe first
            run = builder._next_chunk()
            assert run is not None and run[0] == first_runs + 1 and len(run) == 24
        finally:
            builder.session.close()


def test_proxy_shortcuts_are_the_builders_own(make, cache_dir, pool) -> None:
    """The builder decodes with proxy-only shortcuts; the clip's own decoder never does (its
    frames are EXACT), and an editor cannot ask for them as a backend option."""
    path = make(CLIP)
    with pytest.raises(phast.InvalidArgument, match="proxy_shortcuts"):
        phast.open(path, cache_dir=cache_dir, pool=pool, backend_options={"proxy_decode": True})
    with phast.open(path, cache_dir=cache_dir, pool=pool, proxies=False, budget="off") as clip:
        s = clip._session
        assert "proxy_decode" not in s.options
        twin = s.twin()
        try:
            assert twin.options["proxy_decode"] is True
        finally:
            twin.close()
    with phast.open(path, cache_dir=cache_dir, pool=pool, proxies=False, budget="off",
                    proxy_shortcuts=False) as clip:
        twin = clip._session.twin()
        try:
            assert twin.options["proxy_decode"] is False
        finally:
            twin.close()


def test_the_builder_finishes_a_group_unless_the_user_settles_elsewhere(make, cache_dir,
                                                                     pool) -> None:
    """A playhead jumping about does not drag building from group to group (each move costs
    a seek); one that stays in another group does."""
    from phast.builder import ProxyBuilder

    path = make(CLIP)
    where: list[int] = []
    with phast.open(path, cache_dir=cache_dir, pool=pool, proxy_height=48, budget="off",
                    proxies=False) as clip:
        builder = ProxyBuilder(clip._session.twin(), playhead=lambda: tuple(where))
        try:
            while builder._keys:
                builder._next_chunk()
            where[:] = [5]
            assert builder._next_chunk()[0] == 1  # type: ignore[index]  # group 0..59
            where[:] = [70, 3, 80]  # jumping about: group 0 goes on
            assert builder._next_chunk()[0] == 25  # type: ignore[index]
            where[:] = [70, 75, 80]  # settled in the group from 60
            assert builder._next_chunk()[0] == 61  # type: ignore[index]
        finally:
            builder.session.close()
