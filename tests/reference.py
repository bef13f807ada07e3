"""The ground truth for phast's own tests: a plain sequential PyAV decode.

A thin adapter over :mod:`phast.testing.reference` (the same reference the plugin conformance
suite uses), keeping this suite's call style (``stream_index=``). It shares no code with the
backend under test: frames come from ``container.decode(video=k)`` in display order, converted
with ``to_ndarray(format=...)``, or as each plane's visible bytes for ``format="native"``.
"""

from __future__ import annotations

import os
from typing import Any

from phast.testing import reference as _ref

native_planes = _ref.native_planes


def reference_frames(path: str | os.PathLike[str], *, stream_index: int = 0,
                     format: str = "rgb24") -> list[Any]:
    """Every frame of video stream ``stream_index``, in display order (cached, read-only)."""
    return _ref.reference_frames(path, format=format, stream=stream_index)


def reference_pts(path: str | os.PathLike[str], stream_index: int = 0) -> list[int | None]:
    return _ref.reference_pts(path, stream=stream_index)


def reference_count(path: str | os.PathLike[str], stream_index: int = 0) -> int:
    return len(reference_pts(path, stream_index))
