"""DAIN: "Depth-Aware Video Frame Interpolation" (Bao et al., CVPR 2019), at t = 0.5.

Given frames I0, I1 (RGB in [0,1], padded by reflection to a multiple of 64):

    F_01 = 20 * up4(PWC(I0, I1)),   F_10 = 20 * up4(PWC(I1, I0))              flows in pixels
    D_i  = hourglass(I_i)                                                     log depth
    F_t0 = -sum_{x -> y} w_0(x) t F_01(x) / sum_{x -> y} w_0(x)               depth-aware projection
    F_t1 = same with F_10 and w_1                                             (paper eq. 1), weights
                                                                              w_i = 1e-6 + exp(-D_i);
                                                                              holes filled from the
                                                                              nearest neighbours only
                                                                              when the flow needs no
                                                                              gradient (as in DAIN)
    K_0, K_1 = kernel_net(cat(I0, I1))                                        16 = 4x4 taps per pixel
    W_i  = filter_interpolation(I_i, F_ti, K_i)                               adaptive warping layer
    C_i  = filter_interpolation(cat(ctx(I_i), D_i), F_ti, K_i)                warped context (flows,
                                                                              kernels and depth detached
                                                                              there, as in the original)
    blend = (W_0 + W_1) / 2
    pred  = blend + rectify(cat(blend, W_0, W_1, F_t0, F_t1, K_0, K_1, C_0, C_1))

Submodules, in the original's state_dict order and names: ``initScaleNets_filter`` (kernel U-Net
trunk, 5 max-pools, additive skips), ``initScaleNets_filter1`` / ``initScaleNets_filter2`` (the two
kernel heads), ``ctxNet`` (context extractor: 7x7 conv + two dilated residual blocks, dense output),
``rectifyNet`` (7x7 conv + three residual blocks + 3x3 conv, 437 input channels), ``flownets``
(PWC-DC-Net) and ``depthNet`` (MegaDepth hourglass, with BatchNorm buffers). Only ``rectifyNet`` is
adapted at test time in SAVFI (the meta system freezes everything else).

Loss (the SAVFI DAIN meta system): Charbonnier with eps 1e-8 of (pred - target), weight 1.0; the
un-rectified blend has weight 0 and is returned in ``aux['blend']`` only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from savfi_core import kernels
from savfi_core.backbones._dain_parts import PWCConfig, PWCDCNet, megadepth_hourglass
from savfi_core.backbones.common import FLOWS_BETWEEN_INPUTS, InterpolationModel, InterpolationOutput, charbonnier
from savfi_core.backbones.pretrained import PretrainedWeights, register_weights
from savfi_core.backbones.registry import register_model

TIME_STEP = 0.5  # DAIN (and SAVFI's use of it) interpolates the middle frame only
CHARBONNIER_EPSILON = 1e-8  # the SAVFI DAIN system's loss, part_loss(..., epsilon=1e-8)


@dataclass(frozen=True)
class DAINConfig:
    """Sizes of DAIN.

    kernel_widths: widths of the kernel U-Net: the first 3x3 conv, then the five conv+max-pool
        stages (16, 32, 64, 128, 256, 512 in the paper); the decoder mirrors them.
    filter_size: side of the adaptive warping kernel (4, i.e. 16 channels per kernel head).
    context_width: channels of each context-extractor block (64; the context is 3 + 3 * width).
    rectify_width: channels of the residual rectification network (128).
    flow: PWC-DC-Net widths.
    depth_divisor: divides every width of the MegaDepth hourglass (1 = published).
    """

    kernel_widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    filter_size: int = 4
    context_width: int = 64
    rectify_width: int = 128
    flow: PWCConfig = field(default_factory=PWCConfig)
    depth_divisor: int = 1

    @property
    def context_channels(self) -> int:
        """Channels of one warped context: the frame, three context blocks, and the log depth."""
        return 3 + 3 * self.context_width + 1

    @property
    def rectify_in_channels(self) -> int:
        taps = self.filter_size**2
        return 3 * 3 + 2 * 2 + 2 * taps + 2 * self.context_channels  # 437 at paper size


PAPER = DAINConfig()
# Same topology (every layer of the paper network is there), widths divided by about 2-8:
# 496,908 parameters against 24,031,656. Its cost is dominated by the number of layers (the
# hourglass alone has 168 convolutions), not by their width: forward+backward of a 64x64 pair
# takes about 0.17 s of CPU time on one thread of this machine (CAIN tiny: 0.05 s).
# Train it on crops of 128 pixels or more: PWC-Net's coarsest level is 1/64 of the input, a single
# cell on a 64-pixel crop, and trained on those only it predicted spurious flow on whole frames (-0.28
# dB against frame averaging on the held-out clips; +0.11 after 1,200 steps on 128x192 crops; README,
# "Shipped tiny weights").
TINY = DAINConfig(
    kernel_widths=(8, 8, 16, 16, 32, 32),
    context_width=8,
    rectify_width=16,
    flow=PWCConfig(
        feature_widths=(8, 8, 16, 16, 24, 24),
        decoder_widths=(16, 16, 12, 8, 8),
        refine_widths=(16, 16, 16, 12, 8, 8),
        max_displacement=2,
    ),
    depth_divisor=8,
)


class BasicBlock(nn.Module):
    """relu(conv2(relu(conv1(x))) + x): 3x3 convolutions without bias, conv1 optionally dilated."""

    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + x)


class ContextExtractor(nn.Module):
    """``ctxNet`` (S2DF_3dense): [B,3,H,W] -> cat(x, block1, block2, block3) [B, 3 + 3*width, H, W].

    block1 = 7x7 conv (no bias) + ReLU; block2, block3 = residual blocks with dilation 4 and 8.
    """

    def __init__(self, width: int):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, width, 7, padding=3, bias=False), nn.ReLU())
        self.block2 = BasicBlock(width, dilation=4)
        self.block3 = BasicBlock(width, dilation=8)

    def forward(self, x: Tensor) -> Tensor:
        first = self.block1(x)
        second = self.block2(first)
        third = self.block3(second)
        return torch.cat((x, first, second, third), 1)


class RectifyNet(nn.Module):
    """``rectifyNet`` (MultipleBasicBlock_4): 7x7 conv (bias) + ReLU, three residual blocks, 3x3 conv -> 3."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(in_channels, width, 7, padding=3, bias=True), nn.ReLU())
        self.block2 = BasicBlock(width)
        self.block3 = BasicBlock(width)
        self.block4 = BasicBlock(width)
        self.block5 = nn.Sequential(nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.block5(self.block4(self.block3(self.block2(self.block1(x)))))


def kernel_trunk(widths: tuple[int, ...]) -> nn.ModuleList:
    """``initScaleNets_filter``: the layer list of DAIN's kernel U-Net, in the original order.

    [conv(6->w0), relu] + 5 x [conv(w_{i-1}->w_i), relu, maxpool2] + [conv(w5->w5), relu]
    + 5 x [bilinear up2, conv(w_i->w_{i-1}), relu]. Run by :func:`run_kernel_trunk`, which adds
    each stage's pre-pool feature map to the output of the matching upsampling.
    """
    if len(widths) != 6:
        raise ValueError(f"kernel_widths needs 6 entries, got {widths}")
    layers: list[nn.Module] = [nn.Conv2d(6, widths[0], 3, padding=1), nn.ReLU()]
    for previous, width in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv2d(previous, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    layers += [nn.Conv2d(widths[-1], widths[-1], 3, padding=1), nn.ReLU()]
    for width, previous in zip(reversed(widths[1:]), reversed(widths[:-1])):
        layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(width, previous, 3, padding=1), nn.ReLU()]
    return nn.ModuleList(layers)


def run_kernel_trunk(layers: nn.ModuleList, x: Tensor) -> Tensor:
    """U-Net forward over the flat layer list: skip = input of each max-pool, added after each upsample."""
    skips = []
    for layer in layers:
        if isinstance(layer, nn.MaxPool2d):
            skips.append(x)
        x = layer(x)
        if isinstance(layer, nn.Upsample):
            x = x + skips.pop()
    return x


def kernel_head(width: int, taps: int) -> nn.Sequential:
    """``initScaleNets_filter1/2``: conv(width->width) + ReLU + conv(width->taps)."""
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, taps, 3, padding=1))


