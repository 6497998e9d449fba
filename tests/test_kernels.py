"""CPU tests of savfi_core.kernels: references against naive float64 formulas, gradcheck and
gradgradcheck for every op, properties, and backend selection."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as functional

from savfi_core.kernels import (
    BackendUnavailableError,
    backwarp,
    correlation,
    depth_flow_projection,
    filter_interpolation,
    last_backend,
    sepconv,
)

DOUBLE = torch.float64


def random(*shape, generator, scale=1.0):
    return torch.randn(*shape, generator=generator, dtype=DOUBLE) * scale


# ---------------------------------------------------------------- naive float64 formulas

def naive_sepconv(input, vertical, horizontal):
    """The full K x K patch tensor and an einsum: the memory-hungry formula, fine at tiny sizes."""
    kernel_size, height, width = vertical.shape[1:]
    patches = input.unfold(2, kernel_size, 1).unfold(3, kernel_size, 1)  # [B, C, H, W, K(i), K(j)]
    assert patches.shape[2:4] == (height, width)
    return torch.einsum("bchwij,bihw,bjhw->bchw", patches, vertical, horizontal)


def naive_bilinear(image, sample_x, sample_y, padding_mode):
    """Bilinear value of image [C, H, W] at one point, tap by tap."""
    channels, height, width = image.shape
    if padding_mode == "border":
        sample_x = min(max(sample_x, 0.0), width - 1.0)
        sample_y = min(max(sample_y, 0.0), height - 1.0)
    left, top = math.floor(sample_x), math.floor(sample_y)
    value = torch.zeros(channels, dtype=image.dtype)
    for tap_y, weight_y in ((top, 1 - (sample_y - top)), (top + 1, sample_y - top)):
        for tap_x, weight_x in ((left, 1 - (sample_x - left)), (left + 1, sample_x - left)):
            if 0 <= tap_x < width and 0 <= tap_y < height:
                value += weight_x * weight_y * image[:, tap_y, tap_x]
    return value


def naive_backwarp(image, flow, padding_mode):
    batch, channels, height, width = image.shape
    output = torch.zeros_like(image)
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                output[b, :, y, x] = naive_bilinear(
                    image[b], x + flow[b, 0, y, x].item(), y + flow[b, 1, y, x].item(), padding_mode
                )
    return output


def naive_correlation(feat1, feat2, max_displacement, stride):
    batch, channels, height, width = feat1.shape
    radius = max_displacement // stride
    size = 2 * radius + 1
    output = torch.zeros(batch, size * size, height, width, dtype=feat1.dtype)
    for b in range(batch):
        for p in range(-radius, radius + 1):
            for q in range(-radius, radius + 1):
                for y in range(height):
                    for x in range(width):
                        y2, x2 = y + p * stride, x + q * stride
                        if 0 <= y2 < height and 0 <= x2 < width:
                            value = (feat1[b, :, y, x] * feat2[b, :, y2, x2]).sum() / channels
                            output[b, (p + radius) * size + (q + radius), y, x] = value
    return output


def naive_depth_flow_projection(flow, depth, time, fill_holes):
    """DAIN's three kernels (splat, average, fill-hole with while-loop searches), pixel by pixel."""
    batch, _, height, width = flow.shape
    output = torch.zeros_like(flow)
    count = torch.zeros(batch, height, width, dtype=flow.dtype)
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                fx, fy = time * flow[b, 0, y, x].item(), time * flow[b, 1, y, x].item()
                x2, y2 = x + fx, y + fy
                if 0 <= x2 <= width - 1 and 0 <= y2 <= height - 1:
                    left, top = int(x2), int(y2)
                    right, bottom = min(left + 1, width - 1), min(top + 1, height - 1)
                    weight = 1.0 / depth[b, 0, y, x].item()
                    for ty, tx in ((top, left), (top, right), (bottom, left), (bottom, right)):
                        output[b, 0, ty, tx] += -weight * fx
                        output[b, 1, ty, tx] += -weight * fy
                        count[b, ty, tx] += weight
        for y in range(height):
            for x in range(width):
                if count[b, y, x] > 0:
                    output[b, :, y, x] /= count[b, y, x]
    if not fill_holes:
        return output
    filled = output.clone()
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                if count[b, y, x] > 0:
                    continue
                found = []
                for step_y, step_x in ((0, -1), (0, 1), (-1, 0), (1, 0)):
                    ny, nx = y + step_y, x + step_x
                    while 0 <= ny < height and 0 <= nx < width and count[b, ny, nx] == 0:
                        ny, nx = ny + step_y, nx + step_x
                    if 0 <= ny < height and 0 <= nx < width:
                        found.append(output[b, :, ny, nx])
                if found:
                    filled[b, :, y, x] = sum(found) / len(found)
    return filled


