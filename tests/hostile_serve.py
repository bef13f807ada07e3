"""A hostile ``phast serve``: ``python hostile_serve.py CASE serve --fd 3``.

It speaks the protocol correctly (a 16x16 yuv420p clip in a sealed memfd) except for one
misbehaviour, ``CASE``, at one step (hello, open, info or frame). The C client's hostile test
(tests/test_c_client.py) runs every case and expects an error code, never a crash.
No phast import: this is a stranger's server.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import sys
import time
from typing import Any

W, H = 16, 16
SLOT = 4096


def _memfd(size: int = SLOT, seal: bool = True, truncate_to: int | None = None) -> int:
    fd = os.memfd_create("hostile", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size if truncate_to is None else truncate_to)
    os.pwrite(fd, bytes(range(256)) * (W * H * 3 // 2 // 256 + 1), 0)
    if seal:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    return fd


def frame_record(rid: int, lease: int, new: bool, **over: Any) -> dict[str, Any]:
    rec = {"ok": True, "id": rid, "lease": lease, "slot": {"id": 1, "size": SLOT, "new": new},
           "planes": [[0, W, H, W], [256, W // 2, H // 2, W // 2], [320, W // 2, H // 2, W // 2]],
           "width": W, "height": H, "format": "native", "pix_fmt": "yuv420p", "itemsize": 1,
           "quality": "exact", "index": 0, "shows": 0, "pts": 0, "time": 0.0,
           "key_frame": True}
    rec.update(over)
    return rec


INFO = {"path": "/hostile/clip.mp4", "codec": "h264", "width": W, "height": H,
        "pix_fmt": "yuv420p", "bit_depth": 8, "frame_count": 3, "time_base": [1, 25],
        "start_time": 0.0, "duration": 0.12, "average_rate": [25, 1], "is_vfr": False,
        "keyframe_count": 1, "rotation": 0, "index_method": "demux", "backend": "software"}


def send(sock: socket.socket, obj: Any, fds: list[int] = (), raw: bytes | None = None,  # type: ignore[assignment]
         jlen: int | None = None, blen: int = 0) -> None:
    body = raw if raw is not None else json.dumps(obj).encode()
    head = struct.pack("!II", len(body) if jlen is None else jlen, blen)
    if fds:
        sock.sendmsg([head + body], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                      struct.pack(f"{len(fds)}i", *fds))])
    else:
        sock.sendall(head + body)


def recv(sock: socket.socket) -> dict[str, Any] | None:
    head = b""
    while len(head) < 8:
        chunk = sock.recv(8 - len(head))
        if not chunk:
            return None
        head += chunk
    jlen, _ = struct.unpack("!II", head)
    body = b""
    while len(body) < jlen:
        chunk = sock.recv(jlen - len(body))
        if not chunk:
            return None
        body += chunk
    msg: dict[str, Any] = json.loads(body)
    return msg


#: case -> (step it strikes at, what it sends). Each function gets (sock, request id).
def _bad(step: str, act: Any) -> tuple[str, Any]:
    return step, act


CASES: dict[str, tuple[str, Any]] = {
    "good": _bad("never", None),
    "garbage": _bad("hello", lambda s, r: s.sendall(os.urandom(4096))),
    "huge_header": _bad("hello", lambda s, r: send(s, None, raw=b"{}", jlen=0x7FFFFFFF)),
    "blobs": _bad("hello", lambda s, r: send(s, {"ok": True, "id": r}, blen=16)),
    "truncated": _bad("hello", lambda s, r: send(s, None, raw=b'{"ok":true', jlen=100)),
    "not_json": _bad("hello", lambda s, r: send(s, None, raw=b"\xff\xfe not json")),
    "array": _bad("hello", lambda s, r: send(s, [1, 2, 3])),
    "deep": _bad("hello", lambda s, r: send(s, None, raw=b"[" * 5000 + b"]" * 5000)),
    "many_tokens": _bad("hello", lambda s, r: send(s, {"ok": True, "id": r,
                                                       "x": list(range(10000))})),
    "bad_escape": _bad("hello", lambda s, r: send(s, None, raw=b'{"ok":true,"v":"\\q"}')),
    "bad_unicode": _bad("hello", lambda s, r: send(s, None, raw=b'{"ok":true,"v":"\\u12"}')),
    "huge_number": _bad("hello", lambda s, r: send(s, None, raw=b'{"ok":true,"id":'
                                                   + b"9" * 400 + b"}")),
    "wrong_id": _bad("hello", lambda s, r: send(s, {"ok": True, "id": r + 7})),
    "wrong_version": _bad("hello", lambda s, r: send(s, {"ok": True, "id": r,
                                                         "version": "phast-serve-0", "pid": 1})),
    "silent": _bad("hello", lambda s, r: time.sleep(5)),
    "hangup": _bad("hello", lambda s, r: s.close()),
    "silent_frame": _bad("frame", lambda s, r: time.sleep(3)),
    "hangup_frame": _bad("frame", lambda s, r: s.close()),
    "no_handle": _bad("open", lambda s, r: send(s, {"ok": True, "id": r})),
    "handle_string": _bad("open", lambda s, r: send(s, {"ok": True, "id": r, "clip": "1"})),
    "unknown_error": _bad("open", lambda s, r: send(s, {"ok": False, "id": r, "error": {
        "code": "ZAP", "message": "x" * 60000}})),
    "error_no_code": _bad("open", lambda s, r: send(s, {"ok": False, "id": r, "error": 5})),
    "info_missing": _bad("info", lambda s, r: send(s, {"ok": True, "id": r, "info": {}})),
    "info_types": _bad("info", lambda s, r: send(s, {"ok": True, "id": r, "info": {
        **INFO, "width": -5, "frame_count": "many"}})),
    "no_fd": _bad("frame", lambda s, r: send(s, frame_record(r, 1, True))),
    "pipe_fd": _bad("frame", lambda s, r: send(s, frame_record(r, 1, True), [os.pipe()[0]])),
    "unsealed": _bad("frame", lambda s, r: send(s, frame_record(r, 1, True),
                                                [_memfd(seal=False)])),
    "short_memfd": _bad("frame", lambda s, r: send(s, frame_record(r, 1, True),
                                                   [_memfd(truncate_to=SLOT // 2)])),
    "file_fd": _bad("frame", lambda s, r: send(s, frame_record(r, 1, True),
                                               [os.open("/etc/hostname", os.O_RDONLY)])),
    "two_fds": _bad("frame", lambda s, r: send(s, frame_record(r, 1, True),
                                               [_memfd(), _memfd()])),
    "plane_outside": _bad("frame", lambda s, r: send(s, frame_record(
        r, 1, True, planes=[[SLOT - 8, W, H, W]]), [_memfd()])),
    "plane_overflow": _bad("frame", lambda s, r: send(s, frame_record(
        r, 1, True, planes=[[0, 2**62, 2**62, 1]]), [_memfd()])),
    "row_wider_than_stride": _bad("frame", lambda s, r: send(s, frame_record(
        r, 1, True, planes=[[0, 4, H, 64]]), [_memfd()])),
    "five_planes": _bad("frame", lambda s, r: send(s, frame_record(
        r, 1, True, planes=[[0, 1, 1, 1]] * 5), [_memfd()])),
    "unknown_slot": _bad("frame", lambda s, r: send(s, frame_record(r, 1, False))),
    "huge_slot": _bad("frame", lambda s, r: send(s, frame_record(
        r, 1, True, slot={"id": 1, "size": 2**40, "new": True}), [_memfd()])),
    "bad_quality": _bad("frame", lambda s, r: send(s, frame_record(r, 1, True, quality="best"),
                                                   [_memfd()])),
    "zero_width": _bad("frame", lambda s, r: send(s, frame_record(r, 1, True, width=0),
                                                  [_memfd()])),
    "event_flood": _bad("frame", lambda s, r: [
        send(s, {"event": "refined", "clip": 1, "index": i, "format": "native"}, [_memfd()])
        for i in range(200)] and send(s, {"ok": True, "id": r + 1000})),
    "drop_unknown": _bad("frame", lambda s, r: send(s, {"ok": False, "id": r, "drop": [
        5, -1, "x", 2**40], "error": {"code": "DECODE", "message": "no"}})),
}


def serve(case: str, sock: socket.socket) -> None:
    step, act = CASES[case]
    lease = 0
    sent_slot = False
    while True:
        msg = recv(sock)
        if msg is None:
            return
        op, rid = msg.get("op"), msg.get("id")
        if op == "release":
            continue
        if op == step:
            act(sock, rid)
            if case in ("hangup", "truncated", "garbage", "silent", "silent_frame",
                        "hangup_frame"):
                return
            continue
        if op == "hello":
            send(sock, {"ok": True, "id": rid, "version": "phast-serve-1", "pid": os.getpid()})
        elif op == "open":
            send(sock, {"ok": True, "id": rid, "clip": 1, "info": INFO})
        elif op == "info":
            send(sock, {"ok": True, "id": rid, "info": INFO})
        elif op == "frame":
            lease += 1
            fds = [] if sent_slot else [_memfd()]
            send(sock, frame_record(rid, lease, not sent_slot), fds)
            sent_slot = True
        else:
            send(sock, {"ok": True, "id": rid})


if __name__ == "__main__":
    # argv: CASE serve --fd N
    serve(sys.argv[1], socket.socket(fileno=int(sys.argv[-1])))
