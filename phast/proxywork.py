"""Worker-side proxy work: downscale + JPEG-encode frames, and decode JPEGs into slots.

Runs only inside workers (it imports PyAV). The encoder side serves the background proxy
builder; the decoder side serves the fallback tiers, on a worker of its own.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from phast.backends.avframes import write_frame
from phast.backends.base import DecodedFrame, PlaneLayout, SlotTooSmall
from phast.errors import MediaError


class ProxyEncoder:
    """Area-downscale frames to ``width`` x ``height`` and encode each as one JPEG.

    :meth:`encode` does both; :meth:`shrink` and :meth:`encode_small` do them apart (the
    by-product sink shrinks as frames are decoded and encodes later).
    """

    def __init__(self, width: int, height: int, quality: int) -> None:
        self.size = (width, height)
        self._reformatter = VideoReformatter()
        enc = av.CodecContext.create("mjpeg", "w")
        enc.width, enc.height = width, height
        enc.pix_fmt = "yuvj420p"
        enc.time_base = Fraction(1, 25)
        enc.qmin = enc.qmax = quality  # a fixed quantiser: size follows content, quality fixed
        self._enc = enc
        self._count = 0

    def encode(self, frame: Any) -> bytes:
        return self.encode_small(self.shrink(frame))

    def shrink(self, frame: Any) -> Any:
        """The frame area-downscaled to the proxy size, in the encoder's own format."""
        w, h = self.size
        return self._reformatter.reformat(frame, width=w, height=h, format="yuvj420p",
                                          interpolation=Interpolation.AREA)

    def encode_small(self, small: Any) -> bytes:
        """One JPEG of a picture :meth:`shrink` made."""
        # Each picture stands alone, but the encoder wants strictly increasing timestamps in its
        # own time base (PyAV rescales from the frame's) and no frame type carried over.
        small.time_base = self._enc.time_base
        small.pts = self._count
        self._count += 1
        small.pict_type = av.video.frame.PictureType.NONE
        packets = self._enc.encode(small)
        if len(packets) != 1:
            raise MediaError("the JPEG encoder did not produce exactly one picture")
        return bytes(packets[0])


def frame_from_rgb(rgb: np.ndarray) -> Any:
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")


#: Output formats libjpeg-turbo decodes to directly (simplejpeg's colour spaces).
_TURBO = {"rgb24": ("RGB", 3), "bgr24": ("BGR", 3), "rgba": ("RGBA", 4), "bgra": ("BGRA", 4),
          "gray": ("GRAY", 1)}


class ImageDecoder:
    """Decode one stored JPEG into a slot, in any output format.

    The 8-bit packed formats are decoded by libjpeg-turbo (simplejpeg) straight into the slot,
    colour conversion and chroma upsampling included; others (native, 16-bit) by FFmpeg and
    swscale. ``hwbench proxies`` measures both: 0.64 vs 0.96 ms per 640x360 picture to rgb24.
    """

    def __init__(self) -> None:
        import simplejpeg  # noqa: F401 -- loaded now, before the first fallback needs it

        self._reformatter = VideoReformatter()

    def decode(self, data: bytes, format: str, out: memoryview) -> DecodedFrame:
        if format in _TURBO:
            return _decode_turbo(data, format, out)
        return self._decode_ffmpeg(data, format, out)

    def _decode_ffmpeg(self, data: bytes, format: str, out: memoryview) -> DecodedFrame:
        dec = av.CodecContext.create("mjpeg", "r")  # stateless per picture: nothing carries over
        try:
            frames = dec.decode(av.Packet(data))
        except av.FFmpegError as e:
            raise MediaError(f"damaged proxy picture: {e}") from e
        if len(frames) != 1:
            raise MediaError("a proxy picture decoded to no frame")
        return write_frame(frames[0], format, out, self._reformatter)


def _decode_turbo(data: bytes, format: str, out: memoryview) -> DecodedFrame:
    import simplejpeg

    colorspace, channels = _TURBO[format]
    try:
        height, width, _space, _subsampling = simplejpeg.decode_jpeg_header(data)
    except ValueError as e:
        raise MediaError(f"damaged proxy picture: {e}") from e
    needed = width * height * channels
    if needed > len(out):
        raise SlotTooSmall(needed)
    target = np.frombuffer(out, np.uint8, needed).reshape(height, width, channels)
    try:
        # strict: a recoverable error (a truncated picture) is an error, never a guess
        simplejpeg.decode_jpeg(data, colorspace=colorspace, buffer=target, strict=True)
    except ValueError as e:
        raise MediaError(f"damaged proxy picture: {e}") from e
    row = width * channels
    return DecodedFrame(width, height, format, 1, (PlaneLayout(0, height, row),), True)


class ByproductSink:
    """Proxies as a by-product of decoding (``Backend.set_frame_sink``).

    The editor says which frames lack a proxy (:meth:`want`: a bitmap of a range); each such
    frame the backend decodes is shrunk at once (the full-size frame is not kept) and queued;
    :meth:`take` encodes queued pictures as JPEGs for the editor to store. At most
    ``max_pictures`` wait (the oldest are dropped): what the budget does not pay for is lost,
    not hoarded.
    """

    def __init__(self, width: int, height: int, quality: int, max_pictures: int = 64) -> None:
        self.encoder = ProxyEncoder(width, height, quality)
        self.spec = (width, height, quality)
        self.max_pictures = max_pictures
        self._wanted: set[int] = set()
        self._queue: dict[int, Any] = {}  # display index -> shrunk picture, oldest first

    def want(self, first: int, bits: bytes, count: int) -> None:
        """Frames ``first + k`` for each set bit ``k < count`` lack a proxy (replaces the
        previous range)."""
        flags = np.unpackbits(np.frombuffer(bits, np.uint8), count=count).astype(bool)
        self._wanted = {first + int(k) for k in np.flatnonzero(flags)}

    def forget(self, indices: Any) -> None:
        """These frames' proxies are made otherwise: not as by-products."""
        for index in indices:
            self._wanted.discard(index)
            self._queue.pop(index, None)

    def __call__(self, index: int, frame: Any) -> None:
        if index not in self._wanted or index in self._queue:
            return
        self._wanted.discard(index)
        self._queue[index] = self.encoder.shrink(frame)
        while len(self._queue) > self.max_pictures:
            del self._queue[next(iter(self._queue))]

    @property
    def pending(self) -> int:
        return len(self._queue)

    def take(self, limit: int, beat: Any = None) -> tuple[list[int], list[bytes]]:
        """Encode and hand over up to ``limit`` queued pictures, the most recent first (the
        playhead's neighbourhood)."""
        indices, pictures = [], []
        for index in list(reversed(self._queue))[:limit]:
            if beat is not None:
                beat()
            pictures.append(self.encoder.encode_small(self._queue.pop(index)))
            indices.append(index)
        return indices, pictures
