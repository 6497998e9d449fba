"""Meta-training: the training loop of :mod:`savfi_core.train.loop` around ``learner.meta_step``."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from savfi_core.train.common import DivergenceGuard, crop_sample, psnr_function, triplet_positions
from savfi_core.train.distributed import DistributedContext, distributed_context
from savfi_core.train.loop import run_training


def meta_train(
    learner,
    train_dataset,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    checkpoint_path: str | Path,
    val_dataset=None,
    val_every: int | None = None,
    val_limit: int | None = None,
    checkpoint_every: int | None = None,
    crop_size: int | None = None,
    crop_candidates: int = 8,
    loss_key: str = "outer_loss",
    jump_factor: float = 5.0,
    guard_window: int = 50,
    rollback_after: int = 20,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    stop_when: Callable[[dict[str, float]], bool] | None = None,
    distributed: DistributedContext | None = None,
) -> pd.DataFrame:
    """Run ``steps`` outer updates ``learner.meta_step(batch)``; return the curve (also CSV).

    learner: a ``savfi_core.meta.MetaLearner`` (or anything with ``meta_step``, ``adapt``,
        ``predict``, ``state_dict`` and ``load_state_dict`` of the same meaning; its state_dict
        holds its outer optimizer, scheduler and step counter, which makes resume exact).
    Each step draws ``batch_size`` tasks (samples) of ``train_dataset`` with the loop's seeded
    generator, crops each to a motion-aware ``crop_size`` window (same window for all its frames;
    motion measured between the query inputs t-1 and t+1), collates them with
    ``savfi_core.data.collate_samples`` and calls ``meta_step``.
    Divergence guard: the learner's state is copied before each step; if the step's
    ``metrics[loss_key]`` is not finite or jumps over ``jump_factor`` times the largest recent accepted loss (``DivergenceGuard``),
    the step is rolled back (counted as skipped in the curve).
    Validation (every ``val_every`` steps and at the end, first ``val_limit`` samples of
    ``val_dataset``): mean PSNR after test-time adaptation (``val_psnr``), without adaptation
    (``val_psnr_before``) and of frame averaging (``val_average_psnr``).
    Under torchrun (``distributed``; None: from the environment, see
    :mod:`savfi_core.train.distributed`) every rank draws the whole batch and computes its share
    of the tasks; the meta-gradients are summed over the ranks before the outer update, so a step
    of N ranks is the single-process step of the same batch. With the nccl backend the learner
    moves to ``cuda:LOCAL_RANK``. Only rank 0 validates and writes.
    """
    from savfi_core.data import collate_samples

    distributed = distributed_context() if distributed is None else distributed
    if distributed.enabled:
        if distributed.device is not None:
            learner.model.to(distributed.device)
            learner.learned.to(distributed.device)
        # The same starting point on every rank, whatever each rank's construction did.
        distributed.broadcast_tensors([*learner.model.state_dict().values(), *learner.learned.state_dict().values()])
        shard = distributed.shard(batch_size)
        synchronize = lambda metrics: distributed.synchronize_meta_step(learner, metrics)  # noqa: E731
    guard = DivergenceGuard(jump_factor=jump_factor, window=guard_window, rollback_after=rollback_after)

    def draw_batch(sampler: torch.Generator):
        samples = []
        for _ in range(batch_size):
            sample = train_dataset[int(torch.randint(0, len(train_dataset), (1,), generator=sampler))]
            if crop_size is not None:
                sample = crop_sample(sample, crop_size, sampler, crop_candidates)
            samples.append(sample)
        return to_device(collate_samples(samples), distributed.device)

    def train_step(sampler: torch.Generator) -> tuple[dict[str, float], str | None]:
        batch = draw_batch(sampler)
        before = copy.deepcopy(learner.state_dict())
        if distributed.enabled:
            metrics = learner.meta_step(batch, tasks=shard, synchronize=synchronize)
        else:
            metrics = learner.meta_step(batch)
        if loss_key not in metrics:
            raise KeyError(f"learner.meta_step returned {sorted(metrics)}, without {loss_key!r}")
        row = {"loss": float(metrics[loss_key]), **{key: float(value) for key, value in metrics.items()}}
        rejection = guard.check(row["loss"])
        if rejection is not None:
            learner.load_state_dict(before)  # undo the outer update of a diverging step
        return row, rejection

    def validate() -> dict[str, float]:
        psnr = psnr_function()
        after, before, average = [], [], []
        count = len(val_dataset) if val_limit is None else min(val_limit, len(val_dataset))
        with torch.random.fork_rng(devices=[]):
            for index in range(count):
                sample = to_device(val_dataset[index], distributed.device)
                first, second, middle = triplet_positions(sample)[0]
                frames = torch.as_tensor(sample.frames)
                target = frames[middle]
                params = learner.adapt(sample)
                with torch.no_grad():
                    after.append(float(psnr(learner.predict(sample, params).clamp(0, 1), target)))
                    before.append(float(psnr(learner.predict(sample).clamp(0, 1), target)))
                    average.append(float(psnr((frames[first] + frames[second]) / 2, target)))
        if not after:
            raise ValueError("validation dataset is empty")
        return {
            "val_psnr": float(np.mean(after)),
            "val_psnr_before": float(np.mean(before)),
            "val_average_psnr": float(np.mean(average)),
        }

    def get_state() -> dict[str, Any]:
        return {"learner": learner.state_dict()}

    def set_state(state: dict[str, Any]) -> None:
        learner.load_state_dict(state["learner"])

    config = {
        "learner": type(learner).__name__,
        "learner_config": _plain(getattr(getattr(learner, "config", None), "to_dict", lambda: {})()),
        "batch_size": batch_size,
        "crop_size": crop_size,
        "crop_candidates": crop_candidates,
        "jump_factor": jump_factor,
    }
    return run_training(
        kind="meta_train",
        steps=steps,
        seed=seed,
        checkpoint_path=checkpoint_path,
        config=config,
        get_state=get_state,
        set_state=set_state,
        train_step=train_step,
        validate=validate if val_dataset is not None else None,
        val_every=val_every,
        checkpoint_every=checkpoint_every,
        guard=guard,
        progress=progress,
        log=log,
        stop_when=stop_when,
        distributed=distributed,
    )


def to_device(sample, device: torch.device | None):
    """The sample with its frames on ``device`` (None: unchanged)."""
    if device is None:
        return sample
    moved = copy.copy(sample)
    moved.frames = torch.as_tensor(sample.frames).to(device)
    return moved


def _plain(value):
    """Config values in the types a weights_only checkpoint accepts (tuples become lists)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
