"""The CUDA sources of savfi_core.kernels, checked without a GPU.

Each ``.cu`` file is compiled as plain C++ by the host compiler with a small prelude (``blockIdx``
and friends become globals, ``atomicAdd`` a sequential add, ``scalar_t`` double) and every kernel
thread is run one after another on CPU tensors. The CuPy autograd Functions are then exercised
unchanged, with their ``launch`` replaced by this emulator, and compared with the references in
forward and backward. This checks indexing, gradient formulas and the Python glue; it does not
check CuPy, NVRTC, races or speed (the GPU tests in test_kernels_gpu.py do).
"""
from __future__ import annotations

import ctypes
import functools
import importlib
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from savfi_core.kernels._backend import KERNEL_DIRECTORY

# The package re-exports each op under its module's name, so fetch the modules themselves.
sepconv_module = importlib.import_module("savfi_core.kernels.sepconv")
backwarp_module = importlib.import_module("savfi_core.kernels.backwarp")
correlation_module = importlib.import_module("savfi_core.kernels.correlation")
projection_module = importlib.import_module("savfi_core.kernels.depth_flow_projection")
filter_module = importlib.import_module("savfi_core.kernels.filter_interpolation")

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to compile the .cu sources as C++")

DOUBLE = torch.float64

PRELUDE = r"""
#include <algorithm>
#include <cmath>
using std::fabs; using std::floor; using std::fmax; using std::fmin; using std::max; using std::min;
typedef double scalar_t;
struct Dim3 { int x, y, z; };
static Dim3 blockIdx, blockDim, threadIdx;
#define __global__
#define __device__
#define __restrict__
template <typename T> static T atomicAdd(T* address, T value) { T old = *address; *address += value; return old; }
extern "C" void set_thread(int n) { blockDim.x = 256; blockIdx.x = n / 256; threadIdx.x = n % 256; }
"""


@functools.lru_cache(maxsize=None)
def compiled(source_file: str, directory: str) -> ctypes.CDLL:
    wrapper = Path(directory) / f"{source_file}.cpp"
    wrapper.write_text(PRELUDE + f'#include "{KERNEL_DIRECTORY / source_file}"\n')
    library = Path(directory) / f"{source_file}.so"
    subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-o", str(library), str(wrapper)], check=True,
                   capture_output=True, text=True)
    return ctypes.CDLL(str(library))


@pytest.fixture
def emulated(monkeypatch, tmp_path_factory):
    directory = str(tmp_path_factory.getbasetemp() / "cuda_emulation")
    Path(directory).mkdir(exist_ok=True)

    def launch(source_file, function_name, total_threads, arguments, reference):
        assert reference.dtype == DOUBLE, "the emulator is compiled for double"
        library = compiled(source_file, directory)
        packed = []
        for argument in arguments:
            if isinstance(argument, torch.Tensor):
                assert argument.is_contiguous() and argument.dtype == DOUBLE, function_name
                packed.append(ctypes.c_void_p(argument.data_ptr()))
            elif isinstance(argument, int):
                packed.append(ctypes.c_int(argument))
            else:
                packed.append(ctypes.c_double(argument))
        function = getattr(library, function_name)
        for n in range(total_threads):
            library.set_thread(n)
            function(*packed)

    for module in (sepconv_module, backwarp_module, correlation_module, projection_module, filter_module):
        monkeypatch.setattr(module, "launch", launch)
    return launch


def _random(*shape, seed, scale=1.0):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DOUBLE) * scale).requires_grad_()


def _compare(kernel_function, reference_function, inputs, seed=0):
    """Forward and first-order gradients (w.r.t. every input) of the kernel path vs the reference."""
    output = kernel_function(*inputs)
    expected = reference_function(*inputs)
    torch.testing.assert_close(output, expected, rtol=1e-12, atol=1e-12)
    grad_output = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=DOUBLE)
    grads = torch.autograd.grad(output, inputs, grad_output)
    expected_grads = torch.autograd.grad(expected, inputs, grad_output)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("channels", [5, 3])
