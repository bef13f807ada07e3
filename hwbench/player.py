"""Player-style random access: what a video player does with a decoder (and a naive caller).

:class:`ForwardPlayer` holds the access policy shared by the in-process peers (PyAV in
:mod:`hwbench.baseline`, OpenCV in :mod:`hwbench.compare`); a subclass supplies the decoder
(:meth:`~ForwardPlayer._seek`, :meth:`~ForwardPlayer._step`, :meth:`~ForwardPlayer._convert`).

Contract of :meth:`ForwardPlayer.frame` (``i`` in display order, 0-based):

* A frame still in the cache (the ``cache_frames`` most recently used, LRU) is returned from it.
* Otherwise the decoder decodes forward from where it is when the target lies ahead of the last
  frame it produced by fewer than ``reach`` frames (MLT's avformat producer: 64); else it seeks
  first (the target is behind, too far ahead, or nothing was decoded yet). ``reach=0`` and
  ``cache_frames=0`` give the naive caller: a seek on every request.
* Every frame stepped over on the way is counted and, for decoders whose raw frames can be
  kept (:attr:`~ForwardPlayer.keeps_raw`), cached unconverted; it is converted only if
  requested later. A frame whose index comes out past the target means the decoder jumped over
  it: :class:`BaselineMiss`, never a neighbouring frame.
* The returned array is rgb24 (height x width x 3, uint8) and read-only: it may be the cache's
  own array, shared with later calls for the same frame.
* After any exception the position is forgotten, so the next request seeks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import ClassVar, Generic, TypeVar

import numpy as np

#: Frames ahead of the last decoded one that a player reaches by decoding forward rather than
#: seeking: MLT's avformat producer seeks when the target is behind or >= 64 frames ahead.
REACH = 64
#: Recently used frames a player keeps (libopenshot reads forward up to 20 frames; MLT keeps a
#: small image cache): stepping back a little is then a lookup, not a seek.
CACHE_FRAMES = 24

Raw = TypeVar("Raw")


class BaselineMiss(Exception):
    """The peer's decode did not produce the requested frame (it jumped over it or ended)."""


class ForwardPlayer(ABC, Generic[Raw]):
    """The access policy of a player over a decoder that can seek and step forward.

    Counters (for reports and tests): ``seeks``, ``stepped`` (frames decoded by stepping
    forward; decoding a decoder does inside its seek, as OpenCV's does, is not counted),
    ``hits`` (requests answered from the cache).
    """

    #: Whether frames stepped over are cached unconverted (a decoded picture the decoder hands
    #: over, e.g. a PyAV frame) or only delivered frames are (OpenCV: ``retrieve`` converts only
    #: the last grabbed frame).
    keeps_raw: ClassVar[bool] = False
    width: int  #: picture size as the decoder reports it at open
    height: int

    def __init__(self, *, reach: int = REACH, cache_frames: int = CACHE_FRAMES) -> None:
        if reach < 0 or cache_frames < 0:
            raise ValueError("reach and cache_frames must be >= 0")
        self.reach = reach
        self.cache_frames = cache_frames
        self._pos: int | None = None  # index of the last frame the decoder produced
        self._cache: OrderedDict[int, Raw | np.ndarray] = OrderedDict()
        self.seeks = self.stepped = self.hits = 0

    @property
    def naive(self) -> bool:
        """Whether this player seeks on every request (no reach, no cache)."""
        return self.reach == 0 and self.cache_frames == 0

    @abstractmethod
    def __len__(self) -> int:
        """Frames in the stream."""

    @abstractmethod
    def close(self) -> None:
        """Release the decoder and the cache."""

    @abstractmethod
    def _seek(self, i: int) -> int | None:
        """Position the decoder so that stepping forward reaches frame ``i``; returns the index
        of the frame before the first one :meth:`_step` will produce, or None when only the
        decoded frames will tell."""

    @abstractmethod
    def _step(self) -> tuple[int, Raw]:
        """Decode the next frame: ``(display index, raw frame)``; :class:`BaselineMiss` at the
        end of the stream."""

    @abstractmethod
    def _convert(self, raw: Raw) -> np.ndarray:
        """rgb24 pixels of ``raw`` (only called on the latest stepped frame or a cached one)."""

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as a read-only rgb24 array (see the module docstring)."""
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} out of range (0..{len(self) - 1})")
        if i in self._cache:
            self._cache.move_to_end(i)
            self.hits += 1
            return self._deliver(i, self._cache[i])
        try:
            if self._pos is None or not 0 < i - self._pos < self.reach:
                self._pos = self._seek(i)
                self.seeks += 1
            while True:
                index, raw = self._step()
                self._pos = index
                self.stepped += 1
                if index == i:
                    return self._deliver(i, raw)
                if index > i:
                    raise BaselineMiss(f"frame {i}: decoding jumped to frame {index}")
                if self.keeps_raw:
                    self._remember(index, raw)
        except BaseException:
            self._pos = None  # the decoder's state is unknown: the next request seeks
            raise

    def _deliver(self, i: int, held: Raw | np.ndarray) -> np.ndarray:
        if isinstance(held, np.ndarray):
            return held
        pixels = self._convert(held)
        pixels.flags.writeable = False  # may be shared with the cache and later callers
        self._remember(i, pixels)  # converted once: the cache keeps the pixels, not the raw
        return pixels

    def _remember(self, i: int, held: Raw | np.ndarray) -> None:
        if not self.cache_frames:
            return
        self._cache[i] = held
        self._cache.move_to_end(i)
        while len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)

    def stats(self) -> dict[str, int]:
        """The policy's settings and counters, JSON-ready."""
        return {"reach": self.reach, "cache_frames": self.cache_frames, "seeks": self.seeks,
                "stepped": self.stepped, "hits": self.hits}
