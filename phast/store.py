"""Per-source data kept on disk: frame indices with their stream description, proxy pictures,
and each source's map of which frames have a proxy.

Keyed by source identity (size, mtime and a hash of the file's head and tail), so a file rewritten
in place never matches its old entries, and reopening an unchanged file needs no scan. Entries
are plain bytes with a checksum: a damaged entry reads as a miss, never as a wrong index.
The store is a ``diskcache`` directory, safe to share between editor processes; what diskcache
does itself is left to it: LRU eviction by bytes, hit and miss statistics (``Cache.stats``,
kept in its database for every process), and eviction by tag (every entry is tagged with its
source identity; the tag index makes clearing one source an indexed delete).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MediaError
from .index import FrameIndex

HASH_SPAN = 1 << 16  #: bytes hashed at each end of the file
FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$PHAST_CACHE_DIR``, else ``$XDG_CACHE_HOME/phast``, else ``~/.cache/phast``."""
    env = os.environ.get("PHAST_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "phast"


def source_identity(path: str | os.PathLike[str]) -> str:
    """``size-mtime_ns-hash`` of a regular file (reads at most 128 KiB)."""
    st = os.stat(path)
    h = hashlib.blake2b(digest_size=16)
    h.update(st.st_size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        h.update(f.read(HASH_SPAN))
        if st.st_size > 2 * HASH_SPAN:
            f.seek(-HASH_SPAN, os.SEEK_END)
        h.update(f.read(HASH_SPAN))
    return f"{st.st_size}-{st.st_mtime_ns}-{h.hexdigest()}"


def _seal(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=32).digest() + payload


def _unseal(data: Any) -> bytes | None:
    if not isinstance(data, bytes) or len(data) < 32:
        return None
    digest, payload = data[:32], data[32:]
    return payload if hashlib.blake2b(payload, digest_size=32).digest() == digest else None


DEFAULT_SIZE_LIMIT = 4 << 30  #: bytes; about an hour of 360p proxies of noisy 1080p footage
_PROXY_MAGIC = b"PHPX1"
#: Counters earlier versions kept as entries (LRU could evict them); dropped when seen.
_LEGACY_COUNTERS = ("stats/hits", "stats/misses")


class Store:
    """The on-disk store of one cache directory: frame indices and proxy pictures.

    A ``diskcache`` directory bounded by bytes with least-recently-used eviction, safe to share
    between editor processes (SQLite + atomic file writes). Every entry is sealed with a checksum
    and keyed by source identity, so a damaged, truncated or deleted entry and a source rewritten
    in place all read as misses. Only the editor process reads or writes it. diskcache counts
    every lookup's hit or miss (:meth:`stats`) and tags every entry with its source
    (:meth:`clear`).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, *,
                 size_limit: int = DEFAULT_SIZE_LIMIT) -> None:
        import diskcache  # imported at use: keeps `import phast` light

        self.directory = Path(directory) if directory is not None else default_cache_dir()
        # statistics: hits and misses counted by diskcache in its database (one UPDATE in the
        # transaction an LRU lookup opens anyway), shared by every process using the store;
        # tag_index: entries by source identity, for clear(identity)
        self._cache = diskcache.Cache(str(self.directory / "store"), size_limit=size_limit,
                                      eviction_policy="least-recently-used", statistics=True,
                                      tag_index=True)
        for key in _LEGACY_COUNTERS:
            with contextlib.suppress(Exception):
                self._cache.delete(key)

    # -- frame indices -----------------------------------------------------------------------
    @staticmethod
    def _index_key(identity: str, backend: str, stream: int) -> str:
        return f"index/v{FORMAT_VERSION}/{identity}/{backend}/{stream}"

    def get_index(self, identity: str, backend: str,
                  stream: int) -> tuple[FrameIndex, dict[str, Any]] | None:
        key = self._index_key(identity, backend, stream)
        payload = self._read(key)
        if payload is None:
            return None
        try:
            hlen = int.from_bytes(payload[:4], "little")
            source = json.loads(payload[4 : 4 + hlen])
            index = FrameIndex.from_bytes(payload[4 + hlen :])
        except (MediaError, ValueError, KeyError):
            self._cache.delete(key)
            return None
        return index, source

    def put_index(self, identity: str, backend: str, stream: int, index: FrameIndex,
                  source: dict[str, Any]) -> None:
        head = json.dumps(source).encode()
        payload = len(head).to_bytes(4, "little") + head + index.to_bytes()
        self._cache.set(self._index_key(identity, backend, stream), _seal(payload), tag=identity)

    # -- proxy pictures ----------------------------------------------------------------------
    @staticmethod
    def _proxy_key(identity: str, stream: int, spec: str, index: int) -> str:
        return f"proxy/v{FORMAT_VERSION}/{identity}/{stream}/{spec}/{index}"

    def get_proxy(self, identity: str, stream: int, spec: str,
                  index: int) -> tuple[int, int, bytes] | None:
        """(width, height, compressed picture) or None (a miss: absent, evicted or damaged)."""
        payload = self._read(self._proxy_key(identity, stream, spec, index))
        if payload is None or not payload.startswith(_PROXY_MAGIC) or len(payload) <= 13:
            return None
        width, height = struct.unpack_from("<II", payload, len(_PROXY_MAGIC))
        return width, height, payload[len(_PROXY_MAGIC) + 8 :]

    @staticmethod
    def _map_key(identity: str, stream: int, spec: str) -> str:
        return f"proxymap/v{FORMAT_VERSION}/{identity}/{stream}/{spec}"

    def proxy_map(self, identity: str, stream: int, spec: str, frame_count: int) -> np.ndarray:
        """Which frames of a source have a proxy here: a hint, one read for the whole clip.

        A bool array of ``frame_count``. Entries evicted since they were noted still read True
        (their lookup is a miss, as for any vanished entry); a map of another frame count (a
        re-indexed source) or a damaged one reads all False.
        """
        have = np.zeros(frame_count, bool)
        payload = self._read(self._map_key(identity, stream, spec))
        if payload is None:
            # No map (a store written before maps, or the map evicted): look each frame up
            # once (an existence check each) and write the map.
            have[:] = [self.has_proxy(identity, stream, spec, i) for i in range(frame_count)]
            self._write_map(identity, stream, spec, have)  # (empty too: no second scan)
        elif len(payload) >= 4:
            count = int.from_bytes(payload[:4], "little")
            bits = np.frombuffer(payload, np.uint8, offset=4)
            if count == frame_count and len(bits) == (count + 7) // 8:
                have[:] = np.unpackbits(bits, count=count).astype(bool)
        return have

    #: this store's own map, even where a subclass widens ``proxy_map`` (phast.levels)
    _own_map = proxy_map

    def _write_map(self, identity: str, stream: int, spec: str, have: np.ndarray) -> None:
        payload = len(have).to_bytes(4, "little") + np.packbits(have).tobytes()
        self._cache.set(self._map_key(identity, stream, spec), _seal(payload), tag=identity)

    def put_proxies(self, identity: str, stream: int, spec: str, frame_count: int,
                    entries: list[tuple[int, int, int, bytes]]) -> None:
        """Store ``(index, width, height, data)`` proxies and note them in the source's map,
        in one transaction (editor processes sharing the store see the map whole)."""
        if not entries:
            return
        with self._cache.transact():
            for index, width, height, data in entries:
                self.put_proxy(identity, stream, spec, index, width, height, data)
            have = self._own_map(identity, stream, spec, frame_count)
            have[[e[0] for e in entries if 0 <= e[0] < frame_count]] = True
            self._write_map(identity, stream, spec, have)

    def has_proxy(self, identity: str, stream: int, spec: str, index: int) -> bool:
        """Whether an entry exists (not checked, not counted, LRU order untouched)."""
        return self._proxy_key(identity, stream, spec, index) in self._cache

    def put_proxy(self, identity: str, stream: int, spec: str, index: int, width: int,
                  height: int, data: bytes) -> None:
        payload = _PROXY_MAGIC + struct.pack("<II", width, height) + data
        self._cache.set(self._proxy_key(identity, stream, spec, index), _seal(payload),
                        tag=identity)

    # -- housekeeping ------------------------------------------------------------------------
    def _read(self, key: str) -> bytes | None:
        try:
            data = self._cache.get(key)
        except Exception:  # a damaged or vanished file behind the entry is a miss
            data = None
        payload = _unseal(data)
        if data is not None and payload is None:
            with contextlib.suppress(Exception):
                self._cache.delete(key)
        return payload

    def flush_stats(self) -> None:
        """Write the statistics this process still holds in memory: none for this level
        (diskcache counts its lookups itself); a level it cannot count -- ``phast.levels``'
        shared store -- adds its own here (:meth:`_add_counts`)."""

    def _add_counts(self, counts: dict[str, int]) -> None:
        with contextlib.suppress(Exception):  # counters are statistics: never worth an error
            for key, n in counts.items():
                if n:
                    self._cache.incr(key, n)

    def stats(self) -> dict[str, Any]:
        """Bytes on disk, entries, clips (distinct sources), and the hits, misses and hit rate
        of every lookup (proxies, indices, proxy maps) by every process since the store was
        created or :meth:`clear` ed (diskcache's statistics; a damaged entry is a hit there and
        a miss here: reading it drops it, and the next lookup misses)."""
        self.flush_stats()
        identities, proxies, indices = set(), 0, 0
        for key in self._cache.iterkeys():
            parts = str(key).split("/")
            if parts[0] == "proxy" and len(parts) > 2:
                proxies += 1
                identities.add(parts[2])
            elif parts[0] == "index" and len(parts) > 2:
                indices += 1
                identities.add(parts[2])
        hits, misses = (int(n) for n in self._cache.stats(enable=True))
        return {"directory": str(self.directory / "store"), "bytes": self._cache.volume(),
                "size_limit": self._cache.size_limit, "entries": proxies + indices,
                "proxies": proxies, "indices": indices, "clips": len(identities), "hits": hits,
                "misses": misses, "hit_rate": hits / (hits + misses) if hits + misses else None}

    def clear(self, identity: str | None = None) -> int:
        """Remove every entry (and reset the statistics), or the entries tagged with one source
        identity; returns how many."""
        if identity is None:
            self._cache.stats(enable=True, reset=True)
            return int(self._cache.clear())
        return int(self._cache.evict(identity))

    def close(self) -> None:
        self.flush_stats()
        self._cache.close()
