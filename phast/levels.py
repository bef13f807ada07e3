"""Two store levels: the local diskcache first, the shared store (:mod:`phast.sharedstore`) second.

::

    get_proxy ──► local Store ──hit──► picture
                      │ miss
                      ▼
                 SharedStore (checked object) ──hit──► picture; a copy into the local level
                      │ miss                              follows on a filler thread
                      ▼
                    None (the tiers try the next fallback)

Frame indices stay local (a worker's demux pass checks them against the decoder; a planted index
would not be). Which frames exist is the local map ORed with the shared manifests. A store that
*publishes* (a proxy farm's builder, ``phast.open(publish=True)``) writes what it builds to the
shared level first, then locally, and plans from the shared manifests only: what the share lacks
is what it must build, whatever its own local cache holds.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from typing import Any

import numpy as np

from .sharedstore import SharedStore
from .store import DEFAULT_SIZE_LIMIT, Store

MAX_FILLS = 64  #: shared hits waiting to be copied into the local level, at most


class LayeredStore(Store):
    """A local :class:`~phast.store.Store` with a :class:`SharedStore` behind it."""

    def __init__(self, directory: str | os.PathLike[str] | None, shared: SharedStore, *,
                 publish: bool = False, size_limit: int = DEFAULT_SIZE_LIMIT) -> None:
        super().__init__(directory, size_limit=size_limit)
        self.shared, self.publish = shared, publish
        #: publishing: also keep what is built in the local level (a farm worker does not)
        self.keep_local = True
        self._shared_hits = self._shared_misses = 0
        self._frame_counts: dict[tuple[str, int, str], int] = {}
        self._filler = cf.ThreadPoolExecutor(1, thread_name_prefix="phast-fill")
        self._fill_lock = threading.Lock()
        self._filling = 0  # fills queued or running

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
        with self._fill_lock:
            if self._filling >= MAX_FILLS:
                return entry  # filling is best effort: a burst of hits skips some
            self._filling += 1
        self._filler.submit(self._fill, identity, stream, spec, index, entry)
        return entry

    def _fill(self, identity: str, stream: int, spec: str, index: int,
              entry: tuple[int, int, bytes]) -> None:
        """Copy a shared hit into the local level (on the filler thread: a fallback waiting
        for its picture does not wait for SQLite)."""
        width, height, data = entry
        try:
            count = self._frame_counts.get((identity, stream, spec))
            if count is None:
                super().put_proxy(identity, stream, spec, index, width, height, data)
            else:
                super().put_proxies(identity, stream, spec, count,
                                    [(index, width, height, data)])
        except Exception:  # a full or damaged local level: the share still has it
            pass
        finally:
            with self._fill_lock:
                self._filling -= 1

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
            if not self.keep_local:
                return
        super().put_proxies(identity, stream, spec, frame_count, entries)

    def flush_stats(self) -> None:
        super().flush_stats()
        hits, misses, self._shared_hits, self._shared_misses = (
            self._shared_hits, self._shared_misses, 0, 0)
        self._add_counts({"stats/shared_hits": hits, "stats/shared_misses": misses})

    def close(self) -> None:
        self._filler.shutdown(wait=True)  # queued fills land before the cache closes
        super().close()

    def stats(self) -> dict[str, Any]:
        """The local level's stats (shared hits copied so far included) with ``shared``: the
        shared level's (see :meth:`SharedStore.stats`) and this cache's hits and misses on it."""
        self._filler.submit(lambda: None).result()  # fills queued before now have landed
        out = super().stats()
        hits = int(self._cache.get("stats/shared_hits", 0))
        misses = int(self._cache.get("stats/shared_misses", 0))
        out["shared"] = {**self.shared.stats(), "hits": hits, "misses": misses,
                         "hit_rate": hits / (hits + misses) if hits + misses else None}
        return out
