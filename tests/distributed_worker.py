"""The training runs of tests/test_distributed.py, by torchrun or in the test process itself.

    torchrun --standalone --nproc_per_node=2 tests/distributed_worker.py SPEC.json

SPEC: {"out": folder, "runs": [{"name", "backbone", "meta_config", "steps", "batch_size",
"checkpoint_every", "delay"}]}. Each rank writes its pid (``pid.rank<r>``) and, after each run,
its learner's meta-parameters and their last gradients (``<name>.rank<r>.pt``).
"""
from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

CROP_SIZE = 32


class Float64Clips:
    """The embedded clips' training split in float64; ``delay`` seconds per sample slow a run
    down enough for the kill test to land between two checkpoints."""

    def __init__(self, delay: float = 0.0):
        from savfi_core.data import open_dataset

        self.dataset = open_dataset("clips", split="train", augment=False)
        self.delay = delay

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if self.delay:
            time.sleep(self.delay)
        sample = copy.copy(self.dataset[index])
        sample.frames = torch.as_tensor(sample.frames).to(torch.float64)
        return sample


def build_learner(run: dict):
    """The same learner on every rank and in the reference process (seeded tiny backbone)."""
    from savfi_core.backbones import create_model
    from savfi_core.meta import MetaConfig, MetaLearner

    torch.manual_seed(7)
    model = create_model(run["backbone"], size="tiny").to(torch.float64)
    return MetaLearner(model, MetaConfig.from_dict({"total_outer_steps": 10, **run["meta_config"]}))


def train(run: dict, out: Path, distributed=None):
    """meta_train of one run; returns (learner, curve)."""
    from savfi_core.train import meta_train

    learner = build_learner(run)
    curve = meta_train(
        learner, Float64Clips(run.get("delay", 0.0)), steps=run["steps"], batch_size=run["batch_size"], seed=3,
        checkpoint_path=out / f"{run['name']}.state.pt", checkpoint_every=run.get("checkpoint_every"),
        crop_size=CROP_SIZE, progress=False, log=lambda message: print(message, flush=True), distributed=distributed,
    )
    return learner, curve


def meta_parameters_and_gradients(learner) -> dict[str, dict[str, torch.Tensor]]:
    """name -> value and name -> last gradient of every meta-parameter of the outer optimizer."""
    named = {**{f"model.{n}": p for n, p in learner.model.named_parameters()},
             **{f"learned.{n}": p for n, p in learner.learned.named_parameters()}}
    return {"values": {n: p.detach().clone() for n, p in named.items()},
            "grads": {n: p.grad.detach().clone() for n, p in named.items() if p.grad is not None}}


def main(spec_path: str) -> int:
    torch.set_num_threads(1)
    from savfi_core.train.distributed import distributed_context

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    context = distributed_context()
    (out / f"pid.rank{context.rank}").write_text(str(os.getpid()))
    for run in spec["runs"]:
        learner, curve = train(run, out, context)
        torch.save({**meta_parameters_and_gradients(learner), "outer_loss": curve["outer_loss"].tolist()},
                   out / f"{run['name']}.rank{context.rank}.pt")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main(sys.argv[1]))
