"""SepConv specifics: averaging init, kernel-support alignment, kernel_size field, loss, adapted layers."""
from __future__ import annotations

import math
from fnmatch import fnmatch

import pytest
import torch

from savfi_core.backbones import count_parameters, create_model


def _frames(height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, height, width, generator=generator) for _ in range(3)]


# The paper's 51-tap kernels on tiny widths: the paper-size encoder (6.5 GMAC at 128x128) adds
# nothing to what this test checks, the centre-tap initialisation of K-channel heads.
@pytest.mark.parametrize("kernel_size", [13, 51])
def test_untrained_sepconv_outputs_the_frame_average(kernel_size):
    torch.manual_seed(0)
    model = create_model("sepconv", size="tiny", kernel_size=kernel_size)
    frame0, frame1, _ = _frames(21, 30)
    with torch.no_grad():
        pred = model(frame0, frame1).pred
    torch.testing.assert_close(pred, 0.5 * (frame0 + frame1), atol=1e-6, rtol=0)


def test_centre_offset_kernels_shift_the_first_frame_with_replicated_borders():
    """Delta kernels at tap (centre+dy, centre+dx) for frame0 and zero kernels for frame1 give
    pred[y, x] = frame0[y+dy, x+dx], with coordinates clamped at the border: this pins the
    (K-1)/2 replicate pad of the kernel support and the crop back to the input size."""
    model = create_model("sepconv", size="tiny", kernel_size=7)
    centre, dy, dx = 3, 2, -3
    with torch.no_grad():
        for name, tap, value in (("moduleVertical1", centre + dy, 1.0), ("moduleHorizontal1", centre + dx, 1.0),
                                 ("moduleVertical2", centre, 0.0), ("moduleHorizontal2", centre, 0.0)):
            last = getattr(model, name)[7]
            last.weight.zero_()
            last.bias.zero_()
            last.bias[tap] = value
    frame0, frame1, _ = _frames(19, 26, seed=3)
    with torch.no_grad():
        pred = model(frame0, frame1).pred
    rows = (torch.arange(19) + dy).clamp(0, 18)
    columns = (torch.arange(26) + dx).clamp(0, 25)
    expected = frame0[:, :, rows][:, :, :, columns]
    torch.testing.assert_close(pred, expected, atol=1e-6, rtol=0)


def test_kernel_size_is_a_config_field():
    model = create_model("sepconv", size="tiny", kernel_size=5)
    for name in ("moduleVertical1", "moduleVertical2", "moduleHorizontal1", "moduleHorizontal2"):
        assert getattr(model, name)[4].weight.shape[0] == 5
        assert tuple(getattr(model, name)[7].weight.shape) == (5, 5, 3, 3)
    frame0, frame1, _ = _frames(17, 23)
    with torch.no_grad():
        assert model(frame0, frame1).pred.shape == (1, 3, 17, 23)
    with pytest.raises(ValueError, match="odd"):
        create_model("sepconv", size="tiny", kernel_size=4)


def test_paper_size_is_the_published_architecture():
    with torch.device("meta"):
        paper = create_model("sepconv", size="paper")
    assert paper.config.kernel_size == 51 and paper.pad_multiple == 128 and paper.pad_mode == "replicate"
    assert count_parameters(paper) == 21_675_452  # manifest num_params of sepconv.json
    assert count_parameters(create_model("sepconv", size="tiny")) < 1_000_000


def test_loss_is_l1():
    model = create_model("sepconv", size="tiny")
    frame0, frame1, target = _frames(16, 16)
    output = model(frame0, frame1)
    losses = model.loss(output, target)
    expected = (output.pred - target).abs().mean()
    assert set(losses) == {"l1", "total"}
    assert math.isclose(float(losses["total"].detach()), float(expected.detach()), rel_tol=1e-6)


def test_adapted_parameters_are_the_basic_conv_blocks_only():
    model = create_model("sepconv", size="tiny")
    adapted = [name for name, _ in model.named_parameters() if any(fnmatch(name, p) for p in model.adapted_parameter_patterns)]
    assert "moduleConv1.0.weight" in adapted and "moduleDeconv2.4.bias" in adapted
    assert not [name for name in adapted if name.startswith(("moduleUpsample", "moduleVertical", "moduleHorizontal"))]
    assert len(adapted) == 2 * 3 * 9  # nine Basic blocks of three convs, weight and bias


def test_gradient_reaches_kernel_heads_at_initialisation():
    """Zero-weight kernel heads still learn: their gradient is nonzero from the first step."""
    model = create_model("sepconv", size="tiny")
    frame0, frame1, target = _frames(20, 20, seed=5)
    model.loss(model(frame0, frame1), target)["total"].backward()
    assert float(model.moduleVertical1[7].weight.grad.abs().sum()) > 0
    assert float(model.moduleHorizontal2[7].bias.grad.abs().sum()) > 0