class DAIN(InterpolationModel):
    """DAIN at t = 0.5 (module doc). ``pred`` is the rectified frame."""

    pad_multiple = 64
    pad_mode = "reflect"
    adapted_parameter_patterns = ("rectifyNet.*",)

    def __init__(self, config: DAINConfig = PAPER):
        super().__init__()
        self.config = config
        taps = config.filter_size**2
        if config.filter_size != 4:
            raise ValueError(f"DAIN's adaptive warping layer uses 4x4 kernels, got filter_size={config.filter_size}")
        self.initScaleNets_filter = kernel_trunk(config.kernel_widths)
        self.initScaleNets_filter1 = kernel_head(config.kernel_widths[0], taps)
        self.initScaleNets_filter2 = kernel_head(config.kernel_widths[0], taps)
        self.ctxNet = ContextExtractor(config.context_width)
        self.rectifyNet = RectifyNet(config.rectify_in_channels, config.rectify_width)
        # The original initialises these five with Xavier-uniform weights and zero biases (its
        # _initialize_weights runs before PWC-Net and the hourglass are built, which keep their own).
        for module in (self.initScaleNets_filter, self.initScaleNets_filter1, self.initScaleNets_filter2, self.ctxNet, self.rectifyNet):
            for layer in module.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.init.xavier_uniform_(layer.weight)
                    if layer.bias is not None:
                        nn.init.zeros_(layer.bias)
        self.flownets = PWCDCNet(config.flow)
        self.depthNet = megadepth_hourglass(config.depth_divisor)
        self._initialise_to_frame_averaging()

    @torch.no_grad()
    def _initialise_to_frame_averaging(self) -> None:
        """Start as the mean of the two frames (initial values only; the architecture is unchanged).

        * Every flow predictor of PWC-Net (``predict_flow6..2``, ``dc_conv7``) starts at zero, so all
          flows are 0 and the projected flows F_t0, F_t1 are 0 whatever the depth.
        * Each kernel head's last layer has zero weights and a bias of 1 on the four centre taps of
          the 4x4 window (taps 5, 6, 9, 10), 0 elsewhere: the adaptive warping layer then reduces
          to plain bilinear sampling, so with zero flow W_i = I_i and the blend is (I0 + I1) / 2.
        * ``rectifyNet``'s last layer starts at zero, so the residual is 0 and pred = blend.
        Weights that start at zero still get gradients (their inputs are nonzero).
        """
        for name in ("predict_flow6", "predict_flow5", "predict_flow4", "predict_flow3", "predict_flow2", "dc_conv7"):
            layer = getattr(self.flownets, name)
            layer.weight.zero_()
            layer.bias.zero_()
        size = self.config.filter_size
        centre = torch.zeros(size, size)
        centre[size // 2 - 1 : size // 2 + 1, size // 2 - 1 : size // 2 + 1] = 1.0
        for head in (self.initScaleNets_filter1, self.initScaleNets_filter2):
            head[2].weight.zero_()
            head[2].bias.copy_(centre.flatten())
        self.rectifyNet.block5[0].weight.zero_()
        self.rectifyNet.block5[0].bias.zero_()

    def interpolate(self, frame0: Tensor, frame1: Tensor) -> InterpolationOutput:
        batch = frame0.shape[0]
        frames = torch.cat((frame0, frame1), 0)  # both frames as one batch: [2B,3,H,W]

        log_depth = self.depthNet(frames)  # [2B,1,H,W]
        context = torch.cat((self.ctxNet(frames), log_depth.detach()), 1)
        trunk = run_kernel_trunk(self.initScaleNets_filter, torch.cat((frame0, frame1), 1))
        kernel0 = self.initScaleNets_filter1(trunk)
        kernel1 = self.initScaleNets_filter2(trunk)
        # DAIN's projection layer weights each source pixel by the value it is given, and DAIN gives
        # it 1e-6 + exp(-log_depth) (inverse depth: nearer pixels win). savfi's op weights by
        # 1 / depth, so it gets the reciprocal of that: the same weights exactly.
        projection_depth = 1.0 / (1e-6 + torch.exp(-log_depth))

        # PWC-Net in both directions, (I0 -> I1) then (I1 -> I0), decoded as one batch from the
        # pyramids of the two frames (each computed once). Its output is flow / 20 at 1/4
        # resolution; bilinear x4 upsampling gives full-resolution pixels (values unscaled).
        pyramid = self.flownets.features(frames)
        swapped = [torch.cat((level[batch:], level[:batch]), 0) for level in pyramid]
        flow = F.interpolate(self.flownets.decode(pyramid, swapped) * self.flownets.div_flow, scale_factor=4, mode="bilinear", align_corners=False)
        # [2B,2,H,W]: F_t0 (from F_01 and frame 0's depth), then F_t1 (from F_10 and frame 1's depth)
        # DAIN fills projection holes only when the flow needs no gradient
        # (DepthFlowProjectionModule(input.requires_grad): fillhole = not requires_grad): in
        # inference, and in the SAVFI meta system, whose flow network is frozen; not when training it.
        projected = kernels.depth_flow_projection(flow, projection_depth, time=TIME_STEP, fill_holes=not flow.requires_grad)
        flow_t0, flow_t1 = projected[:batch], projected[batch:]

        filters = torch.cat((kernel0, kernel1), 0)
        warped = kernels.filter_interpolation(frames, projected, filters)
        warped0, warped1 = warped[:batch], warped[batch:]
        # The context is warped with detached flows and kernels (as in the original), so the
        # rectification loss does not reach the flow and kernel networks through the context.
        warped_context = kernels.filter_interpolation(context, projected.detach(), filters.detach())
        context0, context1 = warped_context[:batch], warped_context[batch:]
        blend = warped0 * (1 - TIME_STEP) + warped1 * TIME_STEP
        rectify_input = torch.cat((blend, warped0, warped1, flow_t0, flow_t1, kernel0, kernel1, context0, context1), 1)
        pred = blend + self.rectifyNet(rectify_input)
        return InterpolationOutput(
            pred=pred,
            aux={
                "blend": blend,
                # PWC-Net's F_0->1 and F_1->0 before projection (motion supervision in pretraining)
                "flow_0_1": flow[:batch],
                "flow_1_0": flow[batch:],
                "flow_t0": flow_t0,
                "flow_t1": flow_t1,
                "log_depth0": log_depth[:batch],
                "log_depth1": log_depth[batch:],
            },
        )

    def loss(self, output: InterpolationOutput, target: Tensor) -> dict[str, Tensor]:
        """Charbonnier(pred - target, eps 1e-8), weight 1 (the SAVFI DAIN system's total loss)."""
        term = charbonnier(output.pred - target, CHARBONNIER_EPSILON)
        return {"charbonnier": term, "total": term}


@register_model("dain", {"paper": PAPER, "tiny": TINY}, motion_fields=FLOWS_BETWEEN_INPUTS)
def build_dain(config: DAINConfig) -> DAIN:
    """DAIN (Bao et al., CVPR 2019): depth-aware flow projection and adaptive warping."""
    return DAIN(config)


# Where the weights come from (savfi_core.backbones.pretrained). Original optimizer: DAIN trained with Adamax and per-module rates (1e-4 base in the paper); following the rule of the savfi issue ('Adamax for SepConv, Adam otherwise') it gets Adam, lr 1e-4 here.
register_weights("dain", {
    "tiny": PretrainedWeights(
        source="shipped", file="weights/tiny/dain.pt", provenance="weights/tiny/dain.json",
        sha256="4f649eaa1f9b316a6d2ba6a4ce32f8471c2d19f28acf5cf06f4f7e6258e29e51",
        license="MIT (trained by savfi)", optimizer="adam", lr=0.0001, loss="Charbonnier on the rectified output", original_name="dain"),
    "paper": PretrainedWeights(
        source="release", file="dain_base.pth", sha256=None, license=None, optimizer="adam", lr=0.0001, loss="Charbonnier on the rectified output",
        original_name="dain", url="https://github.com/myungsub/meta-interpolation (pretrained_models/)",
        notes="the authors' base checkpoint; layout in ../shared/fixtures/checkpoint_manifests"),
})
