"""Training loops: exact resume (same objects, new objects, new process), divergence guard,
motion-aware triplet batches, curve CSV, and meta_train around a small fake MetaLearner."""
from __future__ import annotations

import copy
import math
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from savfi_core.backbones import create_model
from savfi_core.data.core import Sample
from savfi_core.train import DivergenceGuard, ResumeMismatchError, curve_path_for, meta_train, pretrain, sample_triplet_batch

REPO_ROOT = Path(__file__).resolve().parents[1]


class ShiftedFrames(torch.utils.data.Dataset):
    """Septuplets of a random texture moving one pixel right per frame (plus a static margin)."""

    def __init__(self, count: int = 4, size: int = 24, seed: int = 0, poison: set[int] = frozenset()):
        generator = torch.Generator().manual_seed(seed)
        self.samples = []
        for index in range(count):
            texture = torch.rand(3, size, size + 8, generator=generator)
            frames = torch.stack([texture[:, :, 7 - shift : 7 - shift + size] for shift in range(7)])
            if index in poison:
                frames = frames * float("nan")  # every loss on this sample is NaN
            self.samples.append(Sample(frames=frames.contiguous(), valid=torch.ones(7, dtype=torch.bool), target_index=3, name=f"s{index}"))

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]


class TinyInterpolator(nn.Module):
    """Average of the inputs plus a learned residual; an L1 loss as SepConv's (with a 'l1' term)."""

    model_name = "sepconv"  # picks the original SepConv optimizer (Adamax, lr 1e-3) by default

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, frame0, frame1):
        from savfi_core.backbones import InterpolationOutput

        return InterpolationOutput(pred=(frame0 + frame1) / 2 + self.body(torch.cat([frame0, frame1], 1)))

    def loss(self, output, target):
        l1 = (output.pred - target).abs().mean()
        return {"l1": l1, "total": l1}


def run_pretrain(path: Path, steps: int, model_seed: int = 0, **options):
    model = TinyInterpolator(model_seed)
    settings = dict(steps=steps, batch_size=2, seed=7, checkpoint_path=path, checkpoint_every=3, crop_size=16, progress=False, log=lambda _: None)
    settings.update(options)
    curve = pretrain(model, ShiftedFrames(), **settings)
    return model, curve


def test_resume_with_new_objects_reproduces_the_uninterrupted_losses_bitwise(tmp_path):
    straight_model, straight = run_pretrain(tmp_path / "straight.pt", steps=6)
    run_pretrain(tmp_path / "resumed.pt", steps=3)
    # New model object with a different initialization: everything must come from the checkpoint.
    resumed_model, resumed = run_pretrain(tmp_path / "resumed.pt", steps=6, model_seed=123)
    assert len(straight) == len(resumed) == 6
    assert straight["loss"].tolist() == resumed["loss"].tolist()
    assert straight["grad_norm"].tolist() == resumed["grad_norm"].tolist()
    for name, value in straight_model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[name]), name
    assert pd.read_csv(curve_path_for(tmp_path / "resumed.pt"))["loss"].tolist() == pytest.approx(straight["loss"].tolist(), rel=1e-12)


