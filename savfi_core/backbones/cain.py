"""CAIN: "Channel Attention Is All You Need for Video Frame Interpolation" (Choi et al., AAAI 2020).

The network never estimates motion. Each frame is space-to-depth shuffled by a factor 2**depth
(PixelShuffle(1/8) in the paper: [B,3,H,W] -> [B,192,H/8,W/8]), the two shuffled frames are
concatenated and mixed by a deep residual stack of channel-attention blocks (RCAN's residual
groups), and the result is depth-to-space shuffled back into the middle frame:

    x_i  = frame_i - mean_hw(frame_i)                     per frame, per channel, before padding
    f    = cat(unshuffle(x_0), unshuffle(x_1))            [B, 2C, H/s, W/s], C = 3*s*s, s = 2**depth
    h    = headConv(f)                                    3x3, 2C -> C
    r    = body(h) + h                                    body = resgroups x ResidualGroup
    out  = shuffle(tailConv(r)) + (mean(frame_0) + mean(frame_1)) / 2

ResidualGroup(x) = x + ConvNorm(RCAB(...RCAB(x)))      (resblocks RCABs, then one 3x3 conv)
RCAB(x)          = x + CA(ConvNorm(LeakyReLU_0.2(ConvNorm(x))))
CA(y)            = y * sigmoid(W2 relu(W1 avgpool_hw(y)))    (1x1 convs C -> C/reduction -> C)
ConvNorm         = reflection pad 1 + 3x3 conv (no normalisation in CAIN)

Module names follow the authors' code (``encoder.interpolate.headConv``,
``encoder.interpolate.body.<g>.body.<b>.body.{0,2}.conv``, ``...body.3.conv_du.{0,2}``,
``encoder.interpolate.body.<g>.body.<resblocks>.conv``, ``encoder.interpolate.tailConv``) so the
released ``cain_base.pth`` loads one to one (the loader strips its ``module.`` prefixes).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from savfi_core.backbones.common import InterpolationModel, InterpolationOutput
from savfi_core.backbones.pretrained import PretrainedWeights, register_weights
from savfi_core.backbones.registry import register_model


@dataclass(frozen=True)
class CAINConfig:
    """Sizes of CAIN.

    depth: the shuffle factor is 2**depth; it also fixes the feature width, 3 * 4**depth channels
        (192 at depth 3), because CAIN's body works directly on the shuffled pixels.
    resgroups: residual groups in the body (5 in the paper).
    resblocks: RCABs per group (12 in the paper).
    reduction: channel-attention bottleneck ratio (16 in the paper).
    """

    depth: int = 3
    resgroups: int = 5
    resblocks: int = 12
    reduction: int = 16

    @property
    def features(self) -> int:
        return 3 * 4**self.depth


PAPER = CAINConfig()
# Same topology, narrower and shallower: shuffle by 4 (48 channels), 3 groups of 3 RCABs
# (0.50M parameters; forward+backward of a 64x64 pair about 0.03 s on 2 CPU threads).
TINY = CAINConfig(depth=2, resgroups=3, resblocks=3, reduction=16)


class ConvNorm(nn.Module):
    """Reflection pad by kernel_size // 2, then a convolution (CAIN uses no normalisation)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.padding = kernel_size // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, [self.padding] * 4, mode="reflect"))


