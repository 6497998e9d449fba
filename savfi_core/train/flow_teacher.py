"""A classical motion teacher for pretraining the flow-based backbones.

Small networks trained by the photometric loss alone learn motion slowly: on the embedded clips
the tiny flow backbones stayed within 0.2 dB of frame averaging after thousands of CPU steps and
encode almost no motion, while the classical bilateral block matching below, which needs no
ground truth, gains about 1.1 dB over frame averaging on the same held-out clips
(``benchmarks/heldout_per_scene.py``). Its motion field can serve as an extra target in
pretraining ("flow distillation"), beside the image loss: ``pretrain(..., flow_teacher_weight=w)``
adds ``w * mean|flow - factor * displacement|`` for each motion field a backbone exposes (its
registry entry says which keys, and their factors).
Measured on 2 CPU cores it did not help: 1,500 steps with it ended at +0.10 dB (SuperSloMo) and
+0.07 dB (DVF), no better than without (README, "Shipped tiny weights"). It stays as an option
for longer runs, and the matcher as the classical reference of the benchmark.

Bilateral matching (symmetric motion through the unknown middle frame): for every pixel x, the
integer displacement s in [-radius, radius]^2 that minimizes

    cost(s) = box_mean_window( mean_rgb |frame0(x - s) - frame1(x + s)| ) + penalty * |s|

so that (frame0(x - s) + frame1(x + s)) / 2 is the teacher's middle frame. The small penalty on
|s| settles flat regions (where every shift matches) on no motion.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from savfi_core.kernels import backwarp


def bilateral_displacement(
    frame0: Tensor, frame1: Tensor, radius: int = 6, window: int = 15, distance_penalty: float = 0.001
) -> Tensor:
    """frame0, frame1 [B,C,H,W] -> displacement [B,2,H,W] in whole pixels (x, y), without gradient.

    frame0 is to be sampled at x - displacement and frame1 at x + displacement (replicate padding
    at the borders; :func:`bilateral_middle` does that). Ties go to the first shift in raster order
    of (dy, dx) among equal costs, which the distance penalty makes the shortest one.
    """
    if frame0.shape != frame1.shape or frame0.dim() != 4:
        raise ValueError(f"bilateral_displacement needs two [B,C,H,W] frames of one shape, got {tuple(frame0.shape)} and {tuple(frame1.shape)}")
    if radius < 0 or window < 1 or window % 2 == 0:
        raise ValueError(f"bilateral_displacement needs radius >= 0 and an odd window, got radius {radius}, window {window}")
    with torch.no_grad():
        height, width = frame0.shape[-2:]
        padded0 = F.pad(frame0, (radius,) * 4, mode="replicate")
        padded1 = F.pad(frame1, (radius,) * 4, mode="replicate")
        shifts = [(dx, dy) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
        differences = torch.cat([
            (padded0[..., radius - dy : radius - dy + height, radius - dx : radius - dx + width]
             - padded1[..., radius + dy : radius + dy + height, radius + dx : radius + dx + width]).abs().mean(1, keepdim=True)
            for dx, dy in shifts
        ], dim=1)  # [B, K, H, W], one channel per shift
        cost = _box_mean(_box_mean(differences, window, dim=-1), window, dim=-2)
        table = frame0.new_tensor(shifts)  # [K, 2]
        cost = cost + distance_penalty * table.norm(dim=1).view(1, -1, 1, 1)
        best = cost.argmin(dim=1)  # [B, H, W]
        return table[best].permute(0, 3, 1, 2).contiguous()


def _box_mean(values: Tensor, window: int, dim: int) -> Tensor:
    """Mean over a centred window along ``dim``, of the entries inside the image only.

    Through cumulative sums: avg_pool2d with a 15x15 window took 4x longer than the whole
    matching on this CPU. Same values as avg_pool2d(count_include_pad=False) up to rounding.
    """
    half = window // 2
    moved = values.movedim(dim, -1)
    length = moved.shape[-1]
    sums = F.pad(moved, (half + 1, half)).cumsum(-1)
    window_sums = sums[..., window:] - sums[..., :-window]
    positions = torch.arange(length, device=values.device)
    counts = ((positions + half).clamp(max=length - 1) - (positions - half).clamp(min=0) + 1).to(values.dtype)
    return (window_sums / counts).movedim(-1, dim)


def bilateral_middle(frame0: Tensor, frame1: Tensor, displacement: Tensor) -> Tensor:
    """(frame0(x - d) + frame1(x + d)) / 2 for whole-pixel d [B,2,H,W], borders replicated.

    ``backwarp`` with border padding at whole-pixel offsets is an exact gather of clamped pixels.
    """
    return (backwarp(frame0, -displacement, padding_mode="border") + backwarp(frame1, displacement, padding_mode="border")) / 2


def model_motion_fields(model_name: str | None, aux: dict[str, Tensor]) -> list[tuple[str, Tensor, float]]:
    """The motion fields a backbone's output exposes, each as (name, field, factor): the field
    should equal ``factor * displacement`` of :func:`bilateral_displacement`.

    Which keys are motion fields, and their sign and scale, is part of each backbone's record in
    the registry (``register_model(..., motion_fields=...)``; the conventions are
    ``savfi_core.backbones.common.FLOWS_BETWEEN_INPUTS``, ``SYMMETRIC_FLOW`` and
    ``INTERMEDIATE_FLOWS``).
    """
    from savfi_core.backbones.registry import model_entry

    if model_name is None:
        raise ValueError("the flow teacher needs a registered backbone (built by create_model): its registry entry "
                         "names its motion fields")
    declared = model_entry(model_name).motion_fields
    if not declared:
        raise ValueError(f"backbone {model_name!r} exposes no motion field to distil into (aux keys: {sorted(aux)}); "
                         f"flow_teacher_weight needs a backbone whose registry entry declares motion_fields")
    missing = [field.key for field in declared if field.key not in aux]
    if missing:
        raise ValueError(f"backbone {model_name!r} declares motion fields {missing} that its output lacks (aux keys: {sorted(aux)})")
    return [(field.key, aux[field.key], field.factor) for field in declared]


def flow_teacher_loss(model_name: str | None, aux: dict[str, Tensor], displacement: Tensor) -> Tensor:
    """Mean over the backbone's motion fields of mean |field - factor * displacement| (pixels)."""
    fields = model_motion_fields(model_name, aux)
    return sum((field - factor * displacement).abs().mean() for _, field, factor in fields) / len(fields)