def test_resume_in_a_new_process_reproduces_the_losses_bitwise(tmp_path):
    _, straight = run_pretrain(tmp_path / "straight.pt", steps=6)
    run_pretrain(tmp_path / "resumed.pt", steps=3)
    script = textwrap.dedent(
        f"""
        import sys, torch
        torch.set_num_threads({torch.get_num_threads()})
        sys.path.insert(0, {str(REPO_ROOT / 'tests')!r})
        from test_train import run_pretrain
        from pathlib import Path
        _, curve = run_pretrain(Path({str(tmp_path / 'resumed.pt')!r}), steps=6, model_seed=5)
        print(repr(curve["loss"].tolist()))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert eval(result.stdout.strip().splitlines()[-1]) == straight["loss"].tolist()


def test_default_optimizer_is_the_original_one_and_the_curve_says_so(tmp_path):
    _, curve = run_pretrain(tmp_path / "run.pt", steps=2)
    assert curve["lr"].tolist() == [1e-3, 1e-3]
    assert {"step", "loss", "loss_l1", "grad_norm", "skipped", "skipped_total", "val_psnr", "val_average_psnr"} <= set(curve.columns)
    assert curve["step"].tolist() == [1, 2]


def test_cosine_schedule_decays_to_min_lr_and_resumes_exactly(tmp_path):
    schedule = dict(lr=1e-2, lr_schedule="cosine", min_lr=1e-4)
    _, straight = run_pretrain(tmp_path / "straight.pt", steps=6, **schedule)
    expected = [1e-4 + (1e-2 - 1e-4) * (1 + math.cos(math.pi * step / 6)) / 2 for step in range(6)]
    assert straight["lr"].tolist() == pytest.approx(expected, rel=1e-9)
    # the same 6-step run, stopped at its checkpoint after step 3 (as a kill would leave it)
    run_pretrain(tmp_path / "resumed.pt", steps=6, val_dataset=ShiftedFrames(count=1), val_every=3,
                 stop_when=lambda scores: True, **schedule)
    _, resumed = run_pretrain(tmp_path / "resumed.pt", steps=6, model_seed=9, **schedule)
    assert resumed["loss"].tolist() == straight["loss"].tolist()
    assert resumed["lr"].tolist() == straight["lr"].tolist()
    with pytest.raises(ResumeMismatchError, match="lr_schedule"):
        run_pretrain(tmp_path / "resumed.pt", steps=6, lr=1e-2)
    with pytest.raises(ResumeMismatchError, match="schedule_steps"):  # the decay was laid out over 6 steps
        run_pretrain(tmp_path / "resumed.pt", steps=8, **schedule)


def test_warmup_rises_linearly_then_the_cosine_takes_the_rest_of_the_budget_and_resumes_exactly(tmp_path):
    schedule = dict(lr=1e-2, lr_schedule="cosine", min_lr=1e-4, warmup_steps=3)
    _, straight = run_pretrain(tmp_path / "straight.pt", steps=8, **schedule)
    warmup = [1e-2 / 3, 2e-2 / 3, 1e-2]
    cosine = [1e-4 + (1e-2 - 1e-4) * (1 + math.cos(math.pi * step / 5)) / 2 for step in range(5)]
    assert straight["lr"].tolist() == pytest.approx(warmup + cosine, rel=1e-9)
    run_pretrain(tmp_path / "resumed.pt", steps=8, val_dataset=ShiftedFrames(count=1), val_every=2,
                 stop_when=lambda scores: True, **schedule)  # stopped inside the warmup, after step 2
    _, resumed = run_pretrain(tmp_path / "resumed.pt", steps=8, model_seed=9, **schedule)
    assert resumed["loss"].tolist() == straight["loss"].tolist()
    assert resumed["lr"].tolist() == straight["lr"].tolist()
    with pytest.raises(ResumeMismatchError, match="warmup_steps"):
        run_pretrain(tmp_path / "resumed.pt", steps=8, **{**schedule, "warmup_steps": 0})
    with pytest.raises(ValueError, match="warmup_steps"):
        run_pretrain(tmp_path / "other.pt", steps=3, **schedule)


def test_batchnorm_momentum_trains_dvf_with_batch_statistics_and_needs_frozen_batchnorm(tmp_path):
    model = create_model("dvf", size="tiny", flow_range_pixels=16.0)
    before = model.deconv3_bn.running_var.clone()
    settings = dict(steps=2, batch_size=2, seed=7, checkpoint_every=3, crop_size=16, progress=False, log=lambda _: None)
    pretrain(model, ShiftedFrames(size=64), checkpoint_path=tmp_path / "dvf.pt", batchnorm_momentum=0.5, **settings)
    assert not torch.equal(model.deconv3_bn.running_var, before)
    assert not model.deconv3_bn.updates_running_statistics  # frozen again once training returned
    assert torch.load(tmp_path / "dvf.pt", weights_only=True)["config"]["batchnorm_momentum"] == 0.5
    with pytest.raises(ResumeMismatchError, match="batchnorm_momentum"):
        pretrain(create_model("dvf", size="tiny", flow_range_pixels=16.0), ShiftedFrames(size=64),
                 checkpoint_path=tmp_path / "dvf.pt", batchnorm_momentum=0.1, **{**settings, "steps": 3})
    with pytest.raises(ValueError, match="no frozen BatchNorm"):
        run_pretrain(tmp_path / "other.pt", steps=1, batchnorm_momentum=0.1)


def test_resume_with_different_settings_is_refused(tmp_path):
    run_pretrain(tmp_path / "run.pt", steps=2)
    with pytest.raises(ResumeMismatchError, match="batch_size"):
        run_pretrain(tmp_path / "run.pt", steps=4, batch_size=3)


def test_non_finite_losses_are_skipped_and_leave_the_weights_finite(tmp_path):
    model = TinyInterpolator(0)
    before = copy.deepcopy(model.body[0].weight.detach())
    curve = pretrain(
        model, ShiftedFrames(poison={0, 1, 2, 3}), steps=3, batch_size=1, seed=0, checkpoint_path=tmp_path / "nan.pt",
        crop_size=None, progress=False, log=lambda _: None,
    )
    assert curve["skipped"].all() and curve["skip_reason"].eq("not finite").all()
    assert curve["skipped_total"].tolist() == [1, 2, 3]
    assert torch.equal(model.body[0].weight.detach(), before)


def test_guard_flags_non_finite_and_jumps_over_the_recent_upper_quantile():
    guard = DivergenceGuard(jump_factor=5.0, window=4, warmup=3, reference_quantile=0.5)
    assert guard.check(float("nan")) == "not finite"
    for loss in (1.0, 2.0, 1.0):
        assert guard.check(loss) is None
        guard.accept(loss)
    assert guard.check(4.9) is None
    assert guard.check(5.1) == "jump"  # the median, 1.0
    guard.reference_quantile = 1.0
    assert guard.reference() == 2.0 and guard.check(9.9) is None and guard.check(10.1) == "jump"


def test_guard_rejects_nothing_of_a_network_that_does_not_diverge_and_stops_one_that_does(shared_data):
    """Per-batch losses of a fixed tiny DVF on small moving/static crops of the training clips:
    heavy-tailed (a median rule rejects about half of them) but no divergence at all."""
    from savfi_core.data import open_dataset
    from savfi_core.train.common import sample_triplet_batch

    model = create_model("dvf", size="tiny", weights="default").eval()
    dataset = open_dataset("clips", split="train", augment=False)
    generator = torch.Generator().manual_seed(0)
    losses = []
    with torch.no_grad():
        for _ in range(200):
            frame0, frame1, target = sample_triplet_batch(dataset, 2, generator, crop_size=32)
            losses.append(float(model.loss(model(frame0, frame1), target)["total"]))
    median_rule = sum(loss > 5 * statistics.median(losses[max(0, i - 50):i]) for i, loss in enumerate(losses) if i >= 10)
    assert median_rule > 40  # the sequence is as heavy-tailed as the runs that were rejected
    guard = DivergenceGuard()
    for loss in losses:
        assert guard.check(loss) is None, (loss, guard.reference())
        guard.accept(loss)
    # A real divergence: the loss leaves everything seen before by orders of magnitude.
    assert guard.check(100 * max(losses)) == "jump"


def test_triplet_batches_take_t_minus_1_and_t_plus_1_and_prefer_moving_crops():
    dataset = ShiftedFrames(count=1, size=32)
    # Freeze the right half: only the left half moves, so a moving crop lies left.
    frames = dataset.samples[0].frames
    frames[..., 16:] = frames[3:4, :, :, 16:]
    frame0, frame1, target = sample_triplet_batch(dataset, 4, torch.Generator().manual_seed(0), crop_size=12, crop_candidates=16, augment=False, uniform_crop_fraction=0.0)
    assert frame0.shape == (4, 3, 12, 12)
    # The target is the exact midpoint in time: each crop of frame t equals frame t-1 shifted by one pixel.
    for index in range(4):
        assert (frame1[index] - frame0[index]).abs().mean() > 0.05
        assert torch.equal(target[index][:, :, 1:], frame0[index][:, :, :-1]) or torch.equal(target[index][:, :, :-1], frame0[index][:, :, 1:])


def test_triplet_gaps_offer_t_minus_g_and_t_plus_g_inside_the_sample_and_double_the_motion(tmp_path):
    from savfi_core.train.common import triplet_positions

    sample = ShiftedFrames(count=1, size=32).samples[0]  # septuplet, target index 3
    assert triplet_positions(sample) == [(2, 4, 3)]
    assert triplet_positions(sample, gaps=(1, 2)) == [(2, 4, 3), (1, 5, 3)]
    assert triplet_positions(sample, all_triplets=True, gaps=(3,)) == [(0, 6, 3)]  # the only centre 3 frames from both ends
    with pytest.raises(ValueError, match="gaps"):
        triplet_positions(sample, gaps=(0,))
    with pytest.raises(ValueError, match="gaps"):
        triplet_positions(sample, gaps=(4,))
    # gap 2 only: the texture moves one pixel a frame, so target = frame0 shifted by 2 pixels
    frame0, frame1, target = sample_triplet_batch(ShiftedFrames(count=1, size=32), 2, torch.Generator().manual_seed(0),
                                                  augment=False, gaps=(2,))
    assert torch.equal(target[:, :, :, 2:], frame0[:, :, :, :-2])
    run_pretrain(tmp_path / "run.pt", steps=2, triplet_gaps=(1, 2))
    assert torch.load(tmp_path / "run.pt", weights_only=True)["config"]["triplet_gaps"] == [1, 2]
    with pytest.raises(ResumeMismatchError, match="triplet_gaps"):
        run_pretrain(tmp_path / "run.pt", steps=3)


def test_validation_prints_psnr_beside_frame_averaging(tmp_path):
    pytest.importorskip("savfi_core.metrics", reason="savfi_core.metrics.psnr not written yet")
    messages = []
    curve = pretrain(
        TinyInterpolator(0), ShiftedFrames(), steps=2, batch_size=2, seed=0, checkpoint_path=tmp_path / "v.pt",
        val_dataset=ShiftedFrames(count=2, seed=1), val_every=1, crop_size=16, progress=False, log=messages.append,
    )
    assert curve["val_psnr"].notna().all() and curve["val_average_psnr"].notna().all()
    assert any("frame averaging" in message for message in messages)


class FakeLearner:
    """The MetaLearner contract in miniature: one weight, an Adam outer optimizer, a counter.

    meta_step moves the weight towards the batch's mean target and reports that distance; when
    ``explode_at`` is reached it reports a huge loss (after updating), which the guard must undo.
    """

    def __init__(self, explode_at: int | None = None):
        self.weight = nn.Parameter(torch.zeros(()))
        self.optimizer = torch.optim.Adam([self.weight], lr=0.1)
        self.step_count = 0
        self.explode_at = explode_at

    def meta_step(self, batch):
        assert batch.frames.dim() == 5
        # The +1 keeps the loss away from zero, where tiny values would look like jumps.
        loss = (self.weight - batch.frames[:, batch.target_index].mean() + torch.rand(()) * 0.01) ** 2 + 1.0
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.step_count += 1
        if self.explode_at is not None and self.step_count == self.explode_at:
            self.explode_at = None  # one bad step (not part of the state: a rollback must not replay it)
            return {"outer_loss": 1e9}
        value = float(loss.detach())
        return {"outer_loss": value, "support_loss_before": value, "support_loss_after": value}

    def state_dict(self):
        return {"weight": self.weight.detach().clone(), "optimizer": self.optimizer.state_dict(), "step": self.step_count}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.weight.copy_(state["weight"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = state["step"]


def run_meta(path: Path, steps: int, learner=None, **options):
    learner = learner or FakeLearner()
    settings = dict(steps=steps, batch_size=2, seed=3, checkpoint_path=path, checkpoint_every=2, crop_size=8, progress=False, log=lambda _: None)
    settings.update(options)
    return learner, meta_train(learner, ShiftedFrames(), **settings)


def test_meta_train_resumes_exactly_with_a_new_learner(tmp_path):
    straight_learner, straight = run_meta(tmp_path / "a.pt", steps=4)
    run_meta(tmp_path / "b.pt", steps=2)
    resumed_learner, resumed = run_meta(tmp_path / "b.pt", steps=4)
    assert straight["outer_loss"].tolist() == resumed["outer_loss"].tolist()
    assert torch.equal(straight_learner.weight, resumed_learner.weight)
    assert curve_path_for(tmp_path / "b.pt").is_file()


def test_meta_train_rolls_back_a_diverging_step(tmp_path):
    learner, curve = run_meta(tmp_path / "x.pt", steps=14, learner=FakeLearner(explode_at=13))
    _, reference = run_meta(tmp_path / "y.pt", steps=12)
    assert curve["skipped"].tolist() == [False] * 12 + [True, False]
    assert curve.loc[12, "skip_reason"] == "jump"
    assert math.isfinite(curve["outer_loss"].iloc[-1])
    # The exploded update was undone: step 14 started from the weights after step 12.
    assert learner.step_count == 13
    assert curve["outer_loss"].iloc[:12].tolist() == reference["outer_loss"].tolist()


def test_stop_when_ends_training_at_a_checkpointed_validation(tmp_path):
    pytest.importorskip("savfi_core.metrics", reason="savfi_core.metrics.psnr not written yet")
    seen = []
    curve = pretrain(
        TinyInterpolator(0), ShiftedFrames(), steps=10, batch_size=2, seed=0, checkpoint_path=tmp_path / "s.pt",
        val_dataset=ShiftedFrames(count=1, seed=1), val_every=2, crop_size=16, progress=False, log=lambda _: None,
        stop_when=lambda scores: seen.append(scores) or len(seen) == 2,
    )
    assert len(curve) == 4 and len(seen) == 2
    from savfi_core.checkpoint import safe_load

    assert safe_load(tmp_path / "s.pt")["step"] == 4


def test_pretrain_tiny_records_every_earlier_phase_oldest_first(tmp_path, monkeypatch):
    """The provenance of shipped weights lists each phase they went through (steps, config,
    command), following the phase records' init_from links back to the run from scratch."""
    import json

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import pretrain_tiny

    monkeypatch.setattr(pretrain_tiny, "REPO_ROOT", tmp_path)
    run_pretrain(tmp_path / "first.pt", steps=2)
    run_pretrain(tmp_path / "second.pt", steps=3, lr=1e-4)
    pretrain_tiny.phase_record_path(tmp_path / "first.pt").write_text(json.dumps({"command": "cmd one", "init_from": None}))
    pretrain_tiny.phase_record_path(tmp_path / "second.pt").write_text(json.dumps({"command": "cmd two", "init_from": "first.pt"}))
    chain = pretrain_tiny.earlier_phase_chain(tmp_path / "second.pt")
    assert [(phase["checkpoint"], phase["steps"], phase["command"], phase["config"]["lr"]) for phase in chain] == [
        ("first.pt", 2, "cmd one", 1e-3), ("second.pt", 3, "cmd two", 1e-4)]


def test_pretrain_tiny_starts_from_shipped_weights_and_keeps_their_history(tmp_path, monkeypatch):
    """--init-from takes shipped weights (a plain state_dict with its provenance beside it) as well
    as a pretrain checkpoint: the weights load, and the chain carries the shipped provenance's own
    phases and then the shipped phase. Anything else is refused with the file named."""
    import json

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import pretrain_tiny

    monkeypatch.setattr(pretrain_tiny, "REPO_ROOT", tmp_path)
    model, _ = run_pretrain(tmp_path / "run.pt", steps=2)
    shipped = tmp_path / "weights" / "toy.pt"
    shipped.parent.mkdir()
    torch.save(model.state_dict(), shipped)
    earlier = {"checkpoint": "scratch.pt", "steps": 100, "wall_time_seconds": 5.0, "config": {"lr": 1e-3}, "command": "cmd scratch"}
    shipped.with_suffix(".json").write_text(json.dumps({
        "steps": 40, "wall_time_seconds": 2.5, "lr": 3e-4, "batch_size": 8, "earlier_phases": [earlier], "regenerate": "cmd shipped"}))
    weights = pretrain_tiny.initial_model_weights(shipped)
    assert all(torch.equal(weights[name], value) for name, value in model.state_dict().items())
    chain = pretrain_tiny.earlier_phase_chain(shipped)
    assert [(phase["checkpoint"], phase["steps"], phase["command"]) for phase in chain] == [
        ("scratch.pt", 100, "cmd scratch"), ("toy.pt", 40, "cmd shipped")]
    assert chain[1]["config"] == {"lr": 3e-4, "batch_size": 8}
    # a pretrain checkpoint still gives its model weights
    assert set(pretrain_tiny.initial_model_weights(tmp_path / "run.pt")) == set(model.state_dict())

    shipped.with_suffix(".json").unlink()
    with pytest.raises(ValueError, match="toy.pt.*without its provenance toy.json"):
        pretrain_tiny.initial_model_weights(shipped)
    torch.save({"weights": [1, 2]}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: neither a pretrain checkpoint .* found keys \['weights'\]"):
        pretrain_tiny.initial_model_weights(tmp_path / "other.pt")


def test_pretrain_curve_figure_joins_phases_on_one_step_axis(tmp_path):
    """scripts/plot_pretrain_curves.py: a second phase continues the first's step count."""
    for stem, gains in (("first", [-0.5, 0.1]), ("second", [0.2, 0.25])):
        pd.DataFrame({"step": [1, 2, 3, 4], "loss": [0.1] * 4, "val_psnr": [float("nan"), 30 + gains[0], float("nan"), 30 + gains[1]],
                      "val_average_psnr": [float("nan"), 30.0, float("nan"), 30.0]}).to_csv(tmp_path / f"{stem}.curve.csv", index=False)
    figure, table = tmp_path / "curves.png", tmp_path / "curves.csv"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "plot_pretrain_curves.py"), "--chain", "toy=first,second",
                             "--runs", str(tmp_path), "--figure", str(figure), "--table", str(table)],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    points = pd.read_csv(table)
    assert points["cumulative_step"].tolist() == [2, 4, 6, 8]
    assert points["phase"].tolist() == [1, 1, 2, 2]
    assert points["gain_db"].tolist() == pytest.approx([-0.5, 0.1, 0.2, 0.25])
    assert figure.stat().st_size > 5000
    missing = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "plot_pretrain_curves.py"), "--chain", "toy=first,absent",
                              "--runs", str(tmp_path), "--figure", str(figure), "--table", str(table)],
                             capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert missing.returncode != 0 and "absent.curve.csv" in missing.stderr


