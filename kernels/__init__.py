"""Image kernels that run on the device holding a frame (installed as ``phast.kernels``).

:mod:`phast.kernels.reference` holds the NumPy reference implementations that device kernels
are tested against.
"""
