"""Super SloMo specifics: averaging init, flow coefficients, normalised warping, loss terms, VGG16 term."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from savfi_core.backbones import count_parameters, create_model
from savfi_core.backbones import superslomo as superslomo_module
from savfi_core.checkpoint import CheckpointError

MEAN = torch.tensor([0.429, 0.431, 0.397]).view(1, 3, 1, 1)
VGG_CONVOLUTIONS = superslomo_module.VGG16_CONV4_3_LAYERS


def _frames(height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, height, width, generator=generator) for _ in range(3)]


@pytest.fixture
def fresh_warning(monkeypatch):
    """Reset the once-per-process notice about missing VGG16 weights."""
    monkeypatch.setattr(superslomo_module, "_missing_vgg_warned", False)


def _write_vgg16_file(path, seed=0, drop=None):
    """A random-weight VGG16 state_dict with torchvision names (features.* up to 28, classifier.*)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for index, in_channels, out_channels in VGG_CONVOLUTIONS + ((24, 512, 512), (26, 512, 512), (28, 512, 512)):
        fan_in = in_channels * 9
        state[f"features.{index}.weight"] = torch.randn(out_channels, in_channels, 3, 3, generator=generator) * math.sqrt(2 / fan_in)
        state[f"features.{index}.bias"] = 0.01 * torch.randn(out_channels, generator=generator)
    state["classifier.6.weight"] = torch.zeros(10, 4)  # a full VGG16 file has more; extras are ignored
    state["classifier.6.bias"] = torch.zeros(10)
    if drop is not None:
        del state[drop]
    torch.save(state, path)
    return state


def _vgg_features(state, image):
    """VGG16 conv1_1..conv4_3 written out with F.conv2d, independently of the model's module."""
    x = image
    for index, _, _ in VGG_CONVOLUTIONS:
        x = F.conv2d(x, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1)
        if index != 21:
            x = F.relu(x)
        if index in (2, 7, 14):
            x = F.max_pool2d(x, 2)
    return x


@pytest.mark.parametrize("size", ["tiny", "paper"])
def test_untrained_superslomo_outputs_the_frame_average(size):
    torch.manual_seed(0)
    model = create_model("superslomo", size=size)
    frame0, frame1, _ = _frames(21, 30)
    with torch.no_grad():
        output = model(frame0, frame1)
    torch.testing.assert_close(output.pred, 0.5 * (frame0 + frame1), atol=1e-6, rtol=0)
    assert float(output.aux["flow_0_1"].abs().max()) == 0 and float(output.aux["flow_1_0"].abs().max()) == 0
    for name in ("frame0", "frame1", "warped_0_t", "warped_1_0", "visibility_0"):
        assert output.aux[name].shape[-2:] == (21, 30), name
    torch.testing.assert_close(output.aux["frame0"], frame0, atol=0, rtol=0)


def test_bidirectional_flows_give_the_intermediate_flows_of_paper_equation_4():
    """F_0->1 = (+2, 0) and F_1->0 = (-2, 0) px give F_t->0 = (-1, 0), F_t->1 = (+1, 0) at t = 0.5;
    for a texture moving right by 2 px the warped frames are the middle frame. The negative flow
    passes the U-Net's final leaky ReLU (slope 0.1), so its bias is -20."""
    model = create_model("superslomo", size="tiny")
    with torch.no_grad():
        model.flowComp.conv3.bias.copy_(torch.tensor([2.0, 0.0, -20.0, 0.0]))
    width = height = 64  # a multiple of 64: no padding
    generator = torch.Generator().manual_seed(4)
    scene = torch.rand(1, 3, height, width + 4, generator=generator)
    frame0 = scene[..., 2 : 2 + width]  # frame1(x) = frame0(x - 2)
    middle = scene[..., 1 : 1 + width]
    frame1 = scene[..., 0:width]
    with torch.no_grad():
        output = model(frame0, frame1)
    torch.testing.assert_close(output.aux["flow_1_0"][:, 0], torch.full((1, height, width), -2.0), atol=1e-5, rtol=0)
    inner = (..., slice(3, -3))
    torch.testing.assert_close(output.aux["warped_0_t"][inner], middle[inner], atol=1e-5, rtol=0)
    torch.testing.assert_close(output.aux["warped_1_t"][inner], middle[inner], atol=1e-5, rtol=0)
    torch.testing.assert_close(output.pred[inner], middle[inner], atol=1e-5, rtol=0)
    # g(I0, F_1->0) samples frame0 at x - 2, i.e. frame1: the warped input frame terms of the loss.
    torch.testing.assert_close(output.aux["warped_0_1"][inner], frame1[inner], atol=1e-5, rtol=0)
    # Warping happens on mean-subtracted frames with zero padding (as the original): a sample
    # wholly outside the image is 0 there, i.e. the mean colour in [0,1] space.
    torch.testing.assert_close(output.aux["warped_0_t"][..., 0], MEAN.view(1, 3, 1).expand(1, 3, height), atol=1e-6, rtol=0)


