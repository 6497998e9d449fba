"""DAIN's adaptive warping layer (Bao et al., CVPR 2019, Sec. 3.3, eq. 4): bilinear warping combined
with learned local filters.

Math. For image I [B, C, H, W], flow F [B, 2, H, W] in pixels and filters K [B, S*S, H, W] (S even;
DAIN uses S = 4), at each output pixel (x, y) let p = (x + F_x, y + F_y), (x0, y0) = floor(p),
alpha = p_x - x0, beta = p_y - y0. The S x S window has columns x0 - S/2 + 1 + c and rows
y0 - S/2 + 1 + r (c, r in [0, S)), read with coordinates clamped into the image. Each tap carries
its learned weight K[S*r + c] times the bilinear weight of the window quadrant it lies in:

    out[b, ch, y, x] = sum_{r, c} I[ch, clamp(y0 - S/2 + 1 + r), clamp(x0 - S/2 + 1 + c)]
                                   * K[b, S*r + c, y, x] * wy(r) * wx(c),
    wx(c) = 1 - alpha if c < S/2 else alpha,     wy(r) = 1 - beta if r < S/2 else beta.

(With S = 2 and K = 1 this is bilinear warping.) As in DAIN's CUDA layer, if p lies outside
[0, W-1] x [0, H-1] or |F_x| >= W/2 or |F_y| >= H/2, the output is the input pixel I[ch, y, x]
itself (no warping) and the flow and filters receive no gradient there.

Gradients: exact derivatives of this formula (w.r.t. image, filters, and the flow through alpha and
beta; floor() is piecewise constant), as DAIN's backward kernel computes them.
"""
from __future__ import annotations

import math

import torch

from ._backend import check_shape, launch, reference_vjp, require_contiguous, select_backend
from .backwarp import gather_pixels


def filter_interpolation(image: torch.Tensor, flow: torch.Tensor, filters: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Warp ``image`` [B,C,H,W] by ``flow`` [B,2,H,W] with per-pixel S x S ``filters`` [B,S*S,H,W] -> [B,C,H,W]."""
    check_shape("filter_interpolation", "image", image, 4)
    check_shape("filter_interpolation", "flow", flow, 4)
    check_shape("filter_interpolation", "filters", filters, 4)
    batch, _, height, width = image.shape
    filter_size = math.isqrt(filters.shape[1])
    if flow.shape != (batch, 2, height, width) or filters.shape[0] != batch or filters.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"savfi_core.kernels.filter_interpolation: need flow [B,2,H,W] and filters [B,S*S,H,W] for image "
            f"{tuple(image.shape)}, got {tuple(flow.shape)} and {tuple(filters.shape)}"
        )
    if filter_size * filter_size != filters.shape[1] or filter_size % 2 != 0 or filter_size == 0:
        raise ValueError(
            f"savfi_core.kernels.filter_interpolation: filters need S*S channels with S even (DAIN: 16), got {filters.shape[1]}"
        )
    chosen = select_backend("filter_interpolation", backend, image, flow, filters)
    if chosen == "torch":
        return filter_interpolation_reference(image, flow, filters)
    require_contiguous("filter_interpolation", image=image, flow=flow, filters=filters)
    return _FilterInterpolationCupy.apply(image, flow, filters)


def filter_interpolation_reference(image: torch.Tensor, flow: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Pure-PyTorch adaptive warping (S*S gathers), differentiable to any order."""
    batch, channels, height, width = image.shape
    filter_size = math.isqrt(filters.shape[1])
    half = filter_size // 2
    rows = torch.arange(height, dtype=flow.dtype, device=flow.device).repeat_interleave(width)
    columns = torch.arange(width, dtype=flow.dtype, device=flow.device).repeat(height)
    flow_x = flow[:, 0].reshape(batch, -1)
    flow_y = flow[:, 1].reshape(batch, -1)
    sample_x = columns + flow_x
    sample_y = rows + flow_y
    inside = ((sample_x >= 0) & (sample_y >= 0) & (sample_x <= width - 1) & (sample_y <= height - 1)
              & (flow_x.abs() < width / 2) & (flow_y.abs() < height / 2))
    # Outside pixels are replaced below; zero their flow so their (unused) taps stay finite.
    sample_x = torch.where(inside, sample_x, columns.expand_as(sample_x))
    sample_y = torch.where(inside, sample_y, rows.expand_as(sample_y))
    left = torch.floor(sample_x).detach()
    top = torch.floor(sample_y).detach()
    alpha = sample_x - left
    beta = sample_y - top
    flat_filters = filters.reshape(batch, filter_size * filter_size, -1)
    output = None
    for r in range(filter_size):
        tap_y = (top - half + 1 + r).clamp(0, height - 1).long()
        weight_y = 1 - beta if r < half else beta
        for c in range(filter_size):
            tap_x = (left - half + 1 + c).clamp(0, width - 1).long()
            weight_x = 1 - alpha if c < half else alpha
            weight = flat_filters[:, filter_size * r + c] * weight_x * weight_y
            term = gather_pixels(image, tap_y * width + tap_x) * weight.unsqueeze(1)
            output = term if output is None else output + term
    output = torch.where(inside.unsqueeze(1), output, image.reshape(batch, channels, -1))
    return output.reshape(batch, channels, height, width)


class _FilterInterpolationCupy(torch.autograd.Function):
    """CuPy forward and first-order backward; the graph of the backward (create_graph) uses the reference."""

    @staticmethod
    def forward(ctx, image, flow, filters):
        ctx.save_for_backward(image, flow, filters)
        batch, channels, height, width = image.shape
        filter_size = math.isqrt(filters.shape[1])
        output = torch.empty_like(image)
        pixels = batch * height * width
        launch("filter_interpolation.cu", "filter_interpolation_forward", pixels,
               [pixels, batch, channels, height, width, filter_size, image, flow, filters, output], image)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        image, flow, filters = ctx.saved_tensors
        if torch.is_grad_enabled():
            return reference_vjp(filter_interpolation_reference, (image, flow, filters), ctx.needs_input_grad[:3], grad_output)
        batch, channels, height, width = image.shape
        filter_size = math.isqrt(filters.shape[1])
        grad_output = grad_output.contiguous()
        grad_image = torch.zeros_like(image)
        grad_flow = torch.empty_like(flow)
        grad_filters = torch.empty_like(filters)
        pixels = batch * height * width
        # One thread per output pixel: flow and filter gradients are written directly, the image
        # gradient is scattered by atomicAdd.
        launch("filter_interpolation.cu", "filter_interpolation_backward", pixels,
               [pixels, batch, channels, height, width, filter_size, image, flow, filters, grad_output,
                grad_image, grad_flow, grad_filters], image)
        return grad_image, grad_flow, grad_filters