class ChannelAttention(nn.Module):
    """y * sigmoid(conv_du(avgpool(y))): per-channel gates from global statistics ([B,C,H,W] -> same)."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(channels // reduction, 1)
        # indices 0 and 2 hold the weights, as in the original nn.Sequential (ReLU at 1, Sigmoid at 3)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class RCAB(nn.Module):
    """Residual channel-attention block: x + CA(conv(lrelu(conv(x))))."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(
            ConvNorm(channels, channels),
            nn.LeakyReLU(0.2),
            ConvNorm(channels, channels),
            ChannelAttention(channels, reduction),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """x + conv(RCAB_n(...RCAB_1(x)))."""

    def __init__(self, channels: int, blocks: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(*[RCAB(channels, reduction) for _ in range(blocks)], ConvNorm(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Interpolation(nn.Module):
    """headConv (2C -> C), residual groups with a long skip, tailConv (C -> C); zero-padded 3x3 head/tail."""

    def __init__(self, config: CAINConfig):
        super().__init__()
        channels = config.features
        self.headConv = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.body = nn.Sequential(
            *[ResidualGroup(channels, config.resblocks, config.reduction) for _ in range(config.resgroups)]
        )
        self.tailConv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, features0: Tensor, features1: Tensor) -> Tensor:
        head = self.headConv(torch.cat([features0, features1], dim=1))
        return self.tailConv(self.body(head) + head)


class Encoder(nn.Module):
    """Space-to-depth both frames by 2**depth, then mix them with :class:`Interpolation`."""

    def __init__(self, config: CAINConfig):
        super().__init__()
        self.scale = 2**config.depth
        self.interpolate = Interpolation(config)

    def forward(self, frame0: Tensor, frame1: Tensor) -> Tensor:
        # F.pixel_unshuffle orders channels c*s*s + i*s + j, the order of the authors' PixelShuffle(1/s).
        return self.interpolate(F.pixel_unshuffle(frame0, self.scale), F.pixel_unshuffle(frame1, self.scale))


class CAIN(InterpolationModel):
    """CAIN (Choi et al., AAAI 2020): pixel-shuffled frames mixed by channel-attention residual groups."""

    # The authors pad every input (train and test) by reflection to a multiple of 128, split evenly.
    pad_multiple = 128
    independent_batch_items = True
    pad_mode = "reflect"
    checkpoint_name_map: list[tuple[str, str]] = []

    def __init__(self, config: CAINConfig = PAPER):
        super().__init__()
        self.config = config
        self.scale = 2**config.depth
        self.encoder = Encoder(config)
        self.reset_to_averaging()

    @torch.no_grad()
    def reset_to_averaging(self) -> None:
        """Initialise so that the untrained network outputs exactly (frame0 + frame1) / 2.

        CAIN has no frame-averaging path of its own: its output is whatever tailConv decodes,
        plus the mean colour. Instead of adding a skip the original lacks, only initial values are
        chosen so that the existing layers compute the average:
          headConv = the 1x1-centred map [I/2, I/2]      -> h = (u0 + u1) / 2, u_i the shuffled frames
          last conv of every residual group = 0          -> each group is the identity, body(h) = h
          tailConv = centred I/2                         -> tailConv(body(h) + h) = h
        so out = shuffle((u0 + u1) / 2) + (m0 + m1) / 2 = (frame0 + frame1) / 2. The RCABs keep
        PyTorch's default init; gradients reach them as soon as the zeroed group convs move
        (the zero-initialised residual branch of Fixup / ReZero).
        """
        interpolate = self.encoder.interpolate
        channels = self.config.features
        centre = torch.zeros(channels, channels, 3, 3)
        centre[:, :, 1, 1] = torch.eye(channels)
        interpolate.headConv.weight.copy_(torch.cat([centre, centre], dim=1) / 2)
        interpolate.headConv.bias.zero_()
        for group in interpolate.body:
            group.body[-1].conv.weight.zero_()
            group.body[-1].conv.bias.zero_()
        interpolate.tailConv.weight.copy_(centre / 2)
        interpolate.tailConv.bias.zero_()

    def forward(self, frame0: Tensor, frame1: Tensor) -> InterpolationOutput:
        """[B,3,H,W] x2 in [0,1] -> middle frame [B,3,H,W] (not clamped, as the original).

        The per-frame channel means are taken over the unpadded frames (the authors subtract
        them before padding), so this wraps the base class's pad-interpolate-crop.
        """
        mean0 = frame0.mean(dim=(2, 3), keepdim=True)
        mean1 = frame1.mean(dim=(2, 3), keepdim=True)
        output = super().forward(frame0 - mean0, frame1 - mean1)
        return InterpolationOutput(pred=output.pred + (mean0 + mean1) / 2, aux=output.aux)

    def interpolate(self, frame0: Tensor, frame1: Tensor) -> InterpolationOutput:
        """Mean-free padded frames [B,3,H,W] (H, W multiples of 2**depth) -> mean-free middle frame.

        Called by :meth:`forward`, which removes the means before padding and adds their average
        back after cropping.
        """
        features = self.encoder(frame0, frame1)
        return InterpolationOutput(pred=F.pixel_shuffle(features, self.scale))

    def loss(self, output: InterpolationOutput, target: Tensor) -> dict[str, Tensor]:
        """The authors' '1*L1': mean |pred - target|."""
        l1 = (output.pred - target).abs().mean()
        return {"l1": l1, "total": l1}


@register_model("cain", {"paper": PAPER, "tiny": TINY})
def build_cain(config: CAINConfig) -> CAIN:
    """CAIN (Choi et al., AAAI 2020): channel attention over pixel-shuffled frames, no flow."""
    return CAIN(config)


# Where the weights come from (savfi_core.backbones.pretrained). Original optimizer: CAIN (Choi et al. 2020, official code default): Adam, lr 1e-4.
register_weights("cain", {
    "tiny": PretrainedWeights(
        source="shipped", file="weights/tiny/cain.pt", provenance="weights/tiny/cain.json",
        sha256="b5886a0677dfecf22e499c04d60269f47d6ad3060a71dc5ba1b17d2dbb03e122",
        license="MIT (trained by savfi)", optimizer="adam", lr=0.0001, loss="1*L1", original_name="cain"),
    "paper": PretrainedWeights(
        source="release", file="cain_base.pth", sha256=None, license=None, optimizer="adam", lr=0.0001, loss="1*L1",
        original_name="cain", url="https://github.com/myungsub/meta-interpolation (pretrained_models/)",
        notes="the authors' base checkpoint; layout in ../shared/fixtures/checkpoint_manifests"),
})
