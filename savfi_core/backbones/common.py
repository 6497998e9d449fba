"""What every backbone shares: the output type, the base class, and size-padding."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class InterpolationOutput:
    """The result of ``model(frame0, frame1)``.

    pred: the middle frame, [B,3,H,W], RGB in [0,1] space (not necessarily clamped).
    aux: whatever the model's own loss needs besides ``pred`` (flows, warped frames, ...),
         already cropped back to [H,W] where spatial.
    """

    pred: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class MotionField:
    """An ``aux`` key of a model's output that is a motion field, [B,2,H,W] in pixels (x, y), and
    its relation to s, the symmetric displacement through the middle frame that the classical
    flow teacher estimates (``savfi_core.train.flow_teacher``: frame0 at x - s and frame1 at x + s
    meet at the middle frame's x): the field should equal ``factor * s``."""

    key: str
    factor: float


# The conventions the backbones use; each registers its own (register_model(motion_fields=...)).
# F_0->1 (frame1 at x + F ~ frame0 at x; SuperSloMo, RRIN, DAIN's PWC-Net) spans the whole gap:
# 2 s, and F_1->0 -2 s. F_0->1 lives at frame0's pixels and s at the middle frame's: for the
# smooth motion the teacher finds, the difference is below its integer resolution.
FLOWS_BETWEEN_INPUTS = (MotionField("flow_0_1", 2.0), MotionField("flow_1_0", -2.0))
# DVF's voxel flow d: frame0 sampled at x - d, frame1 at x + d, so d = s.
SYMMETRIC_FLOW = (MotionField("flow", 1.0),)
# RIFE's intermediate flows at the middle frame: frame0 at x + F_t->0 (so F_t->0 = -s) and frame1
# at x + F_t->1 (= s).
INTERMEDIATE_FLOWS = (MotionField("flow_t_0", -1.0), MotionField("flow_t_1", 1.0))


def linear_intermediate_flows(flow_0_1: Tensor, flow_1_0: Tensor, t: float) -> tuple[Tensor, Tensor]:
    """(F_t->0, F_t->1) from F_0->1 and F_1->0 under linear motion (Super-SloMo, eq. 4; RRIN):

        F_t->0 = -(1 - t) t F_0->1 + t^2 F_1->0,   F_t->1 = (1 - t)^2 F_0->1 - t (1 - t) F_1->0

    At t = 1/2 the fields ``FLOWS_BETWEEN_INPUTS`` prescribe for a symmetric displacement s
    (F_0->1 = 2 s, F_1->0 = -2 s) give exactly F_t->0 = -s and F_t->1 = s.
    """
    flow_t_0 = -(1 - t) * t * flow_0_1 + t * t * flow_1_0
    flow_t_1 = (1 - t) * (1 - t) * flow_0_1 - t * (1 - t) * flow_1_0
    return flow_t_0, flow_t_1


class InterpolationModel(nn.Module):
    """Base class of the six backbones.

    Subclasses implement ``interpolate(frame0, frame1)`` on padded inputs and ``loss``. ``forward``
    pads any [B,3,H,W] input to ``pad_multiple`` (the downsampling factor the architecture needs)
    and crops every spatial output back, so callers never think about sizes.

    Class attributes a subclass sets:
      pad_multiple: int               spatial multiple the network needs
      pad_mode: str                   'reflect', 'replicate' or 'constant' (zeros), as the original pads
      pad_anchor: str                 'center' (pad both sides evenly) or 'top_left' (pad only the
                                      bottom and right, as RIFE's inference code does)
      pad_margin: int                 the least padding on every side ('center' only; 0: pad only up
                                      to the multiple). A config may set it per instance (DVF's)
      supports_time: bool             whether ``forward(..., time=t)`` can ask for any 0 < t < 1
                                      (the others always predict the middle, t = 0.5)
      checkpoint_name_map: list of (original_prefix, our_prefix) pairs applied to checkpoint keys
      checkpoint_training_only_prefixes: key prefixes of the authors' file that inference never
                           uses (a distillation teacher, ...), dropped by this explicit list
      checkpoint_sections: dict mapping a wrapper key of the original file (e.g. 'state_dictFC')
                           to the prefix its keys get in our state_dict (e.g. 'flowComp.')
      adapted_parameter_patterns: names (fnmatch patterns) adapted at test time by default
      independent_batch_items: True when the forward pass treats batch items independently (no
                           batch statistics) and every loss term is a mean over all elements:
                           then the loss of n equal-shape batches concatenated is the mean of
                           their n losses, and the meta-learner runs its support triplets as one
                           batch (tests/test_meta_fast_paths.py checks it per backbone)
    """

    pad_multiple: int = 1
    pad_mode: str = "reflect"
    pad_anchor: str = "center"
    pad_margin: int = 0
    supports_time: bool = False
    checkpoint_name_map: list[tuple[str, str]] = []
    checkpoint_sections: dict[str, str] = {}
    checkpoint_training_only_prefixes: tuple[str, ...] = ()
    adapted_parameter_patterns: tuple[str, ...] = ("*",)
    independent_batch_items: bool = False

    def forward(self, frame0: Tensor, frame1: Tensor, time: float | Tensor | None = None) -> InterpolationOutput:
        """The frame at ``time`` between frame0 (t = 0) and frame1 (t = 1); the middle when None.

        ``time`` is a float or a [B] tensor in (0, 1); only models with ``supports_time`` take it.
        """
        if frame0.shape != frame1.shape or frame0.dim() != 4 or frame0.shape[1] != 3:
            raise ValueError(
                f"{type(self).__name__} expects two [B,3,H,W] frames of one shape, got "
                f"{tuple(frame0.shape)} and {tuple(frame1.shape)}"
            )
        padded0, crop = pad_to_multiple(frame0, self.pad_multiple, self.pad_mode, self.pad_anchor, self.pad_margin)
        padded1, _ = pad_to_multiple(frame1, self.pad_multiple, self.pad_mode, self.pad_anchor, self.pad_margin)
        if time is None:
            output = self.interpolate(padded0, padded1)
        elif not self.supports_time:
            raise ValueError(
                f"{type(self).__name__} predicts only the middle frame (t = 0.5); it takes no time={time!r}. "
                "Models that take any 0 < t < 1: those with supports_time (e.g. rife_v4)"
            )
        else:
            output = self.interpolate(padded0, padded1, time=_check_time(time, frame0))
        return InterpolationOutput(
            pred=crop(output.pred),
            aux={name: crop(value) if _is_spatial(value, padded0) else value for name, value in output.aux.items()},
        )

    def interpolate(self, frame0: Tensor, frame1: Tensor) -> InterpolationOutput:  # pragma: no cover
        raise NotImplementedError

    def loss(self, output: InterpolationOutput, target: Tensor) -> dict[str, Tensor]:  # pragma: no cover
        """Named loss terms and their weighted sum under ``'total'``."""
        raise NotImplementedError


def _check_time(time: float | Tensor, frame: Tensor) -> Tensor:
    """A float or [B] tensor strictly inside (0, 1) -> a [B] tensor on the frame's device and dtype."""
    values = torch.as_tensor(time, dtype=frame.dtype, device=frame.device).reshape(-1)
    if values.numel() == 1:
        values = values.expand(frame.shape[0])
    if values.numel() != frame.shape[0]:
        raise ValueError(f"time must be one value or one per batch item ({frame.shape[0]}), got {values.numel()}")
    if not bool(((values > 0) & (values < 1)).all()):
        raise ValueError(f"time must lie strictly between 0 and 1, got {values.tolist()}")
    return values


def _is_spatial(value: Tensor, padded: Tensor) -> bool:
    return isinstance(value, Tensor) and value.dim() >= 3 and tuple(value.shape[-2:]) == tuple(padded.shape[-2:])


def pad_to_multiple(
    image: Tensor, multiple: int, mode: str = "reflect", anchor: str = "center", margin: int = 0
) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Pad [B,C,H,W] up to a multiple of ``multiple``; return the crop back.

    anchor "center" pads both sides evenly; "top_left" keeps the image at the top left and pads
    only the bottom and right (as RIFE's inference code does with zeros). margin: at least that
    much padding on every side ("center" only), so that no image edge meets the network's own
    zero padding.

    Reflection cannot pad by more than the image size minus one (tiny crops padded to 128);
    those pads are done in several reflection rounds, so a small image is mirrored repeatedly
    instead of switching to a different padding rule.
    """
    height, width = image.shape[-2:]
    if anchor not in ("center", "top_left"):
        raise ValueError(f"pad anchor must be 'center' or 'top_left', got {anchor!r}")
    if margin < 0 or (margin and anchor != "center"):
        raise ValueError(f"pad margin must be >= 0, and 0 unless the anchor is 'center'; got {margin} with {anchor!r}")
    target_height = math.ceil((height + 2 * margin) / multiple) * multiple
    target_width = math.ceil((width + 2 * margin) / multiple) * multiple
    top = (target_height - height) // 2 if anchor == "center" else 0
    left = (target_width - width) // 2 if anchor == "center" else 0
    bottom = target_height - height - top
    right = target_width - width - left
    padded = _pad(image, left, right, top, bottom, mode)

    def crop(tensor: Tensor) -> Tensor:
        return tensor[..., top : top + height, left : left + width]

    return padded, crop


def _pad(image: Tensor, left: int, right: int, top: int, bottom: int, mode: str) -> Tensor:
    if left == right == top == bottom == 0:
        return image
    if mode != "reflect":
        return F.pad(image, (left, right, top, bottom), mode=mode)
    while left or right or top or bottom:
        height, width = image.shape[-2:]
        step = [min(left, width - 1), min(right, width - 1), min(top, height - 1), min(bottom, height - 1)]
        if max(step) == 0:  # a 1-pixel-wide image cannot be reflected
            return F.pad(image, (left, right, top, bottom), mode="replicate")
        image = F.pad(image, tuple(step), mode="reflect")
        left, right, top, bottom = left - step[0], right - step[1], top - step[2], bottom - step[3]
    return image


def charbonnier(difference: Tensor, epsilon: float = 1e-6) -> Tensor:
    """Mean of sqrt(d^2 + eps^2): a differentiable L1 (DAIN's loss, eps as each model sets)."""
    return torch.sqrt(difference * difference + epsilon * epsilon).mean()


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that normalises with its running statistics (eval mode) and never updates them.

    y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, with weight and bias learned.
    Same parameters and buffers (names and shapes) as ``nn.BatchNorm2d``, so checkpoints load
    unchanged; ``.train()`` does not switch it to batch statistics, matching SAVFI's DVF, which
    fine-tunes and adapts a network pretrained elsewhere. DVF's layers and, with
    ``RRINConfig.flow_batchnorm``, RRIN's flow U-Net use it.

    Pretraining from scratch is the exception (:func:`batch_statistics_while_training`): the
    original DVF was trained with ordinary BatchNorm, and without it a tiny DVF trained from
    scratch switches itself off (see that function).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pretraining_momentum: float | None = None  # set by batch_statistics_while_training

    @property
    def updates_running_statistics(self) -> bool:  # read by MetaLearner.task_batching_obstacle (vmap over tasks)
        return self.pretraining_momentum is not None and self.training

    def forward(self, input: Tensor) -> Tensor:
        if self.updates_running_statistics:
            return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias, training=True,
                                momentum=self.pretraining_momentum, eps=self.eps)
        return F.batch_norm(
            input, self.running_mean, self.running_var, self.weight, self.bias, training=False, momentum=0.0, eps=self.eps
        )


@contextlib.contextmanager
def batch_statistics_while_training(model: nn.Module, momentum: float) -> Iterator[int]:
    """In train mode, ``model``'s frozen BatchNorm layers normalise with batch statistics and update
    their running statistics (PyTorch's ``momentum``), as the original DVF's training did; in eval
    mode, and after the context, they are frozen as ever. Yields how many layers it switched.

    Why: with BatchNorm frozen at (0, 1), nothing centres the ReLU features, which are all >= 0.
    The output conv starts at zero; its first Adam steps move every weight of a channel by about
    the learning rate in one direction, so it adds a multiple of the features' sum to the flow
    everywhere, and the cheapest way for the gradient to remove that error is to shrink the
    features. On 2026-12-06 a tiny DVF distillation run (Adam 1e-3) had 3 of the 12 channels feeding
    its output active by step 60 (mean activation 0.002; 0.49 at initialisation) and predicted
    0.005 px of motion at step 1,900; with Adam 1e-4 the mean activation was 0.008 at step 100.
    """
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f"momentum must be in (0, 1], got {momentum}")
    layers = [module for module in model.modules() if isinstance(module, FrozenBatchNorm2d)]
    for layer in layers:
        layer.pretraining_momentum = momentum
    try:
        yield len(layers)
    finally:
        for layer in layers:
            layer.pretraining_momentum = None
