"""Super SloMo (Jiang et al., CVPR 2018), as in the SAVFI repository's ``superslomo/model.py``.

Two U-Nets. ``flowComp`` (6 -> 4 channels) estimates the bidirectional flows F_0->1, F_1->0 (in
pixels) from the normalised frames I0, I1. At time t (0.5 here, index 3 of linspace(0.125, 0.875, 7)
in the original) the intermediate flows are approximated (paper eq. 4) as

    F_t->0 = -(1-t) t F_0->1 + t^2 F_1->0,     F_t->1 = (1-t)^2 F_0->1 - t(1-t) F_1->0.

``arbTimeFlowIntrp`` (20 -> 5 channels) sees I0, I1, F_0->1, F_1->0, F_t->1, F_t->0 and the warped
frames g(I1, F_t->1), g(I0, F_t->0), and returns flow residuals dF_t->0, dF_t->1 and a visibility
logit v. With V_t<-0 = sigmoid(v), V_t<-1 = 1 - V_t<-0 (paper eq. 1):

    I_t = ((1-t) V_t<-0 g(I0, F_t->0 + dF_t->0) + t V_t<-1 g(I1, F_t->1 + dF_t->1))
          / ((1-t) V_t<-0 + t V_t<-1)

where g(I, F) samples I at p + F(p) (``savfi_core.kernels.backwarp``, zero padding). All of this
runs on frames normalised as I - mean, mean = [0.429, 0.431, 0.397] (std 1); ``pred`` and the
warped frames in ``aux`` are returned with the mean added back, i.e. in [0,1] space.

Each U-Net: 7x7 conv, 7x7 conv, five ``down`` blocks (2x average pool, two convs; 5x5 in the first,
3x3 after), five ``up`` blocks (bilinear x2 with align_corners=False, conv, concat skip, conv), a
3x3 conv; every conv including the last is followed by leaky ReLU (slope 0.1), as in the original.

Warping convention. The original divides pixel coordinates by W (not W-1) and calls grid_sample
with its default align_corners, which samples at x + u - 0.5 under PyTorch >= 1.3 (what SAVFI ran)
and at x (W-1)/W + u under PyTorch 0.4 (what the released Super-SloMo weights were trained with).
Here frames are sampled at exactly x + u, with zero padding like grid_sample's default.

Checkpoints: ``superslomo_base.pth`` holds ``state_dictFC`` and ``state_dictAT``; our submodules
are the original ``flowComp`` and ``arbTimeFlowIntrp``, so ``checkpoint_sections`` maps one to one.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from savfi_core.backbones.common import FLOWS_BETWEEN_INPUTS, InterpolationModel, InterpolationOutput, linear_intermediate_flows
from savfi_core.backbones.pretrained import PretrainedWeights, register_weights
from savfi_core.backbones.registry import register_model
from savfi_core.checkpoint import CheckpointError, safe_load
from savfi_core.kernels import backwarp

logger = logging.getLogger(__name__)

# Dataset normalisation of the original (SuperSloMo's own mean; std 1).
FRAME_MEAN = (0.429, 0.431, 0.397)
# Time of the middle frame: index 3 of numpy.linspace(0.125, 0.875, 7).
MIDDLE_TIME = 0.5
# Loss weights of the original SuperSloMoLoss: 204 * reconstruction L1 + 102 * warping L1
# + 0.005 * perceptual (VGG16 conv4_3 MSE) + 1 * flow smoothness.
RECONSTRUCTION_WEIGHT = 204.0
WARPING_WEIGHT = 102.0
PERCEPTUAL_WEIGHT = 0.005
SMOOTHNESS_WEIGHT = 1.0

# VGG16 ``features`` up to conv4_3 (torchvision indices 0..21): convs at these indices, ReLU after
# each except the last, 2x2 max pooling at 4, 9 and 16.
VGG16_CONV4_3_LAYERS = (
    (0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
    (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512),
)  # fmt: skip
VGG16_POOL_INDICES = (4, 9, 16)

# The missing-VGG16 notice is given once per process, not once per model copy (meta-learning
# loops copy models often).
_missing_vgg_warned = False


@dataclass(frozen=True)
class SuperSloMoConfig:
    """Widths of both U-Nets: conv1/conv2, down1..down5 (the up path mirrors them).

    vgg16_weights: optional path of a VGG16 state_dict with torchvision names
        (``features.N.weight``/``bias``); when given, the loss adds the perceptual term.
    """

    widths: tuple[int, int, int, int, int, int] = (32, 64, 128, 256, 512, 512)
    vgg16_weights: str | None = None


PAPER = SuperSloMoConfig()
TINY = SuperSloMoConfig(widths=(8, 16, 32, 48, 64, 64))


class down(nn.Module):  # noqa: N801 -- the original class name; keys are down1.conv1.weight ...
    """2x average pooling, then two (conv + leaky ReLU 0.1), same padding."""

    def __init__(self, in_channels: int, out_channels: int, filter_size: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, filter_size, padding=(filter_size - 1) // 2)
        self.conv2 = nn.Conv2d(out_channels, out_channels, filter_size, padding=(filter_size - 1) // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = F.avg_pool2d(x, 2)
        x = F.leaky_relu(self.conv1(x), negative_slope=0.1)
        return F.leaky_relu(self.conv2(x), negative_slope=0.1)


class up(nn.Module):  # noqa: N801 -- the original class name
    """Bilinear x2, conv + leaky ReLU, concatenate the skip, conv + leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(2 * out_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = F.leaky_relu(self.conv1(x), negative_slope=0.1)
        return F.leaky_relu(self.conv2(torch.cat([x, skip], dim=1)), negative_slope=0.1)


class UNet(nn.Module):
    """Super SloMo's U-Net; widths (w0..w5) = (32, 64, 128, 256, 512, 512) in the paper."""

    def __init__(self, in_channels: int, out_channels: int, widths: tuple[int, ...]):
        super().__init__()
        w0, w1, w2, w3, w4, w5 = widths
        self.conv1 = nn.Conv2d(in_channels, w0, 7, padding=3)
        self.conv2 = nn.Conv2d(w0, w0, 7, padding=3)
        self.down1 = down(w0, w1, 5)
        self.down2 = down(w1, w2, 3)
        self.down3 = down(w2, w3, 3)
        self.down4 = down(w3, w4, 3)
        self.down5 = down(w4, w5, 3)
        self.up1 = up(w5, w4)
        self.up2 = up(w4, w3)
        self.up3 = up(w3, w2)
        self.up4 = up(w2, w1)
        self.up5 = up(w1, w0)
        self.conv3 = nn.Conv2d(w0, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.leaky_relu(self.conv1(x), negative_slope=0.1)
        skip1 = F.leaky_relu(self.conv2(x), negative_slope=0.1)
        skip2 = self.down1(skip1)
        skip3 = self.down2(skip2)
        skip4 = self.down3(skip3)
        skip5 = self.down4(skip4)
        x = self.down5(skip5)
        x = self.up1(x, skip5)
        x = self.up2(x, skip4)
        x = self.up3(x, skip3)
        x = self.up4(x, skip2)
        x = self.up5(x, skip1)
        return F.leaky_relu(self.conv3(x), negative_slope=0.1)


class SuperSloMo(InterpolationModel):
    """Super SloMo (Jiang et al., CVPR 2018): flow U-Net + flow-refinement/visibility U-Net, t = 0.5."""

    pad_multiple = 64
    independent_batch_items = True
    pad_mode = "reflect"
    checkpoint_name_map: list[tuple[str, str]] = []
    checkpoint_sections = {"state_dictFC": "flowComp.", "state_dictAT": "arbTimeFlowIntrp."}

    def __init__(self, config: SuperSloMoConfig = PAPER, vgg16_weights: str | os.PathLike | None = None):
        super().__init__()
        self.config = config
        self.flowComp = UNet(6, 4, config.widths)
        self.arbTimeFlowIntrp = UNet(20, 5, config.widths)
        self.register_buffer("frame_mean", torch.tensor(FRAME_MEAN).view(1, 3, 1, 1), persistent=False)
        self._initialise_towards_averaging()
        weights = vgg16_weights if vgg16_weights is not None else config.vgg16_weights
        # Kept outside the module tree (a plain list) so it is not part of state_dict(), parameters()
        # or functional_call: it is a fixed loss network, not a part of Super SloMo.
        self._perceptual_network: list[nn.Sequential] = [load_vgg16_conv4_3(weights)] if weights is not None else []

    def _initialise_towards_averaging(self) -> None:
        """Zero the last conv of both U-Nets, so the untrained network returns the frame average.

        flowComp's zero output gives F_0->1 = F_1->0 = 0, hence F_t->0 = F_t->1 = 0; the zero
        residuals and visibility logit of arbTimeFlowIntrp give V_t<-0 = sigmoid(0) = 1/2 = V_t<-1,
        so I_t = (0.5 * 0.5 I0 + 0.5 * 0.5 I1) / 0.5 = (I0 + I1) / 2. Every other layer keeps
        PyTorch's default initialisation. Initial values only; same architecture.
        """
        with torch.no_grad():
            for unet in (self.flowComp, self.arbTimeFlowIntrp):
                unet.conv3.weight.zero_()
                unet.conv3.bias.zero_()

    @property
    def perceptual_network(self) -> nn.Sequential | None:
        """VGG16 features[:22] used by the perceptual loss term, or None when no weights were given."""
        return self._perceptual_network[0] if self._perceptual_network else None

    def interpolate(self, frame0: Tensor, frame1: Tensor) -> InterpolationOutput:
        """frame0, frame1: [B,3,H,W] in [0,1], H and W multiples of 64 -> pred [B,3,H,W] in [0,1].

        aux (what ``loss`` needs; spatial entries are cropped back by ``forward``):
          'frame0', 'frame1': the inputs; 'flow_0_1', 'flow_1_0': F_0->1, F_1->0 in pixels;
          'warped_0_t', 'warped_1_t': g(I0, F_t->0), g(I1, F_t->1) (before refinement);
          'warped_0_1', 'warped_1_0': g(I0, F_1->0) ~ I1 and g(I1, F_0->1) ~ I0;
          'visibility_0': V_t<-0 [B,1,H,W]. Frames are in [0,1] space.
        """
        mean = self.frame_mean.to(frame0.dtype)
        image0 = frame0 - mean
        image1 = frame1 - mean
        t = MIDDLE_TIME

        flows = self.flowComp(torch.cat([image0, image1], dim=1))
        flow_0_1 = flows[:, 0:2]
        flow_1_0 = flows[:, 2:4]
        flow_t_0, flow_t_1 = linear_intermediate_flows(flow_0_1, flow_1_0, t)

        warped_0_t = backwarp(image0, flow_t_0, padding_mode="zeros")
        warped_1_t = backwarp(image1, flow_t_1, padding_mode="zeros")
        refinement = self.arbTimeFlowIntrp(
            torch.cat([image0, image1, flow_0_1, flow_1_0, flow_t_1, flow_t_0, warped_1_t, warped_0_t], dim=1)
        )
        refined_t_0 = flow_t_0 + refinement[:, 0:2]
        refined_t_1 = flow_t_1 + refinement[:, 2:4]
        visibility_0 = torch.sigmoid(refinement[:, 4:5])
        visibility_1 = 1 - visibility_0

        weight0 = (1 - t) * visibility_0
        weight1 = t * visibility_1
        blended = (
            weight0 * backwarp(image0, refined_t_0, padding_mode="zeros")
            + weight1 * backwarp(image1, refined_t_1, padding_mode="zeros")
        ) / (weight0 + weight1)

        warped_0_1 = backwarp(image0, flow_1_0, padding_mode="zeros")
        warped_1_0 = backwarp(image1, flow_0_1, padding_mode="zeros")
        return InterpolationOutput(
            pred=blended + mean,
            aux={
                "frame0": frame0,
                "frame1": frame1,
                "flow_0_1": flow_0_1,
                "flow_1_0": flow_1_0,
                "warped_0_t": warped_0_t + mean,
                "warped_1_t": warped_1_t + mean,
                "warped_0_1": warped_0_1 + mean,
                "warped_1_0": warped_1_0 + mean,
                "visibility_0": visibility_0,
            },
        )

    def loss(self, output: InterpolationOutput, target: Tensor) -> dict[str, Tensor]:
        """SuperSloMoLoss of the original; every returned term is already weighted, total = their sum.

        reconstruction = 204 * mean|I_t - target|
        warping        = 102 * (mean|g(I0,F_t->0) - target| + mean|g(I1,F_t->1) - target|
                                + mean|g(I0,F_1->0) - I1| + mean|g(I1,F_0->1) - I0|)
        smoothness     = sum over F in (F_0->1, F_1->0) of mean|dF/dx| + mean|dF/dy|
                         (forward differences, each mean over its own elements)
        perceptual     = 0.005 * mean((phi(I_t) - phi(target))^2), phi = VGG16 conv4_3 features of
                         the mean-subtracted frames (as the original feeds them); only when VGG16
                         weights were given, else omitted with a one-time warning.
        L1 terms are the same in [0,1] and in mean-subtracted space (the mean cancels).
        """
        aux = output.aux
        pred = output.pred
        terms: dict[str, Tensor] = {}
        terms["reconstruction"] = RECONSTRUCTION_WEIGHT * (pred - target).abs().mean()
        terms["warping"] = WARPING_WEIGHT * (
            (aux["warped_0_t"] - target).abs().mean()
            + (aux["warped_1_t"] - target).abs().mean()
            + (aux["warped_0_1"] - aux["frame1"]).abs().mean()
            + (aux["warped_1_0"] - aux["frame0"]).abs().mean()
        )
        terms["smoothness"] = SMOOTHNESS_WEIGHT * (_smoothness(aux["flow_0_1"]) + _smoothness(aux["flow_1_0"]))
        network = self.perceptual_network
        if network is not None:
            terms["perceptual"] = PERCEPTUAL_WEIGHT * self._perceptual_mse(network, pred, target)
        else:
            _warn_missing_vgg_once()
        terms["total"] = sum(terms.values())
        return terms

    def _perceptual_mse(self, network: nn.Sequential, pred: Tensor, target: Tensor) -> Tensor:
        reference = next(network.parameters())
        if reference.device != pred.device or reference.dtype != pred.dtype:
            network.to(device=pred.device, dtype=pred.dtype)
        mean = self.frame_mean.to(pred.dtype)
        with torch.no_grad():
            target_features = network(target - mean)
        return F.mse_loss(network(pred - mean), target_features)


def _smoothness(flow: Tensor) -> Tensor:
    """mean |F(x+1,y) - F(x,y)| + mean |F(x,y+1) - F(x,y)| over a [B,2,H,W] flow."""
    horizontal = (flow[..., :, 1:] - flow[..., :, :-1]).abs().mean()
    vertical = (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean()
    return horizontal + vertical


def _warn_missing_vgg_once() -> None:
    global _missing_vgg_warned
    if _missing_vgg_warned:
        return
    _missing_vgg_warned = True
    message = (
        "SuperSloMo loss: no VGG16 weights given (vgg16_weights=None), so the perceptual term "
        "0.005 * MSE(VGG16 conv4_3) is omitted; the other terms are as in the original. Pass a local "
        "torchvision-style VGG16 state_dict via create_model('superslomo', vgg16_weights=PATH) to use it."
    )
    logger.warning(message)
    warnings.warn(message, stacklevel=3)


def build_vgg16_conv4_3() -> nn.Sequential:
    """VGG16 ``features[:22]`` (conv1_1 .. conv4_3, no ReLU after conv4_3), torchvision layer indices."""
    layers: list[nn.Module] = []
    convolutions = {index: (in_channels, out_channels) for index, in_channels, out_channels in VGG16_CONV4_3_LAYERS}
    for index in range(22):
        if index in convolutions:
            layers.append(nn.Conv2d(*convolutions[index], kernel_size=3, padding=1))
        elif index in VGG16_POOL_INDICES:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


def load_vgg16_conv4_3(path: str | os.PathLike) -> nn.Sequential:
    """Build VGG16 features[:22] and load ``features.N.weight/bias`` from a torchvision-style file.

    Further entries of a full VGG16 file (deeper ``features.*``, ``classifier.*``) are ignored; any
    missing or mis-shaped conv entry raises ``CheckpointError`` naming the file and the keys. The
    parameters are frozen (requires_grad False): the loss network is fixed, as in the original.
    """
    path = Path(path)
    state = safe_load(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a VGG16 state_dict, got {type(state).__name__}")
    network = build_vgg16_conv4_3()
    wanted = {f"features.{key}": value for key, value in network.state_dict().items()}
    missing = [key for key in wanted if key not in state]
    misshaped = [
        f"{key}: file {tuple(state[key].shape)} vs VGG16 {tuple(value.shape)}"
        for key, value in wanted.items()
        if key in state and (not isinstance(state[key], Tensor) or tuple(state[key].shape) != tuple(value.shape))
    ]
    if missing or misshaped:
        problems = []
        if missing:
            problems.append(f"missing ({len(missing)}): {', '.join(missing)}")
        if misshaped:
            problems.append(f"wrong shape ({len(misshaped)}): {', '.join(misshaped)}")
        raise CheckpointError(f"{path} is not a VGG16 features state_dict: " + "; ".join(problems))
    network.load_state_dict({key[len("features.") :]: state[key] for key in wanted})
    network.requires_grad_(False)
    network.eval()
    return network


@register_model("superslomo", {"paper": PAPER, "tiny": TINY}, motion_fields=FLOWS_BETWEEN_INPUTS)
def build_superslomo(config: SuperSloMoConfig) -> SuperSloMo:
    """Super SloMo (Jiang et al., CVPR 2018), bidirectional flow and visibility U-Nets."""
    return SuperSloMo(config)


# Where the weights come from (savfi_core.backbones.pretrained). Original optimizer: Super-SloMo (Jiang et al. 2018, Sec. 4.1): Adam, lr 1e-4.
register_weights("superslomo", {
    "tiny": PretrainedWeights(
        source="shipped", file="weights/tiny/superslomo.pt", provenance="weights/tiny/superslomo.json",
        sha256="491ded86c104a9483a7cafb0f6cd8ee4e48e8ccb26169d035b0c30304a7d6b42",
        license="MIT (trained by savfi)", optimizer="adam", lr=0.0001, loss="204*L1 + 102*warp L1 + 0.005*VGG16-conv4_3 MSE + smoothness", original_name="superslomo"),
    "paper": PretrainedWeights(
        source="release", file="superslomo_base.pth", sha256=None, license=None, optimizer="adam", lr=0.0001, loss="204*L1 + 102*warp L1 + 0.005*VGG16-conv4_3 MSE + smoothness",
        original_name="superslomo", url="https://github.com/myungsub/meta-interpolation (pretrained_models/)",
        notes="the authors' base checkpoint; layout in ../shared/fixtures/checkpoint_manifests"),
})
