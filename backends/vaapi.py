"""The VAAPI backend: the software backend's indexing and positioning, decoding on a VAAPI GPU.

Everything but the decoder (:class:`VaapiDecoder`, injected) is
:class:`~phast.backends.software.SoftwareBackend`: the same demux index (so frame numbering is
identical), the same seeks, the same per-frame checks. The decoder is FFmpeg's with a VAAPI
hardware device (PyAV's ``hwaccel``); each decoded surface is downloaded to host memory by PyAV
(``is_hw_owned=False``), as NV12 for 8-bit streams (P010 for 10-bit), and then handled like any
software frame. Hardware decoding of H.264/HEVC/VP9/AV1 is bit-exact by the codec specifications,
so after the download the pixels equal the software decode's; the native pixel format differs
(``nv12`` instead of ``yuv420p``).

No silent software fallback: the hardware device is opened with
``allow_software_fallback=False``, and :meth:`__init__` decodes the first packet to prove the
driver handles the stream's profile (else :class:`~phast.errors.CannotHandle`, which
``backend="auto"`` records before trying the next backend).

The PyPI wheels of PyAV carry no VAAPI (``av.codec.hwaccel.hwdevices_available()`` lacks
"vaapi"); :meth:`VaapiBackend.probe` says so and names the fix (:data:`FIX`).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from phast.errors import CannotHandle

from .avframes import av
from .base import ProbeResult
from .decoder import AvDecoder
from .software import SoftwareBackend

#: How to get a PyAV with VAAPI (shown by ``phast backends`` and in the README).
FIX = ("build PyAV from source against a system FFmpeg that has VAAPI: install libva-dev and "
       "the FFmpeg development packages (libavcodec-dev libavformat-dev libavdevice-dev "
       "libavfilter-dev libswscale-dev libswresample-dev, built with --enable-vaapi), then "
       "`pip install av --no-binary av`; the host also needs a /dev/dri/renderD* node and a "
       "VAAPI driver (intel-media-va-driver, mesa-va-drivers)")

#: Codecs FFmpeg can decode through VAAPI (the driver decides which profiles really work).
VAAPI_CODECS = frozenset({"h264", "hevc", "mpeg2video", "vp8", "vp9", "av1", "vc1", "mjpeg"})
#: VAAPI surfaces PyAV downloads as NV12 (8 bits) or P010 (10 bits): 4:2:0 only.
VAAPI_PIX_FMTS = frozenset({"yuv420p", "yuvj420p", "yuv420p10le", "nv12", "p010le"})
MAX_SIDE = 8192


#: The device nodes VAAPI decodes through (DRM render nodes).
RENDER_NODES = ("/dev/dri/renderD*",)


def render_nodes() -> list[str]:
    return sorted(glob.glob(RENDER_NODES[0]))


class VaapiBackend(SoftwareBackend):
    """Software indexing and positioning with VAAPI decoding. Options: those of the software
    backend, plus ``device`` (a render node path; default the first ``/dev/dri/renderD*``)."""

    rechecks = False  # its frames come from another decoder (backends.recheck follows PyAV's)

    name = "vaapi"
    device = "cpu"  # frames are downloaded: they reach the editor through shared memory
    codecs: ClassVar[frozenset[str]] = VAAPI_CODECS
    #: Render nodes, granted read-write with device ioctls (libva talks to the kernel driver
    #: through DRM ioctls only); never the primary ``card*`` nodes (modesetting).
    device_paths: ClassVar[tuple[str, ...]] = RENDER_NODES

    @classmethod
    def probe(cls) -> ProbeResult:
        from av.codec.hwaccel import hwdevices_available

        if "vaapi" not in hwdevices_available():
            return ProbeResult(False, f"this PyAV ({av.__version__}) has no VAAPI support (its "
                                      f"FFmpeg offers {', '.join(hwdevices_available()) or 'no'}"
                                      f" hardware devices); fix: {FIX}")
        nodes = render_nodes()
        if not nodes:
            return ProbeResult(False, f"no /dev/dri/renderD* render node on this host; fix: {FIX}")
        if not os.access(nodes[0], os.R_OK | os.W_OK):
            return ProbeResult(False, f"{nodes[0]} is not readable and writable by this user "
                                      "(add it to the 'render' group)")
        return ProbeResult(True, details={"pyav": av.__version__, "device": nodes[0]})

    @classmethod
    def capabilities(cls, info: Mapping[str, Any]) -> str | None:
        if info.get("codec") not in VAAPI_CODECS:
            return f"VAAPI does not decode {info.get('codec')!r}"
        if info.get("pix_fmt") not in VAAPI_PIX_FMTS:
            return f"VAAPI surfaces are 4:2:0; this stream is {info.get('pix_fmt')}"
        if max(int(info.get("width", 0)), int(info.get("height", 0))) > MAX_SIDE:
            return f"{info.get('width')}x{info.get('height')} exceeds VAAPI's {MAX_SIDE} limit"
        return None

    def __init__(self, path: str, *, stream: int, options: Mapping[str, Any],
                 progress: Callable[[], None]) -> None:
        super().__init__(path, stream=stream, options=options, progress=progress)
        try:
            self._check_first_packet()
        except BaseException:
            self.close()
            raise

    def make_decoder(self, options: Mapping[str, Any]) -> AvDecoder:
        nodes = render_nodes()
        return VaapiDecoder(str(options.get("device") or (nodes[0] if nodes else "")),
                            threads=int(options.get("threads", 0)),
                            proxy_decode=bool(options.get("proxy_decode", False)))

    def _check_first_packet(self) -> None:
        """Decode the first packet now: a driver without this profile fails here, not later."""
        p = self._pipeline
        try:
            for pkt in p.demux.container.demux(p.demux.stream):
                if pkt.size:
                    p.decoder.decode(pkt)
                    break
        except av.FFmpegError as e:
            raise CannotHandle(f"the VAAPI driver cannot decode this stream ({e})") from e
        finally:
            p.reopen()  # from byte 0, with a fresh decoder for the real work


class VaapiDecoder(AvDecoder):
    """FFmpeg's decoder with a VAAPI device (render node ``device``; "" = FFmpeg's choice),
    never falling back to software silently. Frames are downloaded to host memory."""

    def __init__(self, device: str, *, threads: int = 0, proxy_decode: bool = False) -> None:
        super().__init__(threads=threads, proxy_decode=proxy_decode)
        self.device = device

    def open_options(self) -> dict[str, Any]:
        from av.codec.hwaccel import HWAccel

        return {"hwaccel": HWAccel(device_type="vaapi", device=self.device or None,
                                   allow_software_fallback=False)}
