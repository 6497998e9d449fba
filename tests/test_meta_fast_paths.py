"""The invariants the meta-learner's fast paths rely on (float64, tiny models).

* ``independent_batch_items``: a backbone that declares it gives, for two equal-shape batches
  concatenated, twice the loss equal to the sum of the two losses; so the support triplets run
  as one batch with the same loss and gradients.
* The batched support pass and the triplet-by-triplet one give the same meta-step (first and
  second order).
* ``support_loss_after`` is a metric only: asking for it changes no parameter and no other metric.
"""
from __future__ import annotations

import math

import pytest
import torch

from savfi_core.backbones import create_model
from savfi_core.data import Sample, collate_samples
from savfi_core.meta import MetaLearner

BATCHED = ["cain", "dvf", "rrin", "sepconv", "superslomo"]


def septuplets(count: int, size: int = 16) -> Sample:
    generator = torch.Generator().manual_seed(1)
    samples = []
    for index in range(count):
        # A moving smooth pattern: the flows and residuals see real motion, not noise only.
        base = torch.rand(1, 3, size + 8, size + 8, generator=generator, dtype=torch.float64)
        frames = torch.stack([base[0, :, k // 2 : k // 2 + size, k % 3 : k % 3 + size] for k in range(7)])
        samples.append(Sample(frames=frames.contiguous(), valid=torch.ones(7, dtype=torch.bool), target_index=3, name=f"s{index}"))
    return collate_samples(samples)


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, size="tiny").double()


@pytest.mark.parametrize("name", BATCHED)
def test_declared_backbones_have_independent_batch_items(name):
    model = tiny(name).train()
    assert model.independent_batch_items
    frames = septuplets(2).frames
    first = (frames[0:1, 0], frames[0:1, 2], frames[0:1, 1])
    second = (frames[1:2, 4], frames[1:2, 6], frames[1:2, 5])
    separate = sum(model.loss(model(a, b), t)["total"] for a, b, t in (first, second))
    joined = 2 * model.loss(model(*(torch.cat([x, y]) for x, y in zip(first[:2], second[:2]))), torch.cat([first[2], second[2]]))["total"]
    torch.testing.assert_close(joined, separate, rtol=1e-12, atol=1e-12)


def _learner(name: str, first_order: bool, batched: bool) -> MetaLearner:
    model = tiny(name)
    if not batched:
        model.independent_batch_items = False  # an instance attribute: the triplet-by-triplet path
    return MetaLearner(model, algorithm="maml", inner_steps=2, inner_lr=1e-3, inner_rule="adam",
                       first_order=first_order, outer_lr=1e-3, temporal_flip=False)


@pytest.mark.parametrize("first_order", [True, False], ids=["first_order", "second_order"])
@pytest.mark.parametrize("name", ["dvf", "rrin"])
def test_batched_support_equals_triplet_by_triplet(name, first_order):
    batch = septuplets(2)
    results = []
    for batched in (True, False):
        learner = _learner(name, first_order, batched)
        metrics = [learner.meta_step(batch, support_loss_after=True) for _ in range(2)]
        results.append((dict(learner.model.named_parameters()), metrics))
    (params_batched, metrics_batched), (params_single, metrics_single) = results
    for key, value in params_batched.items():
        torch.testing.assert_close(value, params_single[key], rtol=0, atol=1e-10, msg=key)
    for step_batched, step_single in zip(metrics_batched, metrics_single):
        assert step_batched.keys() == step_single.keys()
        for key in step_batched:
            assert step_batched[key] == pytest.approx(step_single[key], rel=1e-10, abs=1e-12), key


def test_support_loss_after_is_a_metric_only():
    batch = septuplets(2)
    plain, measured = _learner("dvf", True, True), _learner("dvf", True, True)
    for _ in range(2):
        without = plain.meta_step(batch)
        with_after = measured.meta_step(batch, support_loss_after=True)
    assert "support_loss_after" not in without
    assert math.isfinite(with_after.pop("support_loss_after"))
    assert without == with_after
    for (key, value), other in zip(plain.model.named_parameters(), measured.model.parameters()):
        assert torch.equal(value, other), key
