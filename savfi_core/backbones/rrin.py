"""RRIN: "Video Frame Interpolation via Residue Refinement" (Li et al., ICASSP 2020).

Four U-Nets, all at full resolution (t = 0.5, the middle frame):

    F01, F10   = Flow_L(cat(I0, I1))                                 [B,4,H,W]: flows 0->1 and 1->0
    Ft0        = -(1-t) t F01 + t^2 F10                              linear-motion flows from t
    Ft1        = (1-t)^2 F01 - t (1-t) F10
    Ft0, Ft1  += refine_flow(cat(Ft0, Ft1, I0, I1))                  flow residue
    W0, W1     = warp(I0, Ft0), warp(I1, Ft1)
    M          = sigmoid(Mask(cat(Ft0, Ft1, I0, I1, W0, W1)))        [B,2,H,W]
    w0, w1     = (1-t) M[:,0], t M[:,1]
    blend      = (w0 W0 + w1 W1) / (w0 + w1 + 1e-8)
    pred       = clamp(final(cat(I0, I1, blend)) + blend, 0, 1)      image residue

warp is the authors' ``grid_sample(align_corners=False)`` with the grid 2 (x + u) / W - 1 and zero
padding. With align_corners=False that grid addresses pixel x + u - 1/2, so the original warp samples
half a pixel up-left of the flow's target; it is reproduced exactly as
``backwarp(image, flow - 0.5, padding_mode="zeros")`` (backwarp samples at x + flow, like
align_corners=True), which keeps the authors' weights valid.

UNet(in, out, depth, wf): ``down_path`` of ``depth`` blocks [conv3x3, LReLU 0.1, conv3x3, LReLU 0.1]
with 2**(wf+i) channels, 2x2 average pooling between them, ``midconv`` (3x3, LReLU 0.1), then
``up_path`` of depth-1 blocks [bilinear x2 (align_corners=False), conv3x3 (no activation),
concatenation with the skip, conv block], and ``last`` (3x3, no activation). Module names follow
the authors' code so ``rrin_base.pth`` loads one to one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from savfi_core.backbones.common import (
    FLOWS_BETWEEN_INPUTS, FrozenBatchNorm2d, InterpolationModel, InterpolationOutput, linear_intermediate_flows,
)
from savfi_core.backbones.pretrained import PretrainedWeights, register_weights
from savfi_core.backbones.registry import register_model
from savfi_core.kernels import backwarp


@dataclass(frozen=True)
class RRINConfig:
    """Sizes of RRIN.

    base_channels: channels of each U-Net's first level, doubled per level (2**wf = 32 in the
        paper, wf = 5). The U-Net depths (Mask 4, Flow_L 5, refine_flow 4, final 4) are the topology
        and stay fixed.
    time: the interpolated instant t in (0, 1); the paper evaluates t = 0.5.
    pad_margin: least reflection padding on every side (0: only up to a multiple of 128, as the
        original); see ``DVFConfig.pad_margin``: 96-pixel training crops are reflected out to 128,
        and a frame whose width is a multiple of 128 (640) otherwise meets zero padding.
    he_init: draw the U-Nets' hidden convolutions He-normal for leaky ReLU (slope 0.1) with zero
        biases, instead of PyTorch's default, which shrinks activations layer by layer (a held-out
        input of mean magnitude 0.27 reaches Flow_L's last layer as 0.055 at the tiny width).
        Initial values only: loaded weights replace them.
    flow_unit_pixels: Flow_L's output times this is F_0->1, F_1->0 in pixels (1: as the original;
        PWC-Net scales its flows the same way in training). A zero-initialised head on features of
        magnitude 0.05 needs weights near 1 to express a few pixels; a larger unit needs smaller ones.
    Both were tried against the collapse of Flow_L in tiny distillation runs (its features shrink
    tenfold within a few hundred steps and it predicts no motion) and neither stopped it: the
    README's distillation section has the measurements.
    flow_batchnorm: a BatchNorm (``FrozenBatchNorm2d``) after each convolution of Flow_L's conv
        blocks, as in DVF, whose tiny features stayed alive only once its BatchNorm trained on batch
        statistics (``pretrain(..., batchnorm_momentum=...)``); frozen otherwise, so meta-learning
        and test-time adaptation see a fixed function of the weights. Not in the original: its
        checkpoint loads only with this off.
    """

    base_channels: int = 32
    time: float = 0.5
    pad_margin: int = 0
    he_init: bool = False
    flow_unit_pixels: float = 1.0
    flow_batchnorm: bool = False


PAPER = RRINConfig()
# Same four U-Nets at 1/8 of the width (0.30M instead of 19.19M parameters): every input is padded
# to 128x128, so a 64x64 pair costs four full U-Nets at 128x128 (about 0.1 s of one CPU thread for
# forward+backward; base_channels=8 gives 1.2M parameters at about 0.16 s). The shipped tiny weights
# were distilled with BatchNorm in the flow U-Net (without it its features die out, issue 13) and
# the reflection margin (so whole frames' edges look like the training crops').
TINY = RRINConfig(base_channels=4, pad_margin=16, flow_batchnorm=True)


class UNetConvBlock(nn.Module):
    """conv3x3 -> LReLU(0.1) -> conv3x3 -> LReLU(0.1); weights at ``block.0`` and ``block.2``.

    With ``batchnorm`` each conv is followed by a ``FrozenBatchNorm2d`` (``RRINConfig.flow_batchnorm``):
    convolutions at ``block.0`` and ``block.3``, norms at ``block.1`` and ``block.4``.
    """

    def __init__(self, in_channels: int, out_channels: int, batchnorm: bool = False):
        super().__init__()

        def conv_layers(channels_in: int) -> list[nn.Module]:
            layers = [nn.Conv2d(channels_in, out_channels, 3, padding=1)]
            if batchnorm:
                layers.append(FrozenBatchNorm2d(out_channels))
            return layers + [nn.LeakyReLU(0.1)]

        self.block = nn.Sequential(*conv_layers(in_channels), *conv_layers(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class Upsample(nn.Module):
    """Bilinear x2 upsampling, align_corners=False (the weightless ``up.0`` of the original)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class UNetUpBlock(nn.Module):
    """up = [bilinear x2, conv3x3 in -> out]; concatenate the skip (out channels); conv block 2*out -> out."""

    def __init__(self, in_channels: int, out_channels: int, batchnorm: bool = False):
        super().__init__()
        self.up = nn.Sequential(Upsample(), nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.conv_block = UNetConvBlock(in_channels, out_channels, batchnorm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv_block(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """RRIN's U-Net: [B,in,H,W] -> [B,out,H,W], H and W multiples of 2**(depth-1)."""

    def __init__(self, in_channels: int, out_channels: int, depth: int, base_channels: int, batchnorm: bool = False):
        super().__init__()
        widths = [base_channels * 2**level for level in range(depth)]
        self.down_path = nn.ModuleList(
            UNetConvBlock(previous, width, batchnorm) for previous, width in zip([in_channels] + widths[:-1], widths)
        )
        self.midconv = nn.Conv2d(widths[-1], widths[-1], 3, padding=1)
        self.up_path = nn.ModuleList(
            UNetUpBlock(widths[level + 1], widths[level], batchnorm) for level in reversed(range(depth - 1))
        )
        self.last = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for level, down in enumerate(self.down_path):
            x = down(x)
            if level < len(self.down_path) - 1:
                skips.append(x)
                x = F.avg_pool2d(x, 2)
        x = F.leaky_relu(self.midconv(x), negative_slope=0.1)
        for up, skip in zip(self.up_path, reversed(skips)):
            x = up(x, skip)
        return self.last(x)


def warp_like_rrin(image: Tensor, flow: Tensor) -> Tensor:
    """The authors' warp: sample ``image`` [B,C,H,W] at (x + u - 1/2, y + v - 1/2), zeros outside.

    flow [B,2,H,W] in pixels (x then y). See the module docstring for where the half pixel comes from.
    """
    return backwarp(image, flow - 0.5, padding_mode="zeros")


class RRIN(InterpolationModel):
    """RRIN (Li et al., ICASSP 2020): flow U-Net, flow-residue U-Net, blend-mask U-Net, image-residue U-Net."""

    # The meta-learning version pads by reflection to a multiple of 128 (split evenly); the U-Nets
    # themselves need a multiple of 16 (Flow_L pools four times).
    pad_multiple = 128
    independent_batch_items = True
    pad_mode = "reflect"
    checkpoint_name_map: list[tuple[str, str]] = []

    def __init__(self, config: RRINConfig = PAPER):
        super().__init__()
        self.config = config
        self.pad_margin = config.pad_margin
        width = config.base_channels
        self.Mask = UNet(16, 2, 4, width)
        self.Flow_L = UNet(6, 4, 5, width, batchnorm=config.flow_batchnorm)
        self.refine_flow = UNet(10, 4, 4, width)
        self.final = UNet(9, 3, 4, width)
        if config.he_init:
            self._he_initialise_hidden_convolutions()
        self.reset_to_averaging()

    @torch.no_grad()
    def _he_initialise_hidden_convolutions(self) -> None:
        """Every convolution but each U-Net's ``last``: He-normal for leaky ReLU 0.1, bias 0 (see ``RRINConfig.he_init``)."""
        for unet in (self.Flow_L, self.refine_flow, self.Mask, self.final):
            for module in unet.modules():
                if isinstance(module, nn.Conv2d) and module is not unet.last:
                    nn.init.kaiming_normal_(module.weight, a=0.1, nonlinearity="leaky_relu")
                    module.bias.zero_()

    @torch.no_grad()
    def reset_to_averaging(self) -> None:
        """Initialise the four heads so that the untrained network outputs (frame0 + frame1) / 2.

        Only the ``last`` convolution of each U-Net is set; the rest keeps PyTorch's default init.
          Flow_L.last = 0                       -> F01 = F10 = 0, so Ft0 = Ft1 = 0
          refine_flow.last = 0, bias = +0.5     -> Ft0 = Ft1 = 0.5, which the authors' warp turns into
                                                   a sample at exactly (x, y): W0 = I0, W1 = I1
          Mask.last = 0                         -> M = 0.5, w0 = w1 = 0.25, blend = (I0 + I1) / 2
          final.last = 0                        -> image residue 0, pred = blend
        (up to the 1e-8 in the blend's denominator, a relative error of 2e-8). Gradients still
        reach every head: the warps, the mask and the residue all depend on their last layers.
        """
        for unet in (self.Flow_L, self.refine_flow, self.Mask, self.final):
            unet.last.weight.zero_()
            unet.last.bias.zero_()
        self.refine_flow.last.bias.fill_(0.5)

    def interpolate(self, frame0: Tensor, frame1: Tensor) -> InterpolationOutput:
        """Padded frames [B,3,H,W] in [0,1] (H, W multiples of 16) -> clamped middle frame.

        aux: 'flow_0_1', 'flow_1_0', the first U-Net's F_0->1 and F_1->0 in pixels (unused by the loss).
        """
        t = self.config.time
        frames = torch.cat([frame0, frame1], dim=1)
        flows = self.Flow_L(frames) * self.config.flow_unit_pixels
        flow01, flow10 = flows[:, 0:2], flows[:, 2:4]
        flow_t0, flow_t1 = linear_intermediate_flows(flow01, flow10, t)
        residue = self.refine_flow(torch.cat([flow_t0, flow_t1, frames], dim=1))
        flow_t0 = flow_t0 + residue[:, 0:2]
        flow_t1 = flow_t1 + residue[:, 2:4]
        warped0 = warp_like_rrin(frame0, flow_t0)
        warped1 = warp_like_rrin(frame1, flow_t1)
        mask = torch.sigmoid(self.Mask(torch.cat([flow_t0, flow_t1, frames, warped0, warped1], dim=1)))
        weight0 = (1 - t) * mask[:, 0:1]
        weight1 = t * mask[:, 1:2]
        blend = (weight0 * warped0 + weight1 * warped1) / (weight0 + weight1 + 1e-8)
        prediction = self.final(torch.cat([frame0, frame1, blend], dim=1)) + blend
        # the flows are exposed for motion supervision in pretraining (savfi_core.train.flow_teacher)
        return InterpolationOutput(pred=prediction.clamp(0, 1), aux={"flow_0_1": flow01, "flow_1_0": flow10})

    def loss(self, output: InterpolationOutput, target: Tensor) -> dict[str, Tensor]:
        """The authors' '1*L1': mean |pred - target|."""
        l1 = (output.pred - target).abs().mean()
        return {"l1": l1, "total": l1}


@register_model("rrin", {"paper": PAPER, "tiny": TINY}, motion_fields=FLOWS_BETWEEN_INPUTS)
def build_rrin(config: RRINConfig) -> RRIN:
    """RRIN (Li et al., ICASSP 2020): flow and image residue refinement with four U-Nets."""
    return RRIN(config)


# Where the weights come from (savfi_core.backbones.pretrained). Original optimizer: RRIN (official code): Adam, lr 1e-4.
register_weights("rrin", {
    "tiny": PretrainedWeights(
        source="shipped", file="weights/tiny/rrin.pt", provenance="weights/tiny/rrin.json",
        sha256="78eea0448a6e8ead35e5a72d69716cea3c0ddc6de5a12bf08ddce43aa28a119a",
        license="MIT (trained by savfi)", optimizer="adam", lr=0.0001, loss="1*L1", original_name="rrin"),
    "paper": PretrainedWeights(
        source="release", file="rrin_base.pth", sha256=None, license=None, optimizer="adam", lr=0.0001, loss="1*L1",
        original_name="rrin", url="https://github.com/myungsub/meta-interpolation (pretrained_models/)",
        notes="the authors' base checkpoint; layout in ../shared/fixtures/checkpoint_manifests"),
})
