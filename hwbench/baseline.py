"""The in-process PyAV peers: what a user writes for exact frame access without phast.

Two access policies over one decoder class, :class:`PyAVPlayer` (:mod:`hwbench.player` holds
the policy):

* ``pyav-player`` (:class:`PyAVPlayer`, the baseline of ``hwbench access``, ``torture
  --compare-pyav`` and ``compare``): decodes forward when the target is ahead of the last
  decoded frame by fewer than 64 frames (MLT's avformat producer), seeks otherwise, and keeps
  the 24 most recently used frames (decoded frames stepped over are kept unconverted).
* ``pyav-naive`` (:func:`naive_pyav`, ``PyAVPlayer(reach=0, cache_frames=0)``): seeks to the
  keyframe on every request, even for ``i + 1``. Kept, labelled naive, for comparison with
  earlier figures.

Contract of :class:`PyAVPlayer`:

* Opening demuxes the whole stream once (not decoding) and sorts the packets' pts: frame ``i``
  (display order) is the one with the ``i``-th smallest pts, and its keyframe is the last
  keyframe packet whose pts is not after it. This is the cheapest index a careful user builds;
  its time is reported (``index_s``) but it is not part of any request's latency.
* A seek for frame ``i`` is ``container.seek(keyframe_pts, stream=..., backward=True)`` and a
  fresh ``container.decode``; frames with a pts before that keyframe's (leading pictures whose
  references precede it) are dropped, every later frame is identified by its pts. The decoder
  uses frame threading (``thread_type="AUTO"``, ``thread_count=threads``, 0 = automatic).
  Pixels are ``to_ndarray(format="rgb24")``. A target pts that never appears (a decode that
  jumps over it, e.g. with edit lists or open GOPs) raises :class:`BaselineMiss`: the peer is
  then *wrong* for that frame, which is reported, not hidden.
* :meth:`PyAVPlayer.sequential` yields ``(pts, rgb24 array)`` for the first frames of a plain
  ``container.decode`` from a freshly opened container.

Only the video stream given by ``stream`` (0 = first video stream) is decoded.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator

import av
import numpy as np

from .player import CACHE_FRAMES, REACH, BaselineMiss, ForwardPlayer

__all__ = ["PEERS", "BaselineMiss", "PyAVPlayer", "naive_pyav", "open_peer", "reference_frame"]

#: The PyAV peers by name: the player-style baseline first, then the naive one.
PEERS = ("pyav-player", "pyav-naive")


class PyAVPlayer(ForwardPlayer[av.VideoFrame]):
    """Player-style random access with plain PyAV, in this process (see the module docstring)."""

    keeps_raw = True

    def __init__(self, path: str, *, stream: int = 0, threads: int = 0, reach: int = REACH,
                 cache_frames: int = CACHE_FRAMES) -> None:
        super().__init__(reach=reach, cache_frames=cache_frames)
        self.path = path
        self._stream_number = stream
        self._threads = threads
        started = time.perf_counter()
        self._container, self._stream = self._open()
        self.pts, self.key_pts = self._demux_pass()
        self._index_of = {p: i for i, p in enumerate(self.pts)}
        self.width = self._stream.codec_context.width
        self.height = self._stream.codec_context.height
        self.index_s = time.perf_counter() - started
        self._frames: Iterator[av.VideoFrame] = iter(())
        self._sync_pts = self.pts[0]

    def _open(self) -> tuple[av.container.InputContainer, av.VideoStream]:
        container = av.open(self.path)
        stream = container.streams.video[self._stream_number]
        # Must be set before the first decode opens the codec.
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.thread_count = self._threads
        return container, stream

    def _demux_pass(self) -> tuple[list[int], list[int]]:
        pts: list[int] = []
        keys: list[int] = []
        for pkt in self._container.demux(self._stream):
            if pkt.size == 0 or pkt.pts is None:
                continue
            pts.append(int(pkt.pts))
            if pkt.is_keyframe:
                keys.append(int(pkt.pts))
        if not pts:
            raise BaselineMiss(f"{self.path}: no timestamped video packets")
        pts.sort()
        keys.sort()
        return pts, keys or [pts[0]]

    def __len__(self) -> int:
        return len(self.pts)

    def keyframe_pts(self, i: int) -> int:
        """pts of the keyframe a seek for frame ``i`` goes to."""
        k = bisect.bisect_right(self.key_pts, self.pts[i]) - 1
        return self.key_pts[max(k, 0)]

    def _seek(self, i: int) -> int | None:
        self._sync_pts = self.keyframe_pts(i)
        self._container.seek(self._sync_pts, stream=self._stream, backward=True)
        self._frames = self._container.decode(self._stream)
        return None  # where the decode starts is known from the frames' pts only

    def _step(self) -> tuple[int, av.VideoFrame]:
        for f in self._frames:
            # Frames before the seek's keyframe are leading pictures decoded without their
            # references: not the sequential decode's pixels.
            if f.pts is None or f.pts < self._sync_pts:
                continue
            index = self._index_of.get(f.pts)
            if index is not None:
                return index, f
        raise BaselineMiss(f"{self.path}: the stream ended")

    def _convert(self, raw: av.VideoFrame) -> np.ndarray:
        return raw.to_ndarray(format="rgb24")

    def sequential(self) -> Iterator[tuple[int | None, np.ndarray]]:
        """``(pts, rgb24 array)`` of every frame from the start, a plain ``container.decode``."""
        container, stream = self._open()
        try:
            for f in container.decode(stream):
                yield f.pts, f.to_ndarray(format="rgb24")
        finally:
            container.close()

    def close(self) -> None:
        self._frames = iter(())
        self._cache.clear()  # cached PyAV frames hold decoder buffers
        self._container.close()

    def __enter__(self) -> PyAVPlayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def naive_pyav(path: str, *, stream: int = 0, threads: int = 0) -> PyAVPlayer:
    """The naive peer: seek to the keyframe and decode forward on every request, no cache."""
    return PyAVPlayer(path, stream=stream, threads=threads, reach=0, cache_frames=0)


def open_peer(name: str, path: str, *, threads: int = 0) -> PyAVPlayer:
    """The PyAV peer called ``name`` (one of :data:`PEERS`) on ``path``."""
    if name == "pyav-player":
        return PyAVPlayer(path, threads=threads)
    if name == "pyav-naive":
        return naive_pyav(path, threads=threads)
    raise ValueError(f"unknown PyAV peer {name!r}; known: {', '.join(PEERS)}")


def reference_frame(path: str, i: int, *, stream: int = 0) -> np.ndarray:
    """Frame ``i`` by decoding from the very start, never seeking: the arbiter for mismatches."""
    with av.open(path) as container:
        s = container.streams.video[stream]
        s.codec_context.thread_type = "AUTO"
        for n, f in enumerate(container.decode(s)):
            if n == i:
                return f.to_ndarray(format="rgb24")
    raise IndexError(f"{path} has fewer than {i + 1} frames")
