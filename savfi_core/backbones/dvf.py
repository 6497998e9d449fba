"""Deep Voxel Flow (DVF; Liu et al., ICCV 2017), as in the SAVFI repository's ``voxel_flow.py``.

A conv/BatchNorm encoder-decoder (three 2x max-pooling levels, bilinear upsampling with
concatenated skips) ends in a 5x5 conv and tanh that gives a flow (u, v) and a blend mask m per
pixel, all in [-1, 1]. With the frames normalised as x_n = (255 x - 127.5) / 127.5 = 2x - 1:

    d = 0.5 * (u, v)                      (displacement in normalised coordinates, [-1,1] = image)
    w0 = sample x_n0 at p - d,   w1 = sample x_n1 at p + d     (bilinear, border padding,
                                                                align_corners=True)
    y_n = a * w0 + (1 - a) * w1,  a = (1 + m) / 2
    pred = (127.5 y_n + 127.5) / 255 = (y_n + 1) / 2

With align_corners=True, normalised [-1, 1] spans pixel centres 0..W-1, so a normalised offset d_x
is d_x (W-1)/2 pixels (and d_y (H-1)/2), with H, W the padded size, as in the original. Warping
uses ``savfi_core.kernels.backwarp`` (exact ``grid_sample(align_corners=True)`` semantics,
differentiable twice).

BatchNorm is always in eval mode, as the original (``fix_batchnorm_parameters``, momentum 0.9997):
the running statistics are buffers that are read, never updated, so ``functional_call`` passes them
through unchanged. The BatchNorm affine weight and bias are learned (and adapted at test time).
State-dict names are the original ones, so ``voxelflow_ft.pth`` loads without renaming.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from savfi_core.backbones.common import SYMMETRIC_FLOW, FrozenBatchNorm2d, InterpolationModel, InterpolationOutput
from savfi_core.backbones.pretrained import PretrainedWeights, register_weights
from savfi_core.backbones.registry import register_model
from savfi_core.kernels import backwarp

# Input normalisation of the original: mean = std = 0.5 * 255 on 0..255 RGB.
PIXEL_MEAN = 127.5
PIXEL_STD = 127.5


@dataclass(frozen=True)
class DVFConfig:
    """Widths of DVF: conv1, conv2, conv3 and the bottleneck (the decoder mirrors conv3..conv1)."""

    widths: tuple[int, int, int, int] = (64, 128, 256, 256)
    batchnorm_momentum: float = 0.9997  # recorded as in the original; never used, BN is frozen
    # None: the original's flow units, a tanh output of 1 is half the (padded) frame's width or
    # height, so the same weights predict motion proportional to the frame size and hold only at
    # the width they were trained at. A number: a tanh output of 1 is half that many pixels at any
    # frame size (the most motion the network can express is flow_range_pixels / 2).
    flow_range_pixels: float | None = None
    # Least reflection padding on every side before the network (0: only up to a multiple of 64,
    # as the original). A frame whose width is a multiple of 64 otherwise meets the convolutions'
    # zero padding at its edges, which 96-pixel training crops (reflected out to 128) never show:
    # a tiny DVF distilled on them predicted 2-3 px of motion along static left and right edges
    # of the 320-pixel held-out frames (0.06 px inside).
    pad_margin: int = 0


PAPER = DVFConfig()
# The shipped tiny weights were distilled with a fixed flow unit (so they hold at any frame size) and
# the reflection margin (so whole frames' edges look like the training crops'): issue 13.
TINY = DVFConfig(widths=(12, 24, 48, 48), flow_range_pixels=64.0, pad_margin=16)


class DeepVoxelFlow(InterpolationModel):
    """DVF (Liu et al., ICCV 2017): conv/BN encoder-decoder predicting a voxel flow (flow + blend mask)."""

    pad_multiple = 64
    independent_batch_items = True
    pad_mode = "reflect"
    checkpoint_name_map: list[tuple[str, str]] = []

    def __init__(self, config: DVFConfig = PAPER):
        super().__init__()
        self.config = config
        self.pad_margin = config.pad_margin
        c1, c2, c3, bottleneck = config.widths

        def batchnorm(channels: int) -> FrozenBatchNorm2d:
            return FrozenBatchNorm2d(channels, momentum=config.batchnorm_momentum)

        self.conv1 = nn.Conv2d(6, c1, 5, padding=2, bias=False)
        self.conv1_bn = batchnorm(c1)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2, bias=False)
        self.conv2_bn = batchnorm(c2)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1, bias=False)
        self.conv3_bn = batchnorm(c3)
        self.bottleneck = nn.Conv2d(c3, bottleneck, 3, padding=1, bias=False)
        self.bottleneck_bn = batchnorm(bottleneck)
        self.deconv1 = nn.Conv2d(bottleneck + c3, c3, 3, padding=1, bias=False)
        self.deconv1_bn = batchnorm(c3)
        self.deconv2 = nn.Conv2d(c3 + c2, c2, 5, padding=2, bias=False)
        self.deconv2_bn = batchnorm(c2)
        self.deconv3 = nn.Conv2d(c2 + c1, c1, 5, padding=2, bias=False)
        self.deconv3_bn = batchnorm(c1)
        self.conv4 = nn.Conv2d(c1, 3, 5, padding=2)
        self._initialise_towards_averaging()

    def _initialise_towards_averaging(self) -> None:
        """He-normal hidden convs, BN as identity, zero output conv: the untrained net averages.

        The original draws every conv from N(0, 0.01); with BatchNorm frozen at running statistics
        (0, 1) that shrinks activations about tenfold per layer, so deep layers barely learn in a
        short CPU pretraining. He initialisation keeps activations O(1) through the frozen-BN ReLU
        layers. The last conv (conv4) is zero, so tanh gives flow 0 and mask 0, i.e. blend weight
        a = 1/2: pred = (frame0 + frame1) / 2 from the start. Initial values only; same architecture.
        """
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d) and module is not self.conv4:
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                elif isinstance(module, nn.BatchNorm2d):
                    module.weight.fill_(1.0)
                    module.bias.zero_()
            self.conv4.weight.zero_()
            self.conv4.bias.zero_()

    def flow_pixels_per_unit(self, like: Tensor) -> Tensor:
        """[1,2,1,1] (x, y) pixels per unit of the network's flow output at ``like``'s size.

        0.5 * tanh output is the offset in normalised coordinates (align_corners=True); in pixels
        that is times (W-1)/2 horizontally and (H-1)/2 vertically, unless the config fixes the unit.
        """
        height, width = like.shape[-2:]
        fixed = self.config.flow_range_pixels
        return like.new_tensor([(width - 1) / 2.0, (height - 1) / 2.0] if fixed is None else [fixed, fixed]).view(1, 2, 1, 1)

    def interpolate(self, frame0: Tensor, frame1: Tensor) -> InterpolationOutput:
        """frame0, frame1: [B,3,H,W] in [0,1], H and W multiples of 64 -> pred [B,3,H,W] in [0,1].

        aux: 'flow' [B,2,H,W], the pixel displacement d (frame0 is sampled at p - d, frame1 at p + d);
        'mask' [B,1,H,W], the blend weight a of frame0.
        """
        normalised0 = (frame0 * 255.0 - PIXEL_MEAN) / PIXEL_STD
        normalised1 = (frame1 * 255.0 - PIXEL_MEAN) / PIXEL_STD
        x = torch.cat([normalised0, normalised1], dim=1)

        conv1 = F.relu(self.conv1_bn(self.conv1(x)))
        conv2 = F.relu(self.conv2_bn(self.conv2(F.max_pool2d(conv1, 2))))
        conv3 = F.relu(self.conv3_bn(self.conv3(F.max_pool2d(conv2, 2))))
        x = F.relu(self.bottleneck_bn(self.bottleneck(F.max_pool2d(conv3, 2))))
        x = _upsample(x)
        x = F.relu(self.deconv1_bn(self.deconv1(torch.cat([x, conv3], dim=1))))
        x = _upsample(x)
        x = F.relu(self.deconv2_bn(self.deconv2(torch.cat([x, conv2], dim=1))))
        x = _upsample(x)
        x = F.relu(self.deconv3_bn(self.deconv3(torch.cat([x, conv1], dim=1))))
        x = torch.tanh(self.conv4(x))

        flow = 0.5 * x[:, 0:2] * self.flow_pixels_per_unit(x)
        mask = 0.5 * (1.0 + x[:, 2:3])
        warped0 = backwarp(normalised0, -flow, padding_mode="border")
        warped1 = backwarp(normalised1, flow, padding_mode="border")
        blended = mask * warped0 + (1.0 - mask) * warped1
        pred = (blended * PIXEL_STD + PIXEL_MEAN) / 255.0
        return InterpolationOutput(pred=pred, aux={"flow": flow, "mask": mask})

    def loss(self, output: InterpolationOutput, target: Tensor) -> dict[str, Tensor]:
        """The SAVFI script's loss for DVF, 1 * MSE, on the network's normalised scale.

        The original compares the network output and the target both in the normalised space
        (x_n = 2x - 1), so mse = mean((y_n - t_n)^2) = 4 * mean((pred - target)^2) in [0,1] terms.
        """
        difference = 2.0 * (output.pred - target)
        mse = (difference * difference).mean()
        return {"mse": mse, "total": mse}


def _upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


@register_model("dvf", {"paper": PAPER, "tiny": TINY}, motion_fields=SYMMETRIC_FLOW)
def build_dvf(config: DVFConfig) -> DeepVoxelFlow:
    """Deep Voxel Flow (Liu et al., ICCV 2017)."""
    return DeepVoxelFlow(config)


# Where the weights come from (savfi_core.backbones.pretrained). Original optimizer: DVF (PyTorch port used by SAVFI): Adam, lr 1e-4.
register_weights("dvf", {
    "tiny": PretrainedWeights(
        source="shipped", file="weights/tiny/dvf.pt", provenance="weights/tiny/dvf.json",
        sha256="0c9bc4de2cd77bf3e6253e643ae317769af6ff49d611fd3d01bf49cf8fd540b1",
        license="MIT (trained by savfi)", optimizer="adam", lr=0.0001, loss="1*MSE", original_name="voxelflow"),
    "paper": PretrainedWeights(
        source="release", file="voxelflow_ft.pth", sha256=None, license=None, optimizer="adam", lr=0.0001, loss="1*MSE",
        original_name="voxelflow", url="https://github.com/myungsub/meta-interpolation (pretrained_models/)",
        notes="the authors' base checkpoint; layout in ../shared/fixtures/checkpoint_manifests"),
})
