"""What every backbone shares: the output type, the base class, and size-padding."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

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


class InterpolationModel(nn.Module):
    """Base class of the six backbones.

    Subclasses implement ``interpolate(frame0, frame1)`` on padded inputs and ``loss``. ``forward``
    pads any [B,3,H,W] input to ``pad_multiple`` (the downsampling factor the architecture needs)
    and crops every spatial output back, so callers never think about sizes.

    Class attributes a subclass sets:
      pad_multiple: int               spatial multiple the network needs
      pad_mode: str                   'reflect' or 'replicate' (as the original code pads)
      checkpoint_name_map: list of (original_prefix, our_prefix) pairs applied to checkpoint keys
      checkpoint_sections: dict mapping a wrapper key of the original file (e.g. 'state_dictFC')
                           to the prefix its keys get in our state_dict (e.g. 'flowComp.')
      adapted_parameter_patterns: names (fnmatch patterns) adapted at test time by default
    """

    pad_multiple: int = 1
    pad_mode: str = "reflect"
    checkpoint_name_map: list[tuple[str, str]] = []
    checkpoint_sections: dict[str, str] = {}
    adapted_parameter_patterns: tuple[str, ...] = ("*",)

    def forward(self, frame0: Tensor, frame1: Tensor) -> InterpolationOutput:
        if frame0.shape != frame1.shape or frame0.dim() != 4 or frame0.shape[1] != 3:
            raise ValueError(
                f"{type(self).__name__} expects two [B,3,H,W] frames of one shape, got "
                f"{tuple(frame0.shape)} and {tuple(frame1.shape)}"
            )
        height, width = frame0.shape[-2:]
        padded0, crop = pad_to_multiple(frame0, self.pad_multiple, self.pad_mode)
        padded1, _ = pad_to_multiple(frame1, self.pad_multiple, self.pad_mode)
        output = self.interpolate(padded0, padded1)
        return InterpolationOutput(
            pred=crop(output.pred),
            aux={name: crop(value) if _is_spatial(value, padded0) else value for name, value in output.aux.items()},
        )

    def interpolate(self, frame0: Tensor, frame1: Tensor) -> InterpolationOutput:  # pragma: no cover
        raise NotImplementedError

    def loss(self, output: InterpolationOutput, target: Tensor) -> dict[str, Tensor]:  # pragma: no cover
        """Named loss terms and their weighted sum under ``'total'``."""
        raise NotImplementedError


def _is_spatial(value: Tensor, padded: Tensor) -> bool:
    return isinstance(value, Tensor) and value.dim() >= 3 and tuple(value.shape[-2:]) == tuple(padded.shape[-2:])


def pad_to_multiple(
    image: Tensor, multiple: int, mode: str = "reflect"
) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Pad [B,C,H,W] evenly on both sides up to a multiple of ``multiple``; return the crop back.

    Reflection cannot pad by more than the image size minus one (tiny crops padded to 128);
    those pads are done in several reflection rounds, so a small image is mirrored repeatedly
    instead of switching to a different padding rule.
    """
    height, width = image.shape[-2:]
    target_height = math.ceil(height / multiple) * multiple
    target_width = math.ceil(width / multiple) * multiple
    top = (target_height - height) // 2
    left = (target_width - width) // 2
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
