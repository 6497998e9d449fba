"""Cycle-consistency adaptation (Reda et al. ICCV 2019) as a test-time protocol and as the inner
loss of meta-training (``MetaConfig.support_loss='cycle'``).

The loss is checked where its value is known: on a sequence in constant motion an exact
interpolator is cycle-consistent (loss 0) and frame averaging is not; adaptation with it never
reads the query frame and leaves the network untouched.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from savfi_core.backbones import InterpolationModel, InterpolationOutput
from savfi_core.data import Sample, collate_samples
from savfi_core.meta import MetaConfig, MetaLearner
from savfi_core.meta.tasks import make_task, support_inputs
from savfi_core.study import protocols

from test_meta import ALGORITHMS, parameters_of, random_septuplet, toy_model

VELOCITY = 2  # pixels per frame, so that every interpolated frame lies on the pixel grid


def moving_septuplet(size: int = 24, seed: int = 0, dtype=torch.float64) -> Sample:
    """Seven frames of one random texture translating right by VELOCITY px per frame (circular)."""
    generator = torch.Generator().manual_seed(seed)
    texture = torch.rand(3, size, size, generator=generator, dtype=dtype)
    frames = torch.stack([torch.roll(texture, shifts=VELOCITY * index, dims=-1) for index in range(7)])
    return Sample(frames=frames, valid=torch.ones(7, dtype=torch.bool), target_index=3, name="moving")


class ShiftInterpolator(InterpolationModel):
    """The exact interpolator of circular horizontal translation: finds the shift that maps
    frame0 onto frame1 (exhaustive search) and moves frame0 half of it."""

    adapted_parameter_patterns = ("*",)

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones((), dtype=torch.float64))  # adaptation needs a parameter

    def interpolate(self, frame0, frame1):
        width = frame0.shape[-1]
        errors = torch.stack([(torch.roll(frame0, shift, dims=-1) - frame1).abs().mean() for shift in range(width)])
        shift = int(errors.argmin())
        if shift > width // 2:
            shift -= width
        return InterpolationOutput(pred=self.scale * torch.roll(frame0, shift // 2, dims=-1))

    def loss(self, output, target):
        total = (output.pred - target).abs().mean()
        return {"l1": total, "total": total}


class FrameAverage(ShiftInterpolator):
    def interpolate(self, frame0, frame1):
        return InterpolationOutput(pred=self.scale * 0.5 * (frame0 + frame1))


def test_support_inputs_are_the_four_input_frames():
    sample = random_septuplet()
    first, third, fifth, seventh = support_inputs(make_task(sample, with_query_target=False))
    for frame, position in zip((first, third, fifth, seventh), (0, 2, 4, 6)):
        assert torch.equal(frame[0], sample.frames[position])


def test_cycle_loss_is_zero_for_the_true_interpolator_and_not_for_frame_averaging():
    sample = moving_septuplet()
    exact = MetaLearner(ShiftInterpolator(), support_loss="cycle").support_loss(sample)
    average = MetaLearner(FrameAverage(), support_loss="cycle").support_loss(sample)
    assert exact < 1e-12
    assert average > 0.05  # a random texture moved 2 px: averaging blurs it badly
    # The true interpolator also fits the paper's triplets; the two losses agree on who is right.
    assert MetaLearner(ShiftInterpolator()).support_loss(sample) < 1e-12 < MetaLearner(FrameAverage()).support_loss(sample)


def test_cycle_loss_reads_exactly_the_frames_of_its_definition():
    """A toy network, loss written out by hand from the definition (float64)."""
    model = toy_model(dtype=torch.float64)
    sample = random_septuplet(dtype=torch.float64)
    frames = sample.frames.unsqueeze(1)  # [7, 1, 3, H, W]
    f = lambda a, b: model(a, b).pred  # noqa: E731
    second, fourth, sixth = f(frames[0], frames[2]), f(frames[2], frames[4]), f(frames[4], frames[6])
    expected = (model.loss(model(second, fourth), frames[2])["total"] + model.loss(model(fourth, sixth), frames[4])["total"]).item()
    assert MetaLearner(model, support_loss="cycle").support_loss(sample) == pytest.approx(expected, rel=1e-12)


def test_batched_cycle_loss_equals_the_separate_calls():
    model = toy_model(dtype=torch.float64)
    model.independent_batch_items = True
    sample = random_septuplet(dtype=torch.float64)
    batched = MetaLearner(model, support_loss="cycle").support_loss(sample)
    model.independent_batch_items = False
    separate = MetaLearner(model, support_loss="cycle").support_loss(sample)
    assert batched == pytest.approx(separate, rel=1e-12)


@pytest.mark.parametrize("poison", [float("nan"), 1e6])
def test_cycle_protocol_never_reads_the_query_and_leaves_the_model_untouched(poison):
    model = toy_model()
    protocol = protocols.cycle(model, MetaConfig(inner_steps=2, inner_lr=0.05))
    assert protocol.adapts and protocol.learner.config.support_loss == "cycle"
    snapshot = parameters_of(model)
    clean, poisoned = random_septuplet(), random_septuplet()
    poisoned.frames[poisoned.target_index] = poison
    prediction_clean, _ = protocol.adapt_and_predict(clean)
    prediction_poisoned, _ = protocol.adapt_and_predict(poisoned)
    assert torch.equal(prediction_clean, prediction_poisoned)
    assert all(torch.equal(value, snapshot[name]) for name, value in model.state_dict().items())
    assert not torch.equal(prediction_clean, protocol.predict(clean))  # it did adapt


def test_cycle_adaptation_lowers_the_cycle_loss():
    model = toy_model()
    learner = MetaLearner(model, support_loss="cycle", inner_rule="sgd", inner_steps=3, inner_lr=0.02)
    sample = random_septuplet()
    assert learner.support_loss(sample, learner.adapt(sample)) < learner.support_loss(sample)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("first_order", [True, False])
def test_meta_training_with_the_cycle_loss_steps_every_algorithm(algorithm, first_order):
    model = toy_model(dtype=torch.float64)
    learner = MetaLearner(model, algorithm=algorithm, support_loss="cycle", inner_steps=2, inner_lr=0.05,
                          first_order=first_order, outer_lr=1e-2, temporal_flip=False)
    batch = collate_samples([random_septuplet(seed, dtype=torch.float64) for seed in (1, 2)])
    before = parameters_of(model)
    metrics = learner.meta_step(batch)
    assert all(torch.isfinite(torch.tensor(value)) for value in metrics.values())
    assert any(not torch.equal(value, before[name]) for name, value in model.state_dict().items())
    # the cycle loss is what the inner loop saw: support_loss_before is the cycle loss of the task
    triplets = MetaLearner(toy_model(dtype=torch.float64), algorithm=algorithm, inner_steps=2, inner_lr=0.05, temporal_flip=False)
    assert metrics["support_loss_before"] != pytest.approx(triplets.meta_step(batch)["support_loss_before"])


def test_the_inner_loss_is_part_of_the_checkpointed_config():
    learner = MetaLearner(toy_model(), support_loss="cycle")
    state = learner.state_dict()
    assert MetaLearner.from_state_dict(toy_model(), state).config.support_loss == "cycle"
    with pytest.raises(ValueError, match="support_loss"):
        MetaLearner(toy_model(), support_loss="triplets").load_state_dict(state)
    with pytest.raises(ValueError, match="support_loss must be one of"):
        MetaConfig(support_loss="cycles")
    # a state saved before the field existed loads as the paper's triplet loss
    del state["config"]["support_loss"]
    MetaLearner(toy_model()).load_state_dict(state)


def test_the_grid_expands_inner_losses_and_second_order_into_methods_of_their_own(tmp_path):
    import yaml

    from savfi_core.study.expand import expand_grid, load_grid
    from savfi_core.study.loader import GridError

    grid = {"name": "g", "backbones": ["sepconv"], "size": "tiny", "seeds": [0],
            "meta_train": {"dataset": {"name": "clips", "split": "train"}, "steps": 1, "batch_size": 1,
                           "algorithms": ["maml", "metasgd"], "support_losses": ["triplets", "cycle"], "second_order": ["maml_cycle"],
                           "config": {"inner_steps": 1, "first_order": True}},
            "evaluate": {"datasets": [{"name": "clips", "split": "test"}], "protocols": ["baseline", "finetune", "cycle", "meta"],
                         "inner_steps": [1]}}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(grid))
    jobs = {job.job_id: job for job in expand_grid(load_grid(path))}
    configs = {job.parameters["method"]: job.parameters["meta_config"] for job in jobs.values() if job.stage == "meta_train"}
    assert sorted(configs) == ["maml", "maml_cycle", "maml_cycle_2nd", "metasgd", "metasgd_cycle"]
    assert configs["maml_cycle"]["support_loss"] == "cycle" and "support_loss" not in configs["maml"]
    assert configs["maml_cycle_2nd"] == {**configs["maml_cycle"], "first_order": False}
    pretrained = jobs["evaluate-sepconv-pretrained"].parameters
    assert pretrained["protocols"] == ["baseline", "finetune", "cycle"]
    assert pretrained["meta_configs"]["cycle"]["support_loss"] == "cycle" and "support_loss" not in pretrained["meta_configs"]["finetune"]

    grid["meta_train"]["second_order"] = ["maml++"]
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(GridError, match=r"second_order names methods not in the grid: \['maml\+\+'\]"):
        expand_grid(load_grid(path))
    grid["meta_train"]["second_order"] = []
    grid["meta_train"]["config"]["support_loss"] = "cycle"
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(GridError, match="support_losses"):
        expand_grid(load_grid(path))


def test_the_cycle_loss_keeps_the_per_task_loop():
    """The vmapped task batching computes the triplet loss only: a cycle learner must not use it."""
    assert MetaLearner(toy_model(), support_loss="cycle", task_batching="auto").task_batching_obstacle() is not None
    with pytest.raises(ValueError, match="cycle"):
        MetaLearner(toy_model(), support_loss="cycle", task_batching="vmap", temporal_flip=False).meta_step(
            collate_samples([random_septuplet(seed) for seed in (1, 2)]))
    batch = collate_samples([random_septuplet(seed, dtype=torch.float64) for seed in (1, 2)])
    results = [MetaLearner(toy_model(dtype=torch.float64), support_loss="cycle", task_batching=mode, temporal_flip=False).meta_step(batch)
               for mode in ("auto", "loop")]
    assert results[0] == results[1]
