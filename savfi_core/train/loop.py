"""One training loop for both pretraining and meta-training: seeding, resume, guard, checkpoints.

The loop owns everything that is not the step itself:

- a seeded sampling generator (``torch.Generator``) separate from torch's global RNG;
- resume: if ``checkpoint_path`` exists it restores the trainable state, the step counter, every
  RNG state, the divergence guard's history and the curve so far, so that continuing from it
  reproduces the uninterrupted run's losses bit for bit (same machine, same thread count);
- a tqdm progress bar, validation every ``val_every`` steps (and at the end), printed beside the
  frame-averaging baseline;
- atomic checkpoints every ``checkpoint_every`` steps and at the end (never mid-step);
- the divergence guard: a step whose loss is rejected is not applied and counted in the curve;
  after ``guard.rollback_after`` rejections in a row the trainable state goes back to the last
  checkpoint (the step counter and the RNGs go on, so the next batches differ).

Under torchrun (``distributed``, :mod:`savfi_core.train.distributed`) every rank runs this loop
in lockstep with the same seeds; only rank 0 validates, logs, and writes checkpoints and curves,
and its stop decision is broadcast. Every rank resumes from the same checkpoint file, which
records the world size; a different world size is refused (:class:`WorldSizeMismatchError`).
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from savfi_core.checkpoint import atomic_save, safe_load
from savfi_core.train.common import DivergenceGuard, capture_rng_states, restore_rng_states, seed_everything, write_curve
from savfi_core.train.distributed import DistributedContext

# Settings that must not change between a run and its resumption, or the resumed run would not
# continue the same experiment. (``steps`` may grow: resuming to a later step is the point.)
RESUME_CRITICAL = ("kind", "seed", "batch_size", "optimizer", "lr", "crop_size", "crop_candidates", "uniform_crop_fraction", "all_triplets", "triplet_gaps", "lr_schedule", "min_lr", "schedule_steps", "warmup_steps", "batchnorm_momentum", "flow_teacher",
                   "teacher", "geometric_augmentation", "train_data")


class ResumeMismatchError(ValueError):
    """The checkpoint at ``checkpoint_path`` was written with different settings."""


class WorldSizeMismatchError(ResumeMismatchError):
    """The checkpoint was written by a run with another number of processes."""


StepFunction = Callable[[torch.Generator], tuple[dict[str, float], str | None]]


def run_training(
    *,
    kind: str,
    steps: int,
    seed: int,
    checkpoint_path: str | Path,
    config: dict[str, Any],
    get_state: Callable[[], dict[str, Any]],
    set_state: Callable[[dict[str, Any]], None],
    train_step: StepFunction,
    validate: Callable[[], dict[str, float]] | None,
    val_every: int | None,
    checkpoint_every: int | None,
    guard: DivergenceGuard,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    stop_when: Callable[[dict[str, float]], bool] | None = None,
    distributed: DistributedContext | None = None,
) -> pd.DataFrame:
    """Run ``train_step`` until ``steps`` steps are done; return the curve (also written as CSV).

    train_step(sampler) -> (row, rejection): ``row`` holds at least ``loss`` (the step's loss
    before the update); ``rejection`` is None if the update was applied, or the reason it was
    not (the step function asked ``guard.check`` before applying, or undid the update).
    stop_when(validation scores) -> bool: stop early (after checkpointing) when it returns True.
    distributed: this process's place in a torchrun group (None: a single process); the step
    function does the sharding and the all-reduce, the loop decides who writes.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    checkpoint_path = Path(checkpoint_path)
    distributed = distributed or DistributedContext()
    writes = distributed.is_main
    log = (log or tqdm.write) if writes else (lambda message: None)
    progress = progress and writes
    config = {**config, "kind": kind, "seed": seed, "world_size": distributed.world_size}
    sampler = seed_everything(seed)
    curve: list[dict[str, Any]] = []
    step = 0
    elapsed = 0.0

    # Every rank must see what rank 0 sees: a rank that started fresh would leave the lockstep.
    resuming = distributed.broadcast_object(checkpoint_path.is_file())
    if resuming and not checkpoint_path.is_file():
        raise FileNotFoundError(
            f"rank {distributed.rank}: rank 0 resumes from {checkpoint_path}, which this rank cannot see; "
            f"the ranks of a torchrun group need a shared file system"
        )
    if resuming:
        saved = safe_load(checkpoint_path)
        # Checkpoints from before distributed training were single-process runs.
        saved_world_size = int(saved.get("config", {}).get("world_size", 1))
        if saved_world_size != distributed.world_size:
            raise WorldSizeMismatchError(
                f"{checkpoint_path} was written by a run of {saved_world_size} process(es) "
                f"(torchrun --nproc_per_node={saved_world_size}), this run has {distributed.world_size}: "
                f"resume it with {saved_world_size} process(es). Another split of each batch over the "
                f"processes changes the order of the gradient sums, so the continuation would not be the "
                f"same run; to continue anyway, start a new checkpoint_path from its weights"
            )
        if saved.get("kind") != kind:
            raise ResumeMismatchError(f"{checkpoint_path} is a {saved.get('kind')!r} checkpoint, not {kind!r}")
        differing = {
            key: (saved["config"].get(key), config.get(key))
            for key in RESUME_CRITICAL
            # a key the checkpoint lacks is a setting newer than the checkpoint: nothing to compare
            if key in config and key in saved["config"] and saved["config"][key] != config[key]
        }
        if differing:
            raise ResumeMismatchError(
                f"{checkpoint_path} was written with other settings (saved, now): {differing}; "
                f"use a new checkpoint_path or the saved settings"
            )
        set_state(saved["state"])
        restore_rng_states(saved["rng"], sampler)
        guard.load_state_dict(saved["guard"])
        curve = list(saved["curve"])
        step = int(saved["step"])
        elapsed = float(saved["elapsed_seconds"])
        log(f"resumed {kind} from {checkpoint_path} at step {step}")

    def checkpoint() -> dict[str, Any]:
        """The checkpoint's content on every rank (for the rollback state); only rank 0 writes it."""
        content = {
            "kind": kind,
            "step": step,
            "state": get_state(),
            "rng": capture_rng_states(sampler),
            "guard": guard.state_dict(),
            "curve": curve,
            "config": config,
            "elapsed_seconds": elapsed,
        }
        if writes:
            atomic_save(content, checkpoint_path)
            write_curve(curve, checkpoint_path)
        return content

    # The state to roll back to when the guard gives up: the last checkpoint (or the start).
    rollback_state = copy.deepcopy(get_state())

    def run_validation() -> dict[str, float]:
        if validate is None or not writes:
            return {}
        scores = validate()
        log(
            f"[{kind}] step {step}: validation PSNR {scores['val_psnr']:.3f} dB, "
            f"frame averaging {scores['val_average_psnr']:.3f} dB "
            f"(difference {scores['val_psnr'] - scores['val_average_psnr']:+.3f} dB)"
        )
        return scores

    bar = tqdm(total=steps, initial=min(step, steps), desc=kind, disable=not progress, dynamic_ncols=True)
    try:
        while step < steps:
            started = time.perf_counter()
            row, rejection = train_step(sampler)
            rolled_back = False
            if rejection is None:
                guard.accept(row["loss"])
            elif guard.reject():
                set_state(copy.deepcopy(rollback_state))
                guard.consecutive_rejections = 0
                rolled_back = True
                log(f"[{kind}] step {step + 1}: {guard.rollback_after} rejected steps in a row, rolled back to the last checkpoint")
            elapsed += time.perf_counter() - started
            step += 1
            skipped_so_far = (curve[-1]["skipped_total"] if curve else 0) + (rejection is not None)
            entry = {
                "step": step,
                **row,
                "skipped": rejection is not None,
                "skip_reason": rejection or "",
                "skipped_total": skipped_so_far,
                "rolled_back": rolled_back,
                "elapsed_seconds": elapsed,
                "val_psnr": math.nan,
                "val_average_psnr": math.nan,
            }
            curve.append(entry)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4g}", skipped=skipped_so_far)
            stop = False
            if validate is not None and ((val_every and step % val_every == 0) or step == steps):
                scores = run_validation()
                entry.update(scores)
                stop = writes and stop_when is not None and bool(stop_when(scores))
                stop = distributed.broadcast_object(stop)
            if (checkpoint_every and step % checkpoint_every == 0) or step == steps or stop:
                saved = checkpoint()
                rollback_state = copy.deepcopy(saved["state"])
            if stop:
                log(f"[{kind}] stopping at step {step}: the stop condition holds")
                break
    except KeyboardInterrupt:
        # No checkpoint here: the interrupt may have landed mid-step (parameters updated, RNGs
        # advanced, counter not), and an inconsistent file would break exact resume.
        log(f"[{kind}] interrupted at step {step}; resume continues from the last checkpoint")
        raise
    finally:
        bar.close()
    if writes and not checkpoint_path.is_file():  # steps == 0 and nothing to resume: still leave a checkpoint
        checkpoint()
    return write_curve(curve, checkpoint_path) if writes else pd.DataFrame(list(curve))
