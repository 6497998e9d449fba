"""Training-time augmentation: seeded per-sample generators, random and "moving" crops, flips.

Randomness comes from a ``torch.Generator`` seeded from (seed, epoch, index), not from one
generator advanced as items are read: the crop of item ``i`` is then the same whichever
DataLoader worker reads it and in whatever order, and two datasets built with the same seed
give identical crops. Datasets call ``set_epoch(e)`` to draw new crops each epoch.
"""
from __future__ import annotations

import numpy as np
import torch

from .core import DatasetError

__all__ = [
    "sample_generator",
    "normalize_crop_size",
    "random_crop_origin",
    "choose_moving_crop",
    "crop_frames",
    "reverse_time",
]


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A torch.Generator whose stream depends only on (seed, epoch, index).

    ``numpy.random.SeedSequence`` mixes the three integers so that neighbouring indices or
    seeds give unrelated streams.
    """
    mixed = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator()
    generator.manual_seed(int(mixed[0]) << 32 | int(mixed[1]))
    return generator


def normalize_crop_size(crop_size: int | tuple[int, int]) -> tuple[int, int]:
    """``256`` -> ``(256, 256)``; ``(h, w)`` stays; anything non-positive raises."""
    if isinstance(crop_size, int):
        crop_size = (crop_size, crop_size)
    height, width = (int(value) for value in crop_size)
    if height < 1 or width < 1:
        raise DatasetError(f"crop_size must be positive, got {crop_size}")
    return height, width


def _check_crop_fits(frames: torch.Tensor, crop_height: int, crop_width: int, name: str) -> None:
    height, width = frames.shape[-2:]
    if crop_height > height or crop_width > width:
        raise DatasetError(
            f"crop {crop_width}x{crop_height} does not fit {name} of size {width}x{height} (width x height)"
        )


def random_crop_origin(
    height: int, width: int, crop_size: tuple[int, int], generator: torch.Generator
) -> tuple[int, int]:
    """Uniform (top, left) such that the crop lies inside an H x W frame."""
    crop_height, crop_width = crop_size
    top = int(torch.randint(0, height - crop_height + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - crop_width + 1, (1,), generator=generator))
    return top, left


def choose_moving_crop(
    frames: torch.Tensor,
    crop_size: int | tuple[int, int],
    generator: torch.Generator,
    compare: tuple[int, int],
    candidates: int = 8,
    name: str = "sample",
) -> tuple[int, int]:
    """Among ``candidates`` uniform crops, the (top, left) whose frames differ most.

    Most uniform crops of real footage are nearly static (sky, walls), which teach an
    interpolator only to average. The score of a candidate crop C is the mean absolute
    difference between the two frames that bracket the target,

        score(C) = mean_{c, y, x in C} | frames[a, c, y, x] - frames[b, c, y, x] |,
        (a, b) = compare, e.g. (target - 1, target + 1),

    and the highest score wins (the first drawn wins ties). ``candidates=1`` is a plain
    uniform crop. Works on [N, 3, H, W]; NaN positions must not be compared.
    """
    crop_height, crop_width = normalize_crop_size(crop_size)
    _check_crop_fits(frames, crop_height, crop_width, name)
    if candidates < 1:
        raise DatasetError(f"candidates must be >= 1, got {candidates}")
    height, width = frames.shape[-2:]
    # One [H, W] map of |I_a - I_b| averaged over colour; each candidate sums a window of it.
    difference = (frames[compare[0]] - frames[compare[1]]).abs().mean(dim=0)
    best_origin, best_score = None, -1.0
    for _ in range(candidates):
        top, left = random_crop_origin(height, width, (crop_height, crop_width), generator)
        score = float(difference[top : top + crop_height, left : left + crop_width].mean())
        if score > best_score:
            best_origin, best_score = (top, left), score
    return best_origin


def crop_frames(frames: torch.Tensor, top: int, left: int, crop_size: int | tuple[int, int]) -> torch.Tensor:
    """frames[..., top:top+h, left:left+w] as a contiguous copy."""
    crop_height, crop_width = normalize_crop_size(crop_size)
    return frames[..., top : top + crop_height, left : left + crop_width].contiguous()


def reverse_time(frames: torch.Tensor, valid: torch.Tensor, target_index: int):
    """Reverse time: position i goes to N-1-i, so a centred target stays where it is.
    (``savfi_core.meta.temporal_flip`` applies it to selected items of a batch.)

    Returns (frames, valid, target_index) with target_index mapped to N-1-target_index.
    """
    count = frames.shape[0]
    return frames.flip(0), valid.flip(0), count - 1 - target_index


CROP_SAMPLERS = ("uniform", "moving")


def augment_for_training(
    frames: torch.Tensor,
    valid: torch.Tensor,
    target_index: int,
    generator: torch.Generator,
    crop_size: int | tuple[int, int] | None,
    crop_sampler: str = "uniform",
    flip: bool = True,
    candidates: int = 8,
    name: str = "sample",
):
    """Crop (``uniform`` or ``moving``, see :func:`choose_moving_crop`), then flip time with p=1/2.

    The crop is drawn first and the flip second from the same generator, so a sample's crop
    does not depend on whether flipping is enabled. ``crop_size=None`` keeps the full frame.

    Returns (frames, valid, target_index).
    """
    if crop_sampler not in CROP_SAMPLERS:
        raise DatasetError(f"crop_sampler must be one of {CROP_SAMPLERS}, got {crop_sampler!r}")
    if crop_size is not None:
        crop_height, crop_width = normalize_crop_size(crop_size)
        if crop_sampler == "moving":
            top, left = choose_moving_crop(
                frames, (crop_height, crop_width), generator,
                compare=(target_index - 1, target_index + 1), candidates=candidates, name=name,
            )
        else:
            _check_crop_fits(frames, crop_height, crop_width, name)
            top, left = random_crop_origin(frames.shape[-2], frames.shape[-1], (crop_height, crop_width), generator)
        frames = crop_frames(frames, top, left, (crop_height, crop_width))
    if flip and bool(torch.rand((), generator=generator) < 0.5):
        frames, valid, target_index = reverse_time(frames, valid, target_index)
    return frames, valid, target_index
