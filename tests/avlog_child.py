"""Child process for tests/test_avlog.py: the software backend with the worker's log pipe.

``python -m tests.avlog_child FILE SEED`` installs :mod:`phast.avlog` as a worker does (it
takes over descriptor 2), indexes FILE, asks for every frame (shuffled by SEED; -1: in order)
and prints one JSON line: the backend's decoding mode and how many frames were EXACT and equal
to a single-threaded sequential decode, wrong, or refused.
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
    from phast.errors import PhastError

    reference = list(_sequential_decode(path))
    backend = SoftwareBackend(path, stream=0, options={}, progress=lambda: None)
    try:
        n = backend.build_index().frame_count
        order = (np.random.default_rng(seed).permutation(n).tolist() if seed >= 0
                 else list(range(n)))
        exact = wrong = refused = 0
        for i in order:
            try:
                picture = backend.av_frame(i).to_ndarray(format="rgb24")
            except PhastError:
                refused += 1
                continue
            if i < len(reference) and np.array_equal(picture, reference[i]):
                exact += 1
            else:
                wrong += 1
        return {"frames": n, "exact": exact, "wrong": wrong, "refused": refused,
                "frame_threads": backend._frame_threads, "damaged": backend._damaged}
    finally:
        backend.close()


if __name__ == "__main__":
    avlog.install()  # descriptor 2 is the pipe from here on: report failures on stdout
    try:
        print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
    except Exception:
        traceback.print_exc(file=sys.stdout)
        sys.exit(1)