def naive_filter_interpolation(image, flow, filters):
    """DAIN's forward kernel: four quadrant sums TL, TR, BL, BR mixed with bilinear weights."""
    batch, channels, height, width = image.shape
    size = math.isqrt(filters.shape[1])
    output = torch.zeros_like(image)
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                fx, fy = flow[b, 0, y, x].item(), flow[b, 1, y, x].item()
                x2, y2 = x + fx, y + fy
                if not (0 <= x2 <= width - 1 and 0 <= y2 <= height - 1 and abs(fx) < width / 2 and abs(fy) < height / 2):
                    output[b, :, y, x] = image[b, :, y, x]
                    continue
                left, top = int(x2) + 1 - size // 2, int(y2) + 1 - size // 2
                alpha, beta = x2 - int(x2), y2 - int(y2)
                quadrants = {}
                for name, rows, columns in (
                    ("TL", range(top, int(y2) + 1), range(left, int(x2) + 1)),
                    ("TR", range(top, int(y2) + 1), range(int(x2) + 1, left + size)),
                    ("BL", range(int(y2) + 1, top + size), range(left, int(x2) + 1)),
                    ("BR", range(int(y2) + 1, top + size), range(int(x2) + 1, left + size)),
                ):
                    total = torch.zeros(channels, dtype=image.dtype)
                    for row in rows:
                        for column in columns:
                            pixel = image[b, :, min(max(row, 0), height - 1), min(max(column, 0), width - 1)]
                            total += pixel * filters[b, (row - top) * size + (column - left), y, x]
                    quadrants[name] = total
                output[b, :, y, x] = ((1 - alpha) * (1 - beta) * quadrants["TL"] + alpha * (1 - beta) * quadrants["TR"]
                                      + (1 - alpha) * beta * quadrants["BL"] + alpha * beta * quadrants["BR"])
    return output


# ---------------------------------------------------------------- references vs naive formulas

@pytest.mark.parametrize("batch, channels, height, width, kernel_size", [(1, 1, 1, 1, 1), (2, 3, 5, 7, 3), (1, 2, 9, 4, 5)])
def test_sepconv_matches_naive_formula(batch, channels, height, width, kernel_size):
    generator = torch.Generator().manual_seed(height * 31 + width)
    input = random(batch, channels, height + kernel_size - 1, width + kernel_size - 1, generator=generator)
    vertical = random(batch, kernel_size, height, width, generator=generator)
    horizontal = random(batch, kernel_size, height, width, generator=generator)
    result = sepconv(input, vertical, horizontal, backend="torch")
    torch.testing.assert_close(result, naive_sepconv(input, vertical, horizontal), rtol=1e-12, atol=1e-12)
    assert last_backend("sepconv") == "torch"


