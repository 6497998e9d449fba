"""benchmarks/teacher_motion.py puts a given motion where each tiny backbone's own estimate enters
its synthesis: checked with a known displacement on a frame pair that it explains exactly."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from savfi_core.backbones import create_model
from savfi_core.train.flow_teacher import model_motion_fields

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import teacher_motion  # noqa: E402  (benchmarks/teacher_motion.py)

SHIFT = (2.0, -1.0)  # s in pixels (x, y): frame0 at x - s and frame1 at x + s show the middle frame


def frames_moving_by(shift, size=64, seed=0):
    """A textured middle frame and the pair around it: frame0(x) = middle(x + s), frame1(x) = middle(x - s)."""
    generator = torch.Generator().manual_seed(seed)
    texture = torch.nn.functional.avg_pool2d(torch.rand(1, 3, size + 16, size + 16, generator=generator), 3, 1, 1)
    dx, dy = int(shift[0]), int(shift[1])
    window = lambda ox, oy: texture[:, :, 8 + oy:8 + oy + size, 8 + ox:8 + ox + size]  # noqa: E731
    return window(dx, dy), window(0, 0), window(-dx, -dy)


def constant_displacement(frame0, frame1):
    return frame0.new_tensor(SHIFT).view(1, 2, 1, 1).expand(frame0.shape[0], 2, *frame0.shape[-2:])


@pytest.mark.parametrize("name", ["dain", "dvf", "rrin", "superslomo"])
def test_the_flow_backbones_expose_the_given_motion_in_their_own_convention(name):
    torch.manual_seed(0)
    model = teacher_motion.with_motion(name, create_model(name, size="tiny").eval(), constant_displacement)
    frame0, _, frame1 = frames_moving_by(SHIFT)
    with torch.no_grad():
        output = model(frame0, frame1)
    fields = model_motion_fields(name, output.aux)
    assert fields
    for key, field, factor in fields:
        expected = factor * torch.tensor(SHIFT).view(1, 2, 1, 1).expand_as(field)
        torch.testing.assert_close(field, expected, atol=1e-4, rtol=0, msg=f"{name} {key}")


@pytest.mark.parametrize("name", ["dvf", "sepconv"])
def test_where_the_synthesis_is_a_blend_of_the_two_warped_frames_the_given_motion_gives_the_middle_frame(name):
    """DVF blends frame0(x - d) and frame1(x + d) with its mask, SepConv (with the shift kernels) 1/2
    each: with the true motion both warped frames are the middle frame, whatever the weights."""
    torch.manual_seed(0)
    model = create_model(name, size="tiny").eval()
    frame0, middle, frame1 = frames_moving_by(SHIFT)
    with torch.no_grad():
        own = model(frame0, frame1).pred
        replaced = teacher_motion.with_motion(name, model, constant_displacement)(frame0, frame1).pred
    interior = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    torch.testing.assert_close(replaced[interior], middle[interior], atol=1e-4, rtol=0)
    assert (own[interior] - middle[interior]).abs().mean() > 1e-2  # the untrained estimate does not find it


def test_the_shift_taps_sample_bilinearly_and_clamp_at_the_outermost_tap():
    offset = torch.tensor([0.25, -6.0, 9.0]).view(3, 1, 1, 1)
    taps = teacher_motion.separable_shift_taps(offset, 13)[:, :, 0, 0]
    assert taps.sum(dim=1).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert taps[0, 6].item() == pytest.approx(0.75) and taps[0, 7].item() == pytest.approx(0.25)
    assert taps[1, 0].item() == 1.0 and taps[2, 12].item() == 1.0
    with pytest.raises(ValueError, match="no motion estimate to replace in 'cain'"):
        teacher_motion.with_motion("cain", create_model("cain", size="tiny"), constant_displacement)
