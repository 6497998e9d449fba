"""SepConv: video frame interpolation via adaptive separable convolution (Niklaus et al., ICCV 2017).

The network predicts, for every output pixel, four 1-D kernels of K taps (K = 51 in the paper): a
vertical and a horizontal one for each input frame. The middle frame is

    pred[b,c,y,x] = sum_{i,j} P0[b,c,y+i,x+j] * V1[b,i,y,x] * H1[b,j,y,x]
                  + sum_{i,j} P1[b,c,y+i,x+j] * V2[b,i,y,x] * H2[b,j,y,x]

where P0, P1 are the frames replicate-padded by (K-1)/2 pixels on each side (the kernel support),
evaluated by ``savfi_core.kernels.sepconv``. Kernels come from an encoder-decoder (five levels of
three 3x3 conv+ReLU and 2x2 average pooling, a mirrored decoder with bilinear upsampling and
additive skip connections) followed by four subnets (conv, conv, conv to K, ReLU, bilinear x2,
conv) working on the level-2 features.

Padding. The original pads the frames by 25 px with replication and then right/bottom up to a
multiple of 128 before the encoder, and pads by 25 px again for the kernel support. Here the base
class pads evenly to ``pad_multiple`` (replication) and ``interpolate`` adds the (K-1)/2-px
replicate pad for the kernel support. The values the kernels read are the same (replication of a
replication is a replication); only the encoder's view of the border differs (its margin and where
the image sits on the 32-px pooling grid).

Initialisation. Every layer keeps PyTorch's default initialisation, as the original (which trains
from scratch). An earlier savfi version started the kernel heads at a frame-averaging delta
(zero last-layer weights, centre-tap bias): under Adam or Adamax, 99.6% of the ReLUs before each
head's last conv then died within a few hundred steps, since any activation there only added noise
to the averaging bias, and no gradient reached the encoder again. From the default initialisation
the network starts below frame averaging (24-26 dB on the held-out clips after 250 steps, against
30.67 dB) and passes it after about 4,000 steps, its kernels driven by the encoder throughout.

State-dict names are the original ones (``moduleConv1.0.weight`` ...), so the authors' checkpoint
``sepconv_base_l1.pth`` loads without renaming.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from savfi_core.backbones.common import InterpolationModel, InterpolationOutput
from savfi_core.backbones.pretrained import PretrainedWeights, register_weights
from savfi_core.backbones.registry import register_model
from savfi_core.kernels import sepconv as separable_local_convolution


@dataclass(frozen=True)
class SepConvConfig:
    """Widths of SepConv.

    encoder_widths: output channels of moduleConv1..moduleConv5 (the decoder mirrors them).
    subnet_width: hidden channels of the four kernel subnets.
    kernel_size: taps K of each 1-D kernel (odd); the frames are padded by (K-1)/2 for its support.
    pad_multiple: the spatial multiple the input is padded to (the five poolings need 32; the
        original uses 128).
    """

    encoder_widths: tuple[int, int, int, int, int] = (32, 64, 128, 256, 512)
    subnet_width: int = 64
    kernel_size: int = 51
    pad_multiple: int = 128


PAPER = SepConvConfig()
# Same topology, about 1/8 of the widths and 13-tap kernels: 64x64 forward+backward in a few ms.
TINY = SepConvConfig(encoder_widths=(8, 16, 32, 64, 64), subnet_width=16, kernel_size=13, pad_multiple=32)


def _basic(in_channels: int, out_channels: int) -> nn.Sequential:
    """Three 3x3 conv + ReLU (the original ``Basic``; conv indices 0, 2, 4)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=False),
    )


def _upsample(channels: int) -> nn.Sequential:
    """Bilinear x2 (align_corners=True, as the original), 3x3 conv + ReLU (conv index 1)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.ReLU(inplace=False),
    )


def _subnet(in_channels: int, width: int, kernel_size: int) -> nn.Sequential:
    """One kernel subnet: conv, conv, conv to K, ReLU, bilinear x2, conv (conv indices 0, 2, 4, 7)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(width, kernel_size, 3, padding=1),
        nn.ReLU(inplace=False),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        nn.Conv2d(kernel_size, kernel_size, 3, padding=1),
    )


