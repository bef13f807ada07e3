"""Child process for tests/test_avlog.py: the software backend with the worker's log pipe.

``python -m tests.avlog_child FILE SEED [--no-reports-below-error]`` installs
:mod:`phast.avlog` as a worker does (it takes over descriptor 2), indexes FILE, asks for every
frame (shuffled by SEED; -1: in order; -2: frame N/2, then read-ahead as a worker does while
idle, then in order), re-indexing on IndexMismatch as a session does, and prints one JSON line:
the backend's decoding mode, the re-indexes, how the damage was found
(``SoftwareBackend.damage``), and how many frames were EXACT and equal to a single-threaded
sequential decode, wrong, or refused. ``--no-reports-below-error`` counts only messages of level
ERROR (``phast.avlog.DAMAGE_BELOW_ERROR`` emptied), to test the other checks alone.
"""

from __future__ import annotations

import json
import sys
import traceback

import numpy as np

from phast import avlog


def main(path: str, seed: int) -> dict:
    from backends.software import SoftwareBackend
    from hwbench.fuzz import _sequential_decode
    from phast.errors import IndexMismatch, PhastError

    reference = list(_sequential_decode(path))
    backend = SoftwareBackend(path, stream=0, options={}, progress=lambda: None)
    try:
        n = backend.build_index().frame_count
        order = (np.random.default_rng(seed).permutation(n).tolist() if seed >= 0
                 else list(range(n)))
        exact = wrong = refused = reindexed = 0
        if seed == -2:
            backend._drop_kept()  # the verified prefix's frames: decode, do not copy
            backend.av_frame(n // 2)
            try:
                for i in range(n // 2 + 1, n):  # what phast.worker.Server.read_ahead does
                    if not backend.prefetch(i):
                        break
            except Exception:
                pass  # the worker drops it: the next request meets the error, if any
        for i in order:
            try:
                try:
                    frame = backend.av_frame(i)
                except IndexMismatch:  # as phast's session does: re-index, ask again
                    reindexed += 1
                    backend.build_index(full_decode=True)
                    frame = backend.av_frame(i)
                picture = frame.to_ndarray(format="rgb24")
            except PhastError:
                refused += 1
                continue
            if i < len(reference) and np.array_equal(picture, reference[i]):
                exact += 1
            else:
                wrong += 1
        return {"frames": n, "exact": exact, "wrong": wrong, "refused": refused,
                "reindexed": reindexed, "harmless": backend._harmless,
                "frame_threads": backend._frame_threads, "damaged": backend._damaged,
                "redirected": len(backend._avoid),  # frames decoded from an earlier start
                "damage": backend.damage}
    finally:
        backend.close()


if __name__ == "__main__":
    if "--no-reports-below-error" in sys.argv:  # only ERROR messages: test the other checks
        sys.argv.remove("--no-reports-below-error")
        avlog.DAMAGE_BELOW_ERROR = ()
    avlog.install()  # descriptor 2 is the pipe from here on: report failures on stdout
    try:
        print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
    except Exception:
        traceback.print_exc(file=sys.stdout)
        sys.exit(1)
