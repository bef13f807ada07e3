"""The control channel between the editor and a worker: framed plain data, never pickle.

One message = ``!II`` header (JSON length, total blob length), a UTF-8 JSON object, then its
binary blobs (e.g. index arrays) back to back; the JSON's ``"blobs"`` lists their lengths. File
descriptors (shared-memory slots) ride along as ``SCM_RIGHTS`` ancillary data.

Both sides bound every length before allocating, so a hostile worker cannot make the editor
allocate without limit or parse anything but JSON.
"""

from __future__ import annotations

import array
import json
import socket
import struct
from typing import Any

from .errors import ProtocolViolation

#: Changes whenever a record's meaning changes; READY carries it and the editor checks it.
VERSION = "phast-1"

_HEADER = struct.Struct("!II")
MAX_JSON = 1 << 20  #: a control record is small; anything bigger is hostile
MAX_BLOBS = 1 << 30  #: index arrays of a very long clip stay far below this
MAX_FDS = 8


class ChannelClosed(ConnectionError):
    """The peer closed the channel (a worker that exited or died)."""


def send(sock: socket.socket, msg: dict[str, Any], blobs: list[bytes] = (),  # type: ignore[assignment]
         fds: list[int] = ()) -> None:  # type: ignore[assignment]
    """Send one message (thread-safety is the caller's: one writer per socket)."""
    if blobs:
        msg = {**msg, "blobs": [len(b) for b in blobs]}
    body = json.dumps(msg, separators=(",", ":")).encode()
    head = _HEADER.pack(len(body), sum(len(b) for b in blobs))
    first = head + body
    if fds:
        sock.sendmsg([first], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(first)
    for blob in blobs:
        sock.sendall(blob)


def _recv_exact(sock: socket.socket, n: int, fds: list[int] | None = None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if fds is not None and not buf:
            data, anc, _flags, _addr = sock.recvmsg(n, socket.CMSG_SPACE(MAX_FDS * 4))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = array.array("i")
                    got.frombytes(payload[: len(payload) - len(payload) % 4])
                    fds.extend(got)
        else:
            data = sock.recv(min(n - len(buf), 1 << 20))
        if not data:
            raise ChannelClosed("peer closed the channel")
        buf += data
    return bytes(buf)


def recv(sock: socket.socket, *,
         max_blobs: int = MAX_BLOBS) -> tuple[dict[str, Any], list[bytes], list[int]]:
    """Receive one message: (record, blobs, fds). Raises :class:`ProtocolViolation` if malformed."""
    fds: list[int] = []
    head = _recv_exact(sock, _HEADER.size, fds)
    jlen, blen = _HEADER.unpack(head)
    if jlen > MAX_JSON or blen > max_blobs:
        raise ProtocolViolation(f"message too large ({jlen} + {blen} bytes)")
    try:
        msg = json.loads(_recv_exact(sock, jlen))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolViolation(f"malformed record: {e}") from e
    if not isinstance(msg, dict):
        raise ProtocolViolation("a record must be a JSON object")
    lengths = msg.pop("blobs", [])
    if (not isinstance(lengths, list) or not all(isinstance(n, int) and n >= 0 for n in lengths)
            or sum(lengths) != blen):
        raise ProtocolViolation("blob lengths do not add up")
    data = _recv_exact(sock, blen) if blen else b""
    blobs, pos = [], 0
    for n in lengths:
        blobs.append(data[pos : pos + n])
        pos += n
    return msg, blobs, fds


def field(msg: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``msg[name]`` checked against ``kind`` (bool is never accepted as an int)."""
    value = msg.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ProtocolViolation(f"record field {name!r} is missing or not {kind}")
    return value
