"""phast-y4m: a phast backend for YUV4MPEG2 (``.y4m``) files, in Python and numpy.

A worked example of a third-party phast backend: installed as its own distribution, registered
through the ``phast.backends`` entry point (``y4m = "phast_y4m:Y4MBackend"``), opened with
``phast.open(path, backend="y4m")``, and checked by ``phast.testing.BackendConformance``.
"""

from .backend import Y4MBackend

__version__ = "0.1.0"
__all__ = ["Y4MBackend"]
