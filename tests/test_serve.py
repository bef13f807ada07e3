"""``phast serve`` over real sockets and processes, spoken to by tests/serve_client.py.

Pixels are compared with an independent sequential PyAV decode; leases, clips and slots are
counted on the server after clients go (killed ones included); another user is refused.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from phast import protocol
from tests.reference import reference_frames
from tests.serve_client import Client, ServeError

CLIP = "h264_bpyramid_longgop"


@pytest.fixture
def client(cache_dir: Path) -> Iterator[Client]:
    c = Client.spawn(cache_dir=str(cache_dir))
    yield c
    c.close()
    assert c.proc is not None and c.proc.returncode == 0  # it exits when its client goes


@pytest.fixture
def shared(cache_dir: Path) -> Iterator[str]:
    """A shared server at $XDG_RUNTIME_DIR/phast/serve.sock (the default path); the runtime
    directory is in /tmp, where another user can reach it once its modes allow."""
    run = Path(tempfile.mkdtemp(prefix="phast-run-"))
    env = {**os.environ, "XDG_RUNTIME_DIR": str(run)}
    proc = subprocess.Popen([sys.executable, "-m", "phast", "serve", "--cache-dir",
                             str(cache_dir)], env=env, stdin=subprocess.DEVNULL)
    path = run / "phast" / "serve.sock"
    for _ in range(300):
        if path.exists():
            break
        time.sleep(0.05)
    yield str(path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not path.exists()  # the server removes its socket
    shutil.rmtree(run)


def test_frames_match_a_sequential_decode(client: Client, make) -> None:  # type: ignore[no-untyped-def]
    path = make(CLIP)
    clip, info = client.open(str(path))
    ref = reference_frames(path)
    assert info["frame_count"] == len(ref) and (info["width"], info["height"]) == (160, 96)
    for i in (0, 50, 3, len(ref) - 1, 1):
        f = client.frame(clip, i)
        assert f.quality == "exact" and f.record["index"] == i == f.record["shows"]
        np.testing.assert_array_equal(f.packed(), ref[i])
        client.release(f)
    native = reference_frames(path, format="native")
    f = client.frame(clip, 17, format="native")
    assert f.record["pix_fmt"] == "yuv420p" and len(f.planes) == 3
    for got, want in zip(f.planes, native[17], strict=True):
        np.testing.assert_array_equal(got, want)
    client.release(f)
    t = client.frame(clip, 9).record["time"]
    f = client.frame(clip, time=t)
    assert f.record["index"] == 9
    assert client.stats()["leases"] == 2  # frames 9 (not released above) and f


def test_error_codes(client: Client, make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    clip, info = client.open(str(make(CLIP)))
    cases = [
        (lambda: client.frame(clip, info["frame_count"]), "OUT_OF_RANGE"),
        (lambda: client.frame(clip, time=-5.0), "OUT_OF_RANGE"),
        (lambda: client.frame(clip, 0, format="yuv9"), "INVALID"),
        (lambda: client.frame(clip, 0, deadline=-1), "INVALID"),
        (lambda: client.open(str(tmp_path / "missing.mp4")), "NOT_FOUND"),
        (lambda: client.open(str(make("audio_only"))), "NO_VIDEO"),
        (lambda: client.open(str(make(CLIP)), backend="nope"), "BACKEND"),
        (lambda: client._call({"op": "frame", "clip": clip, "index": "7"}), "BAD_REQUEST"),
        (lambda: client._call({"op": "fly"}), "BAD_REQUEST"),
        (lambda: client._call({"op": "open", "path": "relative.mp4"}), "BAD_REQUEST"),
    ]
    for call, code in cases:
        with pytest.raises(ServeError) as e:
            call()
        assert e.value.code == code, e.value
    client.clips[99] = client.clips[clip].__class__("x", {}, 12345)
    with pytest.raises(ServeError, match="NO_CLIP"):
        client.frame(99, 0)
    del client.clips[99]
    assert client.frame(clip, 1).quality == "exact"  # the connection survived all of it


def test_handshake_first_and_versions(cache_dir: Path) -> None:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, "-m", "phast", "serve", "--fd",
                             str(theirs.fileno())], pass_fds=[theirs.fileno()])
    theirs.close()
    protocol.send(ours, {"op": "ping", "id": 1})
    reply, _, _ = protocol.recv(ours)
    assert reply["error"]["code"] == "BAD_REQUEST"  # hello first
    protocol.send(ours, {"op": "hello", "id": 2, "version": "phast-serve-0"})
    reply, _, _ = protocol.recv(ours)
    assert reply["error"]["code"] == "VERSION"
    with pytest.raises(protocol.ChannelClosed):  # ... and the door
        protocol.recv(ours)
    assert proc.wait(timeout=30) == 0


def test_restart_reopens_clips(client: Client, make) -> None:  # type: ignore[no-untyped-def]
    path = make(CLIP)
    clip, _ = client.open(str(path))
    ref = reference_frames(path)
    before = client.frame(clip, 3)
    kept = before.packed()
    assert client.proc is not None
    client.proc.kill()
    t0 = time.monotonic()
    after = client.frame(clip, 4)  # one slower frame, not an error
    slow = time.monotonic() - t0
    assert client.restarts == 1 and after.quality == "exact"
    np.testing.assert_array_equal(after.packed(), ref[4])
    np.testing.assert_array_equal(before.packed(), kept)  # the dead server's frame stays
    client.release(before)  # an old lease: nothing to tell the new server
    client.release(after)
    assert client.stats() == {"connections": 1, "clips": 1, "leases": 0}
    assert slow < 30


def test_refinement_notification(client: Client, make) -> None:  # type: ignore[no-untyped-def]
    path = make(CLIP)
    clip, info = client.open(str(path), proxies=False)
    client.release(client.frame(clip, 0))
    far = info["frame_count"] - 2  # in the second group of pictures: a long decode
    f = client.frame(clip, far, deadline=0.001, notify=True)
    assert f.record["index"] == far
    if f.quality == "exact":
        pytest.fail("a 1 ms deadline for a frame 88 frames into a long GOP was EXACT")
    assert f.quality in ("nearest", "blank") and f.record["shows"] != far
    client.release(f)
    for _ in range(100):  # events arrive between replies
        client.stats()
        if client.events:
            break
        time.sleep(0.1)
    assert client.events == [{"event": "refined", "clip": 1, "index": far, "format": "rgb24"}]
    g = client.frame(clip, far, deadline=0.001)
    assert g.quality == "exact"  # now a RAM hit
    np.testing.assert_array_equal(g.packed(), reference_frames(path)[far])


def test_closed_clip_slots_are_dropped(client: Client, make) -> None:  # type: ignore[no-untyped-def]
    a, _ = client.open(str(make(CLIP)))
    b, _ = client.open(str(make(CLIP)))
    f = client.frame(a, 0)
    client.release(f)
    slot_a = f.record["slot"]["id"]
    assert slot_a in client.slots
    client.close_clip(a)  # its slots close on the server: the next reply says so
    client.release(client.frame(b, 0))
    assert slot_a not in client.slots


def test_shared_server_frees_what_a_killed_client_held(shared: str, make) -> None:  # type: ignore[no-untyped-def]
    path = make(CLIP)
    st = os.stat(shared)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(shared)).st_mode) == 0o700
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
sys.path.insert(0, {os.getcwd()!r})
from tests.serve_client import Client
c = Client.connect({shared!r})
clip, _ = c.open({str(path)!r})
frames = [c.frame(clip, i) for i in range(5)]
print("held", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    watcher = Client.connect(shared)
    assert watcher.stats() == {"connections": 2, "clips": 1, "leases": 5}
    holder.kill()
    holder.wait()
    for _ in range(100):
        if watcher.stats()["connections"] == 1:
            break
        time.sleep(0.05)
    assert watcher.stats() == {"connections": 1, "clips": 0, "leases": 0}
    watcher.close()


def test_shared_server_refuses_another_user(shared: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another user")
    # The system interpreter, framing by hand: the other user may not read this one's files.
    probe = """
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES"); sys.exit()
body = json.dumps({"op": "hello", "id": 1, "version": "phast-serve-1"}).encode()
s.sendall(struct.pack("!II", len(body), 0) + body)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(json.loads(data[8:])["error"]["code"])
"""

    def as_nobody() -> str:
        out = subprocess.run(["/usr/bin/python3", "-c", probe, shared], user=65534,
                             group=65534, capture_output=True, text=True, timeout=60)
        return out.stdout.strip() or out.stderr

    assert as_nobody() == "EACCES"  # the file mode alone keeps others out
    folder = os.path.dirname(shared)
    os.chmod(folder, 0o755)
    os.chmod(os.path.dirname(folder), 0o755)
    os.chmod(shared, 0o666)  # ... and if it did not, the peer's credentials would
    try:
        assert as_nobody() == "PERMISSION"
    finally:
        os.chmod(shared, 0o600)
        os.chmod(folder, 0o700)
    c = Client.connect(shared)  # its own user is served
    assert c.stats()["connections"] == 1
    c.close()


def test_a_hostile_client_cannot_hurt_the_server(shared: str, make) -> None:  # type: ignore[no-untyped-def]
    for payload in (os.urandom(64), b"\x7f\xff\xff\xff\0\0\0\0", b"\0\0\0\x02\0\0\0\x00[]"):
        s = socket.socket(socket.AF_UNIX)
        s.connect(shared)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        with __import__("contextlib").suppress(OSError, protocol.ChannelClosed,
                                               protocol.ProtocolViolation):
            reply, _, _ = protocol.recv(s)
            assert reply["ok"] is False
        s.close()
    s = socket.socket(socket.AF_UNIX)  # descriptors sent to the server are refused
    s.connect(shared)
    r, w = os.pipe()
    protocol.send(s, {"op": "hello", "id": 1, "version": "phast-serve-1"}, fds=[r])
    reply, _, _ = protocol.recv(s)
    assert reply["error"]["code"] == "BAD_REQUEST"
    s.close()
    os.close(r)
    os.close(w)
    c = Client.connect(shared)
    clip, _ = c.open(str(make(CLIP)))
    assert c.frame(clip, 2).quality == "exact"
    c.close()


def test_serve_refuses_a_shared_folder_and_a_taken_socket(shared: str, tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    os.chmod(open_dir, 0o755)
    for path, why in ((open_dir / "s.sock", "mode 0700"), (Path(shared), "already listens")):
        out = subprocess.run([sys.executable, "-m", "phast", "serve", "--socket", str(path)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and why in out.stderr, out.stderr
    assert Client.connect(shared).stats()["connections"] == 1  # the live one still serves
