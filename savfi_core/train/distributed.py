"""Training on several processes (``torchrun``) with ``torch.distributed``: one batch, split.

    torchrun --standalone --nproc_per_node=8 -m savfi_core.study.execute JOB/run.json  # by the grid
    torchrun --standalone --nproc_per_node=2 my_script.py    # any script calling meta_train/pretrain

What a distributed step computes is the single-process step, split by tasks:

* every process draws the *whole* batch with the loop's seeded sampler (the same state on every
  rank), then keeps its share, the contiguous block :meth:`DistributedContext.shard` gives; the
  shares are disjoint and their union is the single-process batch, so the data and the temporal
  flips do not depend on the number of processes (drawing the other ranks' samples costs data
  loading, not network passes);
* each process computes its share's contribution to the batch mean: the per-task meta-losses
  divided by the *whole* batch size (``MetaLearner.compute_meta_gradients(tasks=...)``);
* the gradients of every meta-parameter (what the outer optimizer steps on: network weights,
  MAML++ per-step rates and per-step BatchNorm weights, Meta-SGD element rates, the L2F
  attenuator and its scale) are summed over the processes with one ``all_reduce`` after the
  backward passes, the metrics too; then every process takes the same optimizer step.

Summing contributions equals the single-process mean up to the order of the floating-point
additions (in float64 the tests find differences near 1e-16 relative).

Why an explicit all-reduce and not ``DistributedDataParallel``: DDP averages gradients through
hooks that fire while ``loss.backward()`` accumulates into the parameters of the wrapped module's
own forward pass. Here the network runs through ``torch.func.functional_call`` with adapted
parameter dicts, the inner loop calls ``torch.autograd.grad(create_graph=True)`` on the same
parameters before the outer backward, one outer step runs one backward per task (a DDP reducer
would need ``no_sync`` on all but the last), and the L2F attenuator and learned rates live in
another module. Keeping DDP's reducer consistent with that needs ``find_unused_parameters``,
``no_sync`` and a second wrapper, and a hook that fires inside an inner-loop ``autograd.grad``
would reduce an inner gradient. One all-reduce of ``.grad`` after the last backward is exact,
touches nothing inside the inner loop and costs the same traffic (one flat buffer per step).

BatchNorm running statistics (only DAIN's depth network runs BatchNorm in train mode) are
averaged over the processes after each step, so every rank keeps the same buffers; this is not
the single-process sequence of momentum updates (DDP broadcasts rank 0's instead), and batch
statistics are those of each rank's own tasks, as in DDP without SyncBatchNorm.

Backend: ``nccl`` with CUDA (each rank on ``cuda:LOCAL_RANK``), ``gloo`` on CPU. Only rank 0
writes checkpoints, curves and validation results (:mod:`savfi_core.train.loop`); every rank
reads the checkpoint on resume, which needs a file system shared by the ranks (one node, or a
cluster's shared disk). A checkpoint remembers its world size and a resume under another one is
refused: re-sharding would be correct in exact arithmetic, but the summation order changes and
the continuation would not be the bit-identical run that resume promises.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

# Metrics of a meta step that are per-task means (``MetaLearner.compute_meta_gradients``): each
# rank returns its share's contribution, so they are summed; the other metrics (outer_lr,
# second_order, step) are the same on every rank.
META_TASK_MEAN_METRICS = ("outer_loss", "query_loss", "support_loss_before", "support_loss_after")
# Collective operations wait this long for the slowest rank (rank 0 validates while the others
# wait at the next collective); the NCCL default of 10 minutes is short for a long validation.
TIMEOUT_ENVIRONMENT = "SAVFI_DISTRIBUTED_TIMEOUT_MINUTES"
DEFAULT_TIMEOUT_MINUTES = 60


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run; with ``world_size`` 1 every method does nothing.

    device: where a rank's networks run: ``cuda:LOCAL_RANK`` with the nccl backend, else None
        (the model stays where the caller put it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and validates."""
        return self.rank == 0

    def shard(self, count: int) -> list[int]:
        """Indices of the ``count`` batch items this rank computes: a contiguous block, the
        first ``count % world_size`` ranks one more (disjoint, their union ``range(count)``)."""
        base, extra = divmod(count, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return list(range(start, start + base + (self.rank < extra)))

    # Collectives ------------------------------------------------------------------------------
    def sum_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """``p.grad`` <- the sum of ``p.grad`` over the ranks, for every parameter, in one flat
        all-reduce per dtype. A parameter without a gradient on some ranks counts as zero there;
        one without a gradient on every rank keeps ``grad = None``, as in a single process (an
        optimizer skips it then, while a zero gradient would still move Adam's state)."""
        if not self.enabled:
            return
        parameters = list(parameters)
        if not parameters:
            return
        device = parameters[0].device
        present = torch.tensor([p.grad is not None for p in parameters], dtype=torch.int32, device=device)
        torch.distributed.all_reduce(present)
        used = [p for p, count in zip(parameters, present.tolist()) if count > 0]
        for parameter in used:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        for dtype in sorted({p.grad.dtype for p in used}, key=str):
            group = [p for p in used if p.grad.dtype == dtype]
            flat = torch.cat([p.grad.reshape(-1) for p in group])
            torch.distributed.all_reduce(flat)
            offset = 0
            for parameter in group:
                count = parameter.grad.numel()
                parameter.grad.copy_(flat[offset:offset + count].view_as(parameter.grad))
                offset += count

    def sum_floats(self, values: dict[str, float], keys: Sequence[str]) -> dict[str, float]:
        """``values`` with the entries named in ``keys`` summed over the ranks (float64)."""
        if not self.enabled:
            return dict(values)
        names = [key for key in keys if key in values]
        if not names:
            return dict(values)
        vector = torch.tensor([float(values[key]) for key in names], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(vector)
        return {**values, **dict(zip(names, vector.tolist()))}

    def average_buffers(self, modules: Iterable[nn.Module]) -> None:
        """Every floating-point buffer of ``modules`` <- its mean over the ranks."""
        if not self.enabled:
            return
        for module in modules:
            for buffer in module.buffers():
                if buffer.is_floating_point():
                    torch.distributed.all_reduce(buffer)
                    buffer.div_(self.world_size)

    def broadcast_tensors(self, tensors: Iterable[torch.Tensor]) -> None:
        """Every tensor <- rank 0's value (the same starting point on every rank)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in tensors:
                torch.distributed.broadcast(tensor, src=0)

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a small picklable object: a flag, a decision)."""
        if not self.enabled:
            return value
        holder = [value]
        torch.distributed.broadcast_object_list(holder, src=0, device=self.device)
        return holder[0]

    # The meta-learner's step ------------------------------------------------------------------
    def synchronize_meta_step(self, learner, metrics: dict[str, float]) -> dict[str, float]:
        """Between the backward passes and the outer update of ``MetaLearner.meta_step``: sum the
        meta-gradients and the per-task metrics, average train-mode BatchNorm statistics."""
        if not self.enabled:
            return metrics
        self.sum_gradients(p for group in learner.outer_optimizer.param_groups for p in group["params"])
        if has_training_batchnorm(learner.model):
            self.average_buffers([learner.model, learner.learned])
        return self.sum_floats(metrics, META_TASK_MEAN_METRICS)


def has_training_batchnorm(model: nn.Module) -> bool:
    """Whether a forward pass of ``model`` updates BatchNorm running statistics."""
    return any(module.training and module.track_running_stats for module in model.modules()
               if isinstance(module, nn.modules.batchnorm._BatchNorm))


def launched_by_torchrun() -> bool:
    """torchrun (``torch.distributed.run``) sets these for every worker."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def distributed_context(backend: str | None = None) -> DistributedContext:
    """This process's context: from the initialised default process group, or initialised here
    from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``), or a single process when neither exists.

    backend: None picks ``nccl`` when CUDA is available, else ``gloo``.
    """
    import torch.distributed as dist

    if not dist.is_available():
        return DistributedContext()
    if not dist.is_initialized():
        if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
            return DistributedContext()
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        minutes = float(os.environ.get(TIMEOUT_ENVIRONMENT, DEFAULT_TIMEOUT_MINUTES))
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=minutes))
    world_size = dist.get_world_size()
    if world_size <= 1:
        return DistributedContext()
    backend = dist.get_backend()
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    device = torch.device("cuda", local_rank) if backend == "nccl" else None
    return DistributedContext(rank=dist.get_rank(), world_size=world_size, local_rank=local_rank, backend=backend, device=device)


def is_main_process() -> bool:
    """False on the ranks > 0 of a torchrun group (they must not write the results)."""
    return int(os.environ.get("RANK", "0")) == 0
