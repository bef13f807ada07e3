"""Per-source data kept on disk: the frame index and the stream description.

Keyed by source identity (size, mtime and a hash of the file's head and tail), so a file rewritten
in place never matches its old entries, and reopening an unchanged file needs no scan. Entries
are plain bytes with a checksum: a damaged entry reads as a miss, never as a wrong index.
The store is a ``diskcache`` directory, safe to share between editor processes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

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


class IndexStore:
    """Frame indices and stream descriptions by (source identity, backend, stream)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        import diskcache  # imported at use: keeps `import phast` light

        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self._cache = diskcache.Cache(str(self.directory / "index"), size_limit=1 << 30)

    @staticmethod
    def _key(identity: str, backend: str, stream: int) -> str:
        return f"v{FORMAT_VERSION}/{identity}/{backend}/{stream}"

    def get(self, identity: str, backend: str, stream: int) -> tuple[FrameIndex, dict] | None:
        key = self._key(identity, backend, stream)
        try:
            payload = _unseal(self._cache.get(key))
        except Exception:
            payload = None
        if payload is None:
            return None
        try:
            (hlen,) = (int.from_bytes(payload[:4], "little"),)
            source = json.loads(payload[4 : 4 + hlen])
            index = FrameIndex.from_bytes(payload[4 + hlen :])
        except (MediaError, ValueError, KeyError):
            self._cache.delete(key)
            return None
        return index, source

    def put(self, identity: str, backend: str, stream: int, index: FrameIndex,
            source: dict) -> None:
        head = json.dumps(source).encode()
        payload = len(head).to_bytes(4, "little") + head + index.to_bytes()
        self._cache.set(self._key(identity, backend, stream), _seal(payload))

    def close(self) -> None:
        self._cache.close()
