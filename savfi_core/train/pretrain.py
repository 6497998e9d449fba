"""Supervised pretraining of a backbone on (frame t-1, frame t+1 -> frame t) triplets."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch import nn

from savfi_core.backbones.common import batch_statistics_while_training
from savfi_core.data import MixtureDataset, SyntheticMotionDataset
from savfi_core.train.common import DivergenceGuard, GeometricAugmentation, sample_pair_batch, sample_triplet_batch, validate_model
from savfi_core.train.distributed import DistributedContext, distributed_context, has_training_batchnorm
from savfi_core.train.distill import motion_loss, teacher_targets
from savfi_core.train.flow_teacher import bilateral_displacement, flow_teacher_loss
from savfi_core.train.loop import run_training

OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}


def default_optimizer(model: nn.Module) -> tuple[str, float]:
    """(optimizer name, learning rate) of the model's original training script."""
    from savfi_core.backbones.pretrained import pretrained_weights

    name = getattr(model, "model_name", None)
    # the architecture's original training; every size of a backbone records the same
    info = (pretrained_weights(name, getattr(model, "model_size", "paper")) or pretrained_weights(name, "paper")) if name else None
    if info is None:
        raise ValueError(f"no original optimizer known for model {name!r} (none in savfi_core.backbones.pretrained); "
                         f"pass optimizer= and lr= explicitly")
    return info.optimizer, info.lr


def learning_rate_scheduler(optimizer: torch.optim.Optimizer, schedule: str, steps: int, min_lr: float,
                            warmup_steps: int = 0) -> torch.optim.lr_scheduler.LRScheduler | None:
    """One scheduler step per training step: an optional linear warmup, then ``schedule``.

    ``constant``: None (no scheduler) without warmup; ``cosine``: from the optimizer's rate down to
    ``min_lr`` at step ``steps``.
    """
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown lr_schedule {schedule!r}; choose 'constant' or 'cosine'")
    schedulers = torch.optim.lr_scheduler
    after = schedulers.CosineAnnealingLR(optimizer, T_max=steps - warmup_steps, eta_min=min_lr) if schedule == "cosine" else None
    if not warmup_steps:
        return after
    warmup = schedulers.LinearLR(optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0, total_iters=warmup_steps - 1)
    if after is None:
        return warmup
    return schedulers.SequentialLR(optimizer, [warmup, after], milestones=[warmup_steps])


def teacher_record(teacher: nn.Module | None, distill_weight: float, motion_weight: float, pair_batch_size: int) -> dict | None:
    """The teacher as a checkpoint's config and a provenance file record it (resume checks it)."""
    if teacher is None:
        return None
    weights = getattr(teacher, "pretrained_weights", None)
    return {
        "model": getattr(teacher, "model_name", type(teacher).__name__),
        "size": getattr(teacher, "model_size", None),
        "weights_sha256": getattr(weights, "sha256", None),
        "weights_package": getattr(weights, "package", None),
        "distill_weight": distill_weight,
        "motion_weight": motion_weight,
        "pair_batch_size": pair_batch_size,
    }


def training_data_record(dataset) -> dict:
    """What a run trains on, for its checkpoint (a resume on other data is refused): the reader's
    name and sample count, for a :class:`~savfi_core.data.MixtureDataset` each part's and its share,
    for a :class:`~savfi_core.data.SyntheticMotionDataset` its drawing settings and its source's."""
    if isinstance(dataset, MixtureDataset):
        return {"parts": [{**training_data_record(part), "share": round(share, 6)}
                          for part, share in zip(dataset.datasets, dataset.shares)]}
    if isinstance(dataset, SyntheticMotionDataset):
        return {"name": dataset.dataset_name, "samples": len(dataset), "settings": dataset.settings,
                "source": training_data_record(dataset.source)}
    return {"name": getattr(dataset, "dataset_name", "") or type(dataset).__name__, "samples": len(dataset)}


