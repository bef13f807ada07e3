"""The test-suite's generated clips: :mod:`phast.testing.corpus` (shared with ``hwbench fuzz``)."""

from phast.testing.corpus import (
    BAD_INPUT_NAMES,
    CLIP_NAMES,
    CLIPS,
    ClipSpec,
    leading_picture_count,
    make_bad_inputs,
    make_clip,
    mp4_edit_lists,
    synthetic_picture,
    vp9_hidden_frame_count,
)

__all__ = ["BAD_INPUT_NAMES", "CLIPS", "CLIP_NAMES", "ClipSpec", "leading_picture_count",
           "make_bad_inputs", "make_clip", "mp4_edit_lists", "synthetic_picture",
           "vp9_hidden_frame_count"]
