"""Infrastructure shared by :func:`pretrain` and :func:`meta_train`.

- RNG capture/restore (torch, numpy, python ``random`` and the loop's own sampling generator),
  so that a run resumed from a checkpoint draws exactly the numbers the uninterrupted run drew.
- :class:`DivergenceGuard`: decides whether a step's loss is acceptable (finite, not a jump over
  a high quantile of recent accepted losses).
- Motion-aware crops (``savfi_core.data.augment.choose_moving_crop``) and triplet extraction from :class:`Sample`-like objects.
- Validation of a predictor against frame averaging, and writing the curve CSV.

Checkpoints are loaded with ``weights_only=True`` (``savfi_core.checkpoint.safe_load``), so every
entry written here is a tensor or a plain Python container of numbers and strings.
"""
from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from savfi_core.data.augment import choose_moving_crop, normalize_crop_size


# --------------------------------------------------------------------------------------------
# Random number generators
# --------------------------------------------------------------------------------------------
def capture_rng_states(sampler: torch.Generator) -> dict[str, Any]:
    """Every RNG state that a training step may consume, in a ``weights_only``-loadable form."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        # numpy's state is (name, uint32[624], position, has_gauss, cached_gaussian); the array
        # becomes an int64 tensor because weights_only unpickling refuses numpy arrays.
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), int(numpy_state[2]), int(numpy_state[3]), float(numpy_state[4])],
        "python": _to_lists(random.getstate()),
        "sampler": sampler.get_state(),
    }


def restore_rng_states(states: dict[str, Any], sampler: torch.Generator) -> None:
    """Inverse of :func:`capture_rng_states`."""
    torch.set_rng_state(states["torch"])
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(_to_tuples(states["python"]))
    sampler.set_state(states["sampler"])


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, numpy and python ``random``; return the loop's own sampling generator."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)
    sampler = torch.Generator()
    # A different stream from the global one, so model-side randomness never shifts the batches.
    sampler.manual_seed(seed + 1_000_003)
    return sampler


def _to_lists(value):
    return [_to_lists(item) for item in value] if isinstance(value, (tuple, list)) else value


def _to_tuples(value):
    return tuple(_to_tuples(item) for item in value) if isinstance(value, list) else value


# --------------------------------------------------------------------------------------------
# Divergence guard
# --------------------------------------------------------------------------------------------
@dataclass
class DivergenceGuard:
    """Accept a step only if its loss is finite and not a jump.

    A loss L is a jump when at least ``warmup`` accepted losses are known and
    L > jump_factor * (the ``reference_quantile`` quantile of the last ``window`` accepted losses;
    by default their maximum). Rejected steps are not applied (pretraining skips the optimizer
    step; meta-training rolls the learner back), and after ``rollback_after`` rejections in a row
    the loop restores its last checkpointed state.

    Why the maximum and not the median or a high quantile: per-batch losses of small crops are
    heavy-tailed. A batch of static crops scores almost nothing and a batch of moving ones ten to
    a hundred times more. The losses of a *fixed* tiny DVF on batches of 2 crops of 32x32 from the
    training clips (``tests/test_train.py`` replays such a sequence): with the tiny weights of
    2026-12-01, p90 = 11 x median and max = 44 x median, and the median rule rejected 153 of 300
    batches of a network that was not diverging at all; with the better distilled weights shipped
    2026-12-07, p90 = 14.5 x median and max = 75 x median, and even 5 x the recent 90th percentile
    rejected 1 of 290 (a loss 5.5 x it), while no loss was more than 2.0 x the recent maximum.
    Divergence is a loss far above everything the recent batches showed.
    """

    jump_factor: float = 5.0
    window: int = 50
    warmup: int = 10
    reference_quantile: float = 1.0
    rollback_after: int = 20
    recent: deque = field(default_factory=deque)
    consecutive_rejections: int = 0

    def check(self, loss: float) -> str | None:
        """None if ``loss`` is acceptable, else the reason it is not ('not finite' or 'jump')."""
        if not math.isfinite(loss):
            return "not finite"
        if len(self.recent) >= self.warmup and loss > self.jump_factor * self.reference():
            return "jump"
        return None

    def reference(self) -> float:
        """The loss a jump is measured against (the quantile of the recent accepted losses)."""
        return float(np.quantile(np.asarray(self.recent, dtype=np.float64), self.reference_quantile))

    def accept(self, loss: float) -> None:
        self.recent.append(float(loss))
        while len(self.recent) > self.window:
            self.recent.popleft()
        self.consecutive_rejections = 0

    def reject(self) -> bool:
        """Count a rejection; True when it is time to roll back to the last checkpoint."""
        self.consecutive_rejections += 1
        return self.consecutive_rejections >= self.rollback_after

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "consecutive_rejections": self.consecutive_rejections}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent = deque(float(value) for value in state["recent"])
        self.consecutive_rejections = int(state["consecutive_rejections"])


# --------------------------------------------------------------------------------------------
# Sampling: triplets and motion-aware crops
# --------------------------------------------------------------------------------------------
def triplet_positions(sample, all_triplets: bool = False, gaps: tuple[int, ...] = (1,)) -> list[tuple[int, int, int]]:
    """(first input, second input, target) frame positions of a sample.

    The default is the sample's own query, (t-1, t+1 -> t) with t = ``target_index`` (the
    middle frame of a Vimeo septuplet or triplet). With ``all_triplets`` every (i-1, i+1 -> i)
    whose three frames are valid is offered (5 per Vimeo septuplet), so each decoded window
    yields more training pairs. ``gaps``: the distances g from the target to each input that
    are offered, (i-g, i+g -> i); g = 2 is SAVFI's own support triplet (I1, I5 -> I3) and
    doubles the motion between the inputs. Positions that leave the sample are not offered.
    """
    from savfi_core.meta.tasks import valid_at

    if not gaps or min(gaps) < 1:
        raise ValueError(f"triplet gaps must be integers >= 1, got {gaps}")
    valid = [bool(v) for v in torch.as_tensor(sample.valid).tolist()]
    centres = range(1, len(valid) - 1) if all_triplets else [int(sample.target_index)]
    positions = [(i - g, i + g, i) for g in gaps for i in centres if valid_at(sample.valid, (i - g, i, i + g))]
    if not positions:
        raise ValueError(f"sample {getattr(sample, 'name', '?')!r} has no valid (t-g, t+g -> t) triplet for gaps {gaps} (valid={valid})")
    return positions


def pair_positions(sample) -> list[tuple[int, int]]:
    """(first, second) positions of every pair of adjacent valid frames of a sample: the pairs
    a teacher can interpolate (there is no real frame between them)."""
    valid = [bool(v) for v in torch.as_tensor(sample.valid).tolist()]
    positions = [(i, i + 1) for i in range(len(valid) - 1) if valid[i] and valid[i + 1]]
    if not positions:
        raise ValueError(f"sample {getattr(sample, 'name', '?')!r} has no two adjacent valid frames (valid={valid})")
    return positions


@dataclass(frozen=True)
class GeometricAugmentation:
    """Random rescaling and small rotation of a training window, the same for all its frames.

    scale_range: (low, high) of the scale factor, drawn log-uniformly; the frames are resized
    (antialiased bilinear) before cropping, so motion in the crops spans that range of sizes.
    max_rotation_degrees: the rotation is drawn uniformly in [-max, max] (bilinear, reflected
    borders). Both off by default: no draws, so a run without them draws what it always drew.
    """

    scale_range: tuple[float, float] = (1.0, 1.0)
    max_rotation_degrees: float = 0.0

    def __post_init__(self):
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be 0 < low <= high, got {self.scale_range}")
        if self.max_rotation_degrees < 0:
            raise ValueError(f"max_rotation_degrees must be >= 0, got {self.max_rotation_degrees}")

    @property
    def enabled(self) -> bool:
        return self.scale_range != (1.0, 1.0) or self.max_rotation_degrees > 0

    def __call__(self, frames: Tensor, generator: torch.Generator, minimum_size: tuple[int, int] | None) -> Tensor:
        """frames [N,3,H,W] -> the same window rescaled and rotated; never below ``minimum_size``."""
        import torch.nn.functional as F

        if not self.enabled:
            return frames
        low, high = self.scale_range
        draws = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        scale = math.exp(math.log(low) + draws[0] * (math.log(high) - math.log(low)))
        angle = math.radians((2 * draws[1] - 1) * self.max_rotation_degrees)
        height, width = frames.shape[-2:]
        if minimum_size is not None:  # a crop must still fit
            scale = max(scale, minimum_size[0] / height, minimum_size[1] / width)
        if angle != 0.0:
            cosine, sine = math.cos(angle), math.sin(angle)
            # affine_grid works in [-1, 1] coordinates: the aspect ratio enters the rotation
            theta = frames.new_tensor([[cosine, -sine * height / width, 0.0], [sine * width / height, cosine, 0.0]])
            grid = F.affine_grid(theta.expand(frames.shape[0], 2, 3), list(frames.shape), align_corners=False)
            frames = F.grid_sample(frames, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if scale != 1.0:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            if minimum_size is not None:
                size = (max(size[0], minimum_size[0]), max(size[1], minimum_size[1]))
            frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=scale < 1.0)
        return frames


def _draw_windows(
    dataset,
    batch_size: int,
    generator: torch.Generator,
    positions_of: Callable[[Any], list[tuple[int, ...]]],
    crop_size: int | tuple[int, int] | None,
    crop_candidates: int,
    augment: bool,
    uniform_crop_fraction: float,
    geometric: GeometricAugmentation | None,
) -> list[tuple[Tensor, ...]]:
    """``batch_size`` windows of frames, each the frames at one drawn tuple of ``positions_of(sample)``
    (the first two are the inputs: motion-aware crops compare them; a temporal reversal swaps them)."""
    if len(dataset) == 0:
        raise ValueError("training dataset is empty")
    if not 0.0 <= uniform_crop_fraction <= 1.0:
        raise ValueError(f"uniform_crop_fraction must be in [0, 1], got {uniform_crop_fraction}")
    uniform_count = round(uniform_crop_fraction * batch_size)
    windows = []
    for item in range(batch_size):
        # a MixtureDataset draws its parts at declared shares; any other dataset, uniformly
        draw_index = getattr(dataset, "draw_index", None)
        index = draw_index(generator) if draw_index is not None else int(torch.randint(0, len(dataset), (1,), generator=generator))
        sample = dataset[index]
        positions = positions_of(sample)
        chosen = positions[int(torch.randint(0, len(positions), (1,), generator=generator))]
        frames = torch.as_tensor(sample.frames)[list(chosen)]
        if geometric is not None and geometric.enabled:
            frames = geometric(frames, generator, normalize_crop_size(crop_size) if crop_size is not None else None)
        if crop_size is not None:
            # Motion-aware crop (savfi_core.data.augment): the best of ``crop_candidates`` uniform
            # windows by mean |frame1 - frame0|; most uniform crops of the clips are static.
            top, left = choose_moving_crop(
                frames, crop_size, generator, compare=(0, 1),
                candidates=1 if item < uniform_count else crop_candidates, name=str(sample.name),
            )
            crop_height, crop_width = normalize_crop_size(crop_size)
            frames = frames[..., top:top + crop_height, left:left + crop_width]
        window = list(frames.unbind(0))
        if augment:
            flip, reverse = torch.randint(0, 2, (2,), generator=generator).tolist()
            if flip:
                window = [frame.flip(-1) for frame in window]
            if reverse:
                window[0], window[1] = window[1], window[0]
        windows.append(tuple(window))
    return windows


def _stack_windows(windows: list[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    try:
        return tuple(torch.stack(part) for part in zip(*windows))
    except RuntimeError as error:
        raise ValueError(f"training frames differ in size; pass crop_size to batch them ({error})") from error


def sample_triplet_batch(
    dataset,
    batch_size: int,
    generator: torch.Generator,
    crop_size: int | tuple[int, int] | None = None,
    crop_candidates: int = 8,
    all_triplets: bool = False,
    augment: bool = True,
    uniform_crop_fraction: float = 0.5,
    geometric: GeometricAugmentation | None = None,
    gaps: tuple[int, ...] = (1,),
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw ``batch_size`` training triplets: (frame0 [B,3,h,w], frame1 [B,3,h,w], target [B,3,h,w]).

    Every random choice (sample index, triplet, scale and rotation, crop corners, flips) comes
    from ``generator``. crop_size: side or (height, width). Crops: the first
    round(``uniform_crop_fraction`` * B) items of the batch take a uniform crop, the others the
    most moving of ``crop_candidates`` crops. Both kinds are needed: trained on moving crops only,
    a tiny DVF learned to move everything and fell 5 dB below frame averaging on whole (mostly
    static) frames, while beating it on moving crops.
    Augmentation: horizontal flip and temporal reversal (swap of the two inputs), each with
    probability 1/2, which leave the interpolation target unchanged in meaning; ``geometric``
    (:class:`GeometricAugmentation`) rescales and rotates the window before it is cropped.
    gaps: see :func:`triplet_positions`; a triplet is drawn uniformly among all offered.
    """
    windows = _draw_windows(dataset, batch_size, generator, lambda sample: triplet_positions(sample, all_triplets, gaps),
                            crop_size, crop_candidates, augment, uniform_crop_fraction, geometric)
    return _stack_windows(windows)


