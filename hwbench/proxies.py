"""``hwbench proxies``: what the proxy tier costs and gives.

On one clip, in a fresh store: build every proxy (full mode) and measure build throughput
(frames/s, CPU seconds per frame over the whole process tree), bytes on disk per minute of
footage, then the proxy hit latency (store read + JPEG decode on the image worker + validation)
over random frames, p50/p99.
"""

from __future__ import annotations

import random
import tempfile
import time
from typing import Any

import numpy as np

from phast.power import tree_cpu_seconds


def run(path: str, *, height: int = 360, hits: int = 300, seed: int = 1234,
        progress: bool = True, shortcuts: bool = True, psnr_frames: int = 0) -> dict[str, Any]:
    """Build, store and read the clip's proxies (see the module docstring). ``shortcuts``:
    the builder's proxy-only decoder settings (``phast.open(proxy_shortcuts=)``);
    ``psnr_frames``: compare that many stored proxies, spread over the clip, with the exact
    frame area-downscaled to the proxy size (PSNR, dB)."""
    import phast
    from phast.tiers import _proxy_frame
    from phast.types import Quality

    with tempfile.TemporaryDirectory(prefix="hwbench-proxies-") as store_dir, \
            phast.open(path, cache_dir=store_dir, proxies=False, proxy_height=height,
                       proxy_shortcuts=shortcuts) as clip:
        info = clip.info
        cpu0, t0 = tree_cpu_seconds(), time.perf_counter()

        def show(done: int, total: int) -> None:
            if progress:
                print(f"\r  building proxies {done}/{total}", end="", flush=True)

        built, failed = clip.build_proxies(full=True, progress=show)
        wall, cpu = time.perf_counter() - t0, tree_cpu_seconds() - cpu0
        if progress:
            print()
        session = clip._session
        assert session.store is not None
        stored = session.store.stats()["bytes"]
        clip._session.pool.prepare_images(60)
        rng = random.Random(seed)
        lat = []
        for _ in range(hits):
            i = rng.randrange(len(clip))
            t = time.perf_counter()
            f = _proxy_frame(session, i, i, "rgb24", Quality.PROXY)
            lat.append(time.perf_counter() - t)
            assert f is not None and f.quality is Quality.PROXY
            f.release()
        w, h = session.proxy_size()
        minutes = info.duration / 60
        quality = (_psnr_against_exact(path, session, psnr_frames, (w, h))
                   if psnr_frames else None)
        return {
            "shortcuts": shortcuts, "psnr_db": quality,
            "clip": path, "frames": len(clip), "size": [info.width, info.height],
            "proxy_size": [w, h], "spec": session.proxy_spec.key,
            "built": built, "failed": failed,
            "build_fps": built / wall if wall else None,
            "build_cpu_s_per_frame": cpu / built if built else None,
            "bytes": stored, "bytes_per_frame": stored / max(built, 1),
            "mb_per_minute": stored / 1e6 / minutes if minutes else None,
            "hit_ms": {"p50": float(np.percentile(lat, 50) * 1e3),
                       "p99": float(np.percentile(lat, 99) * 1e3)},
        }


def format_table(r: dict[str, Any]) -> str:
    return "\n".join([
        f"clip {r['clip']}: {r['frames']} frames {r['size'][0]}x{r['size'][1]} -> proxies "
        f"{r['proxy_size'][0]}x{r['proxy_size'][1]} ({r['spec']})",
        f"  build: {r['built']} built, {r['failed']} failed, {r['build_fps']:.1f} frames/s, "
        f"{r['build_cpu_s_per_frame'] * 1e3:.1f} CPU ms/frame (process tree)",
        f"  store: {r['bytes_per_frame'] / 1e3:.1f} KB/frame, {r['mb_per_minute']:.1f} MB per "
        "minute of footage",
        f"  proxy hit latency: p50 {r['hit_ms']['p50']:.2f} ms, p99 {r['hit_ms']['p99']:.2f} ms",
        f"  builder decoder shortcuts: {'on' if r.get('shortcuts', True) else 'off'}"
        + ("" if not r.get("psnr_db") else
           f"; PSNR against exact-then-downscale over {r['psnr_db']['frames']} frames: min "
           f"{r['psnr_db']['min']:.1f}, p5 {r['psnr_db']['p5']:.1f}, mean "
           f"{r['psnr_db']['mean']:.1f} dB"),
    ])


