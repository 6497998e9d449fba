"""Task-batched meta-steps (``MetaLearner(task_batching="vmap")``) against the per-task loop.

Every algorithm on two backbones (SepConv: its separable-convolution kernel under vmap; DVF: its
frozen BatchNorm and backwarp), first and second order, float32: the meta-gradient of every
meta-parameter and every metric equal the loop's to 1e-5 (relative to the largest gradient
entry), and in float64 over two inner steps with Adam to 1e-9. Inner SGD at a small rate in
float32: the comparison then measures the batching, not how a chaotic inner step amplifies
float32 rounding (Adam's g/sqrt(v) at step one is such a step).
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from savfi_core.backbones import create_model
from savfi_core.kernels import backwarp, sepconv
from savfi_core.meta import MetaConfig, MetaLearner
from test_meta_fast_paths import septuplets

ALGORITHMS = ["maml", "maml++", "l2f", "metasgd"]


def learner_for(name: str, algorithm: str, first_order: bool, task_batching: str, **overrides) -> MetaLearner:
    torch.manual_seed(0)
    model = create_model(name, size="tiny")
    settings = dict(algorithm=algorithm, inner_steps=1, inner_lr=1e-4, inner_rule="sgd", first_order=first_order,
                    outer_lr=1e-3, temporal_flip=False, total_outer_steps=10, per_step_batchnorm=False)
    return MetaLearner(model, task_batching=task_batching, **{**settings, **overrides})


def meta_gradients(learner: MetaLearner, batch) -> tuple[dict[str, float], list[torch.Tensor]]:
    metrics = learner.compute_meta_gradients(batch, support_loss_after=True)
    return metrics, [parameter.grad.clone() for parameter in learner.meta_parameters() if parameter.grad is not None]


def float_tasks(count: int):
    batch = septuplets(count)
    return dataclasses.replace(batch, frames=batch.frames.float())


@pytest.mark.parametrize("first_order", [True, False], ids=["first_order", "second_order"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", ["sepconv", "dvf"])
def test_vmapped_tasks_equal_the_per_task_loop(name, algorithm, first_order):
    """float32, one inner step (the paper's and the quick grid's setting)."""
    batch = float_tasks(3)
    looped_metrics, looped = meta_gradients(learner_for(name, algorithm, first_order, "loop"), batch)
    batched_metrics, batched = meta_gradients(learner_for(name, algorithm, first_order, "vmap"), batch)
    assert list(batched_metrics) == list(looped_metrics)
    for key, value in looped_metrics.items():
        assert batched_metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert len(batched) == len(looped) and looped
    scale = max(grad.abs().max().item() for grad in looped)
    for batched_grad, looped_grad in zip(batched, looped):
        torch.testing.assert_close(batched_grad, looped_grad, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", ["sepconv", "dvf"])
def test_vmapped_tasks_equal_the_loop_in_float64_over_two_inner_steps(name, algorithm):
    """The same computation, not only close: float64, two inner steps, second order, Adam.

    (In float32 with two steps, DVF's second-order meta-gradient differs from the loop's by
    2.0e-5 of its norm, where the loop's own float32 result is 1.6e-5 away from float64: both at
    float32's resolution of that ill-conditioned gradient, whose largest entry is about 200.)
    """
    batch = septuplets(2)
    results = []
    for mode in ("loop", "vmap"):
        learner = learner_for(name, algorithm, False, mode, inner_steps=2, inner_rule="adam", inner_lr=1e-3)
        learner.model.double()
        learner.learned.double()
        learner.outer_optimizer = torch.optim.Adam(learner.meta_parameters())
        results.append(meta_gradients(learner, batch))
    (looped_metrics, looped), (batched_metrics, batched) = results
    assert batched_metrics == pytest.approx(looped_metrics, rel=1e-10)
    for batched_grad, looped_grad in zip(batched, looped):
        torch.testing.assert_close(batched_grad, looped_grad, rtol=1e-9, atol=1e-9 * max(1.0, looped_grad.abs().max().item()))


def test_l2f_attenuation_and_losses_are_per_task():
    """A batch of two tasks under vmap gives the mean of the two single-task steps (L2F with a
    non-zero attenuation scale, so each task's own gamma matters): no task sees the other."""

    def metrics_of(batch) -> dict[str, float]:
        learner = learner_for("sepconv", "l2f", True, "vmap")
        learner.learned.attenuation_scale.data.fill_(0.5)
        return learner.compute_meta_gradients(batch, support_loss_after=True)

    batch = float_tasks(2)
    both = metrics_of(batch)
    singles = [metrics_of(dataclasses.replace(batch, frames=batch.frames[i:i + 1], valid=batch.valid[i:i + 1], name=batch.name[i:i + 1]))
               for i in range(2)]
    assert singles[0]["query_loss"] != pytest.approx(singles[1]["query_loss"], rel=1e-3)
    for key in ("outer_loss", "query_loss", "support_loss_before", "support_loss_after"):
        assert both[key] == pytest.approx((singles[0][key] + singles[1][key]) / 2, rel=1e-5), key


def test_vmap_refuses_with_the_reason_and_auto_runs_the_loop():
    """Per-step BatchNorm (MAML++ on DVF) keeps statistics per step: vmap says so, auto loops."""
    batch = float_tasks(2)
    with pytest.raises(ValueError, match="per-step BatchNorm"):
        learner_for("dvf", "maml++", True, "vmap", per_step_batchnorm=True).compute_meta_gradients(batch)
    auto = learner_for("dvf", "maml++", True, "auto", per_step_batchnorm=True)
    assert "per-step BatchNorm" in auto.task_batching_obstacle()
    looped_metrics, looped = meta_gradients(learner_for("dvf", "maml++", True, "loop", per_step_batchnorm=True), batch)
    auto_metrics, auto_grads = meta_gradients(auto, batch)
    assert auto_metrics == looped_metrics
    assert all(torch.equal(a, b) for a, b in zip(auto_grads, looped))
    with pytest.raises(ValueError, match="task_batching"):
        learner_for("dvf", "maml", True, "sideways")


def test_batchnorm_updating_running_statistics_is_an_obstacle():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3)).train()
    learner = MetaLearner.__new__(MetaLearner)
    learner.model, learner.batchnorm_modules, learner.config = model, {}, MetaConfig()
    assert "running statistics" in learner.task_batching_obstacle()
    model.eval()
    assert learner.task_batching_obstacle() is None


