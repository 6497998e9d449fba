"""SepConv specifics: live kernel heads, kernel-support alignment, kernel_size field, loss, adapted layers."""
from __future__ import annotations

import math
from fnmatch import fnmatch

import pytest
import torch

from savfi_core.backbones import count_parameters, create_model


def _frames(height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, height, width, generator=generator) for _ in range(3)]


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


def test_gradient_reaches_every_layer_at_initialisation():
    """From the default initialisation the encoder gets a gradient through the kernel heads (the
    earlier averaging initialisation with zero last-layer weights gave it none)."""
    model = create_model("sepconv", size="tiny")
    frame0, frame1, target = _frames(20, 20, seed=5)
    model.loss(model(frame0, frame1), target)["total"].backward()
    silent = [name for name, parameter in model.named_parameters() if float(parameter.grad.abs().sum()) == 0]
    assert not silent, f"no gradient at initialisation for {silent}"


def _head_relu_activity(model, frame0, frame1) -> dict[str, float]:
    """Share of nonzero outputs of the ReLU before each kernel head's last conv."""
    activity, hooks = {}, []
    for name in ("moduleVertical1", "moduleVertical2", "moduleHorizontal1", "moduleHorizontal2"):
        relu = getattr(model, name)[5]
        hooks.append(relu.register_forward_hook(lambda module, inputs, output, name=name: activity.__setitem__(name, float((output > 0).float().mean()))))
    with torch.no_grad():
        model(frame0, frame1)
    for hook in hooks:
        hook.remove()
    return activity


def test_shipped_tiny_weights_have_live_kernel_heads():
    """Guards against the dead-head failure: on real frames, a head whose ReLU is (almost) never
    active cannot adapt its kernels, and meta-learning through it is meaningless."""
    from savfi_core.data import open_dataset

    sample = open_dataset("clips", split="test")[0]
    frames = sample.frames[:, None]
    model = create_model("sepconv", size="tiny", weights="default").eval()
    activity = _head_relu_activity(model, frames[sample.target_index - 1], frames[sample.target_index + 1])
    assert min(activity.values()) > 0.05, activity
