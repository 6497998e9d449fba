"""The two borrowed sub-networks of DAIN: PWC-DC-Net (optical flow) and MegaDepth's hourglass (depth).

Both keep the module names of DAIN's code so that ``dain_base.pth`` loads one to one:

* ``PWCDCNet`` (Sun et al., CVPR 2018, the "DC" variant with dense decoders and a dilated context
  network): attributes ``conv1a ... conv6b``, ``conv{6..2}_{0..4}``, ``predict_flow{6..2}``,
  ``deconv{6..2}``, ``upfeat{6..3}``, ``dc_conv1 ... dc_conv7``.
* ``megadepth_hourglass`` (Li & Snavely, CVPR 2018, converted from Lua Torch, which is why its
  state_dict keys are nested indices such as ``3.0.0.1.0.0.weight``).

This file starts with '_' so the backbone registry does not import it as a network of its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from savfi_core import kernels

# ----------------------------------------------------------------------------------------------
# PWC-DC-Net
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PWCConfig:
    """Widths of PWC-DC-Net.

    feature_widths: output channels of the six pyramid levels (conv1* .. conv6*), each level halves
        the resolution (16, 32, 64, 96, 128, 196 in the paper).
    decoder_widths: the five densely connected convolutions of every level's flow decoder
        (128, 128, 96, 64, 32).
    refine_widths: the six dilated context convolutions (dilations 1, 2, 4, 8, 16, 1) that refine
        the level-2 flow (128, 128, 128, 96, 64, 32).
    max_displacement: search radius d of the cost volume, (2d+1)^2 channels (4 -> 81).
    """

    feature_widths: tuple[int, ...] = (16, 32, 64, 96, 128, 196)
    decoder_widths: tuple[int, ...] = (128, 128, 96, 64, 32)
    refine_widths: tuple[int, ...] = (128, 128, 128, 96, 64, 32)
    max_displacement: int = 4


def _conv(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 convolution + LeakyReLU(0.1), padded to keep the size (PWC-Net's ``conv``)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=True),
        nn.LeakyReLU(0.1),
    )


def _predict_flow(in_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, 2, 3, stride=1, padding=1, bias=True)


def _deconv(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """4x4 stride-2 transposed convolution: exactly doubles H and W."""
    return nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=True)


class PWCDCNet(nn.Module):
    """PWC-DC-Net: ``forward(cat(image_a, image_b)) -> flow a->b`` at 1/4 resolution, divided by 20.

    Input [B, 6, H, W] with H, W multiples of 64; output [B, 2, H/4, W/4] (x then y). As in the
    original, the network predicts flow / 20, so ``20 * output`` is the flow in full-resolution pixels.

    Per pyramid level l = 6 .. 2 (resolution H / 2^l):
        warped_b = backwarp(features_b[l], upsampled_flow[l+1] * 20 / 2^l) * valid_mask
        cost     = LeakyReLU(correlation(features_a[l], warped_b, d))          (2d+1)^2 channels
        x        = cat(cost, features_a[l], upsampled_flow, upsampled_feature)   (level 6: cost only)
        x        = cat(conv_{l}_k(x), x) for k = 0..4                           (dense decoder)
        flow[l]  = predict_flow_l(x)
    and flow[2] += dc_conv7(...dc_conv1(x)) (dilated context network).
    The valid mask zeroes warped features whose sample falls (partly) outside the image, as the
    original's ``grid_sample`` of ones thresholded at 0.9999 does.
    """

    div_flow = 20.0

    def __init__(self, config: PWCConfig = PWCConfig()):
        super().__init__()
        widths = config.feature_widths
        if len(widths) != 6 or len(config.decoder_widths) != 5 or len(config.refine_widths) != 6:
            raise ValueError(f"PWCConfig needs 6 feature, 5 decoder and 6 refine widths, got {config}")
        self.max_displacement = config.max_displacement
        previous = 3
        for level, width in enumerate(widths, start=1):
            # Level 6 names its first (strided) convolution conv6aa, the others conv{l}a (original names).
            first, second, third = (f"conv{level}a", f"conv{level}aa", f"conv{level}b") if level < 6 else ("conv6aa", "conv6a", "conv6b")
            setattr(self, first, _conv(previous, width, stride=2))
            setattr(self, second, _conv(width, width))
            setattr(self, third, _conv(width, width))
            previous = width

        cost_channels = (2 * config.max_displacement + 1) ** 2
        dense_total = sum(config.decoder_widths)
        for level in (6, 5, 4, 3, 2):
            decoder_input = cost_channels if level == 6 else cost_channels + widths[level - 1] + 4
            channels = decoder_input
            for index, width in enumerate(config.decoder_widths):
                setattr(self, f"conv{level}_{index}", _conv(channels, width))
                channels += width
            assert channels == decoder_input + dense_total
            setattr(self, f"predict_flow{level}", _predict_flow(channels))
            # deconv2 exists in the original (and its checkpoint) although the forward never uses it.
            setattr(self, f"deconv{level}", _deconv(2, 2))
            if level > 2:
                setattr(self, f"upfeat{level}", _deconv(channels, 2))
        refine = config.refine_widths
        dilations = (1, 2, 4, 8, 16, 1)
        channels = decoder_input + dense_total
        for index, (width, dilation) in enumerate(zip(refine, dilations), start=1):
            setattr(self, f"dc_conv{index}", _conv(channels, width, dilation=dilation))
            channels = width
        self.dc_conv7 = _predict_flow(channels)

        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in")  # the original's initialisation
                nn.init.zeros_(module.bias)

    def features(self, image: Tensor) -> list[Tensor]:
        """The six pyramid levels of one image, finest first."""
        levels = []
        x = image
        for level in range(1, 7):
            names = (f"conv{level}a", f"conv{level}aa", f"conv{level}b") if level < 6 else ("conv6aa", "conv6a", "conv6b")
            for name in names:
                x = getattr(self, name)(x)
            levels.append(x)
        return levels

    def warp(self, features: Tensor, flow: Tensor) -> Tensor:
        """Backward-warp ``features`` by ``flow`` (pixels at this level), zeroing partly outside samples."""
        warped = kernels.backwarp(features, flow, padding_mode="zeros")
        with torch.no_grad():
            ones = torch.ones_like(features[:, :1])
            coverage = kernels.backwarp(ones, flow.detach(), padding_mode="zeros")
            mask = (coverage >= 0.9999).to(features.dtype)
        return warped * mask

    def forward(self, images: Tensor) -> Tensor:
        """[B,6,H,W] = cat(image_a, image_b) -> flow a->b / 20 at 1/4 resolution, [B,2,H/4,W/4]."""
        return self.decode(self.features(images[:, :3]), self.features(images[:, 3:]))

    def decode(self, features_a: list[Tensor], features_b: list[Tensor]) -> Tensor:
        """Coarse-to-fine flow a->b / 20 from the two feature pyramids (see the class doc).

        Split from ``forward`` so that DAIN, which needs both directions, computes each frame's
        pyramid once and decodes the two orders as one batch.
        """
        upsampled_flow = upsampled_feature = None
        x = None
        for level in (6, 5, 4, 3, 2):
            feature_a, feature_b = features_a[level - 1], features_b[level - 1]
            if level < 6:
                feature_b = self.warp(feature_b, upsampled_flow * (self.div_flow / 2**level))
            cost = F.leaky_relu(kernels.correlation(feature_a, feature_b, self.max_displacement, 1), 0.1)
            x = cost if level == 6 else torch.cat((cost, feature_a, upsampled_flow, upsampled_feature), 1)
            for index in range(5):
                x = torch.cat((getattr(self, f"conv{level}_{index}")(x), x), 1)
            flow = getattr(self, f"predict_flow{level}")(x)
            if level > 2:
                upsampled_flow = getattr(self, f"deconv{level}")(flow)
                upsampled_feature = getattr(self, f"upfeat{level}")(x)
        for index in range(1, 7):
            x = getattr(self, f"dc_conv{index}")(x)
        return flow + self.dc_conv7(x)


# ----------------------------------------------------------------------------------------------
# MegaDepth hourglass
# ----------------------------------------------------------------------------------------------


class Inception(nn.ModuleList):
    """Parallel branches whose outputs are concatenated along channels.

    Branch 0: 1x1 conv -> BN -> ReLU. Branch k > 0: 1x1 conv (to a bottleneck width) -> BN -> ReLU ->
    k_k x k_k conv -> BN -> ReLU. The BatchNorms are not affine (as converted from Lua Torch).
    ``config`` = [[out0], [kernel1, bottleneck1, out1], ...]; output width out0 + out1 + ...
    """

    def __init__(self, in_channels: int, config: list[list[int]], divisor: int = 1):
        branches = []
        first = config[0][0] // divisor
        branches.append(nn.Sequential(nn.Conv2d(in_channels, first, 1), nn.BatchNorm2d(first, affine=False), nn.ReLU()))
        for kernel, bottleneck, out in config[1:]:
            bottleneck, out = bottleneck // divisor, out // divisor
            branches.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, bottleneck, 1),
                    nn.BatchNorm2d(bottleneck, affine=False),
                    nn.ReLU(),
                    nn.Conv2d(bottleneck, out, kernel, padding=(kernel - 1) // 2),
                    nn.BatchNorm2d(out, affine=False),
                    nn.ReLU(),
                )
            )
        super().__init__(branches)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self], 1)


class HourglassScale(nn.Sequential):
    """``first(x) + second(x)``: one scale of the hourglass, a pooled path (pool, inceptions, the next
    inner scale, upsample) beside a full-resolution path. Stored as Sequential(ModuleList([first,
    second])) to keep the original key layout ``<scale>.0.0.*`` / ``<scale>.0.1.*``; which of the two
    paths comes first differs between scales in the original, so the caller gives the order."""

    def __init__(self, first: nn.Sequential, second: nn.Sequential):
        super().__init__(nn.ModuleList([first, second]))

    def forward(self, x: Tensor) -> Tensor:
        first, second = self[0]
        return first(x) + second(x)


# Inception configurations of MegaDepth ("A" .. "G" in Chen et al.'s hourglass notation).
_B = [[32], [3, 32, 32], [5, 32, 32], [7, 32, 32]]
_E = [[64], [3, 32, 64], [5, 32, 64], [7, 32, 64]]
_F = [[64], [3, 64, 64], [7, 64, 64], [11, 64, 64]]
_C = [[32], [3, 64, 32], [7, 64, 32], [11, 64, 32]]
_D_BRANCH = [[32], [3, 64, 32], [5, 64, 32], [7, 64, 32]]
_A = [[16], [3, 64, 16], [7, 64, 16], [11, 64, 16]]
_G = [[16], [3, 32, 16], [7, 32, 16], [11, 32, 16]]


def megadepth_hourglass(divisor: int = 1) -> nn.Sequential:
    """MegaDepth's hourglass: RGB [N,3,H,W] (H, W multiples of 16) -> log depth [N,1,H,W].

    conv7x7(3->128) -> BN -> ReLU -> four nested scales (max-pool, max-pool, avg-pool, avg-pool;
    nearest upsampling back) of inception modules -> conv3x3(64->1).
    ``divisor`` divides every width (1 = the published network; the tiny size uses 8).
    """
    d = divisor
    stem = 128 // d
    wide = 256 // d

    def inception(in_channels: int, config: list[list[int]]) -> Inception:
        return Inception(in_channels, config, d)

    def upsample() -> nn.Module:
        return nn.UpsamplingNearest2d(scale_factor=2)

    # The two innermost scales list their full-resolution path first, the outer two their pooled path.
    scale1 = HourglassScale(
        nn.Sequential(inception(wide, _E), inception(wide, _E)),
        nn.Sequential(nn.AvgPool2d(2, 2), inception(wide, _E), inception(wide, _E), inception(wide, _E), upsample()),
    )
    scale2 = HourglassScale(
        nn.Sequential(inception(wide, _E), inception(wide, _F)),
        nn.Sequential(nn.AvgPool2d(2, 2), inception(wide, _E), inception(wide, _E), scale1, inception(wide, _E), inception(wide, _F), upsample()),
    )
    scale3 = HourglassScale(
        nn.Sequential(nn.MaxPool2d(2, 2), inception(stem, _B), inception(stem, _E), scale2, inception(wide, _E), inception(wide, _B), upsample()),
        nn.Sequential(inception(stem, _B), inception(stem, _C)),
    )
    scale4 = HourglassScale(
        nn.Sequential(nn.MaxPool2d(2, 2), inception(stem, _B), inception(stem, _B), scale3, inception(stem, _D_BRANCH), inception(stem, _G), upsample()),
        nn.Sequential(inception(stem, _A)),
    )
    return nn.Sequential(
        nn.Conv2d(3, stem, 7, padding=3),
        nn.BatchNorm2d(stem),
        nn.ReLU(),
        scale4,
        nn.Conv2d(64 // d, 1, 3, padding=1),
    )
