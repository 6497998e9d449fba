"""DAIN-specific behaviour: frame-averaging init, the loss, the batched two-direction flow, the depth
weights handed to the projection, functional BatchNorm buffers, and which parameters adapt."""
from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest
import torch
from torch.func import functional_call

from savfi_core import kernels
from savfi_core.backbones import create_model
from savfi_core.backbones.common import charbonnier

MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "checkpoint_manifests" / "dain.json"


@pytest.fixture(autouse=True)
def one_thread():
    """Run these tests on one thread. DAIN is hundreds of small ops (the hourglass alone has 168
    convolutions); with two OpenMP threads on a busy 2-core machine every op waits for the other
    thread, measured 30x slower (tiny second-order gradients: 42 s instead of 1.3 s)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _frames(height=35, width=37, batch=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 3, height, width, generator=generator) for _ in range(3)]


def _with_motion(model, seed=0):
    """Give the zero-initialised flow predictors and kernel heads random weights, so flows and
    kernels vary from pixel to pixel and the tests below exercise real warping."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("predict_flow6", "predict_flow5", "predict_flow4", "predict_flow3", "predict_flow2", "dc_conv7"):
            layer = getattr(model.flownets, name)
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.05)
        for head in (model.initScaleNets_filter1, model.initScaleNets_filter2):
            head[2].weight.copy_(torch.randn(head[2].weight.shape, generator=generator) * 0.05)
        block5 = model.rectifyNet.block5[0]
        block5.weight.copy_(torch.randn(block5.weight.shape, generator=generator) * 0.05)
    return model


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_untrained_tiny_dain_outputs_the_frame_average(mode):
    torch.manual_seed(0)
    model = create_model("dain", size="tiny")
    model.train(mode == "train")
    frame0, frame1, _ = _frames()
    with torch.no_grad():
        output = model(frame0, frame1)
    assert torch.allclose(output.pred, (frame0 + frame1) / 2, atol=1e-6)
    assert torch.allclose(output.aux["blend"], (frame0 + frame1) / 2, atol=1e-6)
    assert float(output.aux["flow_t0"].abs().max()) == 0.0 and float(output.aux["flow_t1"].abs().max()) == 0.0


def test_loss_is_charbonnier_with_epsilon_1e8_and_stays_finite_at_zero_error():
    torch.manual_seed(0)
    model = create_model("dain", size="tiny").train()
    frame0, frame1, target = _frames()
    output = model(frame0, frame1)
    losses = model.loss(output, target)
    difference = output.pred - target
    expected = torch.sqrt(difference * difference + 1e-16).mean()
    assert set(losses) == {"charbonnier", "total"}
    assert torch.allclose(losses["total"], expected) and torch.equal(losses["total"], losses["charbonnier"])
    # Zero error: sqrt(d^2 + eps^2) has gradient d / sqrt(...) = 0 and second derivative 1/eps = 1e8,
    # both finite in float32.
    prediction = torch.zeros(1, 3, 4, 4, requires_grad=True)
    value = charbonnier(prediction - torch.zeros(1, 3, 4, 4), 1e-8)
    (gradient,) = torch.autograd.grad(value, prediction, create_graph=True)
    (curvature,) = torch.autograd.grad(gradient.sum(), prediction)
    assert float(value.detach()) == pytest.approx(1e-8) and float(gradient.detach().abs().max()) == 0.0
    assert torch.isfinite(curvature).all() and float(curvature.max()) > 0


def test_shared_pyramid_decoding_equals_pwc_net_on_each_ordered_pair():
    torch.manual_seed(0)
    model = _with_motion(create_model("dain", size="tiny"))
    frame0, frame1, _ = (frame[..., :64, :64] for frame in _frames(64, 64))
    pwc = model.flownets
    with torch.no_grad():
        forward = pwc(torch.cat((frame0, frame1), 1))
        backward = pwc(torch.cat((frame1, frame0), 1))
        pyramid = pwc.features(torch.cat((frame0, frame1), 0))
        swapped = [torch.cat((level[1:], level[:1]), 0) for level in pyramid]
        both = pwc.decode(pyramid, swapped)
    assert float(forward.abs().max()) > 1e-3  # the check below compares real flows, not zeros
    assert torch.allclose(both[:1], forward, atol=1e-5) and torch.allclose(both[1:], backward, atol=1e-5)