def test_sepconv_kernels_match_reference(emulated, channels):
    # 5 channels: sepconv_output handles channels in groups of 4, so the second group is partial.
    inputs = (_random(2, channels, 7, 8, seed=1), _random(2, 3, 5, 6, seed=2), _random(2, 3, 5, 6, seed=3))
    kernel = lambda *a: sepconv_module._SeparableContraction.apply("output", "cupy", None, *a)  # noqa: E731
    reference = lambda *a: sepconv_module._SeparableContraction.apply("output", "torch", None, *a)  # noqa: E731
    _compare(kernel, reference, inputs)


def test_sepconv_kernel_path_gradgradcheck(emulated):
    """The CuPy path's backward is the same Function again, so second order runs kernels only."""
    kernel = lambda *a: sepconv_module._SeparableContraction.apply("output", "cupy", None, *a)  # noqa: E731
    inputs = (_random(1, 2, 5, 5, seed=4), _random(1, 3, 3, 3, seed=5), _random(1, 3, 3, 3, seed=6))
    assert torch.autograd.gradgradcheck(kernel, inputs)


@pytest.mark.parametrize("padding_mode", ["border", "zeros"])
def test_backwarp_kernels_match_reference(emulated, padding_mode):
    inputs = (_random(2, 3, 5, 6, seed=4), _random(2, 2, 5, 6, seed=5, scale=2.5))
    _compare(lambda i, f: backwarp_module._BackwarpCupy.apply(i, f, padding_mode),
             lambda i, f: backwarp_module.backwarp_reference(i, f, padding_mode), inputs)


@pytest.mark.parametrize("max_displacement, stride", [(2, 1), (2, 2)])
def test_correlation_kernels_match_reference(emulated, max_displacement, stride):
    inputs = (_random(2, 3, 5, 6, seed=6), _random(2, 3, 5, 6, seed=7))
    _compare(lambda a, b: correlation_module._CorrelationCupy.apply(a, b, max_displacement, stride),
             lambda a, b: correlation_module.correlation_reference(a, b, max_displacement, stride), inputs)


@pytest.mark.parametrize("fill_holes", [True, False])
def test_depth_flow_projection_kernels_match_reference(emulated, fill_holes):
    flow = _random(2, 2, 6, 7, seed=8, scale=3.0)
    depth = (torch.rand(2, 1, 6, 7, generator=torch.Generator().manual_seed(9), dtype=DOUBLE) + 0.3).requires_grad_()
    _compare(lambda f, d: projection_module._DepthFlowProjectionCupy.apply(f, d, 0.5, fill_holes),
             lambda f, d: projection_module.depth_flow_projection_reference(f, d, 0.5, fill_holes), (flow, depth))


@pytest.mark.parametrize("filter_size", [4, 2])
def test_filter_interpolation_kernels_match_reference(emulated, filter_size):
    inputs = (_random(2, 3, 6, 7, seed=10), _random(2, 2, 6, 7, seed=11, scale=2.0),
              _random(2, filter_size * filter_size, 6, 7, seed=12))
    _compare(filter_module._FilterInterpolationCupy.apply, filter_module.filter_interpolation_reference, inputs)


def test_create_graph_through_a_kernel_function_uses_the_reference(emulated):
    """Double backward of a kernel-backed op (here backwarp) equals the reference's."""
    image, flow = _random(1, 2, 4, 5, seed=13), _random(1, 2, 4, 5, seed=14)
    results = []
    for function in (lambda i, f: backwarp_module._BackwarpCupy.apply(i, f, "border"), backwarp_module.backwarp_reference):
        (grad_flow,) = torch.autograd.grad(function(image, flow).square().sum(), flow, create_graph=True)
        results.append(torch.autograd.grad(grad_flow.square().sum(), (image, flow)))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
