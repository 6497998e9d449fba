"""Backend selection, reporting and CuPy plumbing shared by every op in `savfi_core.kernels`.

Every public op takes ``backend="auto" | "cupy" | "torch"``:

* ``"torch"``: the pure-PyTorch reference (any device, differentiable to any order).
* ``"cupy"``: the CUDA kernel in the ``.cu`` file beside the op; raises ``BackendUnavailableError``
  when the tensors are not on a CUDA device or CuPy cannot be imported.
* ``"auto"``: ``"cupy"`` when every tensor is on CUDA, all share a dtype of float32 or float64, and
  CuPy imports; otherwise ``"torch"``.

The backend that actually ran is recorded per op and returned by :func:`last_backend`, and logged at
DEBUG level on the ``savfi_core.kernels`` logger, so a fallback is never silent.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

logger = logging.getLogger("savfi_core.kernels")

BACKENDS = ("auto", "cupy", "torch")
KERNEL_DIRECTORY = Path(__file__).resolve().parent

_last_backend_by_op: dict[str, str] = {}


class BackendUnavailableError(RuntimeError):
    """Raised when ``backend="cupy"`` is requested where the CuPy kernel cannot run."""


def fold_vmapped_batch(batch_size: int, in_dims, tensors) -> list:
    """For the ``vmap`` rule of an op whose tensors all lead with a batch dimension: the vmapped
    dimension folded into it, ``[V, B, ...] -> [V*B, ...]`` (unbatched tensors expanded, None and
    non-tensors passed through). The op then runs once; unfold its result with
    ``result.reshape(V, -1, *result.shape[1:])``. Used by the task-batched meta-step
    (``MetaLearner(task_batching=...)``), where V is the number of tasks."""
    folded = []
    for value, dim in zip(tensors, in_dims):
        if not isinstance(value, torch.Tensor):
            folded.append(value)
            continue
        value = value.unsqueeze(0).expand(batch_size, *value.shape) if dim is None else value.movedim(dim, 0)
        folded.append(value.reshape(batch_size * value.shape[1], *value.shape[2:]).contiguous())
    return folded


def last_backend(op: str) -> str | None:
    """Name of the backend ("cupy" or "torch") that the last call of ``op`` ran on, or None.

    ``op`` is the public function name, e.g. ``last_backend("sepconv")``.
    """
    return _last_backend_by_op.get(op)


@functools.lru_cache(maxsize=1)
def cupy_import_error() -> str | None:
    """None when CuPy imports, else the reason it does not (cached: importing is slow)."""
    try:
        import cupy  # noqa: F401
    except Exception as error:  # ImportError, or a CUDA runtime error raised at import
        return f"{type(error).__name__}: {error}"
    return None


def cupy_available() -> bool:
    """True when CuPy imports and PyTorch sees a CUDA device."""
    return cupy_import_error() is None and torch.cuda.is_available()


def select_backend(op: str, backend: str, *tensors: torch.Tensor) -> str:
    """Resolve ``backend`` for ``op`` given its input tensors, record the choice and return it."""
    if backend not in BACKENDS:
        raise ValueError(f"savfi_core.kernels.{op}: backend must be one of {BACKENDS}, got {backend!r}")
    devices = {tensor.device for tensor in tensors}
    if len(devices) != 1:
        raise ValueError(f"savfi_core.kernels.{op}: all inputs must be on one device, got {sorted(map(str, devices))}")
    device = devices.pop()
    if backend == "torch":
        chosen = "torch"
    elif backend == "cupy":
        if device.type != "cuda":
            raise BackendUnavailableError(
                f"savfi_core.kernels.{op}: backend='cupy' needs CUDA tensors, got tensors on {device}"
            )
        reason = cupy_import_error()
        if reason is not None:
            raise BackendUnavailableError(f"savfi_core.kernels.{op}: backend='cupy' but CuPy does not import ({reason})")
        chosen = "cupy"
    else:
        # The kernels exist for float32 and float64 only; other dtypes (e.g. half) run the reference,
        # which last_backend() and the DEBUG log report.
        kernel_dtype = len({tensor.dtype for tensor in tensors} & {torch.float32, torch.float64}) == 1 and len(
            {tensor.dtype for tensor in tensors}) == 1
        chosen = "cupy" if device.type == "cuda" and kernel_dtype and cupy_import_error() is None else "torch"
    if chosen == "cupy":
        dtypes = {tensor.dtype for tensor in tensors}
        if not dtypes <= {torch.float32, torch.float64} or len(dtypes) != 1:
            raise TypeError(
                f"savfi_core.kernels.{op}: the CuPy kernel takes float32 or float64 inputs of one dtype, got {dtypes}"
            )
    _last_backend_by_op[op] = chosen
    logger.debug("%s ran on backend %s (requested %s, device %s)", op, chosen, backend, device)
    return chosen


def record_backend(op: str, chosen: str, *tensors: torch.Tensor) -> str:
    """Record a backend an op resolved by itself (beyond the shared three), as select_backend does."""
    devices = {tensor.device for tensor in tensors}
    if len(devices) != 1:
        raise ValueError(f"savfi_core.kernels.{op}: all inputs must be on one device, got {sorted(map(str, devices))}")
    _last_backend_by_op[op] = chosen
    logger.debug("%s ran on backend %s (device %s)", op, chosen, devices.pop())
    return chosen


def check_shape(op: str, name: str, tensor: torch.Tensor, dimensions: int) -> None:
    if tensor.dim() != dimensions:
        raise ValueError(f"savfi_core.kernels.{op}: {name} must have {dimensions} dimensions, got shape {tuple(tensor.shape)}")


def require_contiguous(op: str, **tensors: torch.Tensor) -> None:
    """The CUDA kernels index memory as dense row-major arrays: reject anything else clearly."""
    for name, tensor in tensors.items():
        if not tensor.is_contiguous():
            raise ValueError(
                f"savfi_core.kernels.{op} (backend 'cupy'): {name} is not contiguous "
                f"(shape {tuple(tensor.shape)}, stride {tensor.stride()}); call .contiguous() first"
            )


_CUDA_TYPE = {torch.float32: "float", torch.float64: "double"}


@functools.lru_cache(maxsize=None)
def _cuda_module(source_file: str, device_index: int, dtype: torch.dtype):
    """Compile ``source_file`` (beside this module) once per device and dtype.

    The ``.cu`` files are written against a ``scalar_t`` type that is defined here, so each dtype is
    its own compilation; sizes are kernel arguments, never pasted into the source.
    """
    import cupy

    path = KERNEL_DIRECTORY / source_file
    source = f"typedef {_CUDA_TYPE[dtype]} scalar_t;\n" + path.read_text()
    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(code=source, options=("--std=c++14",))
        module.compile()  # compile now, on this device, so errors name the file here
    return module


@functools.lru_cache(maxsize=None)
def cuda_function(source_file: str, function_name: str, device_index: int, dtype: torch.dtype):
    """The kernel ``function_name`` of ``source_file`` for one device and dtype (cached)."""
    import cupy

    with cupy.cuda.Device(device_index):
        return _cuda_module(source_file, device_index, dtype).get_function(function_name)


def launch(source_file: str, function_name: str, total_threads: int, arguments: list, reference: torch.Tensor) -> None:
    """Launch a 1-D grid covering ``total_threads`` on PyTorch's current CUDA stream.

    ``arguments`` are tensors (passed as device pointers) and Python ints (passed as 32-bit ints)
    or floats (passed in the kernel's scalar type).
    """
    import cupy
    import numpy

    if total_threads == 0:
        return
    if total_threads >= 2**31:
        raise ValueError(f"savfi_core.kernels ({source_file}): {total_threads} threads exceed the kernels' 32-bit indexing")
    function = cuda_function(source_file, function_name, reference.device.index, reference.dtype)
    scalar = numpy.float32 if reference.dtype == torch.float32 else numpy.float64
    packed = []
    for argument in arguments:
        if isinstance(argument, torch.Tensor):
            packed.append(numpy.uint64(argument.data_ptr()))  # raw device pointer
        elif isinstance(argument, bool) or isinstance(argument, int):
            packed.append(numpy.int32(argument))
        elif isinstance(argument, float):
            packed.append(scalar(argument))
        else:
            raise TypeError(f"launch {function_name}: unsupported argument {argument!r}")
    threads_per_block = 256
    blocks = (total_threads + threads_per_block - 1) // threads_per_block
    # Run on PyTorch's current stream so the kernel is ordered with the surrounding torch ops.
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(reference.device).cuda_stream)
    with cupy.cuda.Device(reference.device.index):
        function((blocks,), (threads_per_block,), tuple(packed), stream=stream)


def reference_vjp(reference, inputs, needs_grad, grad_output, *extra):
    """Vector-Jacobian product of ``reference(*inputs, *extra)``, with a graph (for double backward).

    Used by the backward of CuPy Functions when ``create_graph=True``: the saved inputs keep their
    autograd history, so the result is differentiable w.r.t. them and w.r.t. ``grad_output``.
    """
    with torch.enable_grad():
        output = reference(*inputs, *extra)
        targets = [tensor for tensor, needed in zip(inputs, needs_grad) if needed]
        grads = torch.autograd.grad(output, targets, grad_output, create_graph=True, allow_unused=True)
    grads = iter(grads)
    return tuple(next(grads) if needed else None for needed in needs_grad)
