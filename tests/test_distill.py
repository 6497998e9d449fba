"""Distillation from released RIFE: the flow conversions on real frames, the pair sampler, the
geometric augmentation, and pretrain(..., teacher=...)."""
from __future__ import annotations

import math

import pytest
import torch

from savfi_core.backbones import create_model
from savfi_core.backbones.common import linear_intermediate_flows
from savfi_core.backbones.registry import model_entry
from savfi_core.checkpoint import safe_load
from savfi_core.data import open_dataset
from savfi_core.kernels import backwarp, depth_flow_projection
from savfi_core.train import ResumeMismatchError, pretrain, sample_triplet_batch
from savfi_core.train.common import GeometricAugmentation, sample_pair_batch
from savfi_core.train.distill import TeacherTargets, motion_loss, motion_targets, teacher_targets

from test_train import ShiftedFrames


def psnr_between(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


@pytest.fixture(scope="module")
def teacher():
    return create_model("rife_hdv3", weights="default")  # released weights, from the pinned carrier package


@pytest.fixture(scope="module")
def real_pairs():
    """Three (I3, I5) pairs of the embedded clips' train split: a fast, a slow and a nearly static scene."""
    clips = open_dataset("clips", split="train")
    return [(torch.as_tensor(clips[i].frames)[2:3], torch.as_tensor(clips[i].frames)[4:5], str(clips[i].name))
            for i in (0, len(clips) // 2, len(clips) - 1)]


def test_converted_teacher_flows_reproduce_the_teachers_warps_on_real_frames(teacher, real_pairs):
    """Each student convention, warped the student's own way, samples what RIFE samples.

    Exact (to float rounding) against RIFE's symmetrized flows; against RIFE's own flows the only
    loss is their antisymmetric part, measured here: the warps agree to >= 40 dB PSNR (DAIN's
    projection, which moves s from the middle frame's pixels to frame0's, to >= 38 dB).
    """
    for frame0, frame1, name in real_pairs:
        taught = teacher_targets(teacher, frame0, frame1)
        s = taught.displacement
        own = backwarp(frame0, taught.flow_t_0), backwarp(frame1, taught.flow_t_1)
        symmetric = backwarp(frame0, -s), backwarp(frame1, s)
        assert taught.asymmetry.norm(dim=1).mean() < 0.5 * max(float(s.norm(dim=1).mean()), 0.2), name
        # DVF: frame0 at x - d, frame1 at x + d with d = s
        dvf = motion_targets("dvf", {"flow": s, "mask": s[:, :1]}, taught)["flow"]
        assert torch.equal(dvf, s)
        # Super-SloMo and RRIN: F_0->1 = 2s, F_1->0 = -2s, back through their own linear formula
        fields = motion_targets("superslomo", {"flow_0_1": s, "flow_1_0": s}, taught)
        rrin = motion_targets("rrin", {"flow_0_1": s, "flow_1_0": s}, taught)
        assert set(rrin) == set(fields) and all(torch.equal(fields[key], rrin[key]) for key in fields)
        flow_t_0, flow_t_1 = linear_intermediate_flows(fields["flow_0_1"], fields["flow_1_0"], 0.5)
        linear = backwarp(frame0, flow_t_0), backwarp(frame1, flow_t_1)
        # DAIN: the same two fields, projected to the middle frame by its own layer (uniform depth)
        projected = depth_flow_projection(torch.cat([fields["flow_0_1"], fields["flow_1_0"]]), torch.ones(2, 1, *s.shape[-2:]), 0.5)
        dain = backwarp(frame0, projected[:1]), backwarp(frame1, projected[1:])
        for side in (0, 1):
            assert (linear[side] - symmetric[side]).abs().max() < 1e-5, name
            assert psnr_between(symmetric[side], own[side]) >= 40.0, name
            assert psnr_between(dain[side], own[side]) >= 38.0, name


def test_every_flow_student_gets_its_fields_with_its_registered_factor(real_pairs):
    frame0, frame1, _ = real_pairs[0]
    crop = (slice(None), slice(None), slice(0, 64), slice(0, 64))
    s = torch.randn(1, 2, 64, 64)
    taught = TeacherTargets(frame=torch.zeros(1, 3, 64, 64), flow_t_0=-s + 0.1, flow_t_1=s + 0.1)
    for name in ("dvf", "superslomo", "rrin", "dain"):
        student = create_model(name, size="tiny").eval()
        with torch.no_grad():
            aux = student(frame0[crop], frame1[crop]).aux
        converted = motion_targets(name, aux, taught)
        declared = {field.key: field.factor for field in model_entry(name).motion_fields}
        assert set(converted) == set(declared), name
        for key, factor in declared.items():
            assert torch.allclose(converted[key], factor * s, atol=1e-6), (name, key)
        assert math.isfinite(float(motion_loss(name, aux, taught)))
    with pytest.raises(ValueError, match="exposes no motion field"):
        motion_targets("sepconv", {}, taught)


def test_a_teacher_without_intermediate_flows_is_refused():
    student = create_model("sepconv", size="tiny")
    frames = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="intermediate flows"):
        teacher_targets(student, frames, frames)


def test_pairs_are_adjacent_frames_with_the_triplets_draws_unchanged():
    dataset = ShiftedFrames(count=2, size=32)
    frame0, frame1 = sample_pair_batch(dataset, 6, torch.Generator().manual_seed(0), crop_size=12, augment=False)
    assert frame0.shape == frame1.shape == (6, 3, 12, 12)
    for index in range(6):  # adjacent: one pixel of motion, never two
        assert torch.equal(frame1[index][:, :, 1:], frame0[index][:, :, :-1])
    # geometric augmentation off (the default) draws exactly what no augmentation draws
    first = sample_triplet_batch(dataset, 4, torch.Generator().manual_seed(3), crop_size=12)
    second = sample_triplet_batch(dataset, 4, torch.Generator().manual_seed(3), crop_size=12, geometric=GeometricAugmentation())
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_geometric_augmentation_rescales_the_motion_and_keeps_the_crop():
    dataset = ShiftedFrames(count=1, size=48)
    scaled = GeometricAugmentation(scale_range=(2.0, 2.0))
    frame0, frame1, target = sample_triplet_batch(dataset, 2, torch.Generator().manual_seed(0), crop_size=24,
                                                  augment=False, geometric=scaled)
    assert frame0.shape == (2, 3, 24, 24)
    # a 1-pixel motion per frame becomes 2 pixels: frame1 (t+1) matches frame0 (t-1) shifted by 4, not by 2
    error = {shift: float((frame1[..., shift:] - frame0[..., :-shift]).abs().mean()) for shift in (2, 4)}
    assert error[4] < 0.5 * error[2]
    rotated = GeometricAugmentation(max_rotation_degrees=5.0)
    draws = [sample_triplet_batch(dataset, 1, torch.Generator().manual_seed(seed), crop_size=24, geometric=rotated)[0]
             for seed in (1, 1, 2)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    with pytest.raises(ValueError, match="scale_range"):
        GeometricAugmentation(scale_range=(1.5, 1.0))


def test_pretrain_with_the_released_teacher_records_every_term_and_the_teachers_sha256(tmp_path, teacher):
    student = create_model("superslomo", size="tiny")
    clips = open_dataset("clips", split="train")
    path = tmp_path / "distill.pt"
    curve = pretrain(student, clips, steps=3, batch_size=2, seed=0, checkpoint_path=path, crop_size=32,
                     teacher=teacher, distill_weight=1.0, motion_weight=0.05, pair_batch_size=2,
                     scale_range=(0.7, 1.4), max_rotation_degrees=4.0, progress=False, log=lambda _: None)
    for column in ("loss_distill", "loss_motion", "loss_pair_distill", "loss_pair_motion"):
        assert column in curve and curve[column].notna().all() and (curve[column] > 0).all(), column
    assert (curve["loss"] > curve["loss_distill"] + curve["loss_motion"]).all()  # the real-frame loss is in the total
    record = safe_load(path)["config"]["teacher"]
    assert record["model"] == "rife_hdv3" and record["weights_sha256"] == teacher.pretrained_weights.sha256
    assert record["motion_weight"] == 0.05 and record["pair_batch_size"] == 2
    assert not any(parameter.requires_grad for parameter in teacher.parameters())
    # the teacher and its loss weights are part of the run: a resume with others is refused
    with pytest.raises(ResumeMismatchError, match="teacher"):
        pretrain(student, clips, steps=4, batch_size=2, seed=0, checkpoint_path=path, crop_size=32,
                 teacher=teacher, distill_weight=1.0, motion_weight=0.5, pair_batch_size=2,
                 scale_range=(0.7, 1.4), max_rotation_degrees=4.0, progress=False, log=lambda _: None)
    with pytest.raises(ValueError, match="need a teacher"):
        pretrain(create_model("superslomo", size="tiny"), clips, steps=1, batch_size=2, seed=0,
                 checkpoint_path=tmp_path / "other.pt", pair_batch_size=2, progress=False, log=lambda _: None)


def test_dvf_with_a_fixed_flow_unit_predicts_the_same_pixel_motion_at_any_frame_size():
    """The original DVF unit (half the frame's width) makes the same weights move twice as far on
    a frame twice as wide; ``flow_range_pixels`` fixes the unit, so motion holds across sizes."""
    torch.manual_seed(0)
    for fixed in (None, 64.0):
        model = create_model("dvf", size="tiny", flow_range_pixels=fixed, pad_margin=0).eval()  # padded width = width
        with torch.no_grad():
            model.conv4.bias[:2] = 0.2  # a constant tanh output: a constant flow everywhere
            flows = [model(torch.rand(1, 3, 64, width), torch.rand(1, 3, 64, width)).aux["flow"][:, 0].mean()
                     for width in (64, 128)]
        ratio = float(flows[1] / flows[0])
        if fixed is None:
            assert ratio == pytest.approx(127 / 63, rel=1e-4)
        else:
            assert ratio == pytest.approx(1.0, rel=1e-6)
            assert float(flows[0]) == pytest.approx(0.5 * math.tanh(0.2) * fixed, rel=1e-5)