class ConstantFrames(torch.utils.data.Dataset):
    """Septuplets whose every pixel is ``value``: a drawn window tells which dataset it came from."""

    dataset_name = "constant"

    def __init__(self, value: float, count: int):
        self.value, self.count = value, count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        frames = torch.full((7, 3, 8, 8), self.value)
        return Sample(frames=frames, valid=torch.ones(7, dtype=torch.bool), target_index=3, name=f"{self.value}:{index}")

    def sample_info(self, index):
        return {"name": f"{self.value}:{index}"}

    def set_epoch(self, epoch):
        self.epoch = epoch


def test_mixture_is_drawn_at_its_shares_not_its_sizes_and_indexes_as_a_concatenation():
    """A part of 2 samples at share 0.3 beside one of 200 at 0.7 gives 30% of the training windows
    (concatenation would give 1%); indexing and sample_info still walk both parts in order."""
    from savfi_core.data import DatasetError, MixtureDataset

    small, large = ConstantFrames(1.0, 2), ConstantFrames(0.0, 200)
    mixture = MixtureDataset([(large, 7.0), (small, 3.0)])  # shares normalise to 0.7, 0.3
    assert mixture.shares == pytest.approx([0.7, 0.3])
    assert len(mixture) == 202 and mixture[200].name == "1.0:0" and mixture[-1].name == "1.0:1" and mixture[5].name == "0.0:5"
    assert mixture.sample_info(201) == {"name": "1.0:1", "dataset": "constant"}
    mixture.set_epoch(3)
    assert small.epoch == large.epoch == 3
    frame0, _, _ = sample_triplet_batch(mixture, 2000, torch.Generator().manual_seed(0), augment=False)
    drawn_small = float(frame0.mean(dim=(1, 2, 3)).sum())
    # binomial(2000, 0.3): sd 20.5, so +-4 sd is +-82
    assert abs(drawn_small - 600) < 82, drawn_small
    # the same seed draws the same windows
    again, _, _ = sample_triplet_batch(mixture, 2000, torch.Generator().manual_seed(0), augment=False)
    assert torch.equal(frame0, again)
    with pytest.raises(DatasetError, match="share .* must be positive"):
        MixtureDataset([(large, 1.0), (small, 0.0)])
    with pytest.raises(DatasetError, match="has no samples"):
        MixtureDataset([(large, 1.0), (ConstantFrames(1.0, 0), 1.0)])


