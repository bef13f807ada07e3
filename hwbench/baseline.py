"""The in-process PyAV baseline: what a user writes for exact frame access without phast.

Contract of :class:`PyAVBaseline`:

* Opening demuxes the whole stream once (not decoding) and sorts the packets' pts: frame ``i``
  (display order) is the one with the ``i``-th smallest pts, and its keyframe is the last
  keyframe packet whose pts is not after it. This is the cheapest index a careful user builds;
  its time is reported (``index_s``) but it is not part of any request's latency.
* :meth:`frame` seeks (``container.seek(keyframe_pts, stream=..., backward=True)``), decodes
  forward until a frame with exactly the target pts comes out and converts it with
  ``to_ndarray(format="rgb24")``. The decoder uses frame threading (``thread_type="AUTO"``,
  ``thread_count=0``). It raises :class:`BaselineMiss` if the target pts never appears (a
  decode that jumps over it, e.g. with edit lists or open GOPs): the baseline is then *wrong*
  for that frame, which is reported, not hidden.
* :meth:`sequential` yields ``(pts, rgb24 array)`` for the first frames of a plain
  ``container.decode`` from a freshly opened container.

Only the video stream given by ``stream`` (0 = first video stream) is decoded.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator

import av
import numpy as np


class BaselineMiss(Exception):
    """The baseline's seek + decode did not produce the requested frame."""


class PyAVBaseline:
    """Seek + decode-forward random access with plain PyAV, in this process."""

    def __init__(self, path: str, *, stream: int = 0, threads: int = 0) -> None:
        self.path = path
        self._stream_number = stream
        self._threads = threads
        started = time.perf_counter()
        self._container, self._stream = self._open()
        self.pts, self.key_pts = self._demux_pass()
        self.index_s = time.perf_counter() - started

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
        """pts of the keyframe the baseline seeks to for frame ``i``."""
        k = bisect.bisect_right(self.key_pts, self.pts[i]) - 1
        return self.key_pts[max(k, 0)]

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as an rgb24 array (seek to its keyframe, decode forward)."""
        target = self.pts[i]
        self._container.seek(self.keyframe_pts(i), stream=self._stream, backward=True)
        for f in self._container.decode(self._stream):
            if f.pts is None:
                continue
            if f.pts == target:
                return f.to_ndarray(format="rgb24")
            if f.pts > target:
                raise BaselineMiss(f"frame {i} (pts {target}): decoding jumped to pts {f.pts}")
        raise BaselineMiss(f"frame {i} (pts {target}): the stream ended first")

    def sequential(self) -> Iterator[tuple[int | None, np.ndarray]]:
        """``(pts, rgb24 array)`` of every frame from the start, a plain ``container.decode``."""
        container, stream = self._open()
        try:
            for f in container.decode(stream):
                yield f.pts, f.to_ndarray(format="rgb24")
        finally:
            container.close()

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> PyAVBaseline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reference_frame(path: str, i: int, *, stream: int = 0) -> np.ndarray:
    """Frame ``i`` by decoding from the very start, never seeking: the arbiter for mismatches."""
    with av.open(path) as container:
        s = container.streams.video[stream]
        s.codec_context.thread_type = "AUTO"
        for n, f in enumerate(container.decode(s)):
            if n == i:
                return f.to_ndarray(format="rgb24")
    raise IndexError(f"{path} has fewer than {i + 1} frames")