@pytest.mark.parametrize("padding_mode", ["border", "zeros"])
@pytest.mark.parametrize("height, width", [(5, 7), (8, 3)])
def test_backwarp_matches_naive_formula_and_grid_sample(padding_mode, height, width):
    generator = torch.Generator().manual_seed(height * 7 + width)
    image = random(2, 3, height, width, generator=generator)
    flow = random(2, 2, height, width, generator=generator, scale=3.0)  # many samples fall outside
    result = backwarp(image, flow, padding_mode=padding_mode, backend="torch")
    torch.testing.assert_close(result, naive_backwarp(image, flow, padding_mode), rtol=1e-12, atol=1e-12)
    grid_x = (torch.arange(width, dtype=DOUBLE) + flow[:, 0]) / (width - 1) * 2 - 1
    grid_y = (torch.arange(height, dtype=DOUBLE).view(-1, 1) + flow[:, 1]) / (height - 1) * 2 - 1
    expected = functional.grid_sample(image, torch.stack([grid_x, grid_y], -1), align_corners=True, padding_mode=padding_mode)
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("max_displacement, stride", [(2, 1), (4, 2), (0, 1)])
def test_correlation_matches_naive_formula(max_displacement, stride):
    generator = torch.Generator().manual_seed(max_displacement * 3 + stride)
    feat1 = random(2, 5, 6, 7, generator=generator)
    feat2 = random(2, 5, 6, 7, generator=generator)
    result = correlation(feat1, feat2, max_displacement, stride, backend="torch")
    size = 2 * (max_displacement // stride) + 1
    assert result.shape == (2, size * size, 6, 7)
    torch.testing.assert_close(result, naive_correlation(feat1, feat2, max_displacement, stride), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fill_holes", [True, False])
@pytest.mark.parametrize("height, width, time", [(6, 7, 0.5), (5, 9, 0.3)])
def test_depth_flow_projection_matches_dain_kernels(fill_holes, height, width, time):
    generator = torch.Generator().manual_seed(height * 11 + width)
    flow = random(2, 2, height, width, generator=generator, scale=3.0)
    depth = torch.rand(2, 1, height, width, generator=generator, dtype=DOUBLE) + 0.2
    result = depth_flow_projection(flow, depth, time=time, fill_holes=fill_holes, backend="torch")
    expected = naive_depth_flow_projection(flow, depth, time, fill_holes)
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("filter_size", [4, 2])
@pytest.mark.parametrize("height, width", [(6, 7), (9, 5)])
def test_filter_interpolation_matches_dain_kernel(filter_size, height, width):
    generator = torch.Generator().manual_seed(height * 13 + width + filter_size)
    image = random(2, 3, height, width, generator=generator)
    flow = random(2, 2, height, width, generator=generator, scale=2.0)
    filters = random(2, filter_size * filter_size, height, width, generator=generator)
    result = filter_interpolation(image, flow, filters, backend="torch")
    torch.testing.assert_close(result, naive_filter_interpolation(image, flow, filters), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- first and second derivatives

def _leaves(*tensors):
    return tuple(tensor.detach().clone().requires_grad_() for tensor in tensors)


def test_sepconv_gradcheck_and_gradgradcheck():
    generator = torch.Generator().manual_seed(1)
    inputs = _leaves(random(1, 2, 5, 6, generator=generator), random(1, 3, 3, 4, generator=generator),
                     random(1, 3, 3, 4, generator=generator))
    assert torch.autograd.gradcheck(lambda *a: sepconv(*a, backend="torch"), inputs)
    assert torch.autograd.gradgradcheck(lambda *a: sepconv(*a, backend="torch"), inputs)


@pytest.mark.parametrize("backend", ["torch", "grid_sample"])
@pytest.mark.parametrize("padding_mode", ["border", "zeros"])
def test_backwarp_gradcheck_and_gradgradcheck(padding_mode, backend):
    generator = torch.Generator().manual_seed(2)
    # Keep samples away from integer coordinates, where bilinear weights have kinks.
    flow = torch.rand(1, 2, 4, 5, generator=generator, dtype=DOUBLE) * 0.8 + 0.1
    flow = flow + torch.randint(-3, 3, (1, 2, 4, 5), generator=generator).to(DOUBLE)
    inputs = _leaves(random(1, 2, 4, 5, generator=generator), flow)
    function = lambda image, flow: backwarp(image, flow, padding_mode=padding_mode, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)


def test_backwarp_second_derivative_wrt_flow_is_not_zero():
    """The reason for the gather reference: d2 out / d flow2 exists (grid_sample cannot give it)."""
    generator = torch.Generator().manual_seed(3)
    image = random(1, 1, 5, 5, generator=generator)
    flow = (torch.rand(1, 2, 5, 5, generator=generator, dtype=DOUBLE) * 0.8 + 0.1).requires_grad_()
    (grad_flow,) = torch.autograd.grad(backwarp(image, flow).square().sum(), flow, create_graph=True)
    (second,) = torch.autograd.grad(grad_flow.sum(), flow)
    assert second.abs().max() > 1e-3


def test_correlation_gradcheck_and_gradgradcheck():
    generator = torch.Generator().manual_seed(4)
    inputs = _leaves(random(1, 2, 3, 4, generator=generator), random(1, 2, 3, 4, generator=generator))
    function = lambda a, b: correlation(a, b, max_displacement=2, stride=2, backend="torch")  # noqa: E731
    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)


@pytest.mark.parametrize("fill_holes", [True, False])
def test_depth_flow_projection_gradcheck_and_gradgradcheck(fill_holes):
    generator = torch.Generator().manual_seed(5)
    # Flow chosen so projected points stay away from integer coordinates and the image border
    # (splat targets are piecewise constant in the flow; finite differences must not cross a jump).
    flow = (torch.rand(1, 2, 4, 5, generator=generator, dtype=DOUBLE) * 0.8 + 0.1) * 2
    flow = flow + 2 * torch.randint(-1, 1, (1, 2, 4, 5), generator=generator).to(DOUBLE)
    depth = torch.rand(1, 1, 4, 5, generator=generator, dtype=DOUBLE) + 0.5
    inputs = _leaves(flow, depth)
    function = lambda f, d: depth_flow_projection(f, d, fill_holes=fill_holes, backend="torch")  # noqa: E731
    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)


def test_filter_interpolation_gradcheck_and_gradgradcheck():
    generator = torch.Generator().manual_seed(6)
    flow = torch.rand(1, 2, 3, 4, generator=generator, dtype=DOUBLE) * 0.8 + 0.1
    flow = flow + torch.randint(-1, 1, (1, 2, 3, 4), generator=generator).to(DOUBLE)
    inputs = _leaves(random(1, 1, 3, 4, generator=generator), flow, random(1, 16, 3, 4, generator=generator))
    function = lambda *a: filter_interpolation(*a, backend="torch")  # noqa: E731
    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)


