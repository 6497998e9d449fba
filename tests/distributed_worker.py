"""The training runs of tests/test_distributed.py, by torchrun or in the test process itself.

    torchrun --standalone --nproc_per_node=2 tests/distributed_worker.py SPEC.json

SPEC: {"out": folder, "frames": file of ``save_real_frames``, "runs": [{"name", "backbone", "meta_config", "steps", "batch_size",
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


class SavedFrames:
    """Real frames saved once by the test (see ``save_real_frames``), read back in float64 in
    milliseconds: each worker process would otherwise decode the clips again (about 5 s).
    ``delay`` seconds per sample slow a run down enough for the kill test to land between two
    checkpoints."""

    def __init__(self, path: str | Path, delay: float = 0.0):
        from savfi_core.data import Sample

        saved = torch.load(path, weights_only=True)
        self.samples = [Sample(frames=frames, valid=saved["valid"], target_index=int(saved["target_index"]), name=name)
                        for frames, name in zip(saved["frames"], saved["names"])]
        self.delay = delay

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        if self.delay:
            time.sleep(self.delay)
        return copy.copy(self.samples[index])


def save_real_frames(path: Path, count: int = 8, size: int = 64) -> Path:
    """``count`` septuplets of the embedded clips' training split, spread over it, each cut to
    its most moving ``size`` x ``size`` window, as float64."""
    from savfi_core.data import open_dataset
    from savfi_core.train.common import crop_sample

    dataset = open_dataset("clips", split="train", augment=False)
    generator = torch.Generator().manual_seed(0)
    samples = [crop_sample(dataset[index * len(dataset) // count], size, generator) for index in range(count)]
    torch.save({"frames": torch.stack([torch.as_tensor(s.frames) for s in samples]).to(torch.float64),
                "valid": torch.as_tensor(samples[0].valid), "target_index": samples[0].target_index,
                "names": [str(s.name) for s in samples]}, path)
    return path


def build_learner(run: dict):
    """The same learner on every rank and in the reference process (seeded tiny backbone)."""
    from savfi_core.backbones import create_model
    from savfi_core.meta import MetaConfig, MetaLearner

    torch.manual_seed(7)
    model = create_model(run["backbone"], size="tiny").to(torch.float64)
    return MetaLearner(model, MetaConfig.from_dict({"total_outer_steps": 10, **run["meta_config"]}))


def pretrain_model(run: dict, out: Path, frames: Path, distributed=None):
    """pretrain of a seeded tiny float64 backbone (a run with "pretrain": true); returns (model, curve)."""
    from savfi_core.backbones import create_model
    from savfi_core.train import pretrain

    torch.manual_seed(7)
    model = create_model(run["backbone"], size="tiny").to(torch.float64)
    curve = pretrain(model, SavedFrames(frames), steps=run["steps"], batch_size=run["batch_size"], seed=3, optimizer="adam",
                     lr=1e-3, checkpoint_path=out / f"{run['name']}.state.pt", crop_size=CROP_SIZE, progress=False,
                     log=lambda message: None, distributed=distributed)
    return model, curve


def train(run: dict, out: Path, frames: Path, distributed=None):
    """meta_train of one run; returns (learner, curve)."""
    from savfi_core.train import meta_train

    learner = build_learner(run)
    curve = meta_train(
        learner, SavedFrames(frames, run.get("delay", 0.0)), steps=run["steps"], batch_size=run["batch_size"], seed=3,
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
        if run.get("pretrain"):
            model, curve = pretrain_model(run, out, Path(spec["frames"]), context)
            torch.save({"values": {n: p.detach().clone() for n, p in model.named_parameters()},
                        "curve": curve[["loss", "grad_norm"]].to_dict("list")}, out / f"{run['name']}.rank{context.rank}.pt")
            continue
        learner, curve = train(run, out, Path(spec["frames"]), context)
        torch.save({**meta_parameters_and_gradients(learner), "outer_loss": curve["outer_loss"].tolist()},
                   out / f"{run['name']}.rank{context.rank}.pt")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main(sys.argv[1]))
