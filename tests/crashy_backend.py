"""A test-only backend that misbehaves on cue inside the worker (never installed).

Options (``backend_options``): ``mode`` (one of :data:`MODES`), ``at`` (the frame index that
triggers it), ``always`` (misbehave on every attempt; default: only on the first, so a retry on a
fresh worker succeeds).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from phast import worker
from phast.backends.base import DecodedFrame
from phast.backends.software import SoftwareBackend


def _segfault() -> None:
    ctypes.string_at(0)  # a real SIGSEGV in native code
    os.kill(os.getpid(), signal.SIGSEGV)


def _exit() -> None:
    os._exit(3)


def _hang() -> None:
    while True:  # no heartbeats: only the watchdog can end this
        time.sleep(3600)


def _blow_up() -> None:
    hoard = []
    while True:
        hoard.append(bytearray(64 << 20))


def _garbage_bytes() -> None:
    os.write(int(sys.argv[1]), b"\x00\x00\x00\x07\x00\x00\x00\x00not-json")
    time.sleep(3600)


def _abort() -> None:
    os.abort()


MODES: dict[str, Callable[[], None]] = {
    "segfault": _segfault,
    "exit": _exit,
    "hang": _hang,
    "memory": _blow_up,
    "garbage_bytes": _garbage_bytes,
    "abort": _abort,
}
#: Modes that lie in the completion record instead of dying.
LIES = ("wrong_index", "oversized", "out_of_slot", "wrong_format")


class CrashyBackend(SoftwareBackend):
    name = "crashy"

    def __init__(self, path: str, *, stream: int, options: Mapping[str, Any],
                 progress: Callable[[], None]) -> None:
        super().__init__(path, stream=stream, options=options, progress=progress)
        self.mode = str(options.get("mode", ""))
        self.at = int(options.get("at", -1))
        self.always = bool(options.get("always", False))

    def decode(self, index: int, format: str, out: memoryview) -> DecodedFrame:
        triggered = index == self.at and (self.always or worker.current_job.get("attempt") == 0)
        if triggered and self.mode in MODES:
            MODES[self.mode]()
        decoded = super().decode(index, format, out)
        if triggered and self.mode in LIES:
            _forge_next_record(self.mode, len(out))
        return decoded


def _forge_next_record(mode: str, slot_size: int) -> None:
    """Make the worker's next reply lie, as a compromised worker would (it owns the channel)."""
    original = worker.Server.reply

    def forged(self: Any, msg: dict[str, Any], blobs: Any = None) -> None:
        worker.Server.reply = original  # type: ignore[method-assign]
        rec = msg.get("frame")
        if isinstance(rec, dict):
            if mode == "wrong_index":
                msg["index"] += 1
            elif mode == "oversized":
                rec["width"] *= 4
                rec["height"] *= 4
            elif mode == "out_of_slot":
                rec["planes"][0][0] = slot_size - 16
            elif mode == "wrong_format":
                rec["pix_fmt"] = "gray"
        original(self, msg, blobs)

    worker.Server.reply = forged  # type: ignore[method-assign]


class SlowBackend(SoftwareBackend):
    """Decodes correctly, but takes ``delay`` seconds per request (heartbeating meanwhile), like
    a long seek on a big long-GOP file."""

    name = "slow"

    def __init__(self, path: str, *, stream: int, options: Mapping[str, Any],
                 progress: Callable[[], None]) -> None:
        super().__init__(path, stream=stream, options=options, progress=progress)
        self.delay = float(options.get("delay", 1.0))
        self.beat = progress

    def decode(self, index: int, format: str, out: memoryview) -> DecodedFrame:
        end = time.monotonic() + self.delay
        while time.monotonic() < end:
            self.beat()
            time.sleep(0.02)
        return super().decode(index, format, out)
