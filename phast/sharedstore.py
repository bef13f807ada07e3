"""The shared second level of the proxy store: immutable objects every workstation reads.

The local store (:mod:`phast.store`) is diskcache, i.e. SQLite in WAL mode, which is not safe on
a network filesystem; this level is plain files (or objects) reached through fsspec: a directory
(local, NFS or SMB mount), ``s3://`` through s3fs, or any fsspec filesystem. Layout under the
root URL::

    phast-v1/objects/<identity>/<stream>/<spec>/<index // 4096>/<index>.phx   one proxy each
    phast-v1/manifests/<identity>/<stream>/<spec>/<writer>.phm                  who wrote what

**Objects** are content-addressed by what determines their picture (source identity, stream,
proxy spec, frame index) and immutable in content: a later writer of the same name (a retried
task) replaces it atomically with the same picture. Each is written whole or not at all: to a
temporary name then renamed on filesystems, in a single put on object stores (:data:`SINGLE_PUT`),
so a reader never sees a partial one; a writer killed mid-write leaves only a ``.tmp-`` file that
no reader ever opens.

**Manifests** say which frames exist without listing millions of objects. Every writer (a
process) keeps its own shard per source -- a bitmap of the frames it wrote, replaced atomically
after each batch -- and readers OR all shards of a source together, so two builders never
overwrite each other's news. :meth:`SharedStore.compact` merges shards into one (write the merge
first, then delete only what it merged: concurrent compactions lose nothing).

**Untrusted.** Anyone with write access to the share can plant a file. Every read is bounded
(:data:`MAX_OBJECT`, :data:`MAX_MANIFEST` bytes: larger is a miss), checked (magic, a blake2b
checksum, the key the object names must be the key asked for, a JPEG's markers), and parsed with
``struct`` only -- never unpickled or executed. The JPEG itself is decoded, like every stored
proxy, by the sandboxed image worker (``docs/architecture.md``). A checksum is no signature: a
writer of the share can plant a well-formed wrong picture, as it could replace the footage.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import store
from .errors import InvalidArgument, MissingDependency, _import_extra
from .proxy import MAX_PROXY_BYTES, looks_like_jpeg

LAYOUT = "phast-v1"
#: fsspec protocols whose single put of a whole object is atomic (object stores). Every other
#: filesystem (local, NFS/SMB mounts, sftp, smb) is written to a temporary name and renamed.
SINGLE_PUT = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "az", "adl", "memory"})
_OBJECT_MAGIC = b"PHSO1"
_MANIFEST_MAGIC = b"PHSM1"
_DIGEST = 32
_OBJ_HEAD = struct.Struct("<IIH")  # width, height, key length
_MAN_HEAD = struct.Struct("<IQH")  # frame count, bytes of objects written, key length
MAX_KEY = 1024
#: larger objects are refused unread beyond this bound (a planted file is a miss, not a load)
MAX_OBJECT = len(_OBJECT_MAGIC) + _DIGEST + _OBJ_HEAD.size + MAX_KEY + MAX_PROXY_BYTES
MAX_FRAMES = 1 << 26  #: frames a manifest may claim (about 25 days at 30 fps)
MAX_MANIFEST = len(_MANIFEST_MAGIC) + _DIGEST + _MAN_HEAD.size + MAX_KEY + MAX_FRAMES // 8
MAX_SHARDS = 4096  #: manifest shards read per source (more: the rest are ignored)
MANIFEST_TTL = 5.0  #: seconds a reader reuses a source's merged manifest
_FAN = 4096  #: objects per directory


def _fsspec() -> Any:
    # imported at use: the shared store is an optional extra
    return _import_extra("fsspec", "a shared proxy store needs fsspec (and s3fs for s3://)",
                        "farm")


def object_key(identity: str, stream: int, spec: str, index: int) -> str:
    """The content address of one proxy: what determines its picture."""
    return f"{identity}/{stream}/{spec}/{index}"


def _seal(magic: bytes, body: bytes) -> bytes:
    return magic + store._seal(body)  # the local store's seal (blake2b digest, body)


def _unseal(data: bytes, magic: bytes, head: struct.Struct, limit: int) -> bytes | None:
    """The body of a sealed blob (magic, blake2b digest, body) if it is whole and within
    ``limit`` bytes, else None."""
    if not (len(magic) + _DIGEST + head.size <= len(data) <= limit) \
            or not data.startswith(magic):
        return None
    return store._unseal(data[len(magic):])


def seal_object(key: str, width: int, height: int, jpeg: bytes) -> bytes:
    """The bytes of one shared object (``struct`` fields and the picture, checksummed)."""
    return _seal(_OBJECT_MAGIC, _OBJ_HEAD.pack(width, height, len(key.encode()))
                 + key.encode() + jpeg)


def open_object(data: bytes, key: str) -> tuple[int, int, bytes] | None:
    """``(width, height, jpeg)`` of a sealed object named ``key``, or None when it is damaged,
    foreign (sealed under another key), oversized or not a JPEG picture."""
    body = _unseal(data, _OBJECT_MAGIC, _OBJ_HEAD, MAX_OBJECT)
    if body is None:
        return None
    width, height, klen = _OBJ_HEAD.unpack_from(body)
    if body[_OBJ_HEAD.size:_OBJ_HEAD.size + klen] != key.encode():
        return None
    jpeg = body[_OBJ_HEAD.size + klen:]
    if not (0 < width <= 32768 and 0 < height <= 32768 and looks_like_jpeg(jpeg)):
        return None
    return width, height, jpeg


def _seal_manifest(key: str, have: np.ndarray, nbytes: int) -> bytes:
    return _seal(_MANIFEST_MAGIC, _MAN_HEAD.pack(len(have), nbytes, len(key.encode()))
                 + key.encode() + np.packbits(have).tobytes())


def _open_manifest(data: bytes, key: str, frame_count: int) -> tuple[np.ndarray, int] | None:
    body = _unseal(data, _MANIFEST_MAGIC, _MAN_HEAD, MAX_MANIFEST)
    if body is None:
        return None
    count, nbytes, klen = _MAN_HEAD.unpack_from(body)
    bits = body[_MAN_HEAD.size + klen:]
    if (body[_MAN_HEAD.size:_MAN_HEAD.size + klen] != key.encode() or count != frame_count
            or len(bits) != (count + 7) // 8):
        return None
    return np.unpackbits(np.frombuffer(bits, np.uint8), count=count).astype(bool), nbytes


class SharedStore:
    """The shared proxy level at ``url`` (any fsspec URL; ``storage_options`` go to fsspec, e.g.
    ``client_kwargs={"endpoint_url": ...}`` for s3fs; fsspec's own ``FSSPEC_S3_*`` environment
    settings apply too). Thread-safe; one writer identity per instance."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        if not isinstance(url, str) or not url:
            raise InvalidArgument(f"shared store must be a URL or a directory, got {url!r}")
        fsspec = _fsspec()
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except ImportError as e:
            raise MissingDependency(f"{url}: {e} (pip install 'phast[farm]')") from e
        self.url, self.storage_options = url, dict(storage_options)
        self.root = f"{root.rstrip('/')}/{LAYOUT}"
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (
            self.fs.protocol,)
        self.single_put = bool(SINGLE_PUT & set(protocols))
        host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())
        self.writer = f"{host[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._written: dict[str, tuple[np.ndarray, int]] = {}  # this writer's shards
        self._manifests: dict[str, tuple[float, np.ndarray]] = {}  # merged, with read time

    def __repr__(self) -> str:
        return f"SharedStore({self.url!r})"

    # -- paths ---------------------------------------------------------------------------------
    def _object_path(self, identity: str, stream: int, spec: str, index: int) -> str:
        return (f"{self.root}/objects/{identity}/{stream}/{spec}/{index // _FAN}/"
                f"{index}.phx")

    def _manifest_dir(self, identity: str, stream: int, spec: str) -> str:
        return f"{self.root}/manifests/{identity}/{stream}/{spec}"

    # -- objects -------------------------------------------------------------------------------
    def get(self, identity: str, stream: int, spec: str,
            index: int) -> tuple[int, int, bytes] | None:
        """``(width, height, jpeg)`` of a checked object, or None (absent, damaged, foreign,
        oversized, unreadable: all misses)."""
        path = self._object_path(identity, stream, spec, index)
        try:
            data = self.fs.cat_file(path, start=0, end=MAX_OBJECT + 1)
        except Exception:  # absent, or the share is unreachable: a miss either way
            return None
        return open_object(bytes(data), object_key(identity, stream, spec, index))

    def exists(self, identity: str, stream: int, spec: str, index: int) -> bool:
        try:
            return bool(self.fs.exists(self._object_path(identity, stream, spec, index)))
        except Exception:
            return False

    def put_many(self, identity: str, stream: int, spec: str, frame_count: int,
                 entries: list[tuple[int, int, int, bytes]]) -> None:
        """Write ``(index, width, height, jpeg)`` objects, then note them in this writer's
        manifest shard (an object is always complete before a manifest names it)."""
        written = 0
        for index, width, height, jpeg in entries:
            if not (0 <= index < frame_count and looks_like_jpeg(jpeg)):
                raise InvalidArgument(f"not a proxy picture for frame {index}")
            blob = seal_object(object_key(identity, stream, spec, index), width, height, jpeg)
            self._write(self._object_path(identity, stream, spec, index), blob)
            written += len(blob)
        if not entries:
            return
        mkey = object_key(identity, stream, spec, frame_count)
        with self._lock:
            have, nbytes = self._written.get(mkey, (np.zeros(frame_count, bool), 0))
            have = have.copy()
            have[[e[0] for e in entries]] = True
            self._written[mkey] = (have, nbytes + written)
            blob = _seal_manifest(mkey, have, nbytes + written)
            # under the lock: two batches of this writer replace its shard in order
            self._write(f"{self._manifest_dir(identity, stream, spec)}/{self.writer}.phm",
                        blob)
            cached = self._manifests.get(mkey)
            if cached is not None:
                cached[1][have] = True

    def _write(self, path: str, data: bytes) -> None:
        """Make ``path`` hold ``data`` whole: one put (object stores) or temp + rename."""
        if self.single_put:
            self.fs.pipe_file(path, data)
            return
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        try:
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(tmp)
            raise

    # -- manifests -----------------------------------------------------------------------------
    def manifest(self, identity: str, stream: int, spec: str, frame_count: int, *,
                 fresh: bool = False) -> np.ndarray:
        """Which frames the share holds, as its manifests say (bool per frame): every valid
        shard ORed together (damaged or foreign shards are skipped). Reused for
        :data:`MANIFEST_TTL` seconds unless ``fresh``. A hint: a named object that turns out
        damaged or gone is a miss when read."""
        mkey = object_key(identity, stream, spec, frame_count)
        with self._lock:
            cached = self._manifests.get(mkey)
            if cached is not None and not fresh and time.monotonic() - cached[0] < MANIFEST_TTL:
                return cached[1].copy()
        have, _nbytes, _shards = self._read_shards(identity, stream, spec, frame_count)
        with self._lock:
            mine = self._written.get(mkey)
            if mine is not None:
                have |= mine[0]
            self._manifests[mkey] = (time.monotonic(), have.copy())
        return have

    def _read_shards(self, identity: str, stream: int, spec: str,
                     frame_count: int) -> tuple[np.ndarray, int, list[str]]:
        """(frames ORed, bytes summed, the valid shards' paths)."""
        mkey = object_key(identity, stream, spec, frame_count)
        have, nbytes, used = np.zeros(frame_count, bool), 0, list[str]()
        directory = self._manifest_dir(identity, stream, spec)
        try:
            self.fs.invalidate_cache(directory)  # object stores cache listings (s3fs)
            names = self.fs.ls(directory, detail=False)
        except Exception:  # no manifest yet, or the share is unreachable
            return have, nbytes, used
        for path in sorted(str(p) for p in names if str(p).endswith(".phm"))[:MAX_SHARDS]:
            try:
                data = self.fs.cat_file(path, start=0, end=MAX_MANIFEST + 1)
            except Exception:
                continue  # deleted by a compaction meanwhile: its merge is read too
            shard = _open_manifest(bytes(data), mkey, frame_count)
            if shard is not None:
                have |= shard[0]
                nbytes += shard[1]
                used.append(path)
        return have, nbytes, used

    def compact(self, identity: str, stream: int, spec: str, frame_count: int) -> int:
        """Merge a source's shards into one; returns how many shards were merged away. Safe
        with concurrent writers and compactions: the merge is written before anything it
        covers is deleted, and only shards it read are deleted."""
        have, nbytes, used = self._read_shards(identity, stream, spec, frame_count)
        if len(used) < 2:
            return 0
        mkey = object_key(identity, stream, spec, frame_count)
        name = f"merged-{uuid.uuid4().hex[:12]}.phm"
        self._write(f"{self._manifest_dir(identity, stream, spec)}/{name}",
                    _seal_manifest(mkey, have, nbytes))
        mine = f"/{self.writer}.phm"
        removed = 0
        for path in used:
            if path.endswith(mine):
                continue  # this writer may still add to its own shard
            with contextlib.suppress(Exception):
                self.fs.rm_file(path)
                removed += 1
        return removed

    # -- housekeeping --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """What the manifests say: sources (per stream and spec), proxies and their bytes.
        Reads the manifests only, never lists objects."""
        base = f"{self.root}/manifests"
        sources = proxies = nbytes = 0
        try:
            identities = self.fs.ls(base, detail=False)
        except Exception:
            identities = []
        for ident_path in identities:
            ident = str(ident_path).rstrip("/").rsplit("/", 1)[-1]
            with contextlib.suppress(Exception):
                for stream_path in self.fs.ls(ident_path, detail=False):
                    for spec_path in self.fs.ls(stream_path, detail=False):
                        stream = str(stream_path).rstrip("/").rsplit("/", 1)[-1]
                        spec = str(spec_path).rstrip("/").rsplit("/", 1)[-1]
                        got = self._any_manifest(ident, int(stream), spec)
                        if got is not None:
                            sources += 1
                            proxies += int(got[0].sum())
                            nbytes += got[1]
        return {"url": self.url, "sources": sources, "proxies": proxies, "bytes": nbytes}

    def _any_manifest(self, identity: str, stream: int,
                      spec: str) -> tuple[np.ndarray, int] | None:
        """The merged shards of a source whose frame count is read from the first shard."""
        try:
            names = self.fs.ls(self._manifest_dir(identity, stream, spec), detail=False)
            first = next(str(p) for p in names if str(p).endswith(".phm"))
            data = bytes(self.fs.cat_file(first, start=0, end=MAX_MANIFEST + 1))
        except Exception:
            return None
        head = len(_MANIFEST_MAGIC) + _DIGEST
        if len(data) < head + _MAN_HEAD.size:
            return None
        count = _MAN_HEAD.unpack_from(data, head)[0]
        if not 0 < count <= MAX_FRAMES:
            return None
        have, nbytes, used = self._read_shards(identity, stream, spec, count)
        return (have, nbytes) if used else None


def open_shared(spec: str | SharedStore | None,
                storage_options: Mapping[str, Any] | None = None) -> SharedStore | None:
    """A :class:`SharedStore` for ``spec`` (a URL, an instance, or None: ``$PHAST_SHARED_STORE``
    when set, else no shared level)."""
    if isinstance(spec, SharedStore):
        return spec
    if spec is None:
        spec = os.environ.get("PHAST_SHARED_STORE") or None
        if spec is None:
            return None
    if storage_options:
        return SharedStore(spec, **dict(storage_options))
    with _opened_lock:  # one per URL in a process: clips of one share share its manifests
        if spec not in _opened:
            _opened[spec] = SharedStore(spec)
        return _opened[spec]


_opened: dict[str, SharedStore] = {}
_opened_lock = threading.Lock()
