"""DAIN's depth-aware flow projection (Bao et al., CVPR 2019, Sec. 3.1, "Depth-aware flow projection").

Math. Given the flow F = F_{0->1} [B, 2, H, W] in pixels (channel 0 = x, channel 1 = y), depth
D [B, 1, H, W] > 0 and the time t in (0, 1), every source pixel x moves by d(x) = t * F(x) to
p(x) = x + d(x) and carries the weight w(x) = 1 / D(x) (nearer pixels win). As in DAIN's CUDA
layer (which its networks call with t*F and 1/exp(log_depth) + 1e-6), a source pixel whose p(x) lies
inside [0, W-1] x [0, H-1] is splatted, with its full weight, onto the four integer pixels
{floor(p_x), min(floor(p_x) + 1, W-1)} x {floor(p_y), min(floor(p_y) + 1, H-1)} (the paper writes
round(); the released code uses these four neighbours, a pixel counted twice where the clamp
repeats it). Writing S(y) for the multiset of source pixels splatted onto y:

    count(y)    = sum_{x in S(y)} w(x)
    F_{t->0}(y) = - sum_{x in S(y)} w(x) * d(x) / count(y)          where count(y) > 0.

Holes (count(y) = 0) are filled as DAIN's fill-hole kernel does when ``fill_holes``: look left,
right, up and down along the row / column for the nearest pixel with count > 0 and average the
projected flows of those found (each found direction has weight 1); a hole with none stays 0.
DAIN's layer skips the filling when its input requires a gradient; here ``fill_holes`` decides and
the filling (a linear average) is differentiated like the rest.

Gradients. The splat targets are piecewise constant in F, so d F_{t->0}(y) / d F(x) = -t w(x) /
count(y) for each target y of x (as DAIN's backward), and the depth gradient is the exact derivative
through w = 1/D in both the numerator and count. (DAIN's released depth gradient uses
(F - F_{t->0}) where the derivative of the formula above gives (-d - F_{t->0}); we use the latter.)

Output: F_{t->0} [B, 2, H, W], the flow from the intermediate frame back to frame 0.
"""
from __future__ import annotations

import torch

from ._backend import check_shape, launch, reference_vjp, require_contiguous, select_backend


def depth_flow_projection(flow: torch.Tensor, depth: torch.Tensor, time: float = 0.5, fill_holes: bool = True,
                          backend: str = "auto") -> torch.Tensor:
    """Project F_{0->1} [B,2,H,W] to time ``time`` with inverse-depth weights (depth [B,1,H,W] > 0).

    Returns F_{t->0} [B,2,H,W]; see the module doc for the exact math.
    """
    check_shape("depth_flow_projection", "flow", flow, 4)
    check_shape("depth_flow_projection", "depth", depth, 4)
    if flow.shape[1] != 2 or depth.shape != (flow.shape[0], 1, *flow.shape[2:]):
        raise ValueError(
            f"savfi_core.kernels.depth_flow_projection: need flow [B,2,H,W] and depth [B,1,H,W], "
            f"got {tuple(flow.shape)} and {tuple(depth.shape)}"
        )
    chosen = select_backend("depth_flow_projection", backend, flow, depth)
    if chosen == "torch":
        return depth_flow_projection_reference(flow, depth, time, fill_holes)
    require_contiguous("depth_flow_projection", flow=flow, depth=depth)
    return _DepthFlowProjectionCupy.apply(flow, depth, float(time), bool(fill_holes))


def _splat_targets(displacement: torch.Tensor, height: int, width: int):
    """Inside mask [B, N] and the four (with repeats) flat target indices [B, N] of p = x + d."""
    device, dtype = displacement.device, displacement.dtype
    columns = torch.arange(width, device=device, dtype=dtype).repeat(height)
    rows = torch.arange(height, device=device, dtype=dtype).repeat_interleave(width)
    target_x = (columns + displacement[:, 0]).detach()
    target_y = (rows + displacement[:, 1]).detach()
    inside = (target_x >= 0) & (target_y >= 0) & (target_x <= width - 1) & (target_y <= height - 1)
    left = torch.floor(target_x).clamp(0, width - 1).long()
    top = torch.floor(target_y).clamp(0, height - 1).long()
    right = (left + 1).clamp(max=width - 1)
    bottom = (top + 1).clamp(max=height - 1)
    targets = [row * width + column for row in (top, bottom) for column in (left, right)]
    return inside, targets


