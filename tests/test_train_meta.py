"""meta_train around the real MetaLearner on the embedded clips: exact resume with new objects."""
from __future__ import annotations

import torch

from savfi_core.backbones import create_model
from savfi_core.data import open_dataset
from savfi_core.meta import MetaLearner
from savfi_core.train import meta_train


def run(path, steps: int, model_seed: int):
    torch.manual_seed(model_seed)
    learner = MetaLearner(create_model("sepconv", size="tiny"), algorithm="maml", inner_steps=1, first_order=True)
    curve = meta_train(
        learner, open_dataset("clips", split="train", augment=False), steps=steps, batch_size=1, seed=11,
        checkpoint_path=path, checkpoint_every=1, crop_size=32, progress=False, log=lambda _: None,
    )
    return learner, curve


def test_meta_train_with_the_real_learner_resumes_bitwise(tmp_path):
    straight_learner, straight = run(tmp_path / "straight.pt", steps=2, model_seed=0)
    run(tmp_path / "resumed.pt", steps=1, model_seed=0)
    resumed_learner, resumed = run(tmp_path / "resumed.pt", steps=2, model_seed=99)  # weights come from the file
    assert straight["outer_loss"].tolist() == resumed["outer_loss"].tolist()
    assert straight["loss"].notna().all() and not straight["skipped"].any()
    for name, value in straight_learner.model.state_dict().items():
        assert torch.equal(value, resumed_learner.model.state_dict()[name]), name
