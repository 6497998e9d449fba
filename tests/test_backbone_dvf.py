"""DVF specifics: averaging init, frozen BatchNorm through functional_call, flow convention, MSE loss."""
from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from savfi_core.backbones import count_parameters, create_model


def _frames(height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, height, width, generator=generator) for _ in range(3)]


def _randomise_batchnorm_statistics(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))


@pytest.mark.parametrize("size", ["tiny", "paper"])
def test_untrained_dvf_outputs_the_frame_average(size):
    torch.manual_seed(0)
    model = create_model("dvf", size=size)
    frame0, frame1, _ = _frames(21, 30)
    with torch.no_grad():
        output = model(frame0, frame1)
    torch.testing.assert_close(output.pred, 0.5 * (frame0 + frame1), atol=1e-6, rtol=0)
    assert float(output.aux["flow"].abs().max()) == 0.0
    torch.testing.assert_close(output.aux["mask"], torch.full_like(output.aux["mask"], 0.5))


def test_batchnorm_stays_in_eval_mode_and_never_updates_its_statistics():
    torch.manual_seed(0)
    model = create_model("dvf", size="tiny")
    _randomise_batchnorm_statistics(model)
    with torch.no_grad():
        model.conv4.weight.normal_(0, 0.01)  # make the output depend on the features
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    frame0, frame1, _ = _frames(24, 40, seed=2)
    with torch.no_grad():
        train_output = model.train()(frame0, frame1).pred
        eval_output = model.eval()(frame0, frame1).pred
    torch.testing.assert_close(train_output, eval_output, atol=0, rtol=0)
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), f"{name} changed in a forward pass"


def test_pretraining_batchnorm_uses_batch_statistics_in_train_mode_only_and_only_inside_its_context():
    from savfi_core.backbones.common import FrozenBatchNorm2d, batch_statistics_while_training

    torch.manual_seed(0)
    model = create_model("dvf", size="tiny", pad_margin=0)
    _randomise_batchnorm_statistics(model)
    frame0, frame1, _ = _frames(64, 64, seed=2)  # a multiple of 64 and no margin: no padding before conv1
    layer = model.conv1_bn
    frozen_mean = layer.running_mean.clone()
    with batch_statistics_while_training(model, momentum=0.25) as switched:
        assert switched == sum(isinstance(module, FrozenBatchNorm2d) for module in model.modules()) == 7
        assert layer.updates_running_statistics
        with torch.no_grad():
            model.train()(frame0, frame1)
            features = model.conv1(torch.cat([(frame0 * 255 - 127.5) / 127.5, (frame1 * 255 - 127.5) / 127.5], 1))
        batch_mean = features.mean(dim=(0, 2, 3))
        torch.testing.assert_close(layer.running_mean, 0.75 * frozen_mean + 0.25 * batch_mean)
        normalised = layer(features)  # train mode: the batch's own statistics, so every channel has mean ~bias
        torch.testing.assert_close(normalised.mean(dim=(0, 2, 3)), layer.bias.detach().expand(12), atol=1e-5, rtol=0)
        model.eval()
        assert not layer.updates_running_statistics
        updated = layer.running_mean.clone()
        with torch.no_grad():
            model(frame0, frame1)
        assert torch.equal(layer.running_mean, updated)
    model.train()
    assert not layer.updates_running_statistics
    with torch.no_grad():
        model(frame0, frame1)
    assert torch.equal(layer.running_mean, updated), "frozen again after the context"
    with pytest.raises(ValueError, match="momentum"):
        with batch_statistics_while_training(model, momentum=0.0):
            pass


def test_functional_call_reads_the_batchnorm_buffers_it_is_given():
    torch.manual_seed(0)
    model = create_model("dvf", size="tiny").train()
    with torch.no_grad():
        model.conv4.weight.normal_(0, 0.01)
    frame0, frame1, _ = _frames(24, 40, seed=2)
    parameters = dict(model.named_parameters())
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    with torch.no_grad():
        plain = functional_call(model, {**parameters, **buffers}, (frame0, frame1)).pred
        scaled_buffers = {name: (b * 4 if name.endswith("running_var") else b) for name, b in buffers.items()}
        scaled = functional_call(model, {**parameters, **scaled_buffers}, (frame0, frame1)).pred
    torch.testing.assert_close(plain, model(frame0, frame1).pred.detach())
    assert not torch.allclose(plain, scaled)
    for name, buffer in buffers.items():
        assert torch.equal(buffer, dict(model.named_buffers())[name])


def test_flow_moves_frame0_back_and_frame1_forward_in_pixels_of_the_padded_image():
    """A constant tanh output s gives d = 0.5 * s * (W-1)/2 pixels: frame0 is sampled at x - d and
    frame1 at x + d. For a texture moving right by 2 px between the frames, d = 1 px recovers the
    middle frame exactly (away from the clamped border columns). The original's unit and padding
    (the shipped tiny config fixes the unit in pixels and adds a margin)."""
    model = create_model("dvf", size="tiny", flow_range_pixels=None, pad_margin=0)
    width = height = 64  # already a multiple of 64: no padding
    tanh_value = 1.0 / (0.5 * (width - 1) / 2)
    with torch.no_grad():
        model.conv4.bias.copy_(torch.tensor([math.atanh(tanh_value), 0.0, 0.0]))
    generator = torch.Generator().manual_seed(4)
    scene = torch.rand(1, 3, height, width + 4, generator=generator)
    frame0 = scene[..., 2 : 2 + width]  # frame1(x) = frame0(x - 2): the texture moves right
    middle = scene[..., 1 : 1 + width]
    frame1 = scene[..., 0:width]
    with torch.no_grad():
        output = model(frame0, frame1)
    torch.testing.assert_close(output.aux["flow"][:, 0], torch.ones(1, height, width), atol=1e-5, rtol=0)
    torch.testing.assert_close(output.aux["flow"][:, 1], torch.zeros(1, height, width), atol=0, rtol=0)
    torch.testing.assert_close(output.pred[..., 2:-2], middle[..., 2:-2], atol=1e-4, rtol=0)


def test_mask_blends_towards_frame0_when_positive():
    model = create_model("dvf", size="tiny")
    with torch.no_grad():
        model.conv4.bias.copy_(torch.tensor([0.0, 0.0, math.atanh(0.6)]))  # a = (1 + 0.6) / 2 = 0.8
    frame0, frame1, _ = _frames(20, 20, seed=6)
    with torch.no_grad():
        pred = model(frame0, frame1).pred
    torch.testing.assert_close(pred, 0.8 * frame0 + 0.2 * frame1, atol=1e-5, rtol=0)


def test_loss_is_mse_on_the_normalised_scale():
    model = create_model("dvf", size="tiny")
    frame0, frame1, target = _frames(16, 16)
    output = model(frame0, frame1)
    losses = model.loss(output, target)
    normalised_pred = (output.pred.detach() * 255 - 127.5) / 127.5
    normalised_target = (target * 255 - 127.5) / 127.5
    expected = ((normalised_pred - normalised_target) ** 2).mean()
    assert set(losses) == {"mse", "total"}
    assert math.isclose(float(losses["total"].detach()), float(expected), rel_tol=1e-5)


def test_paper_size_is_the_published_architecture():
    with torch.device("meta"):
        paper = create_model("dvf", size="paper")
    assert paper.pad_multiple == 64 and paper.pad_mode == "reflect"
    assert count_parameters(paper) == 3_821_891  # manifest num_params of voxelflow.json
    assert sum(b.numel() for n, b in paper.named_buffers() if not n.endswith("num_batches_tracked")) == 2_304