def sample_pair_batch(
    dataset,
    batch_size: int,
    generator: torch.Generator,
    crop_size: int | tuple[int, int] | None = None,
    crop_candidates: int = 8,
    augment: bool = True,
    uniform_crop_fraction: float = 0.5,
    geometric: GeometricAugmentation | None = None,
) -> tuple[Tensor, Tensor]:
    """``batch_size`` pairs of adjacent frames (t, t+1): (frame0, frame1), each [B,3,h,w].

    Drawn as :func:`sample_triplet_batch` draws triplets; no real frame lies between them, so
    only a teacher gives their middle (``pretrain(..., teacher=...)``).
    """
    windows = _draw_windows(dataset, batch_size, generator, pair_positions,
                            crop_size, crop_candidates, augment, uniform_crop_fraction, geometric)
    return _stack_windows(windows)


def crop_sample(sample, crop_size: int, generator: torch.Generator, candidates: int = 8):
    """One motion-aware spatial crop of every frame of a sample (same window for all frames).

    Motion is measured between the query inputs (t-1, t+1). Invalid (NaN) frames stay NaN.
    """
    frames = torch.as_tensor(sample.frames)
    t = int(sample.target_index)
    top, left = choose_moving_crop(frames, crop_size, generator, compare=(t - 1, t + 1), candidates=candidates, name=str(sample.name))
    cropped = frames[..., top : top + crop_size, left : left + crop_size].contiguous()
    return type(sample)(frames=cropped, valid=sample.valid, target_index=sample.target_index, name=sample.name)


