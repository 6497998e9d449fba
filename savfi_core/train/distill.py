"""Distillation from a teacher backbone (released RIFE) into a student: targets and loss terms.

A real teacher gives a dense target for every pair of frames, not only for the middle of a real
triplet, and it gives motion: RIFE predicts intermediate flows at the middle frame, frame0
sampled at x + F_t->0(x) and frame1 at x + F_t->1(x) (pixels). Each student exposes its motion
in its own convention (``savfi_core.backbones.common``: a ``MotionField`` is ``factor * s`` for
the symmetric displacement s through the middle frame, frame0 at x - s and frame1 at x + s).
The conversion, for every student:

    s = (F_t->1 - F_t->0) / 2            RIFE's flows, symmetric part
    a = (F_t->1 + F_t->0) / 2            antisymmetric part: dropped (none of the conventions
                                         below can hold it; its size is measured on real frames
                                         by ``tests/test_distill.py`` and the distillation curve)
    DVF voxel flow d                     = s        (SYMMETRIC_FLOW: frame0 at x - d, frame1 at x + d)
    F_0->1, F_1->0 (Super-SloMo, RRIN,   = 2 s, -2 s  (FLOWS_BETWEEN_INPUTS). Super-SloMo and RRIN
    DAIN's PWC-Net)                      turn them back into F_t->0 = -s, F_t->1 = s exactly
                                         (``linear_intermediate_flows`` at t = 1/2). DAIN projects
                                         F_0->1 from frame0's pixels to the middle frame; taking s
                                         at frame0's pixel y instead of at the middle pixel y + s is
                                         exact for locally constant motion.
    RIFE (a student of its own kind)     F_t->0 = -s, F_t->1 = s (INTERMEDIATE_FLOWS)

So for every convention the student's own warping of the converted flow samples frame0 at
x - s and frame1 at x + s, which is RIFE's warping wherever its flows are symmetric (a = 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from savfi_core.train.flow_teacher import model_motion_fields


@dataclass(frozen=True)
class TeacherTargets:
    """What the teacher says about a batch of frame pairs (no gradient).

    frame: its middle frame [B,3,H,W]; flow_t_0, flow_t_1: its intermediate flows [B,2,H,W].
    """

    frame: Tensor
    flow_t_0: Tensor
    flow_t_1: Tensor

    @property
    def displacement(self) -> Tensor:
        """s = (F_t->1 - F_t->0) / 2: the symmetric displacement the students' conventions share."""
        return (self.flow_t_1 - self.flow_t_0) / 2

    @property
    def asymmetry(self) -> Tensor:
        """a = (F_t->1 + F_t->0) / 2: the part of RIFE's motion no student convention holds."""
        return (self.flow_t_1 + self.flow_t_0) / 2


def teacher_targets(teacher: nn.Module, frame0: Tensor, frame1: Tensor) -> TeacherTargets:
    """Run the teacher in eval mode without gradient; it must expose RIFE's intermediate flows."""
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            output = teacher(frame0, frame1)
    finally:
        teacher.train(was_training)
    missing = [key for key in ("flow_t_0", "flow_t_1") if key not in output.aux]
    if missing:
        name = getattr(teacher, "model_name", type(teacher).__name__)
        raise ValueError(f"teacher {name!r} exposes no {missing} in its output (aux keys: {sorted(output.aux)}); "
                         "a distillation teacher must predict intermediate flows (rife_hdv3, rife_v4)")
    return TeacherTargets(output.pred.detach(), output.aux["flow_t_0"].detach(), output.aux["flow_t_1"].detach())


def motion_targets(student_name: str | None, aux: dict[str, Tensor], targets: TeacherTargets) -> dict[str, Tensor]:
    """The teacher's motion in the student's convention: ``{aux key: factor * s}`` (module docstring)."""
    displacement = targets.displacement
    return {key: factor * displacement for key, _, factor in model_motion_fields(student_name, aux)}


def motion_loss(student_name: str | None, aux: dict[str, Tensor], targets: TeacherTargets) -> Tensor:
    """Mean over the student's motion fields of mean |field - converted teacher field| (pixels)."""
    converted = motion_targets(student_name, aux, targets)
    return sum((aux[key] - target).abs().mean() for key, target in converted.items()) / len(converted)