def _nearest_valid(valid: torch.Tensor, dim: int, reverse: bool) -> torch.Tensor:
    """Index along ``dim`` of the nearest position strictly before (or after, if ``reverse``) with valid
    True, or -1 where none: the four searches of DAIN's fill-hole kernel."""
    if reverse:
        valid = valid.flip(dim)
    length = valid.shape[dim]
    shape = [1] * valid.dim()
    shape[dim] = length
    positions = torch.arange(length, device=valid.device).view(shape).expand_as(valid)
    marked = torch.where(valid, positions, torch.full_like(positions, -1))
    last_up_to = torch.cummax(marked, dim=dim).values
    # strictly before: shift by one position, -1 at the start
    before = torch.cat([torch.full_like(last_up_to.narrow(dim, 0, 1), -1), last_up_to.narrow(dim, 0, length - 1)], dim=dim)
    if reverse:
        before = torch.where(before >= 0, length - 1 - before, before).flip(dim)
    return before


def fill_holes_like_dain(projected: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Fill pixels where ``valid`` [B,H,W] is False with the mean of the nearest valid left/right/up/down
    values of ``projected`` [B,2,H,W]; differentiable w.r.t. ``projected``."""
    total = torch.zeros_like(projected)
    found_count = torch.zeros_like(valid, dtype=projected.dtype)
    for dim, reverse in ((2, False), (2, True), (1, False), (1, True)):
        index = _nearest_valid(valid, dim, reverse)
        found = index >= 0
        gathered = torch.gather(projected, dim + 1, index.clamp(min=0).unsqueeze(1).expand_as(projected))
        total = total + gathered * found.unsqueeze(1).to(projected.dtype)
        found_count = found_count + found.to(projected.dtype)
    filled = total / found_count.clamp(min=1).unsqueeze(1)
    return torch.where(valid.unsqueeze(1), projected, filled)


def depth_flow_projection_reference(flow: torch.Tensor, depth: torch.Tensor, time: float = 0.5,
                                    fill_holes: bool = True) -> torch.Tensor:
    """Pure-PyTorch projection (scatter_add + gathers), differentiable to any order."""
    batch, _, height, width = flow.shape
    displacement = (time * flow).reshape(batch, 2, height * width)
    weight = (1.0 / depth).reshape(batch, height * width)
    inside, targets = _splat_targets(displacement, height, width)
    weight = weight * inside.to(weight.dtype)
    numerator = torch.zeros_like(displacement)
    count = torch.zeros_like(weight)
    for target in targets:
        numerator = numerator.scatter_add(2, target.unsqueeze(1).expand(batch, 2, -1), weight.unsqueeze(1) * displacement)
        count = count.scatter_add(1, target, weight)
    valid = count > 0
    projected = -numerator / torch.where(valid, count, torch.ones_like(count)).unsqueeze(1)
    projected = projected * valid.unsqueeze(1).to(projected.dtype)
    projected = projected.reshape(batch, 2, height, width)
    if not fill_holes:
        return projected
    return fill_holes_like_dain(projected, valid.reshape(batch, height, width))


class _DepthFlowProjectionCupy(torch.autograd.Function):
    """CuPy forward and first-order backward; the graph of the backward (create_graph) uses the reference."""

    @staticmethod
    def forward(ctx, flow, depth, time, fill_holes):
        batch, _, height, width = flow.shape
        numerator = torch.zeros_like(flow)
        count = torch.zeros_like(depth)
        output = torch.empty_like(flow)
        pixels = batch * height * width
        sizes = [pixels, batch, height, width]
        launch("depth_flow_projection.cu", "projection_splat", pixels, sizes + [time, flow, depth, numerator, count], flow)
        launch("depth_flow_projection.cu", "projection_finish", pixels,
               sizes + [int(fill_holes), numerator, count, output], flow)
        ctx.settings = (time, fill_holes)
        ctx.save_for_backward(flow, depth, count, output)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        flow, depth, count, output = ctx.saved_tensors
        time, fill_holes = ctx.settings
        if torch.is_grad_enabled():
            return reference_vjp(depth_flow_projection_reference, (flow, depth), ctx.needs_input_grad[:2], grad_output,
                                 time, fill_holes) + (None, None)
        batch, _, height, width = flow.shape
        pixels = batch * height * width
        sizes = [pixels, batch, height, width]
        grad_output = grad_output.contiguous()
        # Gradient w.r.t. the projected value at each covered pixel: its own plus its share of the
        # holes it filled (scattered by atomicAdd from the holes).
        grad_projected = torch.zeros_like(flow)
        launch("depth_flow_projection.cu", "projection_backward_spread", pixels,
               sizes + [int(fill_holes), count, grad_output, grad_projected], flow)
        grad_flow = torch.empty_like(flow)
        grad_depth = torch.empty_like(depth)
        launch("depth_flow_projection.cu", "projection_backward_source", pixels,
               sizes + [time, flow, depth, count, output, grad_projected, grad_flow, grad_depth], flow)
        return grad_flow, grad_depth, None, None