def test_kernel_vmap_rules_fold_the_tasks_into_the_batch():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 2, 3, 9, 9, generator=generator, dtype=torch.float64, requires_grad=True)
    vertical = torch.rand(3, 2, 3, 7, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    horizontal = torch.rand(3, 2, 3, 7, 7, generator=generator, dtype=torch.float64)
    batched = torch.func.vmap(lambda a, v, h: sepconv(a, v, h, backend="torch"), in_dims=(0, 0, None))(image, vertical, horizontal[0])
    looped = torch.stack([sepconv(image[i], vertical[i], horizontal[0], backend="torch") for i in range(3)])
    torch.testing.assert_close(batched, looped, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(batched.square().sum(), (image, vertical)),
                               torch.autograd.grad(looped.square().sum(), (image, vertical)), rtol=0, atol=1e-12)
    flow = torch.randn(3, 2, 2, 9, 9, generator=generator, dtype=torch.float64, requires_grad=True)
    warped = torch.func.vmap(lambda a, f: backwarp(a, f, backend="grid_sample"))(image, flow)
    looped = torch.stack([backwarp(image[i], flow[i], backend="grid_sample") for i in range(3)])
    torch.testing.assert_close(warped, looped, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(warped.square().sum(), flow, create_graph=True)[0].sum(),
                               torch.autograd.grad(looped.square().sum(), flow, create_graph=True)[0].sum(), rtol=1e-12, atol=1e-12)
