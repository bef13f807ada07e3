"""A test backend with the ``proxy_picture`` hook that GPU backends implement.

It makes each proxy from the decoded frame's YUV planes with phast's kernels (the NumPy
reference, the spec the CUDA and OpenCL kernels are tested against), as the NVDEC backend does
on the device, and refuses odd frames -- so a test can tell that proxy building went through
the hook and not through the host downscale.
"""

from __future__ import annotations

import numpy as np

from phast.backends.software import SoftwareBackend
from phast.errors import DecodeError
from phast.kernels import reference
from phast.kernels.formats import frame_planes


class DeviceProxyBackend(SoftwareBackend):
    name = "device-proxy"

    def proxy_picture(self, index: int, width: int, height: int) -> np.ndarray:
        if index % 2:
            raise DecodeError(f"frame {index}: refused by the test backend (odd)")
        frame = self.av_frame(index)
        return reference.proxy(frame_planes(frame), frame.format.name, (height, width),
                               matrix="bt601", color_range="limited")
