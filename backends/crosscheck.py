"""A decoder that reports no damage, checked against the software decoder in the same worker.

NVDEC (through PyNvVideoCodec) flags no concealed or corrupt picture and logs nothing phast can
read (it prints), so a picture it conceals would be served as EXACT with nothing behind the
claim. :class:`CrossChecked` puts the software decoder behind it:

* **The index, and what is damaged, come from FFmpeg's software decoder** (the *reference*, a
  :class:`~phast.backends.software.SoftwareBackend` of the same source in the same worker):
  exceptions, corrupt flags, FFmpeg's error messages, the verified prefix and the damaged-stream
  double decode, exactly as the software backend indexes. Frames it marks damaged are refused
  here as there. Damage FFmpeg reports is thus never served from the other decoder.
* **The other decoder's pictures are compared with the reference's on a sample**: before the
  first frame is served, the first :data:`CHECK_PREFIX` frames (intra and inter pictures of the
  first group); then, for every frame served, the first picture of its group of pictures (its
  start keyframe's), once per group. Both decoders decode it; the CRC-32 of the visible Y, U and
  V samples must agree. A keyframe costs the reference one intra picture (plus its reorder
  delay), so the sample stays cheap however long the groups are.
* **A disagreement ends the other decoder's part**: from then on the backend serves the
  reference's pictures (bit-exact with a sequential software decode, so EXACT stays true, at
  the software decoder's cost), and :attr:`CrossChecked.cross_check` says which frame
  disagreed. Nothing silent is served as the other decoder's.

What remains unchecked: inter pictures outside the prefix whose group's keyframe agreed. A
decoder that conceals damage FFmpeg does not report, or that decodes some inter feature
differently after the first group, serves those pictures unverified. Valid streams decode
bit-exactly on any conforming decoder (H.264 and HEVC define the output exactly), which is what
the EXACT claim for them rests on.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from phast.errors import DecodeError
from phast.index import FrameIndex

from .avframes import frame_planes
from .software import SoftwareBackend

#: Frames from the start compared before the first frame is served.
CHECK_PREFIX = 16
#: Bytes of decoded frames the reference keeps while it only checks (it serves nothing).
REFERENCE_KEEP_BYTES = 8 << 20


def planes_crc(planes: Iterable[np.ndarray]) -> int:
    """CRC-32 of 2-D uint8 planes (rows x row bytes, any strides), in order: the same value
    for the same visible samples, whatever the padding or layout they were read from."""
    crc = 0
    for plane in planes:
        crc = zlib.crc32(np.ascontiguousarray(plane).data, crc)
    return crc


class CrossChecked(SoftwareBackend):
    """Base of backends whose decoder reports no damage: software indexing, sampled checks.

    A subclass injects its decoder (:meth:`SoftwareBackend.make_decoder`, as the hardware
    backends do) and, when its frames are not ``av.VideoFrame`` objects, says how to read their
    picture (:meth:`_picture_crc`) and turns the reference's frames (served after a
    disagreement) into its own.
    """

    rechecks = False  # its frames come from another decoder (backends.recheck follows PyAV's)

    #: Frames compared from the start before the first one is served.
    check_prefix: ClassVar[int] = CHECK_PREFIX

    def __init__(self, path: str, *, stream: int, options: Mapping[str, Any],
                 progress: Callable[[], None]) -> None:
        super().__init__(path, stream=stream, options=options, progress=progress)
        try:
            # Opened now: the source's descriptor is granted for the duration of the open only.
            self._reference = SoftwareBackend(
                path, stream=stream, progress=progress,
                options={"threads": int(options.get("threads", 0)),
                         "keep_bytes": REFERENCE_KEEP_BYTES})
        except BaseException:
            super().close()
            raise
        self._prefix_checked = False
        self._checked: set[int] = set()
        #: What the check found: pictures compared, and (after a disagreement) which frame
        #: disagreed, in which case the reference serves every frame.
        self.cross_check: dict[str, Any] = {"compared": 0, "disagreed": None}

    # -- facts and index: the reference's -------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The reference's description: the same container, and frame 0 as the software
        decoder gives it (the source's pixel format, its rotation), before and after indexing
        alike."""
        return self._reference.describe()

    def build_index(self, *, full_decode: bool = False) -> FrameIndex:
        index = self._reference.build_index(full_decode=full_decode)
        super().use_index(index)
        return index

    def use_index(self, index: FrameIndex) -> None:
        self._reference.use_index(index)
        super().use_index(index)

    # -- frames --------------------------------------------------------------------------------
    @property
    def disagreed(self) -> bool:
        return self.cross_check["disagreed"] is not None

    def av_frame(self, index: int) -> Any:
        """Frame ``index`` from this backend's decoder, after the sample its serving calls for
        (the prefix, its group's keyframe) agreed; from the reference once one did not."""
        if not self.disagreed:
            self._check_sample(index)
        if self.disagreed:
            return self._reference.av_frame(index)
        return super().av_frame(index)

    def prefetch(self, index: int) -> bool:
        if self.disagreed:
            return self._reference.prefetch(index)
        return super().prefetch(index)

    def _check_sample(self, index: int) -> None:
        idx = self._index
        if idx is None or not 0 <= index < idx.frame_count:
            return  # the decode itself raises
        todo: Iterable[int]
        if not self._prefix_checked:
            self._prefix_checked = True
            todo = range(min(self.check_prefix, idx.frame_count))
        else:
            first = int(idx.packet_frame[int(idx.frame_start[index])])
            todo = [first] if first >= 0 and first not in self._checked else []
        for j in todo:
            if not self._compare(j):
                return

    def _compare(self, j: int) -> bool:
        """Decode frame ``j`` with both decoders; False (and the reference from now on) when
        the pictures differ."""
        self._checked.add(j)
        idx = self._index
        assert idx is not None
        if idx.is_damaged(j):
            return True  # refused by both
        try:
            want = planes_crc(frame_planes(self._reference.av_frame(j)))
        except DecodeError:
            return True  # the reference cannot serve it either: no exact picture to compare
        got = self._picture_crc(super().av_frame(j))
        self.cross_check["compared"] += 1
        if got == want:
            return True
        self.cross_check["disagreed"] = j
        self._disagreement(j)
        return False

    def _picture_crc(self, frame: Any) -> int:
        """:func:`planes_crc` of one of this decoder's frames' visible Y, U and V samples (the
        reference's layout: 4:2:0 planar). Subclasses with other frame objects override it."""
        return planes_crc(frame_planes(frame))

    def _disagreement(self, j: int) -> None:
        """Frame ``j``'s pictures differ: drop this decoder's frames, let the reference keep as
        many as this backend did (it serves every frame now). Subclasses free their decoder."""
        self._drop_kept()
        self._reset_run()
        self._reference._kept.keep_bytes = self._kept.keep_bytes

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._reference.close()


__all__ = ["CHECK_PREFIX", "CrossChecked", "planes_crc"]
