"""A sample on the septuplet grid as a meta-learning task.

With ``t = sample.target_index`` (see :mod:`savfi_core.data.core`):

* support triplets (frame0, frame1 -> target): ``(t-3, t+1 -> t-1)`` and ``(t-1, t+3 -> t+1)``;
* query: ``(t-1, t+1 -> t)``.

For a Vimeo septuplet I1..I7 (t = 3, 0-based) this is the paper's support (I1, I5 -> I3),
(I3, I7 -> I5) and query (I3, I5 -> I4). Middlebury ``allframes`` and user-footage windows use
the same positions (their other positions are invalid and never read). The query target is read
only when an outer loss or a metric needs it: adaptation touches support positions only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SUPPORT_OFFSETS = ((-3, +1, -1), (-1, +3, +1))  # (frame0, frame1, target) relative to t
QUERY_OFFSETS = (-1, +1)


@dataclass
class Triplet:
    """Two input frames and the frame between them, each [B,3,H,W] (target may be None)."""

    frame0: Tensor
    frame1: Tensor
    target: Tensor | None


@dataclass
class Task:
    """Support triplets and query of one or more samples (batch dimension B)."""

    support: list[Triplet]
    query: Triplet
    names: list[str]

    def item(self, index: int) -> "Task":
        """The task of batch item ``index`` (tensors keep a batch dimension of 1)."""

        def pick(triplet: Triplet) -> Triplet:
            part = slice(index, index + 1)
            target = None if triplet.target is None else triplet.target[part]
            return Triplet(triplet.frame0[part], triplet.frame1[part], target)

        return Task([pick(triplet) for triplet in self.support], pick(self.query), [self.names[index]])

    @property
    def batch_size(self) -> int:
        return self.query.frame0.shape[0]


def support_inputs(task: Task) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four frames adaptation may read, at t-3, t-1, t+1, t+3 (the septuplet's I1, I3, I5,
    I7), taken from the support triplets (I1, I5 -> I3) and (I3, I7 -> I5)."""
    if len(task.support) != len(SUPPORT_OFFSETS):
        raise ValueError(f"task {task.names}: adaptation needs its {len(SUPPORT_OFFSETS)} support triplets, got {len(task.support)}")
    left, right = task.support
    return left.frame0, left.target, left.frame1, right.frame1


def valid_at(valid: Tensor, positions) -> bool:
    """True when every position is inside the sample and holds a valid frame (in every item of
    a batch): the one test of "is there a frame here" for tasks, triplets and adaptation."""
    valid = torch.as_tensor(valid)
    return all(0 <= position < valid.shape[-1] and bool(valid[..., position].all()) for position in positions)


def _positions_or_raise(valid: Tensor, target_index: int, offsets: tuple[int, ...], name: str, purpose: str) -> list[int]:
    count = valid.shape[-1]
    positions = [target_index + offset for offset in offsets]
    for position in positions:
        if not valid_at(valid, [position]):
            raise ValueError(
                f"sample {name!r}: {purpose} needs a valid frame at position {position} "
                f"(target_index {target_index}, {count} positions, valid {valid.tolist()}); "
                f"this sample cannot be used for {purpose}"
            )
    return positions


def can_adapt(sample) -> bool:
    """True when the sample has the four frames test-time adaptation reads."""
    t = sample.target_index
    return valid_at(sample.valid, [t - 3, t - 1, t + 1, t + 3])


def _batched(sample) -> tuple[Tensor, Tensor, list[str]]:
    """frames [B,N,3,H,W], valid [B,N], names from a single or collated sample."""
    frames, valid, name = sample.frames, sample.valid, sample.name
    if frames.dim() == 4:
        return frames.unsqueeze(0), valid.unsqueeze(0), [name]
    if frames.dim() != 5:
        raise ValueError(f"sample {name!r}: frames must be [N,3,H,W] or [B,N,3,H,W], got {tuple(frames.shape)}")
    return frames, valid, list(name) if isinstance(name, (list, tuple)) else [name] * frames.shape[0]


def make_task(sample, *, with_support: bool = True, with_query_target: bool = True) -> Task:
    """Slice a (single or collated) sample into support triplets and query, batch-first.

    with_support: False for a sample that is only predicted (e.g. Middlebury two-frame inputs).
    with_query_target: False at test time: the ground truth is then never read (it may be
        invalid/NaN, as in user footage).
    """
    frames, valid, names = _batched(sample)
    t = sample.target_index
    label = names[0] if len(names) == 1 else f"{names[0]}..."
    support = []
    if with_support:
        for offset0, offset1, offset_target in SUPPORT_OFFSETS:
            p0, p1, pt = _positions_or_raise(valid, t, (offset0, offset1, offset_target), label, "adaptation")
            support.append(Triplet(frames[:, p0], frames[:, p1], frames[:, pt]))
    q0, q1 = _positions_or_raise(valid, t, QUERY_OFFSETS, label, "interpolation")
    target = None
    if with_query_target:
        (t_checked,) = _positions_or_raise(valid, t, (0,), label, "a loss or metric on the ground truth")
        target = frames[:, t_checked]
    return Task(support=support, query=Triplet(frames[:, q0], frames[:, q1], target), names=names)


def temporal_flip(sample, flip: Tensor):
    """Reverse the frames of the batch items where ``flip`` [B] is True.

    The grid is mirrored (position p -> N-1-p), so the target moves to N-1-t; on the symmetric
    septuplet layout (N = 7, t = 3) it stays at 3 and the support/query pairs swap their inputs.
    Items of one batch share ``target_index``, so a flip is only allowed when N-1-t == t.
    """
    from copy import copy

    frames, valid, _ = _batched(sample)
    count = frames.shape[1]
    if not bool(flip.any()):
        return sample
    if count - 1 - sample.target_index != sample.target_index:
        raise ValueError(
            f"temporal flip needs a symmetric layout (target_index {sample.target_index} of {count} positions)"
        )
    from savfi_core.data.augment import reverse_time

    reversed_items = [reverse_time(frames[i], valid[i], sample.target_index)[:2] if bool(flip[i]) else (frames[i], valid[i])
                      for i in range(frames.shape[0])]
    flipped_frames = torch.stack([item[0] for item in reversed_items])
    flipped_valid = torch.stack([item[1] for item in reversed_items])
    result = copy(sample)
    if sample.frames.dim() == 4:
        flipped_frames, flipped_valid = flipped_frames[0], flipped_valid[0]
    result.frames = flipped_frames
    result.valid = flipped_valid
    return result