def test_pretrain_tiny_mixes_the_vimeo_train_septuplets_in_and_names_them_in_the_provenance(shared_data):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import pretrain_tiny

    root = shared_data / "vimeo_septuplet"
    arguments = pretrain_tiny.parse_arguments(["--model", "dvf", "--vimeo-train", str(root), "--vimeo-share", "0.25"])
    data = pretrain_tiny.training_data(arguments)
    assert len(data) == 256 + 8 and data.shares == pytest.approx([0.75, 0.25])
    assert data[256].name == "00001/0001" and tuple(data[256].frames.shape) == (7, 3, 256, 448)  # full frames: the sampler crops
    # the test list's group (00002) is never part of the training data
    assert all(not data.sample_info(index)["name"].startswith("00002/") for index in range(len(data)))
    description = pretrain_tiny.training_data_description(arguments, all_triplets=False, train_dataset=data)
    assert "at share 0.75, and Vimeo-90K septuplets" in description and "00001/0008" in description
    assert f"--vimeo-train {root} --vimeo-share 0.25" in pretrain_tiny.teacher_flags(arguments)
    plain = pretrain_tiny.parse_arguments(["--model", "dvf"])
    assert type(pretrain_tiny.training_data(plain)).__name__ == "ClipsDataset"
    assert "Vimeo" not in pretrain_tiny.training_data_description(plain, all_triplets=False, train_dataset=pretrain_tiny.training_data(plain))
    with pytest.raises(SystemExit, match="--vimeo-share must be strictly between 0 and 1"):
        pretrain_tiny.training_data(pretrain_tiny.parse_arguments(["--model", "dvf", "--vimeo-train", str(root), "--vimeo-share", "1"]))