# --------------------------------------------------------------------------------------------
# Validation and the curve file
# --------------------------------------------------------------------------------------------
def psnr_function() -> Callable[[Tensor, Tensor], float]:
    """``savfi_core.metrics.psnr`` (8-bit quantized), capped as the metrics summaries cap it.

    A perfect frame has PSNR +inf; like ``savfi_core.metrics.summarize(infinite="cap")`` it
    counts as ``PSNR_CAP_DB`` (80 dB, the original evaluation's limit) in the means here.
    """
    from savfi_core.metrics import PSNR_CAP_DB, psnr

    return lambda prediction, target: min(psnr(prediction, target), PSNR_CAP_DB)


def validation_triplets(dataset, limit: int | None = None) -> Iterable[tuple[str, Tensor, Tensor, Tensor]]:
    """(name, frame0 [1,3,H,W], frame1, target) for the query triplet of each validation sample."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in range(count):
        sample = dataset[index]
        first, second, middle = triplet_positions(sample)[0]
        frames = torch.as_tensor(sample.frames)
        yield str(sample.name), frames[first][None], frames[second][None], frames[middle][None]


@torch.no_grad()
def validate_model(model: torch.nn.Module, dataset, limit: int | None = None) -> dict[str, float]:
    """Mean PSNR of ``model`` and of frame averaging (frame0 + frame1) / 2 on the query triplets.

    The model runs in eval mode; RNG states are forked so validation never shifts training.
    """
    psnr = psnr_function()
    was_training = model.training
    model.eval()
    model_scores, average_scores = [], []
    try:
        with torch.random.fork_rng(devices=[]):
            device = next(model.parameters()).device  # a rank's GPU under torchrun with nccl
            for _, frame0, frame1, target in validation_triplets(dataset, limit):
                frame0, frame1, target = frame0.to(device), frame1.to(device), target.to(device)
                prediction = model(frame0, frame1).pred.clamp(0, 1)
                model_scores.append(float(psnr(prediction[0], target[0])))
                average_scores.append(float(psnr(((frame0 + frame1) / 2)[0], target[0])))
    finally:
        model.train(was_training)
    if not model_scores:
        raise ValueError("validation dataset is empty")
    return {"val_psnr": float(np.mean(model_scores)), "val_average_psnr": float(np.mean(average_scores))}


def curve_path_for(checkpoint_path: str | Path) -> Path:
    """The CSV beside a checkpoint: ``run.pt`` -> ``run.curve.csv``."""
    checkpoint_path = Path(checkpoint_path)
    return checkpoint_path.with_name(checkpoint_path.stem + ".curve.csv")


def write_curve(curve: Sequence[dict[str, Any]], checkpoint_path: str | Path) -> pd.DataFrame:
    """Write the curve as CSV beside the checkpoint (atomically) and return it as a DataFrame."""
    frame = pd.DataFrame(list(curve))
    path = curve_path_for(checkpoint_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    frame.to_csv(temporary, index=False)
    temporary.replace(path)
    return frame