class SepConv(InterpolationModel):
    """SepConv (Niklaus et al., ICCV 2017): encoder-decoder predicting 4 separable K-tap kernels."""

    pad_mode = "replicate"
    checkpoint_name_map: list[tuple[str, str]] = []
    # The SAVFI inner loop adapts only the Basic conv blocks; moduleUpsample* and the four kernel
    # subnets always use the stored weights (manifest notes of sepconv.json).
    adapted_parameter_patterns = ("moduleConv*", "moduleDeconv*")
    independent_batch_items = True

    def __init__(self, config: SepConvConfig = PAPER):
        super().__init__()
        if config.kernel_size % 2 != 1:
            raise ValueError(f"SepConv kernel_size must be odd, got {config.kernel_size}")
        if config.pad_multiple % 32 != 0:
            raise ValueError(f"SepConv pad_multiple must be a multiple of 32 (five 2x poolings), got {config.pad_multiple}")
        self.config = config
        self.pad_multiple = config.pad_multiple
        c1, c2, c3, c4, c5 = config.encoder_widths
        self.moduleConv1 = _basic(6, c1)
        self.moduleConv2 = _basic(c1, c2)
        self.moduleConv3 = _basic(c2, c3)
        self.moduleConv4 = _basic(c3, c4)
        self.moduleConv5 = _basic(c4, c5)
        self.moduleDeconv5 = _basic(c5, c5)
        self.moduleUpsample5 = _upsample(c5)
        self.moduleDeconv4 = _basic(c5, c4)
        self.moduleUpsample4 = _upsample(c4)
        self.moduleDeconv3 = _basic(c4, c3)
        self.moduleUpsample3 = _upsample(c3)
        self.moduleDeconv2 = _basic(c3, c2)
        self.moduleUpsample2 = _upsample(c2)
        self.moduleVertical1 = _subnet(c2, config.subnet_width, config.kernel_size)
        self.moduleVertical2 = _subnet(c2, config.subnet_width, config.kernel_size)
        self.moduleHorizontal1 = _subnet(c2, config.subnet_width, config.kernel_size)
        self.moduleHorizontal2 = _subnet(c2, config.subnet_width, config.kernel_size)

    def interpolate(self, frame0: Tensor, frame1: Tensor) -> InterpolationOutput:
        """frame0, frame1: [B,3,H,W] in [0,1], H and W multiples of ``pad_multiple`` -> pred [B,3,H,W]."""
        conv1 = self.moduleConv1(torch.cat([frame0, frame1], dim=1))
        conv2 = self.moduleConv2(F.avg_pool2d(conv1, 2))
        conv3 = self.moduleConv3(F.avg_pool2d(conv2, 2))
        conv4 = self.moduleConv4(F.avg_pool2d(conv3, 2))
        conv5 = self.moduleConv5(F.avg_pool2d(conv4, 2))
        combined = self.moduleUpsample5(self.moduleDeconv5(F.avg_pool2d(conv5, 2))) + conv5
        combined = self.moduleUpsample4(self.moduleDeconv4(combined)) + conv4
        combined = self.moduleUpsample3(self.moduleDeconv3(combined)) + conv3
        combined = self.moduleUpsample2(self.moduleDeconv2(combined)) + conv2

        support = self.config.kernel_size // 2
        padding = (support, support, support, support)
        padded0 = F.pad(frame0, padding, mode="replicate")
        padded1 = F.pad(frame1, padding, mode="replicate")
        pred = separable_local_convolution(
            padded0, self.moduleVertical1(combined), self.moduleHorizontal1(combined)
        ) + separable_local_convolution(padded1, self.moduleVertical2(combined), self.moduleHorizontal2(combined))
        return InterpolationOutput(pred=pred)

    def loss(self, output: InterpolationOutput, target: Tensor) -> dict[str, Tensor]:
        """The SAVFI script's loss for SepConv: 1 * L1 = mean |pred - target| (RGB in [0,1])."""
        l1 = (output.pred - target).abs().mean()
        return {"l1": l1, "total": l1}


@register_model("sepconv", {"paper": PAPER, "tiny": TINY})
def build_sepconv(config: SepConvConfig) -> SepConv:
    """SepConv (Niklaus et al., ICCV 2017), adaptive separable convolution."""
    return SepConv(config)


# Where the weights come from (savfi_core.backbones.pretrained). Original optimizer: SepConv (Niklaus et al. 2017, Sec. 4): Adamax, lr 1e-3.
register_weights("sepconv", {
    "tiny": PretrainedWeights(
        source="shipped", file="weights/tiny/sepconv.pt", provenance="weights/tiny/sepconv.json",
        sha256="6b8f01d977f2d6d28bae34f2ae584b9a48282e390a11edf0e9e844a94487e96c",
        license="MIT (trained by savfi)", optimizer="adamax", lr=0.001, loss="1*L1", original_name="sepconv"),
    "paper": PretrainedWeights(
        source="release", file="sepconv_base_l1.pth", sha256=None, license=None, optimizer="adamax", lr=0.001, loss="1*L1",
        original_name="sepconv", url="https://github.com/myungsub/meta-interpolation (pretrained_models/)",
        notes="the authors' base checkpoint; layout in ../shared/fixtures/checkpoint_manifests"),
})
