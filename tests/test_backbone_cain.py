"""CAIN specifics: averaging init, mean handling before padding, the authors' shuffle order, L1 loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from savfi_core.backbones import create_model, pad_to_multiple
from savfi_core.backbones.cain import CAIN, CAINConfig


def _frames(height, width, seed=0, count=3):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, height, width, generator=generator) for _ in range(count)]


def _perturb(model, seed=0, scale=0.05):
    """Move every parameter away from the averaging init so tests see a general network."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return model


@pytest.mark.parametrize("size", ["tiny", "paper"])
def test_untrained_network_outputs_the_frame_average(size):
    model = create_model("cain", size=size)
    frame0, frame1, _ = _frames(35, 37)
    with torch.no_grad():
        prediction = model(frame0, frame1).pred
    torch.testing.assert_close(prediction, (frame0 + frame1) / 2, atol=1e-6, rtol=0)


def test_zeroed_group_convs_receive_gradients_on_the_first_step():
    model = create_model("cain", size="tiny")
    frame0, frame1, target = _frames(32, 32, seed=1)
    model.loss(model(frame0, frame1), target)["total"].backward()
    for group in model.encoder.interpolate.body:
        assert float(group.body[-1].conv.weight.grad.abs().sum()) > 0


def test_output_matches_the_written_out_formula_with_means_of_unpadded_frames():
    torch.manual_seed(0)
    model = _perturb(CAIN(CAINConfig(depth=2, resgroups=1, resblocks=1)))
    frame0, frame1, _ = _frames(21, 30, seed=2)
    mean0 = frame0.mean(dim=(2, 3), keepdim=True)
    mean1 = frame1.mean(dim=(2, 3), keepdim=True)
    padded0, crop = pad_to_multiple(frame0 - mean0, 128, "reflect")
    padded1, _ = pad_to_multiple(frame1 - mean1, 128, "reflect")

    def unshuffle(image, scale=4):
        # the authors' PixelShuffle(1/s): view [B,C,H/s,s,W/s,s], permute to [B,C,s,s,H/s,W/s]
        batch, channels, height, width = image.shape
        view = image.reshape(batch, channels, height // scale, scale, width // scale, scale)
        return view.permute(0, 1, 3, 5, 2, 4).reshape(batch, channels * scale * scale, height // scale, width // scale)

    def shuffle(features, scale=4):
        batch, channels, height, width = features.shape
        view = features.reshape(batch, channels // scale**2, scale, scale, height, width)
        return view.permute(0, 1, 4, 2, 5, 3).reshape(batch, channels // scale**2, height * scale, width * scale)

    interpolate = model.encoder.interpolate
    with torch.no_grad():
        head = interpolate.headConv(torch.cat([unshuffle(padded0), unshuffle(padded1)], dim=1))
        block = interpolate.body[0].body[0]
        first = block.body[0].conv(F.pad(head, [1] * 4, mode="reflect"))
        second = block.body[2].conv(F.pad(F.leaky_relu(first, 0.2), [1] * 4, mode="reflect"))
        gates = block.body[3].conv_du(second.mean(dim=(2, 3), keepdim=True))
        after_block = head + second * gates
        group = head + interpolate.body[0].body[1].conv(F.pad(after_block, [1] * 4, mode="reflect"))
        expected = crop(shuffle(interpolate.tailConv(group + head))) + (mean0 + mean1) / 2
        prediction = model(frame0, frame1).pred
    torch.testing.assert_close(prediction, expected, atol=1e-5, rtol=1e-5)


def test_adding_a_constant_colour_to_both_frames_shifts_the_output_by_it():
    torch.manual_seed(0)
    model = _perturb(create_model("cain", size="tiny"), seed=3)
    frame0, frame1, _ = _frames(40, 50, seed=4)
    shift = torch.tensor([0.1, -0.2, 0.05]).view(1, 3, 1, 1)
    with torch.no_grad():
        base = model(frame0, frame1).pred
        shifted = model(frame0 + shift, frame1 + shift).pred
    assert float((base - (frame0 + frame1) / 2).abs().max()) > 1e-3  # perturbed: not plain averaging
    torch.testing.assert_close(shifted, base + shift, atol=1e-5, rtol=0)


def test_loss_is_l1():
    model = create_model("cain", size="tiny")
    frame0, frame1, target = _frames(16, 24, seed=5)
    output = model(frame0, frame1)
    losses = model.loss(output, target)
    assert set(losses) == {"l1", "total"}
    torch.testing.assert_close(losses["total"], (output.pred - target).abs().mean())


def test_paper_size_has_the_published_parameter_count():
    with torch.device("meta"):
        model = create_model("cain", size="paper")
    assert sum(parameter.numel() for parameter in model.parameters()) == 42_780_432
    assert model.config.features == 192 and len(model.encoder.interpolate.body) == 5