def test_pretrain_tiny_ships_weights_whose_provenance_names_the_data_the_run_was_given(shared_data, tmp_path, monkeypatch):
    """ship() describes the training data from the dataset the run trained on: the Vimeo list is
    opened once per run (not again at ship time), and the provenance names its septuplets and
    the synthetic settings. The shipped state_dict loads into a fresh model."""
    import importlib.util
    import json
    import signal

    spec = importlib.util.spec_from_file_location("pretrain_tiny_ship", REPO_ROOT / "scripts" / "pretrain_tiny.py")
    pretrain_tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pretrain_tiny)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # the script's SIGTERM handler stays out of pytest
    opened = []
    real_open_dataset = pretrain_tiny.open_dataset
    monkeypatch.setattr(pretrain_tiny, "open_dataset", lambda name, **kwargs: opened.append(name) or real_open_dataset(name, **kwargs))
    root = shared_data / "vimeo_septuplet"
    flags = ["--model", "sepconv", "--vimeo-train", str(root), "--vimeo-share", "0.3", "--synthetic-share", "0.3",
             "--synthetic-max-speed", "2", "--threads", str(torch.get_num_threads())]
    checkpoint = tmp_path / "run" / "sepconv.pt"
    pretrain_tiny.main(flags + ["--steps", "2", "--batch-size", "2", "--crop-size", "32", "--crop-candidates", "2",
                                "--val-every", "0", "--checkpoint-every", "0", "--no-ship", "--checkpoint", str(checkpoint)])
    assert opened.count("vimeo_septuplet") == 1, opened
    arguments = pretrain_tiny.parse_arguments(flags + ["--steps", "2", "--batch-size", "2", "--crop-size", "32"])
    train_dataset = pretrain_tiny.training_data(arguments)
    opened.clear()
    test_dataset = real_open_dataset("vimeo_septuplet", root=root, split="test", augment=False)
    model = create_model("sepconv", size="tiny")
    weights = pretrain_tiny.ship(model, arguments, checkpoint, train_dataset, test_dataset, weights_path=tmp_path / "out" / "sepconv.pt")
    assert opened == []  # ship opens no dataset of its own
    provenance = json.loads(weights.with_suffix(".json").read_text())
    assert provenance["steps"] == 2 and provenance["checkpoint"] == "sepconv.pt"
    assert "00001/0001" in provenance["training_data"] and "speeds up to 2 px/frame" in provenance["training_data"]
    assert "--synthetic-share 0.3 --synthetic-max-speed 2.0" in provenance["regenerate"]
    fresh = create_model("sepconv", size="tiny")
    fresh.load_state_dict(torch.load(weights, weights_only=True))
    assert provenance["test_gain_db"] == pytest.approx(provenance["test_psnr"] - provenance["test_frame_average_psnr"], abs=2e-4)


