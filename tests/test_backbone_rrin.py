"""RRIN specifics: averaging init, the authors' half-pixel warp, linear-motion flows, clamping, L1 loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from savfi_core.backbones import create_model
from savfi_core.backbones.rrin import warp_like_rrin


def _frames(height, width, seed=0, count=3):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, height, width, generator=generator) for _ in range(count)]


def _authors_warp(image, flow):
    """The original ``warp``: grid 2 (x + u) / W - 1, grid_sample(align_corners=False), zero padding."""
    _, _, height, width = image.shape
    grid_y, grid_x = torch.meshgrid(torch.arange(height, dtype=image.dtype), torch.arange(width, dtype=image.dtype), indexing="ij")
    x = grid_x + flow[:, 0]
    y = grid_y + flow[:, 1]
    grid = torch.stack([2 * (x / width - 0.5), 2 * (y / height - 0.5)], dim=3)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@pytest.mark.parametrize("size", ["tiny", "paper"])
def test_untrained_network_outputs_the_frame_average(size):
    model = create_model("rrin", size=size)
    frame0, frame1, _ = _frames(35, 37)
    with torch.no_grad():
        prediction = model(frame0, frame1).pred
    torch.testing.assert_close(prediction, (frame0 + frame1) / 2, atol=1e-6, rtol=0)


def test_warp_reproduces_the_authors_grid_sample_including_borders():
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 13, 17, generator=generator, dtype=torch.float64)
    flow = 4 * torch.randn(2, 2, 13, 17, generator=generator, dtype=torch.float64)  # many samples leave the image
    torch.testing.assert_close(warp_like_rrin(image, flow), _authors_warp(image, flow))
    # the offset is real: a zero flow is not the identity in the original warp, a flow of +1/2 is
    assert float((warp_like_rrin(image, torch.zeros_like(flow)) - image).abs().max()) > 0.1
    torch.testing.assert_close(warp_like_rrin(image, torch.full_like(flow, 0.5)), image)


def test_constant_translation_through_linear_motion_flows_gives_the_middle_frame():
    """F01 = (+2, 0), F10 = (-2, 0): t = 0.5 gives Ft0 = (-1, 0), Ft1 = (+1, 0), both onto P(x - 1)."""
    model = create_model("rrin", size="tiny")
    with torch.no_grad():
        model.Flow_L.last.bias.copy_(torch.tensor([2.0, 0.0, -2.0, 0.0]))
    generator = torch.Generator().manual_seed(2)
    pattern = torch.rand(1, 3, 32, 44, generator=generator)
    frame0 = pattern[..., 2:42]  # P(x) on columns 0..39
    frame1 = pattern[..., 0:40]  # P(x - 2): the content moved 2 px to the right
    middle = pattern[..., 1:41]  # P(x - 1)
    with torch.no_grad():
        prediction = model(frame0, frame1).pred
    # one column on each side samples the reflected padding instead of the true scene
    torch.testing.assert_close(prediction[..., 1:-1], middle[..., 1:-1], atol=1e-6, rtol=0)
    assert float((prediction - (frame0 + frame1) / 2).abs().max()) > 0.1


def test_output_is_clamped_to_the_unit_range():
    model = create_model("rrin", size="tiny")
    with torch.no_grad():
        model.final.last.bias.fill_(5.0)
    frame0, frame1, _ = _frames(20, 24, seed=3)
    with torch.no_grad():
        prediction = model(frame0, frame1).pred
    assert torch.equal(prediction, torch.ones_like(prediction))


def test_first_step_moves_every_head():
    model = create_model("rrin", size="tiny")
    frame0, frame1, target = _frames(32, 32, seed=4)
    model.loss(model(frame0, frame1), target)["total"].backward()
    for head in ("Flow_L", "refine_flow", "Mask", "final"):
        assert float(getattr(model, head).last.weight.grad.abs().sum()) > 0, head


def test_loss_is_l1():
    model = create_model("rrin", size="tiny")
    frame0, frame1, target = _frames(16, 24, seed=5)
    output = model(frame0, frame1)
    losses = model.loss(output, target)
    assert set(losses) == {"l1", "total"}
    torch.testing.assert_close(losses["total"], (output.pred - target).abs().mean())


def test_paper_size_has_the_published_parameter_count():
    with torch.device("meta"):
        model = create_model("rrin", size="paper")
    assert sum(parameter.numel() for parameter in model.parameters()) == 19_194_445


def test_he_init_draws_hidden_convolutions_he_normal_and_still_starts_at_the_average():
    torch.manual_seed(0)
    model = create_model("rrin", size="tiny", he_init=True)
    frame0, frame1, _ = _frames(35, 37)
    with torch.no_grad():
        prediction = model(frame0, frame1).pred
    torch.testing.assert_close(prediction, (frame0 + frame1) / 2, atol=1e-6, rtol=0)
    # pooled over every hidden conv of a U-Net: weight / He std is a standard normal sample
    for head in ("Flow_L", "refine_flow", "Mask", "final"):
        unet = getattr(model, head)
        hidden = [m for m in unet.modules() if isinstance(m, torch.nn.Conv2d) and m is not unet.last]
        standardised = torch.cat([
            (m.weight / (2 / (1 + 0.1**2) / m.weight[0].numel()) ** 0.5).flatten() for m in hidden])
        assert abs(float(standardised.std()) - 1) < 0.05, head
        assert all(float(m.bias.abs().max()) == 0 for m in hidden), head
    # the default keeps PyTorch's init (uniform, std 1/sqrt(3 fan_in): a third of He's variance)
    default = create_model("rrin", size="tiny").Flow_L.down_path[1].block[0]
    assert float(default.bias.abs().max()) > 0
    assert float((default.weight / (2 / 1.01 / default.weight[0].numel()) ** 0.5).std()) < 0.7


def test_flow_unit_pixels_scales_the_flow_u_net_output_into_pixels():
    torch.manual_seed(0)
    model = create_model("rrin", size="tiny", flow_unit_pixels=16.0)
    with torch.no_grad():
        torch.nn.init.normal_(model.Flow_L.last.weight, std=0.01)
    frame0, frame1, _ = _frames(32, 32, seed=2)
    with torch.no_grad():
        raw = model.Flow_L(torch.cat([frame0, frame1], dim=1))
        aux = model.interpolate(frame0, frame1).aux
    assert float(raw.abs().mean()) > 0
    torch.testing.assert_close(aux["flow_0_1"], 16.0 * raw[:, 0:2])
    torch.testing.assert_close(aux["flow_1_0"], 16.0 * raw[:, 2:4])
    assert create_model("rrin", size="paper").config.flow_unit_pixels == 1.0  # the authors' checkpoint's unit


def test_flow_batchnorm_normalises_flow_u_net_features_on_batch_statistics_only_while_pretraining():
    from savfi_core.backbones.common import FrozenBatchNorm2d, batch_statistics_while_training

    torch.manual_seed(0)
    model = create_model("rrin", size="tiny", flow_batchnorm=True)
    layers = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    # two per conv block of Flow_L (5 down, 4 up), none in the other three U-Nets
    assert len(layers) == 18 and all(any(m is layer for m in model.Flow_L.modules()) for layer in layers)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in create_model("rrin", size="paper").modules())  # the authors' layout
    assert create_model("rrin", size="tiny").config.flow_batchnorm  # the shipped tiny weights have it
    frame0, frame1, _ = _frames(32, 32, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(model(frame0, frame1).pred, (frame0 + frame1) / 2, atol=1e-6, rtol=0)

    first_norm = model.Flow_L.down_path[0].block[1]
    seen = {}
    first_norm.register_forward_hook(lambda module, inputs, output: seen.update(output=output))
    batch = torch.rand(4, 6, 32, 32)
    model.train()
    with torch.no_grad(), batch_statistics_while_training(model, momentum=0.5) as switched:
        model.Flow_L(batch)
    assert switched == 18
    normalised = seen["output"]  # affine weight 1, bias 0 at init: the features themselves
    torch.testing.assert_close(normalised.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalised.var(dim=(0, 2, 3), unbiased=False), torch.ones(4), atol=1e-3, rtol=0)
    updated = first_norm.running_mean.clone()
    assert float(updated.abs().max()) > 0
    # outside the context (test-time adaptation, meta-learning) the statistics are read, never written
    with torch.no_grad():
        model.Flow_L(batch)
    torch.testing.assert_close(first_norm.running_mean, updated, atol=0, rtol=0)
