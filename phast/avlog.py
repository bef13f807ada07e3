"""FFmpeg's damage reports in a worker, read without the GIL.

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

Which messages report damage (:func:`is_damage`): every message of level ERROR or worse, and
the few reports decoders make below it (:data:`DAMAGE_BELOW_ERROR`): FFmpeg's error-resilience
module, which conceals broken macroblocks for H.264, MPEG-1/2/4 and H.263, says so at INFO
("concealing 19 DC, 19 AC, 19 MV errors in P frame"), often with no message at ERROR at all (a
slice that ends early parses without error). So the pipe carries INFO and worse, each line with
its level (FFmpeg's ``AV_LOG_PRINT_LEVEL`` flag, set through the libavutil PyAV loaded); where
that flag cannot be set, lines carry no level and the pipe stays at ERROR, as before.

Only the worker installs this (it owns its descriptor 2). In another process :func:`installed`
is None and backends fall back to PyAV's per-thread capture.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
from typing import NamedTuple

import av.logging

__all__ = ["DAMAGE_BELOW_ERROR", "LogPipe", "Message", "install", "installed", "is_damage"]

# "[h264 @ 0x55d0c1a2b3c0] [error] error while decoding MB 1 5, bytestream 111" (the level tag
# only with AV_LOG_PRINT_LEVEL)
_LINE = re.compile(r"^\[(?P<source>[^\]@]+?) @ 0x[0-9a-fA-F]+\] "
                   r"(?:\[(?P<level>panic|fatal|error|warning|info|verbose|debug|trace)\] )?"
                   r"(?P<text>.*)$")
_LEVELS = {"panic": av.logging.PANIC, "fatal": av.logging.FATAL, "error": av.logging.ERROR,
           "warning": av.logging.WARNING, "info": av.logging.INFO,
           "verbose": av.logging.VERBOSE, "debug": av.logging.DEBUG, "trace": av.logging.TRACE}
_PIPE_BYTES = 1 << 20  # room for a burst of messages from one badly damaged packet
_AV_LOG_PRINT_LEVEL = 2  # libavutil/log.h

#: Damage reports decoders log below ERROR, as (source, text prefix): the error-resilience
#: module's summary of what it concealed in a picture (libavcodec/error_resilience.c, INFO).
DAMAGE_BELOW_ERROR: tuple[tuple[str, str], ...] = (
    ("", "concealing "),  # any decoder using error resilience: h264, mpeg*video, mpeg4, h263...
)


class Message(NamedTuple):
    source: str  #: the logging context's class name: a decoder ("h264"), a demuxer ("mov,mp4...")
    text: str
    level: int = av.logging.ERROR  #: FFmpeg's level (ERROR where lines carry none)


def is_damage(source: str, text: str, level: int) -> bool:
    """Does this message say the input is damaged? ERROR and worse, and the reports of
    :data:`DAMAGE_BELOW_ERROR`; other messages (stream information, warnings) do not."""
    if level <= av.logging.ERROR:
        return True
    return any(source.startswith(src) and text.startswith(prefix)
               for src, prefix in DAMAGE_BELOW_ERROR)


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
                level = _LEVELS[m["level"]] if m["level"] else av.logging.ERROR
                out.append(Message(m["source"].strip(), m["text"].strip(), level))
        return out

    def damage(self) -> list[Message]:
        """:meth:`read`, keeping the messages that report damage (:func:`is_damage`)."""
        return [m for m in self.read() if is_damage(m.source, m.text, m.level)]

    def discard(self) -> None:
        """Forget what was logged so far (a decoder was flushed or closed: its threads are done)."""
        self.read()
        self._partial = b""


_installed: LogPipe | None = None


def _print_levels() -> bool:
    """Make FFmpeg's default callback tag each line with its level; False where it cannot.

    PyAV offers no ``av_log_set_flags``: call it in the libavutil PyAV loaded (found among the
    process's mappings, so ``CDLL`` returns that very library, not another copy).
    """
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/libavutil" in line}
        for path in paths:
            lib = ctypes.CDLL(path)
            lib.av_log_set_flags(ctypes.c_int(lib.av_log_get_flags() | _AV_LOG_PRINT_LEVEL))
            return True
    except (OSError, AttributeError):
        pass
    return False


def install(*, forward: bool = False) -> LogPipe:
    """Route FFmpeg's messages to a pipe on descriptor 2 (once): INFO and worse, each with its
    level, or ERROR and worse where levels cannot be printed.

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
    av.logging.set_libav_level(av.logging.INFO if _print_levels() else av.logging.ERROR)
    _installed = LogPipe(read_fd, original)
    return _installed


def installed() -> LogPipe | None:
    """The pipe :func:`install` set up in this process, or None."""
    return _installed