def _psnr_against_exact(path: str, session: Any, frames: int,
                        size: tuple[int, int]) -> dict[str, float]:
    """PSNR of stored proxies against the exact frames (a sequential PyAV decode, one thread)
    area-downscaled to the proxy size: what a proxy costs in fidelity, JPEG and shortcuts in."""
    import av
    import simplejpeg
    from av.video.reformatter import Interpolation, VideoReformatter

    assert session.index is not None and session.store is not None
    n = session.index.frame_count
    wanted = set(np.linspace(0, n - 1, min(frames, n)).astype(int).tolist())
    scaler = VideoReformatter()
    values = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "SLICE"
        stream.codec_context.thread_count = 1
        for k, frame in enumerate(container.decode(stream)):
            if k in wanted:
                exact = scaler.reformat(frame, width=size[0], height=size[1], format="rgb24",
                                        interpolation=Interpolation.AREA).to_ndarray()
                entry = session.store.get_proxy(session.identity, session.stream,
                                                session.proxy_spec.key, k)
                if entry is not None:
                    got = simplejpeg.decode_jpeg(entry[2], colorspace="RGB")
                    mse = float(np.mean((got.astype(np.float64) - exact) ** 2))
                    values.append(99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse))
            if k >= max(wanted):
                break
    return {"frames": len(values), "min": float(np.min(values)),
            "p5": float(np.percentile(values, 5)), "mean": float(np.mean(values))}


def sweep(path: str, *, sizes: tuple[int, ...] = (360, 540),
          quantisers: tuple[int, ...] = (2, 5, 8), frames: int = 20) -> list[dict[str, Any]]:
    """Proxy spec candidates on ``frames`` frames spread over the clip: KB per frame, MB per
    minute at the clip's rate, encode and decode(+rgb24) ms, PSNR against the exact downscale.

    Runs PyAV in this (benchmark) process, with the same encoder settings as phast's workers.
    """
    import av
    from av.video.reformatter import Interpolation, VideoReformatter

    from phast.proxy import ProxySpec
    from phast.proxywork import ProxyEncoder

    with av.open(path) as c:
        stream = c.streams.video[0]
        rate = float(stream.average_rate or 30)
        total = stream.frames or 0
        step = max(1, total // frames) if total else 30
        picked = [f for n, f in enumerate(c.decode(stream)) if n % step == 0][:frames]
    ref_fmt = VideoReformatter()
    rows = []
    for height in sizes:
        for q in quantisers:
            w, h = ProxySpec(height=height, quality=q).size_for(picked[0].width, picked[0].height)
            enc = ProxyEncoder(w, h, q)
            sizes_b, t_enc, t_dec, psnrs = [], 0.0, 0.0, []
            for f in picked:
                t = time.perf_counter()
                data = enc.encode(f)
                t_enc += time.perf_counter() - t
                t = time.perf_counter()
                got = av.CodecContext.create("mjpeg", "r").decode(av.Packet(data))[0]
                rgb = got.to_ndarray(format="rgb24")
                t_dec += time.perf_counter() - t
                want = ref_fmt.reformat(f, width=w, height=h, format="rgb24",
                                        interpolation=Interpolation.AREA).to_ndarray()
                mse = float(np.mean((rgb.astype(np.float64) - want) ** 2))
                psnrs.append(99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse))
                sizes_b.append(len(data))
            n = len(picked)
            rows.append({"size": [w, h], "quantiser": q, "kb_per_frame": np.mean(sizes_b) / 1e3,
                         "mb_per_minute": np.mean(sizes_b) * rate * 60 / 1e6,
                         "encode_ms": t_enc / n * 1e3, "decode_ms": t_dec / n * 1e3,
                         "psnr_db": float(np.mean(psnrs))})
    return rows


def format_sweep(rows: list[dict[str, Any]]) -> str:
    lines = ["size       q   KB/frame  MB/min  encode ms  decode ms  PSNR dB"]
    for r in rows:
        lines.append(f"{r['size'][0]:>4}x{r['size'][1]:<5} {r['quantiser']:>2} "
                     f"{r['kb_per_frame']:>9.1f} {r['mb_per_minute']:>7.1f} "
                     f"{r['encode_ms']:>10.2f} {r['decode_ms']:>10.2f} {r['psnr_db']:>8.1f}")
    return "\n".join(lines)
