"""FFmpeg's error messages in a worker, read without the GIL.

Decoders conceal much of the damage they meet and say so only in their log: no exception, and
under frame threading not always a corrupt flag either (the flag is copied to the output picture
while another thread may still be concealing it). PyAV's log callback takes the GIL, so a frame
thread that logs while the caller holds the GIL and waits for that thread would deadlock; PyAV
therefore can only be asked for messages logged by the calling thread.

A worker instead lets FFmpeg's own default callback print (it takes no GIL and serialises lines
with its own mutex) to file descriptor 2, which :func:`install` makes the write end of a
non-blocking pipe; the backend drains the read end after each decode call. FFmpeg's frame
threads finish a packet, logging included, before its picture or any later one is returned, so
every message about a picture returned by a call is in the pipe when the call returns.

Only the worker installs this (it owns its descriptor 2). In another process :func:`installed`
is None and backends fall back to PyAV's per-thread capture.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from typing import NamedTuple

import av.logging

__all__ = ["LogPipe", "Message", "install", "installed"]

# "[h264 @ 0x55d0c1a2b3c0] error while decoding MB 1 5, bytestream 111"
_LINE = re.compile(r"^\[(?P<source>[^\]@]+?) @ 0x[0-9a-fA-F]+\] (?P<text>.*)$")
_PIPE_BYTES = 1 << 20  # room for a burst of messages from one badly damaged packet


class Message(NamedTuple):
    source: str  #: the logging context's class name: a decoder ("h264"), a demuxer ("mov,mp4...")
    text: str


class LogPipe:
    """The read end of the pipe on descriptor 2, and a line buffer.

    ``forward``: a descriptor every line read is copied to (the worker's original stderr when
    debugging workers), or None.
    """

    def __init__(self, read_fd: int, forward: int | None = None) -> None:
        self._fd = read_fd
        self._forward = forward
        self._partial = b""

    def read(self) -> list[Message]:
        """The messages written since the last read, oldest first (non-blocking).

        A line still being written counts once it is complete; lines that are not FFmpeg
        messages (a Python warning) are skipped.
        """
        chunks = []
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
            if self._forward is not None:
                try:
                    os.write(self._forward, data)
                except OSError:
                    self._forward = None
        if not chunks:
            return []  # the usual case, once per decoded packet: nothing to split or parse
        *lines, self._partial = b"".join([self._partial, *chunks]).split(b"\n")
        out = []
        for raw in lines:
            m = _LINE.match(raw.decode("utf-8", "replace"))
            if m is not None:
                out.append(Message(m["source"].strip(), m["text"].strip()))
        return out

    def discard(self) -> None:
        """Forget what was logged so far (a decoder was flushed or closed: its threads are done)."""
        self.read()
        self._partial = b""


_installed: LogPipe | None = None


def install(*, forward: bool = False) -> LogPipe:
    """Route FFmpeg's messages of level ERROR and worse to a pipe on descriptor 2 (once).

    ``forward=True`` keeps a copy going to the original descriptor 2 (worker debugging).
    Call before the sandbox closes; nothing else in the process may write much to stderr
    (writes that find the pipe full are dropped, never blocked on).
    """
    global _installed
    if _installed is not None:
        return _installed
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # else the default 64 KiB (a lower limit for users)
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    original = os.dup(2) if forward else None
    os.dup2(write_fd, 2)  # dup2 clears O_CLOEXEC on 2; O_NONBLOCK belongs to the shared file
    os.close(write_fd)
    av.logging.restore_default_callback()
    av.logging.set_libav_level(av.logging.ERROR)
    _installed = LogPipe(read_fd, original)
    return _installed


def installed() -> LogPipe | None:
    """The pipe :func:`install` set up in this process, or None."""
    return _installed
