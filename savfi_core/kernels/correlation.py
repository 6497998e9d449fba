"""Cost volume of PWC-Net as used by DAIN (its ``Correlation`` package with kernel_size 1).

Math. For feature maps ``f1``, ``f2`` [B, C, H, W], maximum displacement ``M`` and displacement
stride ``s`` (both in pixels, ``M`` a multiple of ``s``), let R = M // s and D = 2R + 1. For
displacement indices (p, q) in [-R, R]^2 the output channel ``k = (p + R) * D + (q + R)`` (row-major
over (dy, dx)) holds

    out[b, k, y, x] = (1 / C) * sum_c f1[b, c, y, x] * f2[b, c, y + p*s, x + q*s]

with f2 taken as 0 outside the image (zero padding by M). Output: [B, D*D, H, W]. This is DAIN's /
FlowNet2's correlation with pad_size = M, kernel_size = 1, stride1 = 1, stride2 = s: the sum over
channels is divided by the number of summed elements, kernel_size^2 * C = C.

The reference is D*D shifted multiply-and-mean operations (plain PyTorch, differentiable to any
order). The CuPy backend runs ``correlation.cu``; with ``create_graph=True`` its backward is the
reference's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as functional

from ._backend import check_shape, launch, reference_vjp, require_contiguous, select_backend


def correlation(feat1: torch.Tensor, feat2: torch.Tensor, max_displacement: int = 4, stride: int = 1, backend: str = "auto") -> torch.Tensor:
    """[B,C,H,W] x [B,C,H,W] -> [B, (2*(max_displacement//stride)+1)**2, H, W]; see the module doc."""
    check_shape("correlation", "feat1", feat1, 4)
    check_shape("correlation", "feat2", feat2, 4)
    if feat1.shape != feat2.shape:
        raise ValueError(f"savfi_core.kernels.correlation: feat1 {tuple(feat1.shape)} and feat2 {tuple(feat2.shape)} must match")
    if stride < 1 or max_displacement < 0 or max_displacement % stride != 0:
        raise ValueError(
            f"savfi_core.kernels.correlation: need stride >= 1 and max_displacement a non-negative multiple of it, "
            f"got max_displacement={max_displacement}, stride={stride}"
        )
    chosen = select_backend("correlation", backend, feat1, feat2)
    if chosen == "torch":
        return correlation_reference(feat1, feat2, max_displacement, stride)
    require_contiguous("correlation", feat1=feat1, feat2=feat2)
    return _CorrelationCupy.apply(feat1, feat2, max_displacement, stride)


def correlation_reference(feat1: torch.Tensor, feat2: torch.Tensor, max_displacement: int = 4, stride: int = 1) -> torch.Tensor:
    """Pure-PyTorch cost volume: one shifted product and channel mean per displacement."""
    height, width = feat1.shape[2:]
    radius = max_displacement // stride
    padded = functional.pad(feat2, (max_displacement,) * 4)
    planes = []
    for p in range(-radius, radius + 1):
        for q in range(-radius, radius + 1):
            top = max_displacement + p * stride
            left = max_displacement + q * stride
            shifted = padded[:, :, top:top + height, left:left + width]
            planes.append((feat1 * shifted).mean(dim=1))
    return torch.stack(planes, dim=1)


class _CorrelationCupy(torch.autograd.Function):
    """CuPy forward and first-order backward; the graph of the backward (create_graph) uses the reference."""

    @staticmethod
    def forward(ctx, feat1, feat2, max_displacement, stride):
        ctx.settings = (max_displacement, stride)
        ctx.save_for_backward(feat1, feat2)
        batch, channels, height, width = feat1.shape
        size = 2 * (max_displacement // stride) + 1
        output = torch.empty(batch, size * size, height, width, dtype=feat1.dtype, device=feat1.device)
        launch("correlation.cu", "correlation_forward", output.numel(),
               [output.numel(), batch, channels, height, width, max_displacement, stride, feat1, feat2, output], output)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        feat1, feat2 = ctx.saved_tensors
        max_displacement, stride = ctx.settings
        if torch.is_grad_enabled():
            return reference_vjp(correlation_reference, (feat1, feat2), ctx.needs_input_grad[:2], grad_output,
                                 max_displacement, stride) + (None, None)
        grad_output = grad_output.contiguous()
        batch, channels, height, width = feat1.shape
        grad_feat1 = torch.empty_like(feat1)
        grad_feat2 = torch.empty_like(feat2)
        # Both gradients are gathers over displacements (one thread per input element, no atomics).
        arguments = [feat1.numel(), batch, channels, height, width, max_displacement, stride, feat1, feat2, grad_output]
        launch("correlation.cu", "correlation_backward_feat1", feat1.numel(), arguments + [grad_feat1], feat1)
        launch("correlation.cu", "correlation_backward_feat2", feat2.numel(), arguments + [grad_feat2], feat2)
        return grad_feat1, grad_feat2, None, None
