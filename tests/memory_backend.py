"""A test-only backend that declares no address-space cap, as GPU backends do (never installed).

Workers that preload it (``WorkerConfig(backends=...)``) get no ``RLIMIT_AS``; the editor's
watchdog bounds their resident memory instead. On cue (option ``at``: a frame index, first
attempt only) it touches memory until it is killed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from phast import worker
from phast.backends.base import DecodedFrame
from phast.backends.software import SoftwareBackend

CHUNK = 16 << 20


def hoard(stop_at: int) -> None:
    """Make memory resident in 16 MiB chunks (every page written, not only reserved) until
    killed. Past ``stop_at`` bytes it stops and sleeps without a heartbeat: a watchdog that does
    not fire then fails the test through the hang watchdog, without exhausting the host."""
    kept = []
    while len(kept) * CHUNK < stop_at:
        kept.append(np.ones(CHUNK, np.uint8))
    time.sleep(3600)


class UnboundedBackend(SoftwareBackend):
    name = "unbounded"
    address_space_limit = False

    def __init__(self, path: str, *, stream: int, options: Mapping[str, Any],
                 progress: Callable[[], None]) -> None:
        self.at = int(options.get("at", -1))
        self.stop_at = int(options.get("stop_at", 2 << 30))
        super().__init__(path, stream=stream, options=options, progress=progress)

    def decode(self, index: int, format: str, out: memoryview) -> DecodedFrame:
        if index == self.at and worker.current_job.get("attempt") == 0:
            hoard(self.stop_at)
        return super().decode(index, format, out)
