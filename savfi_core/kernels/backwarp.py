"""Backward bilinear warping of an image by a dense flow in pixels.

Math. For image ``I`` [B, C, H, W] and flow ``F`` [B, 2, H, W] (``F[:, 0]`` = x displacement,
``F[:, 1]`` = y displacement, in pixels):

    out[b, c, y, x] = bilinear sample of I[b, c] at (sx, sy) = (x + F[b,0,y,x], y + F[b,1,y,x])
                    = sum_{(qx, qy) in {x0, x0+1} x {y0, y0+1}} wx(qx) * wy(qy) * tap(qx, qy)

with x0 = floor(sx), wx(x0) = 1 - (sx - x0), wx(x0+1) = sx - x0 (same for y). This equals
``grid_sample(align_corners=True)`` with the same ``padding_mode``:

* ``padding_mode="border"`` (default; DVF / Super SloMo style): (sx, sy) is first clamped to
  [0, W-1] x [0, H-1], so samples outside the image repeat the border pixel and the gradient w.r.t.
  the flow is zero wherever the coordinate was clamped.
* ``padding_mode="zeros"`` (RRIN / DAIN style): no clamping; a tap (qx, qy) outside the image has
  value 0, so a sample fully outside the image is 0.

The reference is built from floor, weights and ``torch.gather`` (``grid_sample`` has no double
backward for its grid), so it is differentiable to any order w.r.t. image and flow. The CuPy backend
runs the forward and first-order backward as kernels in ``backwarp.cu``; when a graph of the
backward is requested (``create_graph=True``) its backward is recomputed with the reference, which
is exact and differentiable.

Backends: ``"torch"`` is the gather reference; ``"cupy"`` the kernels (``"auto"`` picks them where
they can run, else the reference); ``"grid_sample"``, only on request, runs the forward and the
first-order backward with PyTorch's own ``grid_sample`` (3-4x faster than the gathers on CPU) and,
like the CuPy backend, differentiates the reference when a graph of the backward is requested, so
second-order meta-gradients stay exact. Its coordinates go through grid_sample's normalisation,
so it is exact only up to rounding (a zero flow moves float32 pixels by ~1e-6); RIFE, whose
released code warps with grid_sample, asks for it. ``last_backend("backwarp")`` says which ran.
"""
from __future__ import annotations

import torch

from ._backend import check_shape, fold_vmapped_batch, launch, record_backend, reference_vjp, require_contiguous, select_backend

PADDING_MODES = ("border", "zeros")
BACKWARP_BACKENDS = ("auto", "cupy", "torch", "grid_sample")
_GRID_SAMPLE_PADDING = {"zeros": 0, "border": 1}  # aten's enum for grid_sampler_2d


def backwarp(image: torch.Tensor, flow: torch.Tensor, padding_mode: str = "border", backend: str = "auto") -> torch.Tensor:
    """Sample ``image`` [B,C,H,W] at (x + flow_x, y + flow_y) bilinearly -> [B,C,H,W]. See the module doc."""
    check_shape("backwarp", "image", image, 4)
    check_shape("backwarp", "flow", flow, 4)
    if flow.shape[1] != 2 or flow.shape[0] != image.shape[0] or flow.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"savfi_core.kernels.backwarp: flow must be [B, 2, H, W] for image {tuple(image.shape)}, got {tuple(flow.shape)}"
        )
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"savfi_core.kernels.backwarp: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if backend not in BACKWARP_BACKENDS:
        raise ValueError(f"savfi_core.kernels.backwarp: backend must be one of {BACKWARP_BACKENDS}, got {backend!r}")
    if backend == "grid_sample":
        chosen = record_backend("backwarp", "grid_sample", image, flow)
    else:
        chosen = select_backend("backwarp", backend, image, flow)
    if chosen == "torch":
        return backwarp_reference(image, flow, padding_mode)
    if chosen == "grid_sample":
        if min(image.shape[-2:]) < 2:
            raise ValueError(f"savfi_core.kernels.backwarp (backend 'grid_sample'): needs H, W >= 2, got {tuple(image.shape)}")
        return _BackwarpGridSample.apply(image, flow, padding_mode)
    require_contiguous("backwarp", image=image, flow=flow)
    return _BackwarpCupy.apply(image, flow, padding_mode)


def bilinear_taps(sample_x: torch.Tensor, sample_y: torch.Tensor, height: int, width: int, padding_mode: str):
    """The four bilinear taps of sample points [B, N]: a list of (flat index [B, N], weight [B, N]).

    Weights are differentiable functions of the coordinates; indices are clamped into the image and,
    for ``padding_mode="zeros"``, the weight of a tap outside the image is multiplied by 0.
    """
    if padding_mode == "border":
        sample_x = sample_x.clamp(0, width - 1)
        sample_y = sample_y.clamp(0, height - 1)
    left = torch.floor(sample_x).detach()
    top = torch.floor(sample_y).detach()
    fraction_x = sample_x - left
    fraction_y = sample_y - top
    taps = []
    for offset_y, weight_y in ((0, 1 - fraction_y), (1, fraction_y)):
        for offset_x, weight_x in ((0, 1 - fraction_x), (1, fraction_x)):
            tap_x = left + offset_x
            tap_y = top + offset_y
            weight = weight_x * weight_y
            if padding_mode == "zeros":
                inside = (tap_x >= 0) & (tap_x <= width - 1) & (tap_y >= 0) & (tap_y <= height - 1)
                weight = weight * inside.to(weight.dtype)
            # Clamped indices only matter where the weight is zero (zeros mode, or the border tap at x = W-1).
            index = tap_y.clamp(0, height - 1).long() * width + tap_x.clamp(0, width - 1).long()
            taps.append((index, weight))
    return taps


