"""Two store levels: the local diskcache first, the shared store (:mod:`phast.sharedstore`) second.

::

    get_proxy ──► local Store ──hit──► picture
                      │ miss
                      ▼
                 SharedStore (checked object) ──hit──► picture, and a copy into the local level
                      │ miss
                      ▼
                    None (the tiers try the next fallback)

Frame indices stay local (a worker's demux pass checks them against the decoder; a planted index
would not be). Which frames exist is the local map ORed with the shared manifests. A store that
*publishes* (a proxy farm's builder, ``phast.open(publish=True)``) writes what it builds to the
shared level first, then locally, and plans from the shared manifests only: what the share lacks
is what it must build, whatever its own local cache holds.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np

from .sharedstore import SharedStore
from .store import DEFAULT_SIZE_LIMIT, Store


class LayeredStore(Store):
    """A local :class:`~phast.store.Store` with a :class:`SharedStore` behind it."""

    def __init__(self, directory: str | os.PathLike[str] | None, shared: SharedStore, *,
                 publish: bool = False, size_limit: int = DEFAULT_SIZE_LIMIT) -> None:
        super().__init__(directory, size_limit=size_limit)
        self.shared, self.publish = shared, publish
        self._shared_hits = self._shared_misses = 0
        self._frame_counts: dict[tuple[str, int, str], int] = {}

    def get_proxy(self, identity: str, stream: int, spec: str,
                  index: int) -> tuple[int, int, bytes] | None:
        entry = super().get_proxy(identity, stream, spec, index)
        if entry is not None:
            return entry
        entry = self.shared.get(identity, stream, spec, index)
        if entry is None:
            self._shared_misses += 1
            return None
        self._shared_hits += 1
        width, height, data = entry
        with contextlib.suppress(Exception):  # filling the first level is best effort
            count = self._frame_counts.get((identity, stream, spec))
            if count is None:
                super().put_proxy(identity, stream, spec, index, width, height, data)
            else:
                super().put_proxies(identity, stream, spec, count,
                                    [(index, width, height, data)])
        return entry

    def proxy_map(self, identity: str, stream: int, spec: str, frame_count: int) -> np.ndarray:
        """Local map ORed with the shared manifests (publishing: the shared manifests only)."""
        self._frame_counts[(identity, stream, spec)] = frame_count
        have = self.shared.manifest(identity, stream, spec, frame_count)
        if not self.publish:
            have |= self._own_map(identity, stream, spec, frame_count)
        return have

    def put_proxies(self, identity: str, stream: int, spec: str, frame_count: int,
                    entries: list[tuple[int, int, int, bytes]]) -> None:
        if self.publish and entries:
            self.shared.put_many(identity, stream, spec, frame_count, entries)
        super().put_proxies(identity, stream, spec, frame_count, entries)

    def flush_stats(self) -> None:
        super().flush_stats()
        hits, misses, self._shared_hits, self._shared_misses = (
            self._shared_hits, self._shared_misses, 0, 0)
        self._add_counts({"stats/shared_hits": hits, "stats/shared_misses": misses})

    def stats(self) -> dict[str, Any]:
        """The local level's stats with ``shared``: the shared level's (see
        :meth:`SharedStore.stats`) and this cache's hits and misses on it."""
        out = super().stats()
        hits = int(self._cache.get("stats/shared_hits", 0))
        misses = int(self._cache.get("stats/shared_misses", 0))
        out["shared"] = {**self.shared.stats(), "hits": hits, "misses": misses,
                         "hit_rate": hits / (hits + misses) if hits + misses else None}
        return out
