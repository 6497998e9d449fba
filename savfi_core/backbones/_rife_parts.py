"""Pieces both RIFE backbones share: resampling, warping, the reconstruction loss of RIFE's training
code, and the record of its original training.

RIFE (Huang et al., "Real-Time Intermediate Flow Estimation for Video Frame Interpolation", ECCV
2022) estimates the intermediate flows F_t->0 and F_t->1 directly, coarse to fine, with a stack of
IFBlocks; each block sees the inputs resized by 1/scale and returns a flow residual and a fusion
mask resized back. The frame at t is M * warp(I0, F_t->0) + (1 - M) * warp(I1, F_t->1), with M the
sigmoid of the mask. There is no input normalisation: frames enter and leave in [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from savfi_core.backbones.common import InterpolationModel, InterpolationOutput
from savfi_core.kernels import backwarp

# RIFE's training (Huang et al. 2022, implementation details): AdamW, weight decay 1e-4, learning
# rate 3e-4 decayed to 3e-6 by cosine annealing; loss L_rec + L_rec of the teacher block + 0.01
# L_dis (privileged distillation of the teacher's flows), L_rec the Laplacian L1 below.
# ``pretrain`` has no AdamW: pass optimizer= and lr= to pretrain a RIFE backbone.
RIFE_TRAINING = {"optimizer": "adamw", "lr": 3e-4, "loss": "laplacian_l1 + teacher laplacian_l1 + 0.01 * flow distillation"}


def resize(image: Tensor, factor: float) -> Tensor:
    """Bilinear resize by ``factor`` (align_corners=False), the call RIFE makes around each block."""
    return F.interpolate(image, scale_factor=factor, mode="bilinear", align_corners=False)


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Sample ``image`` at p + flow(p), pixels, border padding.

    RIFE's warp divides the flow by ((W-1)/2, (H-1)/2) and calls ``grid_sample(align_corners=True,
    padding_mode='border')``: a pixel-unit backward warp. ``backwarp``'s ``grid_sample`` backend
    runs that same call (identical output, and as fast as the released code) and switches to its
    gather reference for the graph of a second-order backward, so meta-gradients exist.
    """
    return backwarp(image, flow, padding_mode="border", backend="grid_sample")


def swap_directions(flow: Tensor) -> Tensor:
    """[F_t->0, F_t->1] -> [F_t->1, F_t->0] (the 4 channels of an intermediate flow pair)."""
    return torch.cat([flow[:, 2:4], flow[:, 0:2]], dim=1)


def warp_both(frame0: Tensor, frame1: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """Both frames warped to time t by intermediate flows [B,4,H,W] = [F_t->0, F_t->1]."""
    return warp(frame0, flow[:, 0:2]), warp(frame1, flow[:, 2:4])


def fuse(warped0: Tensor, warped1: Tensor, flow: Tensor, mask_logit: Tensor) -> InterpolationOutput:
    """The frame at t, M * warped0 + (1 - M) * warped1 with M = sigmoid(mask logit), and its aux."""
    mask = torch.sigmoid(mask_logit)
    return InterpolationOutput(
        pred=warped0 * mask + warped1 * (1 - mask),
        aux={"flow_t_0": flow[:, 0:2], "flow_t_1": flow[:, 2:4], "mask": mask},
    )


# The 5x5 binomial kernel of RIFE's training code (model/laplacian.py), normalised to sum 1.
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
_GAUSS_5x5 = torch.outer(_BINOMIAL, _BINOMIAL) / 256.0


def _gaussian_blur(image: Tensor, gain: float = 1.0) -> Tensor:
    channels = image.shape[1]
    kernel = (_GAUSS_5x5 * gain).to(image).expand(channels, 1, 5, 5)
    return F.conv2d(F.pad(image, (2, 2, 2, 2), mode="reflect"), kernel, groups=channels)


def _zero_upsample(image: Tensor) -> Tensor:
    """Insert a zero after every row and column: [B,C,h,w] -> [B,C,2h,2w] (no in-place writes)."""
    batch, channels, height, width = image.shape
    columns = torch.stack([image, torch.zeros_like(image)], dim=-1).reshape(batch, channels, height, 2 * width)
    return torch.stack([columns, torch.zeros_like(columns)], dim=-2).reshape(batch, channels, 2 * height, 2 * width)


def laplacian_pyramid(image: Tensor, levels: int) -> list[Tensor]:
    """Band-pass levels: blur, take every second pixel, upsample by zero insertion and 4x blur."""
    current = image
    bands = []
    for _ in range(levels):
        down = _gaussian_blur(current)[..., ::2, ::2]
        up = _gaussian_blur(_zero_upsample(down), gain=4.0)
        # Crop: at odd sizes the upsampled level is one pixel larger than the current one.
        bands.append(current - up[..., : current.shape[-2], : current.shape[-1]])
        current = down
    return bands


def laplacian_l1(pred: Tensor, target: Tensor, levels: int = 5) -> Tensor:
    """RIFE's reconstruction loss (``LapLoss`` of its training code): the sum over the levels of a
    Laplacian pyramid of the mean absolute difference. Fewer levels on small crops, so that the
    coarsest level keeps at least 3 pixels for the 2-pixel reflection pad."""
    smallest = min(pred.shape[-2:])
    usable = 0
    while usable < levels and smallest >= 3:
        usable += 1
        smallest = (smallest + 1) // 2
    return sum(
        (a - b).abs().mean() for a, b in zip(laplacian_pyramid(pred, usable), laplacian_pyramid(target, usable))
    )


class RifeModel(InterpolationModel):
    """What both RIFE backbones share: zero padding at the bottom and right (as the released
    inference pads), and the reconstruction loss of RIFE's training code."""

    pad_mode = "constant"
    pad_anchor = "top_left"

    def loss(self, output: InterpolationOutput, target: Tensor) -> dict[str, Tensor]:
        """Laplacian-pyramid L1 (5 levels) of the output frame, RIFE's ``LapLoss``."""
        reconstruction = laplacian_l1(output.pred, target)
        return {"laplacian_l1": reconstruction, "total": reconstruction}