def gather_pixels(image: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """image [B, C, H, W], flat pixel index [B, N] -> values [B, C, N] (differentiable w.r.t. image)."""
    batch, channels = image.shape[:2]
    flat = image.reshape(batch, channels, -1)
    return torch.gather(flat, 2, index.unsqueeze(1).expand(batch, channels, index.shape[1]))


def backwarp_reference(image: torch.Tensor, flow: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Pure-PyTorch backwarp (gathers only); differentiable to any order w.r.t. image and flow."""
    batch, channels, height, width = image.shape
    rows = torch.arange(height, dtype=flow.dtype, device=flow.device).view(1, height, 1)
    columns = torch.arange(width, dtype=flow.dtype, device=flow.device).view(1, 1, width)
    sample_x = (columns + flow[:, 0]).reshape(batch, -1)
    sample_y = (rows + flow[:, 1]).reshape(batch, -1)
    output = None
    for index, weight in bilinear_taps(sample_x, sample_y, height, width, padding_mode):
        term = gather_pixels(image, index) * weight.unsqueeze(1)
        output = term if output is None else output + term
    return output.reshape(batch, channels, height, width)


class _BackwarpCupy(torch.autograd.Function):
    """CuPy forward and first-order backward; the graph of the backward (create_graph) uses the reference."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        image, flow, padding_mode = inputs
        ctx.padding_mode = padding_mode
        ctx.save_for_backward(image, flow)

    @staticmethod
    def vmap(info, in_dims, image, flow, padding_mode):
        """Under ``torch.func.vmap``: the vmapped dimension folded into the batch, one call."""
        output = _BackwarpCupy.apply(*fold_vmapped_batch(info.batch_size, in_dims, (image, flow, padding_mode)))
        return output.reshape(info.batch_size, -1, *output.shape[1:]), 0

    @staticmethod
    def forward(image, flow, padding_mode):
        batch, channels, height, width = image.shape
        output = torch.empty_like(image)
        launch("backwarp.cu", "backwarp_forward", output.numel(),
               [output.numel(), batch, channels, height, width, int(padding_mode == "zeros"), image, flow, output], output)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        image, flow = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True: differentiate the exact reference so the gradient has a graph.
            return reference_vjp(backwarp_reference, (image, flow), ctx.needs_input_grad[:2], grad_output, ctx.padding_mode) + (None,)
        grad_output = grad_output.contiguous()
        batch, channels, height, width = image.shape
        grad_image = torch.zeros_like(image)
        grad_flow = torch.zeros_like(flow)
        # One thread per pixel; image gradient by atomicAdd (scatter of bilinear weights).
        pixels = batch * height * width
        launch("backwarp.cu", "backwarp_backward", pixels,
               [pixels, batch, channels, height, width, int(ctx.padding_mode == "zeros"),
                image, flow, grad_output, grad_image, grad_flow], grad_output)
        return (grad_image if ctx.needs_input_grad[0] else None, grad_flow if ctx.needs_input_grad[1] else None, None)


def _sampling_grid(flow: torch.Tensor) -> torch.Tensor:
    """Pixel flow [B,2,H,W] -> grid_sample's normalised grid [B,H,W,2] (align_corners=True)."""
    # Normalised in the order RIFE's released warp uses (linspace grid plus the flow over
    # (size-1)/2): in float32 another order differs by a few ulps, which RIFE v4's five
    # coarse-to-fine levels amplified to 1.03e-4 at an occlusion edge (measured on Vimeo, t=0.75).
    height, width = flow.shape[-2:]
    rows = torch.linspace(-1.0, 1.0, height, dtype=flow.dtype, device=flow.device).view(1, height, 1)
    columns = torch.linspace(-1.0, 1.0, width, dtype=flow.dtype, device=flow.device).view(1, 1, width)
    grid_x = columns + flow[:, 0] / ((width - 1) / 2.0)
    grid_y = rows + flow[:, 1] / ((height - 1) / 2.0)
    return torch.stack([grid_x, grid_y], dim=-1)


class _BackwarpGridSample(torch.autograd.Function):
    """grid_sample forward and first-order backward; the graph of the backward uses the reference."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        image, flow, padding_mode = inputs
        ctx.padding_mode = padding_mode
        ctx.save_for_backward(image, flow)

    @staticmethod
    def vmap(info, in_dims, image, flow, padding_mode):
        """Under ``torch.func.vmap``: the vmapped dimension folded into the batch, one call."""
        output = _BackwarpGridSample.apply(*fold_vmapped_batch(info.batch_size, in_dims, (image, flow, padding_mode)))
        return output.reshape(info.batch_size, -1, *output.shape[1:]), 0

    @staticmethod
    def forward(image, flow, padding_mode):
        return torch.nn.functional.grid_sample(
            image, _sampling_grid(flow), mode="bilinear", padding_mode=padding_mode, align_corners=True
        )

    @staticmethod
    def backward(ctx, grad_output):
        image, flow = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True: grid_sample has no double backward for its grid; the reference does.
            return reference_vjp(backwarp_reference, (image, flow), ctx.needs_input_grad[:2], grad_output, ctx.padding_mode) + (None,)
        height, width = flow.shape[-2:]
        grad_image, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
            grad_output.contiguous(), image, _sampling_grid(flow), 0, _GRID_SAMPLE_PADDING[ctx.padding_mode], True,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1]],
        )
        grad_flow = None
        if ctx.needs_input_grad[1]:
            scale = grad_grid.new_tensor([2.0 / (width - 1), 2.0 / (height - 1)])
            grad_flow = (grad_grid * scale).permute(0, 3, 1, 2)
        return (grad_image if ctx.needs_input_grad[0] else None, grad_flow, None)
