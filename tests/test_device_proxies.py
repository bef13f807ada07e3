"""Proxy building through a backend's ``proxy_picture`` hook (how GPU backends make proxies on
the device and copy only the small picture to the host)."""

from __future__ import annotations

from collections.abc import Iterator

import av
import numpy as np
import pytest

import phast
from phast import registry
from phast.kernels.reference import area_downscale
from phast.store import Store, source_identity
from tests.reference import reference_frames
from tests.test_tiers import CLIP, PROXY, PROXY_PSNR, psnr


@pytest.fixture
def device_proxy() -> Iterator[str]:
    registry.register("device-proxy", "tests.device_proxy_backend:DeviceProxyBackend")
    yield "device-proxy"
    registry.unregister("device-proxy")


def _decode_jpeg(data: bytes) -> np.ndarray:
    frames = av.CodecContext.create("mjpeg", "r").decode(av.Packet(data))
    return frames[0].to_ndarray(format="rgb24")


def test_proxies_come_from_the_backend_hook(make, cache_dir, pool, device_proxy) -> None:
    path = make(CLIP)
    ref = reference_frames(path)
    with phast.open(path, backend=device_proxy, cache_dir=cache_dir, pool=pool, proxies=False,
                    proxy_height=48) as clip:
        assert clip.build_proxies(full=True) == (45, 45)  # the hook refuses odd frames
    store = Store(cache_dir)
    identity = source_identity(str(path))
    spec = phast.proxy.ProxySpec(height=48).key
    try:
        for i in (0, 1, 2, 59, 60, 88):
            entry = store.get_proxy(identity, 0, spec, i)
            if i % 2:
                assert entry is None
                continue
            assert entry is not None and entry[:2] == (PROXY[1], PROXY[0])
            got = _decode_jpeg(entry[2])
            want = area_downscale(ref[i], *PROXY)
            assert psnr(got, want) > PROXY_PSNR
            assert psnr(got, want) > psnr(got, area_downscale(ref[(i + 10) % 90], *PROXY)) + 2
    finally:
        store.close()