def test_resume_on_other_training_data_or_augmentation_is_refused_and_older_checkpoints_still_resume(tmp_path):
    """The checkpoint records what the run trains on (reader, samples, mixture shares) and its
    geometric augmentation; resuming with others would silently continue another run."""
    from savfi_core.data import MixtureDataset

    path = tmp_path / "run.pt"
    run_pretrain(path, steps=2)
    assert torch.load(path, weights_only=True)["config"]["train_data"] == {"name": "ShiftedFrames", "samples": 4}
    with pytest.raises(ResumeMismatchError, match="train_data"):
        pretrain(TinyInterpolator(), ShiftedFrames(count=5), steps=3, batch_size=2, seed=7, checkpoint_path=path,
                 checkpoint_every=3, crop_size=16, progress=False, log=lambda _: None)
    with pytest.raises(ResumeMismatchError, match="geometric_augmentation"):
        run_pretrain(path, steps=3, scale_range=(0.8, 1.2))

    mixed = tmp_path / "mixed.pt"
    settings = dict(batch_size=2, seed=7, checkpoint_path=mixed, checkpoint_every=3, crop_size=16, progress=False, log=lambda _: None)
    pretrain(TinyInterpolator(), MixtureDataset([(ShiftedFrames(), 0.7), (ShiftedFrames(count=2, seed=1), 0.3)]), steps=2, **settings)
    assert torch.load(mixed, weights_only=True)["config"]["train_data"] == {"parts": [
        {"name": "ShiftedFrames", "samples": 4, "share": 0.7}, {"name": "ShiftedFrames", "samples": 2, "share": 0.3}]}
    with pytest.raises(ResumeMismatchError, match="train_data"):
        pretrain(TinyInterpolator(), MixtureDataset([(ShiftedFrames(), 0.5), (ShiftedFrames(count=2, seed=1), 0.5)]), steps=3, **settings)

    # a checkpoint written before the record existed has no train_data: nothing to compare, it resumes
    saved = torch.load(path, weights_only=True)
    del saved["config"]["train_data"]
    torch.save(saved, path)
    run_pretrain(path, steps=3)
    assert int(torch.load(path, weights_only=True)["step"]) == 3