def pretrain(
    model: nn.Module,
    train_dataset,
    *,
    steps: int,
    batch_size: int,
    lr: float | None = None,
    optimizer: str | None = None,
    seed: int,
    checkpoint_path: str | Path,
    val_dataset=None,
    val_every: int | None = None,
    val_limit: int | None = None,
    checkpoint_every: int | None = None,
    crop_size: int | tuple[int, int] | None = 96,
    crop_candidates: int = 8,
    uniform_crop_fraction: float = 0.5,
    all_triplets: bool = False,
    triplet_gaps: tuple[int, ...] = (1,),
    augment: bool = True,
    max_grad_norm: float | None = 1.0,
    lr_schedule: str = "constant",
    min_lr: float = 0.0,
    warmup_steps: int = 0,
    batchnorm_momentum: float | None = None,
    flow_teacher_weight: float = 0.0,
    flow_teacher_radius: int = 6,
    flow_teacher_window: int = 15,
    teacher: nn.Module | None = None,
    distill_weight: float = 1.0,
    motion_weight: float = 0.0,
    pair_batch_size: int = 0,
    scale_range: tuple[float, float] = (1.0, 1.0),
    max_rotation_degrees: float = 0.0,
    jump_factor: float = 5.0,
    guard_window: int = 50,
    rollback_after: int = 20,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    stop_when: Callable[[dict[str, float]], bool] | None = None,
    distributed: DistributedContext | None = None,
) -> pd.DataFrame:
    """Train ``model`` on triplets of ``train_dataset``; return the curve (also ``<ckpt>.curve.csv``).

    Each step draws ``batch_size`` samples, takes their (t-1, t+1 -> t) triplet (every valid
    consecutive triplet with ``all_triplets``; (t-g, t+g -> t) for each g in ``triplet_gaps``,
    see :func:`~savfi_core.train.common.triplet_positions`), a ``crop_size`` crop (uniform for a
    ``uniform_crop_fraction`` of the batch, motion-aware for the rest), random flips,
    and minimizes ``model.loss(model(frame0, frame1), target)['total']``.

    optimizer, lr: default to the model's original training (its ``PretrainedWeights`` entry).
    lr_schedule: ``constant``, or ``cosine`` (from ``lr`` down to ``min_lr`` at step ``steps``;
    one scheduler step per loop step, skipped ones included, so the rate depends only on the step).
    A fixed budget with a cosine decay ends on a settled checkpoint, which is the one to ship:
    nothing has to be picked from a noisy curve.
    warmup_steps: the rate rises linearly from ``lr / warmup_steps`` to ``lr`` over the first
    ``warmup_steps`` steps, then follows ``lr_schedule`` over the rest of the budget (Adam's first
    steps move every weight by about ``lr`` at once). It did not keep a tiny DVF's features alive:
    with 300 warmup steps the mean activation feeding its output had still fallen from 0.49 to
    0.001 by step 60; ``batchnorm_momentum`` did.
    batchnorm_momentum: for a model whose BatchNorm is frozen (DVF; RRIN with flow_batchnorm): train it with batch
    statistics, updating the running ones at this momentum (PyTorch's convention), as the original
    DVF was trained (:func:`savfi_core.backbones.common.batch_statistics_while_training` says why);
    validation and everything after training use the frozen layers. None: frozen throughout.
    flow_teacher_weight: when > 0, adds ``flow_teacher_weight * mean|flow - factor * s|`` (the
    ``flow_teacher`` term) for each motion field of the backbone's output, with s the bilateral
    block-matching displacement of the training crop (:mod:`savfi_core.train.flow_teacher`, search
    radius ``flow_teacher_radius``, box ``flow_teacher_window``). For the flow backbones only (its
    measured effect is in the README); a backbone without a motion field raises ValueError at the first step.
    teacher: a backbone that predicts intermediate flows (released RIFE:
    ``create_model("rife_hdv3", weights="default")``), frozen, run in eval mode on every training
    input pair (:mod:`savfi_core.train.distill`). It adds ``distill_weight * mean|pred - teacher
    frame|`` on the triplets (beside the model's own loss against the real middle frame), and on
    ``pair_batch_size`` further pairs of adjacent frames (t, t+1), which have no real middle, the
    same term against the teacher's t+1/2; for flow backbones with ``motion_weight > 0``,
    ``motion_weight * mean|field - converted teacher field|`` on both (the teacher's
    intermediate flows in the student's convention). Terms: distill, motion, pair_distill,
    pair_motion. The weights are in the units of the model's own loss, which they join: 1 is as
    strong as the plain L1 of SepConv, CAIN and RRIN, but Super-SloMo's reconstruction term is
    204 * L1 (its warping terms 102 each), so there it takes ``distill_weight=204`` to count as
    much as the real middle frame.
    scale_range, max_rotation_degrees: :class:`~savfi_core.train.common.GeometricAugmentation`
    of every training window before it is cropped (off by default).
    Divergence guard: a step whose loss is not finite or exceeds ``jump_factor`` times the largest
    of the last ``guard_window`` accepted losses is skipped (no update; BatchNorm running
    statistics of its forward pass do change); gradients are clipped to ``max_grad_norm`` (L2
    over all parameters) and a step with a non-finite gradient norm is skipped too.
    Validation every ``val_every`` steps (and at the end): mean PSNR of the model and of frame
    averaging over the first ``val_limit`` samples of ``val_dataset``.
    Resume: if ``checkpoint_path`` exists, training continues from it exactly (see
    :mod:`savfi_core.train.loop`). Curve columns: step, loss, each loss term, grad_norm, lr,
    skipped, skip_reason, skipped_total, rolled_back, elapsed_seconds, val_psnr, val_average_psnr.
    stop_when(validation scores) -> bool: early stop (checkpointed; a later call with more steps
    resumes from there).
    Under torchrun (``distributed``; None: from the environment, see
    :mod:`savfi_core.train.distributed`) every rank draws the whole batch and runs its share of
    the items; each rank's loss is weighted by its share of the batch and the gradients are
    summed over the ranks before clipping, so the step is the single-process step for a loss that
    is a mean over batch items (BatchNorm in train mode sees each rank's items only). With the
    nccl backend the model moves to ``cuda:LOCAL_RANK``. Only rank 0 validates and writes.
    """
    if optimizer is None or lr is None:
        default_name, default_lr = default_optimizer(model)
        optimizer = optimizer or default_name
        lr = default_lr if lr is None else lr
    optimizer = optimizer.lower()
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
    distributed = distributed_context() if distributed is None else distributed
    if distributed.enabled:
        if distributed.device is not None:
            model.to(distributed.device)
        distributed.broadcast_tensors(model.state_dict().values())
        shard = distributed.shard(batch_size)
        if not shard:
            raise ValueError(f"batch_size {batch_size} is smaller than the {distributed.world_size} processes")
        # This rank's items as a slice; its loss (a mean over them) weighs len/batch in the sum.
        items, share = slice(shard[0], shard[-1] + 1), len(shard) / batch_size
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    torch_optimizer = OPTIMIZERS[optimizer](parameters, lr=lr)
    if not 0 <= warmup_steps < max(steps, 1):
        raise ValueError(f"warmup_steps must be in [0, steps={steps}), got {warmup_steps}")
    scheduler = learning_rate_scheduler(torch_optimizer, lr_schedule, steps, min_lr, warmup_steps)
    if flow_teacher_weight < 0:
        raise ValueError(f"flow_teacher_weight must be >= 0, got {flow_teacher_weight}")
    if min(distill_weight, motion_weight, pair_batch_size) < 0:
        raise ValueError(f"distill_weight, motion_weight and pair_batch_size must be >= 0, got "
                         f"{distill_weight}, {motion_weight}, {pair_batch_size}")
    if teacher is None and (pair_batch_size or motion_weight):
        raise ValueError("pair_batch_size and motion_weight need a teacher (pretrain(..., teacher=...))")
    if distributed.enabled and pair_batch_size:
        # each rank's loss is weighted by its share of the triplets (see below); pairs would need their own
        raise ValueError("pair_batch_size > 0 does not run under torchrun yet; use one process, or pairs 0")
    if teacher is not None:
        teacher.requires_grad_(False).eval()
        if distributed.enabled and distributed.device is not None:
            teacher.to(distributed.device)
    geometric = GeometricAugmentation(tuple(scale_range), max_rotation_degrees)
    guard = DivergenceGuard(jump_factor=jump_factor, window=guard_window, rollback_after=rollback_after)
    model.train()

    def train_step(sampler: torch.Generator) -> tuple[dict[str, float], str | None]:
        frame0, frame1, target = sample_triplet_batch(
            train_dataset, batch_size, sampler, crop_size, crop_candidates, all_triplets, augment, uniform_crop_fraction, geometric,
            triplet_gaps,
        )
        pairs = (sample_pair_batch(train_dataset, pair_batch_size, sampler, crop_size, crop_candidates, augment,
                                   uniform_crop_fraction, geometric) if pair_batch_size else None)
        if distributed.enabled:
            frame0, frame1, target = (part[items] for part in (frame0, frame1, target))
            if distributed.device is not None:
                frame0, frame1, target = (part.to(distributed.device) for part in (frame0, frame1, target))
        model.train()
        output = model(frame0, frame1)
        terms = dict(model.loss(output, target))
        if flow_teacher_weight > 0:
            displacement = bilateral_displacement(frame0, frame1, flow_teacher_radius, flow_teacher_window)
            terms["flow_teacher"] = flow_teacher_weight * flow_teacher_loss(getattr(model, "model_name", None), output.aux, displacement)
            terms["total"] = terms["total"] + terms["flow_teacher"]
        if teacher is not None:
            name = getattr(model, "model_name", None)
            taught = teacher_targets(teacher, frame0, frame1)
            terms["distill"] = distill_weight * (output.pred - taught.frame).abs().mean()
            if motion_weight > 0:
                terms["motion"] = motion_weight * motion_loss(name, output.aux, taught)
            if pairs is not None:
                pair_output = model(*pairs)
                pair_taught = teacher_targets(teacher, *pairs)
                terms["pair_distill"] = distill_weight * (pair_output.pred - pair_taught.frame).abs().mean()
                if motion_weight > 0:
                    terms["pair_motion"] = motion_weight * motion_loss(name, pair_output.aux, pair_taught)
            terms["total"] = terms["total"] + sum(terms[key] for key in ("distill", "motion", "pair_distill", "pair_motion") if key in terms)
        if distributed.enabled:
            terms = {name: share * value for name, value in terms.items()}
        loss = terms["total"]
        row: dict[str, Any] = {"loss": float(loss.detach())}
        row.update({f"loss_{name}": float(value.detach()) for name, value in terms.items() if name != "total"})
        # The whole batch's losses on every rank, so that every rank's guard decides alike.
        row = distributed.sum_floats(row, [key for key in row if key.startswith("loss")])
        row["lr"] = torch_optimizer.param_groups[0]["lr"]
        row["grad_norm"] = float("nan")
        torch_optimizer.zero_grad(set_to_none=True)
        rejection = guard.check(row["loss"])
        if rejection is None:
            loss.backward()
            distributed.sum_gradients(parameters)
            norm_limit = max_grad_norm if max_grad_norm is not None else float("inf")
            row["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(parameters, norm_limit))
            if not torch.isfinite(torch.tensor(row["grad_norm"])):
                rejection = "gradient not finite"
        if distributed.enabled and has_training_batchnorm(model):
            distributed.average_buffers([model])
        if rejection is None:
            torch_optimizer.step()
        torch_optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        return row, rejection

    def get_state() -> dict[str, Any]:
        state = {"model": model.state_dict(), "optimizer": torch_optimizer.state_dict()}
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        return state

    def set_state(state: dict[str, Any]) -> None:
        model.load_state_dict(state["model"])
        torch_optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            if "scheduler" not in state:
                raise ValueError("this checkpoint was trained without an lr schedule; resume it with lr_schedule='constant'")
            scheduler.load_state_dict(state["scheduler"])

    validate = (lambda: validate_model(model, val_dataset, val_limit)) if val_dataset is not None else None
    config = {
        "model": getattr(model, "model_name", type(model).__name__),
        "size": getattr(model, "model_size", None),
        "batch_size": batch_size,
        "optimizer": optimizer,
        "lr": lr,
        "crop_size": list(crop_size) if isinstance(crop_size, tuple) else crop_size,
        "crop_candidates": crop_candidates,
        "uniform_crop_fraction": uniform_crop_fraction,
        "all_triplets": all_triplets,
        "triplet_gaps": list(triplet_gaps) if tuple(triplet_gaps) != (1,) else None,  # None: as before the option
        "augment": augment,
        "max_grad_norm": max_grad_norm,
        "lr_schedule": lr_schedule,
        "min_lr": min_lr,
        # a cosine decay is laid out over the whole budget, so its budget may not change on resume
        "schedule_steps": steps if lr_schedule == "cosine" else None,
        "warmup_steps": warmup_steps or None,  # None when off: checkpoints older than the option match
        "batchnorm_momentum": batchnorm_momentum,
        "jump_factor": jump_factor,
        "flow_teacher": (
            {"weight": flow_teacher_weight, "radius": flow_teacher_radius, "window": flow_teacher_window}
            if flow_teacher_weight > 0 else None
        ),
        "teacher": teacher_record(teacher, distill_weight, motion_weight, pair_batch_size),
        "train_data": training_data_record(train_dataset),
        "geometric_augmentation": (
            {"scale_range": list(scale_range), "max_rotation_degrees": max_rotation_degrees} if geometric.enabled else None
        ),
    }
    batchnorm = contextlib.nullcontext() if batchnorm_momentum is None else batch_statistics_while_training(model, batchnorm_momentum)
    with batchnorm as switched:
        if batchnorm_momentum is not None and not switched:
            raise ValueError(f"batchnorm_momentum={batchnorm_momentum}: {config['model']} has no frozen BatchNorm layer to train")
        return run_training(
            kind="pretrain",
            steps=steps,
            seed=seed,
            checkpoint_path=checkpoint_path,
            config=config,
            get_state=get_state,
            set_state=set_state,
            train_step=train_step,
            validate=validate,
            val_every=val_every,
            checkpoint_every=checkpoint_every,
            guard=guard,
            progress=progress,
            log=log,
            stop_when=stop_when,
            distributed=distributed,
        )
