"""GPU tests of savfi_core.kernels: the CuPy kernels against the PyTorch references on CUDA.

Marked ``gpu``: tests/conftest.py skips them with a reason where CUDA or CuPy is missing.
"""
from __future__ import annotations

import pytest
import torch

from savfi_core.kernels import backwarp, correlation, depth_flow_projection, filter_interpolation, last_backend, sepconv
from savfi_core.kernels._backend import cuda_function

pytestmark = pytest.mark.gpu

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """Norm-wise relative error (elementwise ratios are meaningless where values cross zero)."""
    return ((got - expected).norm() / expected.norm().clamp(min=1e-30)).item()


def make_cases(dtype):
    """(name, function taking tensors and backend, input tensors) for each op, random and on CUDA."""
    generator = torch.Generator(device="cuda").manual_seed(0)

    def normal(*shape, scale=1.0):
        return torch.randn(*shape, generator=generator, device="cuda", dtype=dtype) * scale

    def positive(*shape):
        return torch.rand(*shape, generator=generator, device="cuda", dtype=dtype) + 0.3

    return [
        ("sepconv", lambda a, b, c, backend: sepconv(a, b, c, backend=backend),
         [normal(2, 3, 37 + 50, 45 + 50), normal(2, 51, 37, 45, scale=0.1), normal(2, 51, 37, 45, scale=0.1)]),
        ("backwarp_border", lambda a, b, backend: backwarp(a, b, "border", backend=backend),
         [normal(2, 3, 33, 47), normal(2, 2, 33, 47, scale=4.0)]),
        ("backwarp_zeros", lambda a, b, backend: backwarp(a, b, "zeros", backend=backend),
         [normal(2, 3, 33, 47), normal(2, 2, 33, 47, scale=4.0)]),
        ("correlation", lambda a, b, backend: correlation(a, b, 4, 1, backend=backend),
         [normal(2, 16, 21, 26), normal(2, 16, 21, 26)]),
        ("correlation_stride", lambda a, b, backend: correlation(a, b, 4, 2, backend=backend),
         [normal(2, 16, 21, 26), normal(2, 16, 21, 26)]),
        ("depth_flow_projection", lambda a, b, backend: depth_flow_projection(a, b, backend=backend),
         [normal(2, 2, 31, 40, scale=5.0), positive(2, 1, 31, 40)]),
        ("filter_interpolation", lambda a, b, c, backend: filter_interpolation(a, b, c, backend=backend),
         [normal(2, 3, 31, 40), normal(2, 2, 31, 40, scale=4.0), normal(2, 16, 31, 40)]),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("index", range(7))
def test_cupy_matches_reference_forward_and_backward(dtype, index):
    name, function, inputs = make_cases(dtype)[index]
    inputs = [tensor.requires_grad_() for tensor in inputs]
    output = function(*inputs, backend="cupy")
    op = next(op for op in ("sepconv", "backwarp", "correlation", "depth_flow_projection", "filter_interpolation")
              if name.startswith(op))
    assert last_backend(op) == "cupy"
    expected = function(*inputs, backend="torch")
    assert relative_error(output, expected) < TOLERANCE[dtype], name
    grad_output = torch.randn_like(output)
    grads = torch.autograd.grad(output, inputs, grad_output)
    expected_grads = torch.autograd.grad(expected, inputs, grad_output)
    for position, (grad, expected_grad) in enumerate(zip(grads, expected_grads)):
        assert relative_error(grad, expected_grad) < TOLERANCE[dtype], f"{name}: gradient of input {position}"


def tiny_cases():
    generator = torch.Generator(device="cuda").manual_seed(1)

    def normal(*shape, scale=1.0):
        return torch.randn(*shape, generator=generator, device="cuda", dtype=torch.float64) * scale

    def off_grid(*shape):
        # away from integer sample positions, where bilinear weights and splat targets jump
        return torch.rand(*shape, generator=generator, device="cuda", dtype=torch.float64) * 0.8 + 0.1

    return [
        (lambda a, b, c: sepconv(a, b, c, backend="cupy"), [normal(1, 2, 5, 6), normal(1, 3, 3, 4), normal(1, 3, 3, 4)]),
        (lambda a, b: backwarp(a, b, "border", backend="cupy"), [normal(1, 2, 4, 5), off_grid(1, 2, 4, 5)]),
        (lambda a, b: backwarp(a, b, "zeros", backend="cupy"), [normal(1, 2, 4, 5), off_grid(1, 2, 4, 5) - 1]),
        (lambda a, b: correlation(a, b, 2, 1, backend="cupy"), [normal(1, 2, 3, 4), normal(1, 2, 3, 4)]),
        (lambda a, b: depth_flow_projection(a, b, backend="cupy"), [off_grid(1, 2, 4, 5) * 2, off_grid(1, 1, 4, 5) + 0.5]),
        (lambda a, b, c: filter_interpolation(a, b, c, backend="cupy"),
         [normal(1, 1, 3, 4), off_grid(1, 2, 3, 4), normal(1, 16, 3, 4)]),
    ]


@pytest.mark.parametrize("index", range(6))
def test_cupy_path_gradcheck_and_gradgradcheck(index):
    function, inputs = tiny_cases()[index]
    inputs = tuple(tensor.requires_grad_() for tensor in inputs)
    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)


def test_auto_picks_cupy_for_cuda_tensors():
    image = torch.zeros(1, 1, 4, 4, device="cuda")
    backwarp(image, torch.zeros(1, 2, 4, 4, device="cuda"))
    assert last_backend("backwarp") == "cupy"


def test_non_contiguous_inputs_are_rejected_clearly():
    image = torch.zeros(1, 4, 4, 3, device="cuda").permute(0, 3, 1, 2)  # channels-last view
    with pytest.raises(ValueError, match="image is not contiguous"):
        backwarp(image, torch.zeros(1, 2, 4, 4, device="cuda"), backend="cupy")
    with pytest.raises(ValueError, match="input is not contiguous"):
        sepconv(torch.zeros(1, 1, 6, 6, device="cuda").transpose(2, 3), torch.zeros(1, 3, 4, 4, device="cuda"),
                torch.zeros(1, 3, 4, 4, device="cuda"), backend="cupy")


def test_kernels_run_on_the_current_stream_and_compile_once():
    image = torch.randn(2, 3, 64, 64, device="cuda")
    flow = torch.randn(2, 2, 64, 64, device="cuda") * 3
    expected = backwarp(image, flow, backend="torch")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            output = backwarp(image, flow, backend="cupy")
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    assert relative_error(output, expected) < 1e-5
    before = cuda_function.cache_info().misses
    backwarp(image, flow, backend="cupy")
    assert cuda_function.cache_info().misses == before