# ---------------------------------------------------------------- properties

# The gather reference is exact; grid_sample goes through normalised coordinates and back, which
# costs a few ulps (1e-16 in float64).
@pytest.mark.parametrize("backend, tolerance", [("torch", 0.0), ("grid_sample", 1e-14)])
def test_backwarp_zero_flow_is_identity_and_integer_flow_is_a_shift(backend, tolerance):
    generator = torch.Generator().manual_seed(7)
    image = random(2, 3, 6, 8, generator=generator)
    identity = backwarp(image, torch.zeros(2, 2, 6, 8, dtype=DOUBLE), backend=backend)
    torch.testing.assert_close(identity, image, rtol=0, atol=tolerance)
    flow = torch.zeros(2, 2, 6, 8, dtype=DOUBLE)
    flow[:, 0] = 2.0  # sample two pixels to the right
    flow[:, 1] = -1.0  # and one row up
    shifted = backwarp(image, flow, padding_mode="zeros", backend=backend)
    torch.testing.assert_close(shifted[:, :, 1:, :-2], image[:, :, :-1, 2:], rtol=0, atol=1e-14)
    assert shifted[:, :, 0].abs().max() <= tolerance and shifted[:, :, :, -2:].abs().max() <= tolerance


def test_sepconv_with_delta_kernels_is_a_shift():
    generator = torch.Generator().manual_seed(8)
    kernel_size, height, width = 5, 6, 7
    input = random(1, 3, height + kernel_size - 1, width + kernel_size - 1, generator=generator)
    vertical = torch.zeros(1, kernel_size, height, width, dtype=DOUBLE)
    horizontal = torch.zeros(1, kernel_size, height, width, dtype=DOUBLE)
    vertical[:, 1] = 1.0
    horizontal[:, 3] = 1.0
    result = sepconv(input, vertical, horizontal)
    torch.testing.assert_close(result, input[:, :, 1:1 + height, 3:3 + width], rtol=0, atol=0)


def test_correlation_of_a_map_with_itself_peaks_at_zero_displacement():
    generator = torch.Generator().manual_seed(9)
    # Unit-norm feature vectors: by Cauchy-Schwarz, f(x).f(x+d) < |f(x)|^2 for every other pixel.
    feat = functional.normalize(random(1, 16, 7, 8, generator=generator), dim=1)
    volume = correlation(feat, feat, max_displacement=3, stride=1)
    center = (7 * 7) // 2
    assert torch.equal(volume.argmax(dim=1), torch.full((1, 7, 8), center))
    torch.testing.assert_close(volume[:, center], feat.square().mean(dim=1))


def test_depth_flow_projection_constant_flow_and_nearer_pixel_wins():
    flow = torch.zeros(1, 2, 6, 6, dtype=DOUBLE)
    flow[:, 0] = 2.0
    depth = torch.ones(1, 1, 6, 6, dtype=DOUBLE)
    projected = depth_flow_projection(flow, depth, time=0.5)
    # every pixel is covered (or filled from covered ones): F_{t->0} = -t F everywhere
    torch.testing.assert_close(projected[:, 0], torch.full((1, 6, 6), -1.0, dtype=DOUBLE))
    torch.testing.assert_close(projected[:, 1], torch.zeros(1, 6, 6, dtype=DOUBLE))
    # Pixel 1 (depth 1) lands on column 3. A pixel at an integer position splats onto itself and its
    # right neighbour, so column 3 also receives the static pixels 2 and 3 (depth 9), each with
    # weight 1/9: the nearer pixel dominates, -(1 * 2) / (1 + 2/9).
    flow = torch.zeros(1, 2, 1, 6, dtype=DOUBLE)
    flow[0, 0, 0, 1] = 4.0  # 1 + 0.5 * 4 = 3
    depth = torch.ones(1, 1, 1, 6, dtype=DOUBLE) * 9.0
    depth[0, 0, 0, 1] = 1.0
    projected = depth_flow_projection(flow, depth, time=0.5, fill_holes=False)
    torch.testing.assert_close(projected[0, 0, 0, 3], torch.tensor(-2.0 / (1.0 + 2 / 9), dtype=DOUBLE))


