"""The bilateral block-matching motion teacher and its use in pretraining."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from savfi_core.backbones import create_model
from savfi_core.kernels import backwarp
from savfi_core.train import ResumeMismatchError, pretrain
from savfi_core.train.flow_teacher import _box_mean, bilateral_displacement, bilateral_middle, flow_teacher_loss, model_motion_fields
from test_train import ShiftedFrames

FLOW_BACKBONES = ["dain", "dvf", "rife_hdv3", "rife_v4", "rrin", "superslomo"]


def moving_texture(shift_x: float, shift_y: float, size: int = 72, seed: int = 0):
    """(frame0, middle, frame1): a smooth random texture, frame0 = middle moved by -shift, frame1 by +shift."""
    middle = F.avg_pool2d(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)), 3, 1, 1)
    shift = torch.tensor([shift_x, shift_y]).view(1, 2, 1, 1).expand(1, 2, size, size)
    return backwarp(middle, -shift), middle, backwarp(middle, shift)


def interior(tensor: torch.Tensor, margin: int = 16) -> torch.Tensor:
    return tensor[..., margin:-margin, margin:-margin]


@pytest.mark.parametrize("shift", [(2.0, -3.0), (-5.0, 0.0), (0.0, 1.0)])
def test_bilateral_matching_finds_a_known_symmetric_motion_and_rebuilds_the_middle(shift):
    frame0, middle, frame1 = moving_texture(*shift)  # frame0(x) = middle(x - shift)
    displacement = bilateral_displacement(frame0, frame1)
    # middle(x) = frame0(x + shift) = frame1(x - shift): the teacher's d (frame0 at x - d) is -shift
    expected = -torch.tensor(shift).view(1, 2, 1, 1)
    assert torch.equal(interior(displacement), expected.expand_as(interior(displacement)))
    assert torch.allclose(interior(bilateral_middle(frame0, frame1, displacement)), interior(middle), atol=1e-6)


def test_bilateral_matching_calls_a_flat_region_still():
    flat = torch.full((2, 3, 40, 40), 0.3)
    assert torch.count_nonzero(bilateral_displacement(flat, flat.clone())) == 0


def test_bilateral_matching_rejects_mismatched_frames_and_even_windows():
    with pytest.raises(ValueError, match="one shape"):
        bilateral_displacement(torch.rand(1, 3, 20, 20), torch.rand(1, 3, 20, 21))
    with pytest.raises(ValueError, match="odd window"):
        bilateral_displacement(torch.rand(1, 3, 20, 20), torch.rand(1, 3, 20, 20), window=8)


def test_box_mean_equals_average_pooling_over_the_pixels_inside():
    values = torch.rand(2, 5, 19, 23, dtype=torch.float64)
    ours = _box_mean(_box_mean(values, 7, dim=-1), 7, dim=-2)
    reference = F.avg_pool2d(values, 7, stride=1, padding=3, count_include_pad=False)
    assert torch.allclose(ours, reference, atol=1e-12)


def test_motion_field_factors_follow_the_warps_the_backbones_use():
    """F_0->1 = 2d samples frame1 into frame0, F_1->0 = -2d frame0 into frame1, DVF's d the middle."""
    frame0, middle, frame1 = moving_texture(3.0, -2.0)
    displacement = bilateral_displacement(frame0, frame1)
    factors = {name: factor for name, _, factor in model_motion_fields("superslomo", {"flow_0_1": None, "flow_1_0": None})}
    assert torch.allclose(interior(backwarp(frame1, factors["flow_0_1"] * displacement)), interior(frame0), atol=1e-6)
    assert torch.allclose(interior(backwarp(frame0, factors["flow_1_0"] * displacement)), interior(frame1), atol=1e-6)
    (_, _, dvf_factor), = model_motion_fields("dvf", {"flow": None})
    assert torch.allclose(interior(backwarp(frame0, -dvf_factor * displacement)), interior(middle), atol=1e-6)
    # RIFE's intermediate flows: the middle frame samples frame0 at x + F_t->0 and frame1 at x + F_t->1
    rife = {name: factor for name, _, factor in model_motion_fields("rife_v4", {"flow_t_0": None, "flow_t_1": None})}
    assert torch.allclose(interior(backwarp(frame0, rife["flow_t_0"] * displacement)), interior(middle), atol=1e-6)
    assert torch.allclose(interior(backwarp(frame1, rife["flow_t_1"] * displacement)), interior(middle), atol=1e-6)


@pytest.mark.parametrize("name", FLOW_BACKBONES)
def test_flow_backbones_expose_motion_fields_at_the_input_size(name):
    model = create_model(name, size="tiny")
    with torch.no_grad():
        output = model(torch.rand(1, 3, 37, 53), torch.rand(1, 3, 37, 53))
    fields = model_motion_fields(name, output.aux)
    assert fields and all(field.shape == (1, 2, 37, 53) for _, field, _ in fields)
    assert float(flow_teacher_loss(name, output.aux, torch.ones(1, 2, 37, 53))) > 0


@pytest.mark.parametrize("name", ["cain", "sepconv"])
def test_backbones_without_motion_fields_are_named_as_such(name):
    model = create_model(name, size="tiny")
    with torch.no_grad():
        output = model(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="no motion field"):
        model_motion_fields(name, output.aux)


def test_pretrain_adds_the_teacher_term_and_pins_it_on_resume(tmp_path):
    model = create_model("superslomo", size="tiny")
    arguments = dict(steps=2, batch_size=2, seed=0, crop_size=32, progress=False, lr=1e-4)
    curve = pretrain(model, ShiftedFrames(size=40), checkpoint_path=tmp_path / "run.pt", flow_teacher_weight=0.5, **arguments)
    assert (curve["loss_flow_teacher"] > 0).all()
    # the total is the model's own loss plus the teacher term
    own_terms = [column for column in curve.columns if column.startswith("loss_") and column != "loss_flow_teacher"]
    assert torch.allclose(torch.tensor(curve["loss"].values),
                          torch.tensor((curve[own_terms].sum(axis=1) + curve["loss_flow_teacher"]).values), rtol=1e-5)
    with pytest.raises(ResumeMismatchError, match="flow_teacher"):
        pretrain(create_model("superslomo", size="tiny"), ShiftedFrames(size=40), checkpoint_path=tmp_path / "run.pt",
                 flow_teacher_weight=1.0, **{**arguments, "steps": 3})


def test_pretrain_with_a_teacher_refuses_a_backbone_without_motion(tmp_path):
    with pytest.raises(ValueError, match="no motion field"):
        pretrain(create_model("sepconv", size="tiny"), ShiftedFrames(size=40), steps=1, batch_size=2, seed=0, crop_size=32,
                 progress=False, checkpoint_path=tmp_path / "run.pt", flow_teacher_weight=1.0)