def test_loss_terms_of_the_untrained_model(fresh_warning):
    model = create_model("superslomo", size="tiny")
    frame0, frame1, target = _frames(20, 24, seed=1)
    with pytest.warns(UserWarning, match="VGG16"):
        losses = model.loss(model(frame0, frame1), target)
    average = 0.5 * (frame0 + frame1)
    # Zero flows: every warped frame is its source frame.
    expected = {
        "reconstruction": 204 * (average - target).abs().mean(),
        "warping": 102 * ((frame0 - target).abs().mean() + (frame1 - target).abs().mean() + 2 * (frame0 - frame1).abs().mean()),
        "smoothness": torch.tensor(0.0),
    }
    assert set(losses) == {"reconstruction", "warping", "smoothness", "total"}
    for name, value in expected.items():
        assert math.isclose(float(losses[name].detach()), float(value), rel_tol=1e-5, abs_tol=1e-7), name
    assert math.isclose(float(losses["total"].detach()), float(sum(expected.values())), rel_tol=1e-5)


def test_smoothness_is_the_mean_absolute_forward_difference_of_both_flows(fresh_warning):
    model = create_model("superslomo", size="tiny")
    flow_0_1 = torch.arange(2 * 5 * 6, dtype=torch.float32).view(1, 2, 5, 6)  # d/dx = 1, d/dy = 6
    flow_1_0 = torch.zeros(1, 2, 5, 6)
    frame = torch.zeros(1, 3, 5, 6)
    output = superslomo_module.InterpolationOutput(
        pred=frame,
        aux={"frame0": frame, "frame1": frame, "flow_0_1": flow_0_1, "flow_1_0": flow_1_0,
             "warped_0_t": frame, "warped_1_t": frame, "warped_0_1": frame, "warped_1_0": frame},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        losses = model.loss(output, frame)
    assert math.isclose(float(losses["smoothness"]), 1.0 + 6.0, rel_tol=1e-6)
    assert float(losses["total"]) == float(losses["smoothness"])


def test_missing_vgg16_is_announced_once(fresh_warning, caplog):
    model = create_model("superslomo", size="tiny")
    frame0, frame1, target = _frames(16, 16)
    output = model(frame0, frame1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert "perceptual" not in model.loss(output, target)
        create_model("superslomo", size="tiny").loss(output, target)
    assert len([w for w in caught if "VGG16" in str(w.message)]) == 1
    assert len([r for r in caplog.records if "VGG16" in r.getMessage()]) == 1


def test_local_vgg16_weights_add_the_perceptual_term(tmp_path, fresh_warning):
    path = tmp_path / "vgg16.pth"
    state = _write_vgg16_file(path)
    model = create_model("superslomo", size="tiny", vgg16_weights=str(path))
    # The loss network is not part of the backbone: not in state_dict, parameters or buffers.
    assert not [name for name in model.state_dict() if "vgg" in name.lower() or name.startswith("features")]
    assert count_parameters(model) == count_parameters(create_model("superslomo", size="tiny"))
    frame0, frame1, target = _frames(32, 32, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no missing-VGG16 notice on this path
        output = model(frame0, frame1)
        losses = model.loss(output, target)
    expected = 0.005 * F.mse_loss(_vgg_features(state, output.pred.detach() - MEAN), _vgg_features(state, target - MEAN))
    assert math.isclose(float(losses["perceptual"].detach()), float(expected), rel_tol=1e-4)
    others = losses["reconstruction"] + losses["warping"] + losses["smoothness"]
    assert math.isclose(float(losses["total"].detach()), float((others + losses["perceptual"]).detach()), rel_tol=1e-6)
    # The perceptual term is differentiable w.r.t. the backbone and the VGG16 weights stay frozen.
    gradients = torch.autograd.grad(losses["perceptual"], [model.arbTimeFlowIntrp.conv3.bias])
    assert float(gradients[0].abs().sum()) > 0
    assert not any(parameter.requires_grad for parameter in model.perceptual_network.parameters())


def test_vgg16_weights_also_come_through_the_constructor(tmp_path):
    path = tmp_path / "vgg16.pth"
    _write_vgg16_file(path)
    model = superslomo_module.SuperSloMo(superslomo_module.TINY, vgg16_weights=path)
    assert model.perceptual_network is not None and len(model.perceptual_network) == 22


def test_incomplete_vgg16_file_is_rejected_by_name(tmp_path):
    path = tmp_path / "broken-vgg16.pth"
    _write_vgg16_file(path, drop="features.19.weight")
    with pytest.raises(CheckpointError) as error:
        create_model("superslomo", size="tiny", vgg16_weights=str(path))
    assert "features.19.weight" in str(error.value) and str(path) in str(error.value)


def test_paper_size_is_the_published_architecture():
    with torch.device("meta"):
        paper = create_model("superslomo", size="paper")
    assert paper.pad_multiple == 64 and paper.pad_mode == "reflect"
    assert count_parameters(paper.flowComp) == 19_794_116
    assert count_parameters(paper.arbTimeFlowIntrp) == 19_816_357
    assert paper.checkpoint_sections == {"state_dictFC": "flowComp.", "state_dictAT": "arbTimeFlowIntrp."}
