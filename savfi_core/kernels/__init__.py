"""Custom ops of the interpolation backbones: one function per op, a CuPy kernel and a PyTorch reference.

    from savfi_core.kernels import sepconv, backwarp, correlation, depth_flow_projection, filter_interpolation
    from savfi_core.kernels import last_backend   # last_backend("sepconv") -> "cupy" or "torch"

Every op takes ``backend="auto" | "cupy" | "torch"``; see ``savfi_core/kernels/_backend.py``.
Importing this package never imports CuPy. Every op is differentiable to second order (and beyond)
on both backends. The exact math of each op is in its module's docstring.

CPU note: the SepConv reference runs K*K small in-place ops per pass; on a shared, loaded machine
``torch.set_num_threads(1)`` made it 10-20x faster than 2 threads (benchmarks/kernels-cpu.md).
"""
from ._backend import BackendUnavailableError, cupy_available, last_backend
from .backwarp import backwarp
from .correlation import correlation
from .depth_flow_projection import depth_flow_projection
from .filter_interpolation import filter_interpolation
from .sepconv import sepconv

__all__ = [
    "BackendUnavailableError",
    "cupy_available",
    "last_backend",
    "sepconv",
    "backwarp",
    "correlation",
    "depth_flow_projection",
    "filter_interpolation",
]
