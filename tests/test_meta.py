"""The meta-learning core: tasks, inner rules, MAML / MAML++ / Meta-SGD / L2F, adaptation, evaluation.

Exactness tests run on a tiny toy interpolator (float64 where derivatives are compared); the
registry-wide test runs one meta-step per (backbone, algorithm) on real Vimeo septuplets cropped
to 32x32.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from savfi_core.backbones import InterpolationModel, InterpolationOutput, create_model, list_models
from savfi_core.checkpoint import atomic_save, safe_load
from savfi_core.data import Sample, collate_samples, open_dataset
from savfi_core.meta import MetaConfig, MetaLearner, evaluate, make_task, per_step_loss_importance, temporal_flip
from savfi_core.meta import inner_rules

ALL_BACKBONES = ["cain", "dain", "dvf", "rife_hdv3", "rife_v4", "rrin", "sepconv", "superslomo"]
ALGORITHMS = ["maml", "maml++", "metasgd", "l2f"]


class ToyInterpolator(InterpolationModel):
    """Frame average plus a small smooth (tanh) convolutional residual; optional BatchNorm."""

    adapted_parameter_patterns = ("*",)

    def __init__(self, width: int = 4, batchnorm: bool = False):
        super().__init__()
        self.encoder = nn.Conv2d(6, width, 3, padding=1)
        self.norm = nn.BatchNorm2d(width) if batchnorm else nn.Identity()
        self.decoder = nn.Conv2d(width, 3, 3, padding=1)

    def interpolate(self, frame0, frame1):
        hidden = self.norm(torch.tanh(self.encoder(torch.cat([frame0, frame1], 1))))
        return InterpolationOutput(pred=0.5 * (frame0 + frame1) + self.decoder(hidden))

    def loss(self, output, target):
        total = ((output.pred - target) ** 2).mean()
        return {"mse": total, "total": total}


def toy_model(seed: int = 0, dtype=torch.float32, batchnorm: bool = False) -> ToyInterpolator:
    torch.manual_seed(seed)
    return ToyInterpolator(batchnorm=batchnorm).to(dtype)


def random_septuplet(seed: int = 0, size: int = 8, dtype=torch.float32, name: str = "random") -> Sample:
    generator = torch.Generator().manual_seed(seed)
    frames = torch.rand(7, 3, size, size, generator=generator, dtype=dtype)
    return Sample(frames=frames, valid=torch.ones(7, dtype=torch.bool), target_index=3, name=name)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is faster, and two threads on a loaded 2-core CI box thrash."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def vimeo_train(shared_data):
    dataset = open_dataset("vimeo_septuplet", root=shared_data / "vimeo_septuplet", split="train", crop_size=32, seed=0)
    return [dataset[index] for index in range(2)]


@pytest.fixture(scope="module")
def vimeo_test(shared_data):
    dataset = open_dataset("vimeo_septuplet", root=shared_data / "vimeo_septuplet", split="test", crop_size=32)
    return [dataset[index] for index in range(2)]


def parameters_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


# Tasks ---------------------------------------------------------------------------------------
def test_task_positions_follow_target_index_and_valid_mask():
    sample = random_septuplet()
    task = make_task(sample)
    frames = sample.frames
    # Paper: support (I1, I5 -> I3), (I3, I7 -> I5), query (I3, I5 -> I4); 0-based 0,4->2 / 2,6->4 / 2,4->3.
    expected = [(0, 4, 2), (2, 6, 4)]
    for triplet, (p0, p1, pt) in zip(task.support, expected):
        assert torch.equal(triplet.frame0[0], frames[p0]) and torch.equal(triplet.frame1[0], frames[p1])
        assert torch.equal(triplet.target[0], frames[pt])
    assert torch.equal(task.query.frame0[0], frames[2]) and torch.equal(task.query.target[0], frames[3])

    # Middlebury allframes / user footage: positions 1 and 5 (and 3) invalid and NaN, never read.
    footage = random_septuplet()
    for position in (1, 3, 5):
        footage.frames[position] = float("nan")
        footage.valid[position] = False
    task = make_task(footage, with_query_target=False)
    assert all(torch.isfinite(t.frame0).all() and torch.isfinite(t.target).all() for t in task.support)
    with pytest.raises(ValueError, match="position 3"):
        make_task(footage)  # a loss on the missing ground truth is refused
    two_frames = Sample(torch.rand(3, 3, 8, 8), torch.ones(3, dtype=torch.bool), 1, "pair")
    with pytest.raises(ValueError, match="adaptation"):
        make_task(two_frames)
    assert make_task(two_frames, with_support=False, with_query_target=True).query.target.shape == (1, 3, 8, 8)


def test_temporal_flip_mirrors_selected_items_only():
    batch = collate_samples([random_septuplet(0), random_septuplet(1)])
    flipped = temporal_flip(batch, torch.tensor([True, False]))
    assert torch.equal(flipped.frames[0], batch.frames[0].flip(0))
    assert torch.equal(flipped.frames[1], batch.frames[1])
    task = make_task(flipped)
    assert torch.equal(task.query.frame0[0], batch.frames[0, 4])  # (I5, I3 -> I4) after the flip


def test_multi_step_loss_importance_matches_maml_plus_plus_schedule():
    start = per_step_loss_importance(3, 0, 10)
    assert torch.allclose(start, torch.full((3,), 1 / 3, dtype=torch.float64))
    middle = per_step_loss_importance(3, 5, 10)
    decay = 1 / 3 / 10
    assert torch.allclose(middle, torch.tensor([1 / 3 - 5 * decay, 1 / 3 - 5 * decay, 1 / 3 + 10 * decay], dtype=torch.float64))
    late = per_step_loss_importance(3, 1000, 10)
    assert torch.allclose(late, torch.tensor([0.01, 0.01, 0.98], dtype=torch.float64))


# Inner rules ---------------------------------------------------------------------------------
def test_functional_adam_and_adamax_match_torch_optimizers_for_several_steps():
    torch.manual_seed(0)
    start = torch.randn(5, dtype=torch.float64)
    gradients = [torch.randn(5, dtype=torch.float64) for _ in range(3)]
    for rule, optimizer_class in (("adam", torch.optim.Adam), ("adamax", torch.optim.Adamax), ("sgd", torch.optim.SGD)):
        reference = start.clone().requires_grad_(True)
        kwargs = {} if rule == "sgd" else {"betas": (0.9, 0.99), "eps": 1e-8}
        optimizer = optimizer_class([reference], lr=0.1, **kwargs)
        params = {"w": start.clone()}
        state = inner_rules.initial_state(rule, params)
        for gradient in gradients:
            reference.grad = gradient.clone()
            optimizer.step()
            params, state = inner_rules.update(rule, params, {"w": gradient}, state, {"w": 0.1})
        # torch's Adamax adds eps inside the max exactly as here; its Adam adds eps after the sqrt.
        assert torch.allclose(params["w"], reference.detach(), rtol=1e-12, atol=1e-12), rule


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rate_kind", ["float", "tensor", "learned"])
def test_first_order_adam_is_bitwise_the_differentiable_formula(dtype, rate_kind):
    """Gradients without a graph take the no-autograd Adam path: same values, same state, and
    the new parameters still carry the gradient of the old ones and of a learned rate."""
    torch.manual_seed(0)
    start = {"w": torch.randn(3, 4, dtype=dtype), "b": torch.randn(7, dtype=dtype)}
    paths = {}
    for path in ("differentiable", "first_order"):
        params = {name: value.clone().requires_grad_(True) for name, value in start.items()}
        rates = {"float": {name: 1e-2 for name in start},
                 "tensor": {name: torch.tensor(1e-2, dtype=dtype) for name in start},
                 "learned": {name: torch.full_like(value, 1e-2).requires_grad_(True) for name, value in start.items()}}[rate_kind]
        current, state = dict(params), inner_rules.initial_state("adam", params)
        generator = torch.Generator().manual_seed(1)
        for _ in range(3):
            grads = {name: torch.randn(value.shape, dtype=dtype, generator=generator) for name, value in start.items()}
            grads["b"][0] = 0.0  # a zero gradient: the sqrt at zero that the differentiable path guards
            if path == "differentiable":
                grads = {name: grad.requires_grad_(True) for name, grad in grads.items()}
            current, state = inner_rules.update("adam", current, grads, state, rates)
            state = {key: {n: v.detach() for n, v in value.items()} if isinstance(value, dict) else value for key, value in state.items()}
        loss = sum((value * value).sum() for value in current.values())
        leaves = list(params.values()) + [rate for rate in rates.values() if isinstance(rate, torch.Tensor) and rate.requires_grad]
        paths[path] = ({name: value.detach() for name, value in current.items()}, state, torch.autograd.grad(loss, leaves))
    (values_a, state_a, grads_a), (values_b, state_b, grads_b) = paths["differentiable"], paths["first_order"]
    assert all(torch.equal(values_a[name], values_b[name]) for name in start)
    assert all(torch.equal(state_a[key][name], state_b[key][name]) for key in ("exp_avg", "exp_avg_sq") for name in start)
    assert len(grads_a) == len(grads_b) and all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


# Meta-steps on every backbone ----------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_every_algorithm_meta_steps_every_backbone(name, algorithm, vimeo_train):
    if name not in list_models():
        pytest.skip(f"backbone {name!r} is not registered yet (registered: {list_models()})")
    torch.manual_seed(0)
    model = create_model(name, size="tiny")
    learner = MetaLearner(model, algorithm=algorithm, inner_steps=1, inner_lr=1e-3, outer_lr=1e-4, first_order=True)
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    metrics = learner.meta_step(vimeo_train[0])
    assert all(math.isfinite(value) for value in metrics.values()), metrics
    changed = [n for n, value in model.named_parameters() if not torch.equal(value.detach(), before[n])]
    assert changed, f"{name}/{algorithm}: no network weight changed in the outer step"
    adapted = learner.adapt(vimeo_train[1])
    assert set(learner.adapted_names) <= set(adapted)
    prediction = learner.predict(vimeo_train[1], adapted)
    assert prediction.shape == vimeo_train[1].frames.shape[1:] and torch.isfinite(prediction).all()


# Derivatives ---------------------------------------------------------------------------------
def meta_gradient(learner: MetaLearner, batch) -> dict[str, torch.Tensor]:
    learner.compute_meta_gradients(batch)
    return {name: value.grad.detach().clone() for name, value in learner.model.named_parameters()}


def test_first_and_second_order_meta_gradients_differ():
    batch = random_septuplet(seed=1, dtype=torch.float64)
    common = dict(inner_steps=2, inner_lr=0.5, inner_rule="sgd", temporal_flip=False)
    first = meta_gradient(MetaLearner(toy_model(dtype=torch.float64), first_order=True, **common), batch)
    second = meta_gradient(MetaLearner(toy_model(dtype=torch.float64), first_order=False, **common), batch)
    difference = max((first[n] - second[n]).abs().max().item() for n in first)
    assert difference > 1e-6


@pytest.mark.parametrize("rule", ["sgd", "adam", "adamax"])
def test_second_order_meta_gradient_matches_finite_differences(rule):
    """Directional derivative of the outer loss (after 2 inner steps) vs central differences."""
    batch = random_septuplet(seed=2, dtype=torch.float64)
    learner = MetaLearner(
        toy_model(dtype=torch.float64), inner_steps=2, inner_lr=0.3 if rule == "sgd" else 0.01, inner_rule=rule, temporal_flip=False
    )
    gradient = meta_gradient(learner, batch)
    parameters = dict(learner.model.named_parameters())
    generator = torch.Generator().manual_seed(3)
    direction = {n: torch.randn(p.shape, generator=generator, dtype=torch.float64) for n, p in parameters.items()}
    analytic = sum((gradient[n] * direction[n]).sum() for n in parameters).item()
    epsilon = 1e-5

    def outer_loss_at(scale: float) -> float:
        with torch.no_grad():
            for n, p in parameters.items():
                p.add_(scale * epsilon * direction[n])
        loss = learner.compute_meta_gradients(batch)["outer_loss"]
        with torch.no_grad():
            for n, p in parameters.items():
                p.sub_(scale * epsilon * direction[n])
        return loss

    numeric = (outer_loss_at(1.0) - outer_loss_at(-1.0)) / (2 * epsilon)
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-10)
    # First order misses the Hessian term: it must be measurably further from the truth.
    first = MetaLearner(learner.model, learner.config.replace(first_order=True))
    approximate = sum((meta_gradient(first, batch)[n] * direction[n]).sum() for n in parameters).item()
    assert abs(approximate - numeric) > 10 * abs(analytic - numeric)


def test_derivative_order_annealing_switches_to_second_order():
    learner = MetaLearner(toy_model(), algorithm="maml++", first_order_until_step=2, inner_lr=0.01, outer_lr=1e-3)
    orders = [learner.meta_step(random_septuplet(seed=s))["second_order"] for s in range(3)]
    assert orders == [0.0, 0.0, 1.0]


def test_cosine_annealing_of_outer_lr_for_maml_plus_plus():
    learner = MetaLearner(toy_model(), algorithm="maml++", outer_lr=1e-2, outer_lr_min=0.0, total_outer_steps=4, inner_lr=0.01)
    rates = [learner.meta_step(random_septuplet(seed=s))["outer_lr"] for s in range(3)]
    assert rates == pytest.approx([1e-2, 1e-2 * (1 + math.cos(math.pi / 4)) / 2, 1e-2 * 0.5])
    assert MetaLearner(toy_model(), algorithm="maml").scheduler is None


def test_multi_step_loss_weights_every_inner_step_then_only_the_last():
    learner = MetaLearner(toy_model(), algorithm="maml++", inner_steps=2, multi_step_loss_steps=1, inner_lr=0.01, temporal_flip=False)
    with_msl = learner.compute_meta_gradients(random_septuplet())
    assert with_msl["outer_loss"] != pytest.approx(with_msl["query_loss"], rel=1e-9)  # 0.5 L(theta_1) + 0.5 L(theta_2)
    learner.step = 1  # annealing period over: only the final query loss
    without = learner.compute_meta_gradients(random_septuplet())
    assert without["outer_loss"] == without["query_loss"]


# Learned inner-loop parameters ---------------------------------------------------------------
@pytest.mark.parametrize("algorithm,container", [("maml++", "step_rates"), ("metasgd", "element_rates")])
def test_learned_rates_receive_gradients_and_change(algorithm, container):
    learner = MetaLearner(toy_model(), algorithm=algorithm, inner_steps=2, inner_lr=0.05, outer_lr=1e-3)
    rates = getattr(learner.learned, container)
    assert len(rates) == len(learner.adapted_names)
    before = {key: value.detach().clone() for key, value in rates.items()}
    learner.compute_meta_gradients(random_septuplet())
    assert all(value.grad is not None and value.grad.abs().sum() > 0 for value in rates.values())
    learner.outer_optimizer.step()
    assert all(not torch.equal(value.detach(), before[key]) for key, value in rates.items())


def test_l2f_attenuator_starts_as_identity_then_learns():
    model = toy_model()
    learner = MetaLearner(model, algorithm="l2f", inner_steps=0, inner_lr=0.05, outer_lr=1e-2)
    sample = random_septuplet()
    # Untrained attenuation is exactly the identity (gamma = 1): zero steps return the weights.
    adapted = learner.adapt(sample)
    assert all(torch.equal(adapted[n], p.detach()) for n, p in model.named_parameters())
    learner = MetaLearner(model, algorithm="l2f", inner_steps=1, inner_lr=0.05, outer_lr=1e-2)
    attenuator_before = {n: p.detach().clone() for n, p in learner.learned.attenuator.named_parameters()}
    learner.compute_meta_gradients(sample)
    assert learner.learned.attenuation_scale.grad.abs().item() > 0
    learner.outer_optimizer.step()
    assert learner.learned.attenuation_scale.item() != 0.0
    # With a nonzero scale the attenuator network itself now receives gradients and changes.
    learner.meta_step(random_septuplet(seed=1))
    for name, parameter in learner.learned.attenuator.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        assert not torch.equal(parameter.detach(), attenuator_before[name]), name


def test_per_step_batchnorm_weights_and_statistics_for_maml_plus_plus():
    model = toy_model(batchnorm=True)
    learner = MetaLearner(model, algorithm="maml++", inner_steps=2, inner_lr=0.05, outer_lr=1e-2)
    assert "norm.weight" not in learner.adapted_names and "norm.bias" not in learner.adapted_names
    weights = learner.learned.batchnorm_weights["norm-weight"]
    assert weights.shape == (3, 4)
    learner.meta_step(random_septuplet())
    statistics = learner.learned.batchnorm_statistics.get_buffer("norm-running_mean")
    # Each copy saw different parameters, so the rows differ (BatchNorm ran in train mode).
    assert not torch.allclose(statistics[0], statistics[2])
    assert not torch.equal(weights[0], weights[2])
    # The model's own BatchNorm weights are not meta-parameters then.
    assert all(p is not model.norm.weight for p in learner.meta_parameters())


# Adaptation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_adapt_changes_parameters_and_leaves_the_model_untouched(algorithm):
    model = toy_model(batchnorm=True)
    model.train()  # BatchNorm in train mode would update running statistics if it were not isolated
    learner = MetaLearner(model, algorithm=algorithm, inner_steps=2, inner_lr=0.05)
    snapshot = parameters_of(model)
    adapted = learner.adapt(random_septuplet())
    assert all(torch.equal(value, snapshot[name]) for name, value in model.state_dict().items())
    network = dict(model.named_parameters())
    assert all(not torch.equal(adapted[name], network[name]) for name in learner.adapted_names)
    assert all(not value.requires_grad for value in adapted.values())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("support_loss", ["triplets", "cycle"])
def test_one_sweep_of_adaptation_equals_separate_adaptations(algorithm, support_loss):
    # MAML++ trains 2 steps with per-step BatchNorm: counts 3 and 5 go past the learned copies
    learner = MetaLearner(toy_model(dtype=torch.float64, batchnorm=True), algorithm=algorithm, inner_steps=2, inner_lr=0.05,
                          support_loss=support_loss)
    sample = random_septuplet(dtype=torch.float64)
    sweep = learner.adapt_steps(sample, [3, 0, 1, 5])
    assert [count for count, _, _ in sweep] == [3, 0, 1, 5]
    seconds = {count: value for count, _, value in sweep}
    assert seconds[0] <= seconds[1] <= seconds[3] <= seconds[5]
    for count, params, _ in sweep:
        separate = learner.adapt(sample, count)
        assert params.keys() == separate.keys()
        for name, value in separate.items():
            assert torch.equal(params[name], value), (count, name)
    moved = {count: max((params[name] - sweep[1][1][name]).abs().max().item() for name in learner.adapted_names) for count, params, _ in sweep}
    assert moved[0] == 0 and 0 < moved[1] < moved[3] < moved[5]
    with pytest.raises(ValueError, match="counts >= 0"):
        learner.adapt_steps(sample, [])


def test_evaluate_with_a_sweep_gives_the_rows_of_separate_evaluations(vimeo_test):
    model = toy_model()
    config = MetaConfig(inner_steps=1, inner_lr=1e-3)
    protocols = ("baseline", "finetune", "cycle")
    swept = evaluate(model, vimeo_test, protocols=protocols, config=config, steps=[2, 1])
    separate = {count: evaluate(model, vimeo_test, protocols=protocols, config=config, steps=count) for count in (2, 1)}
    columns = ["sequence", "protocol", "inner_steps", "psnr", "ssim", "psnr_before", "psnr_after"]
    for protocol in ("finetune", "cycle"):
        rows = swept[swept.protocol == protocol]
        assert rows.inner_steps.tolist() == [2] * len(vimeo_test) + [1] * len(vimeo_test)
        expected = pd.concat([separate[count][separate[count].protocol == protocol] for count in (2, 1)], ignore_index=True)
        pd.testing.assert_frame_equal(rows[columns].reset_index(drop=True), expected[columns])
    baseline = swept[swept.protocol == "baseline"]
    assert len(baseline) == len(vimeo_test) and (baseline.inner_steps == 0).all()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("poison", [float("nan"), 1e6])
@pytest.mark.parametrize("support_loss", ["triplets", "cycle"])
def test_adaptation_never_reads_the_ground_truth(algorithm, poison, support_loss):
    learner = MetaLearner(toy_model(), algorithm=algorithm, inner_steps=2, inner_lr=0.05, support_loss=support_loss)
    clean = random_septuplet()
    poisoned = random_septuplet()
    poisoned.frames[poisoned.target_index] = poison
    adapted_clean = learner.adapt(clean)
    adapted_poisoned = learner.adapt(poisoned)
    for name, value in adapted_clean.items():
        assert torch.equal(value, adapted_poisoned[name]), name
    assert torch.equal(learner.predict(clean, adapted_clean), learner.predict(poisoned, adapted_poisoned))


@pytest.mark.parametrize("algorithm", ["maml", "maml++", "metasgd"])
@pytest.mark.parametrize("rule", ["sgd", "adam", "adamax"])
def test_zero_inner_learning_rate_makes_adaptation_the_identity(algorithm, rule):
    model = toy_model()
    learner = MetaLearner(model, algorithm=algorithm, inner_steps=3, inner_lr=0.0, inner_rule=rule)
    adapted = learner.adapt(random_septuplet())
    assert all(torch.equal(adapted[n], p.detach()) for n, p in model.named_parameters())


def test_adapt_patterns_select_parameters_by_name():
    learner = MetaLearner(toy_model(), adapt_patterns=["decoder.*"])
    assert learner.adapted_names == ["decoder.weight", "decoder.bias"]
    with pytest.raises(ValueError, match="match no trainable parameter"):
        MetaLearner(toy_model(), adapt_patterns=["nothing.*"])


def test_zero_inner_steps_meta_training_is_retraining(vimeo_train):
    """inner_steps=0: one meta-step equals one supervised Adam step on the query triplet."""
    sample = vimeo_train[0]
    learner = MetaLearner(toy_model(seed=5), inner_steps=0, outer_lr=1e-2, temporal_flip=False)
    reference = toy_model(seed=5)
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2, betas=(0.9, 0.99))
    for _ in range(2):
        learner.meta_step(sample)
        optimizer.zero_grad()
        frames = sample.frames.unsqueeze(0)
        loss = reference.loss(reference(frames[:, 2], frames[:, 4]), frames[:, 3])["total"]
        loss.backward()
        optimizer.step()
    for (name, value), expected in zip(learner.model.named_parameters(), reference.parameters()):
        assert torch.allclose(value, expected, rtol=0, atol=1e-7), name


# Checkpoints ---------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_state_dict_round_trips_exactly_and_resumes_identically(algorithm, tmp_path):
    batch = collate_samples([random_septuplet(0), random_septuplet(1)])
    learner = MetaLearner(toy_model(batchnorm=True), algorithm=algorithm, inner_steps=2, inner_lr=0.05, outer_lr=1e-2, total_outer_steps=5)
    for _ in range(2):
        learner.meta_step(batch)
    path = atomic_save(learner.state_dict(), tmp_path / "learner.pt")
    resumed = MetaLearner.from_state_dict(toy_model(seed=9, batchnorm=True), safe_load(path))
    for key, value in learner.learned.state_dict().items():
        assert torch.equal(value, resumed.learned.state_dict()[key]), key
    assert resumed.step == learner.step
    first, second = learner.meta_step(batch), resumed.meta_step(batch)
    assert first == second
    for (name, value), other in zip(learner.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(value, other), name
    with pytest.raises(ValueError, match="inner_steps"):
        MetaLearner(toy_model(batchnorm=True), algorithm=algorithm, inner_steps=3).load_state_dict(learner.state_dict())


# Evaluation ----------------------------------------------------------------------------------
def test_evaluate_reports_every_protocol_per_sample(vimeo_test):
    model = toy_model()
    table = evaluate(model, vimeo_test, protocols=("baseline", "retrained", "finetune"), config=MetaConfig(inner_steps=1, inner_lr=1e-3))
    assert len(table) == 3 * len(vimeo_test)
    for column in ("sequence", "protocol", "algorithm", "psnr", "ssim", "psnr_before", "psnr_after", "adapt_seconds"):
        assert column in table.columns
    baseline = table[table.protocol == "baseline"]
    assert (baseline.psnr_before == baseline.psnr_after).all() and (baseline.adapt_seconds == 0).all()
    finetune = table[table.protocol == "finetune"]
    assert (finetune.psnr_after != finetune.psnr_before).any() and (finetune.adapt_seconds > 0).all()
    assert (finetune.psnr_before.values == baseline.psnr.values).all()

    learner = MetaLearner(model, algorithm="metasgd", inner_lr=1e-3)
    meta = evaluate(learner, vimeo_test)
    assert list(meta.protocol.unique()) == ["meta"] and list(meta.algorithm.unique()) == ["metasgd"]
    two_frames = [Sample(vimeo_test[0].frames[2:5], torch.ones(3, dtype=torch.bool), 1, "pair")]
    with pytest.raises(ValueError, match="t-3"):
        evaluate(model, two_frames, protocols=("finetune",))
    assert len(evaluate(model, two_frames, protocols=("baseline",))) == 1


def test_config_yaml_round_trip():
    import yaml

    config = MetaConfig(algorithm="maml++", inner_steps=3, adapt_patterns=("rectify.*",))
    assert MetaConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown MetaConfig keys"):
        MetaConfig.from_dict({"algorithm": "maml", "inner_step": 2})
    with pytest.raises(ValueError, match="algorithm"):
        MetaConfig(algorithm="reptile")