def test_filter_interpolation_with_flat_2x2_filters_is_bilinear_backwarp():
    generator = torch.Generator().manual_seed(10)
    image = random(1, 3, 6, 7, generator=generator)
    flow = torch.rand(1, 2, 6, 7, generator=generator, dtype=DOUBLE) - 0.5  # small: stays mostly inside
    result = filter_interpolation(image, flow, torch.ones(1, 4, 6, 7, dtype=DOUBLE))
    expected = backwarp(image, flow, padding_mode="border")
    columns = torch.arange(7, dtype=DOUBLE) + flow[:, 0]
    rows = torch.arange(6, dtype=DOUBLE).view(-1, 1) + flow[:, 1]
    inside = ((columns >= 0) & (columns <= 6) & (rows >= 0) & (rows <= 5)).unsqueeze(1).expand_as(image)
    torch.testing.assert_close(result[inside], expected[inside], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result[~inside], image[~inside], rtol=0, atol=0)


# ---------------------------------------------------------------- backend selection

def test_auto_on_cpu_runs_the_reference_and_reports_it():
    image = torch.zeros(1, 1, 3, 3)
    backwarp(image, torch.zeros(1, 2, 3, 3), backend="auto")
    assert last_backend("backwarp") == "torch"
    backwarp(image, torch.zeros(1, 2, 3, 3), backend="grid_sample")
    assert last_backend("backwarp") == "grid_sample"


@pytest.mark.parametrize("padding_mode", ["border", "zeros"])
def test_backwarp_grid_sample_backend_equals_the_reference_to_second_order(padding_mode):
    """grid_sample forward and first-order backward, the reference's graph for the second order."""
    generator = torch.Generator().manual_seed(5)
    image = random(2, 3, 6, 7, generator=generator).requires_grad_()
    flow = (random(2, 2, 6, 7, generator=generator, scale=3.0)).requires_grad_()  # many samples outside
    results = {}
    for backend in ("grid_sample", "torch"):
        output = backwarp(image, flow, padding_mode=padding_mode, backend=backend)
        first = torch.autograd.grad(output.square().sum(), (image, flow), create_graph=True)
        second = torch.autograd.grad(sum(g.square().sum() for g in first), (image, flow))
        plain = torch.autograd.grad(backwarp(image, flow, padding_mode, backend=backend).sin().sum(), (image, flow))
        results[backend] = (output, *first, *second, *plain)
    for ours, reference in zip(results["grid_sample"], results["torch"]):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        backwarp(torch.zeros(1, 1, 3, 3), torch.zeros(1, 2, 3, 3), backend="cuda")


@pytest.mark.parametrize("call", [
    lambda: sepconv(torch.zeros(1, 1, 3, 3), torch.zeros(1, 3, 1, 1), torch.zeros(1, 3, 1, 1), backend="cupy"),
    lambda: backwarp(torch.zeros(1, 1, 3, 3), torch.zeros(1, 2, 3, 3), backend="cupy"),
    lambda: correlation(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3), backend="cupy"),
    lambda: depth_flow_projection(torch.zeros(1, 2, 3, 3), torch.ones(1, 1, 3, 3), backend="cupy"),
    lambda: filter_interpolation(torch.zeros(1, 1, 3, 3), torch.zeros(1, 2, 3, 3), torch.zeros(1, 16, 3, 3), backend="cupy"),
])
def test_cupy_backend_on_cpu_tensors_raises_a_clear_error(call):
    with pytest.raises(BackendUnavailableError, match="backend='cupy' needs CUDA tensors"):
        call()


def test_shape_errors_name_the_op_and_the_argument():
    with pytest.raises(ValueError, match=r"sepconv: input .* must be \[B, C, H\+K-1, W\+K-1\]"):
        sepconv(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 1, 1), torch.zeros(1, 3, 1, 1))
    with pytest.raises(ValueError, match="padding_mode"):
        backwarp(torch.zeros(1, 1, 3, 3), torch.zeros(1, 2, 3, 3), padding_mode="reflect")


def test_importing_the_package_does_not_import_cupy():
    code = "import sys, savfi_core.kernels; print('cupy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