def test_batch_of_two_equals_two_single_pairs_in_eval_mode():
    torch.manual_seed(0)
    model = _with_motion(create_model("dain", size="tiny")).eval()
    frame0, frame1, _ = _frames(batch=2, seed=3)
    with torch.no_grad():
        batched = model(frame0, frame1).pred
        single = torch.cat([model(frame0[i : i + 1], frame1[i : i + 1]).pred for i in range(2)])
    assert torch.allclose(batched, single, atol=1e-5)


def test_projection_weights_nearer_pixels_as_dain_does(monkeypatch):
    """DAIN weights each source pixel by 1e-6 + exp(-log_depth); savfi's op weights by 1 / depth."""
    torch.manual_seed(0)
    model = _with_motion(create_model("dain", size="tiny")).eval()
    captured = {}
    original = kernels.depth_flow_projection

    def spy(flow, depth, time=0.5, fill_holes=True):
        captured.update(flow=flow, depth=depth, time=time, fill_holes=fill_holes)
        return original(flow, depth, time=time, fill_holes=fill_holes)

    monkeypatch.setattr(kernels, "depth_flow_projection", spy)
    frame0, frame1, _ = _frames(64, 64)
    with torch.no_grad():
        output = model(frame0, frame1)
    log_depth = torch.cat((output.aux["log_depth0"], output.aux["log_depth1"]), 0)
    assert captured["time"] == 0.5
    assert torch.allclose(1.0 / captured["depth"], 1e-6 + torch.exp(-log_depth), rtol=1e-5)
    # the flows handed over are F_01 then F_10 in full-resolution pixels (not yet scaled by t)
    assert captured["flow"].shape == (2, 2, 64, 64)
    # DAIN fills holes only where the flow needs no gradient (inference, frozen flow network)
    assert captured["fill_holes"] is True
    model(frame0, frame1)
    assert captured["fill_holes"] is False


def test_functional_call_updates_the_passed_batchnorm_buffers_not_the_modules():
    torch.manual_seed(0)
    model = create_model("dain", size="tiny").train()
    before = {name: value.clone() for name, value in model.named_buffers()}
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    parameters = dict(model.named_parameters())
    frame0, frame1, _ = _frames()
    functional_call(model, {**parameters, **buffers}, (frame0, frame1))
    assert all(torch.equal(value, before[name]) for name, value in model.named_buffers())
    assert not torch.equal(buffers["depthNet.1.running_mean"], before["depthNet.1.running_mean"])


def test_tiny_has_the_paper_topology_and_only_rectifynet_adapts():
    with torch.device("meta"):
        paper = create_model("dain", size="paper")
        tiny = create_model("dain", size="tiny")
    assert list(paper.state_dict()) == list(tiny.state_dict())
    adapted = [
        name for name, _ in paper.named_parameters() if any(fnmatch.fnmatch(name, pattern) for pattern in paper.adapted_parameter_patterns)
    ]
    assert sum(paper.get_parameter(name).numel() for name in adapted) == 3_629_187
    if MANIFEST.is_file():
        learning_rates = json.loads(MANIFEST.read_text())["meta_system"]
        prefix = "inner_loop_optimizer.names_learning_rates_dict."
        meta_adapted = sorted(key[len(prefix) :].replace("-", ".") for key in learning_rates if key.startswith(prefix))
        assert sorted(adapted) == meta_adapted
    assert sum(value.numel() for value in paper.parameters()) == 24_031_656
    assert sum(value.numel() for value in tiny.parameters()) < 600_000
