"""Measure Y4MBackend's conversions against FFmpeg's (``av.VideoFrame.to_ndarray``).

Prints, for each packed format, the largest absolute sample difference over every frame of
every y4m clip kind phast.testing generates, plus 4:2:0 and 4:2:2 clips at each parity of width
and height (swscale picks a different path for each): the numbers declared as
``Y4MBackend.conversion_tolerance``. Run from this folder: ``python measure_tolerance.py``.
"""

from __future__ import annotations

import sys
import tempfile
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import numpy as np
from phast.testing import CLIP_KINDS, ClipKind, make_clip, reference_frames

sys.path.insert(0, str(Path(__file__).parent / "src"))
from phast_y4m import Y4MBackend

FORMATS = [f for f in Y4MBackend.formats if f != "native"]


def kinds() -> list[ClipKind]:
    found = [k for k in CLIP_KINDS.values() if k.codec == "y4m"]
    for tag, pix_fmt in (("420jpeg", "yuv420p"), ("422", "yuv422p")):
        for width in (160, 157):
            for height in (96, 93):
                found.append(ClipKind(f"sweep_{tag}_{width}x{height}", ".y4m", "y4m", pix_fmt,
                                      width, height, frames=4, rate=Fraction(25), y4m_tag=tag))
    return found


def main() -> None:
    worst: dict[str, tuple[int, str]] = defaultdict(lambda: (0, "-"))
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds():
            path = make_clip(kind, tmp)
            backend = Y4MBackend(str(path), stream=0, options={}, progress=lambda: None)
            try:
                count = backend.build_index().frame_count
                for fmt in FORMATS:
                    ref = reference_frames(path, format=fmt)
                    buf = bytearray(ref[0].nbytes)
                    for i in range(count):
                        backend.decode(i, fmt, memoryview(buf))
                        got = np.frombuffer(buf, ref[i].dtype).reshape(ref[i].shape)
                        diff = np.abs(got.astype(np.int64) - ref[i].astype(np.int64))
                        if diff.max() > worst[fmt][0]:
                            worst[fmt] = (int(diff.max()),
                                          f"{kind.name} frame {i}, mean {diff.mean():.3f}")
            finally:
                backend.close()
    for fmt in FORMATS:
        diff, where = worst[fmt]
        print(f"{fmt:9} max |difference| {diff:3}   ({where})")


if __name__ == "__main__":
    main()
