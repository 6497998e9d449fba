"""MAML, MAML++, Meta-SGD and L2F as switches on one functional inner loop.

For one task (a septuplet, :mod:`savfi_core.meta.tasks`) with adapted parameters ``theta``
(the network's parameters whose names match the adapt patterns; the rest stay at their
meta-learned values), inner steps ``k = 0..K-1``::

    theta_0     = gamma(task) * theta                         # L2F only; gamma = 1 otherwise
    L_k         = sum over the two support triplets of model.loss(f(theta_k; frame0, frame1), target)
                  (or, with ``support_loss='cycle'``, the cycle-consistency loss of the same frames)
    theta_{k+1} = rule(theta_k, dL_k/dtheta_k, rate_k)        # sgd | adam | adamax, functional

and the outer loss of the task is ``L_query(theta_K)`` or, with MAML++'s multi-step loss,
``sum_k w_k L_query(theta_{k+1})`` with the annealed importance vector ``w``. The outer loss is
averaged over the tasks of a batch and minimised by an ordinary torch optimizer over the
meta-parameters: the network's weights and, depending on the algorithm,

* maml++ (LSLR): one rate per adapted tensor per inner step, ``rate_k[name]`` (a scalar);
* metasgd: one rate per element, ``rate[name]`` of the tensor's shape (the same at every step);
* l2f: the attenuator network and its output scale (see :class:`LearnedInnerLoop`);
* maml++ with BatchNorm: per-step BatchNorm weights.

The model runs through ``torch.func.functional_call`` with the parameters in a dict, and the inner
gradients come from ``torch.autograd.grad(..., create_graph=second_order)``: no module is
mutated by the inner loop and no layer is rewritten, so any backbone of the registry works.

Per-step BatchNorm (MAML++): every BatchNorm module gets ``K+1`` copies of its weight, bias,
running mean and running variance; a forward pass with parameters ``theta_j`` (after ``j``
updates) uses copy ``min(j, K)``. The per-step weights are meta-parameters and are not adapted in
the inner loop (as in MAML++), so the model's own BatchNorm weights leave the adapted set. Running
statistics only change where a BatchNorm runs in train mode. For the registry:

* DVF: its BatchNorm is frozen in eval mode, so the per-step statistics stay equal copies of the
  pretrained ones; the per-step affine weights are learned (plain MAML adapts DVF's BatchNorm
  weights instead; MAML++ learns them per step and adapts the convolutions only).
* DAIN: the depth network's BatchNorms run in train mode when the model does, so each step keeps
  its own statistics; most of them are not affine (no weights), the stem's affine BatchNorm gets
  per-step weights. SAVFI adapts only ``rectifyNet``, so none of these is adapted.
* SepConv, CAIN, RRIN, Super-SloMo: no BatchNorm, nothing changes.

Task batching (``MetaLearner(..., task_batching=...)``): "loop" (default) runs the inner loop task
after task; "vmap" runs it for all tasks of a batch at once, ``torch.func.vmap`` over per-task
copies of the adapted parameters stacked along a new leading dimension (the same computation:
equal to the loop to 1e-5 in float32, tests/test_meta_task_batching.py); "auto" uses vmap unless
:meth:`MetaLearner.task_batching_obstacle` names a reason (the cycle support loss, BatchNorm updating running statistics,
as DAIN's; per-step BatchNorm; dropout in train mode), and the loop then. On CPU: sepconv, cain,
rrin, superslomo, dvf, rife_hdv3 and rife_v4 run under vmap, dain loops
(benchmarks/meta-batching-cpu.md).
"""
from __future__ import annotations

import fnmatch
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from savfi_core.meta import inner_rules
from savfi_core.meta.config import MetaConfig
from savfi_core.meta.tasks import Task, Triplet, make_task, support_inputs, temporal_flip

CHECKPOINT_FORMAT = "savfi-meta-learner"
# compute_meta_gradients over the tasks of a batch: "loop" one task after another (the reference,
# least memory), "vmap" all tasks at once (torch.func.vmap over per-task parameters; refuses, with
# the reason, where that cannot run), "auto" vmap where it can run and the loop elsewhere.
TASK_BATCHING = ("loop", "vmap", "auto")


def _key(name: str) -> str:
    """Parameter names as ParameterDict keys ('.' is not allowed in module attribute names)."""
    return name.replace(".", "-")


def per_step_loss_importance(inner_steps: int, outer_step: int, annealing_steps: int) -> Tensor:
    """MAML++ multi-step-loss weights ``w`` [K] at an outer step (Antoniou et al. 2019).

    Starts uniform (1/K each); every outer step moves ``1/(K * annealing_steps)`` from each
    non-final step (down to a floor of ``0.03/K``) to the final one (capped at
    ``1 - (K-1) * 0.03/K``), as ``get_per_step_loss_importance_vector`` of the MAML++ and SAVFI
    code, with its epochs counted here in outer steps.
    """
    weights = np.full(inner_steps, 1.0 / inner_steps)
    decay = 1.0 / inner_steps / annealing_steps
    floor = 0.03 / inner_steps
    for index in range(inner_steps - 1):
        weights[index] = max(weights[index] - outer_step * decay, floor)
    weights[-1] = min(weights[-1] + outer_step * (inner_steps - 1) * decay, 1.0 - (inner_steps - 1) * floor)
    return torch.tensor(weights)


class LearnedInnerLoop(nn.Module):
    """The meta-parameters besides the network's weights (empty for plain MAML).

    step_rates (maml++): ``step_rates[key]`` [max(K, 1)], initialised to ``inner_lr``.
    element_rates (metasgd): ``element_rates[key]`` shaped like the parameter, ``inner_lr``.
    attenuator, attenuation_scale (l2f): the L2F attenuation of the initialization,
        ``gamma = clamp(1 - attenuation_scale * attenuator(e), 0, 1)`` [L] for the task embedding
        ``e`` [L] (layer-wise mean support gradients, one entry per adapted tensor), with
        ``attenuator = Linear(L, L) -> ReLU -> Linear(L, L) -> Sigmoid``. ``attenuation_scale``
        starts at 0 as in the SAVFI code, so the untrained attenuator leaves the initialization
        exactly unchanged (gamma = 1). Consequence: on the very first outer step only the scale
        receives a gradient; the attenuator network receives gradients from the next step on.
    batchnorm_weights, batchnorm_statistics (maml++ with BatchNorm): per-step copies [K+1, C].
    """

    def __init__(
        self,
        config: MetaConfig,
        adapted: dict[str, Tensor],
        batchnorm_modules: dict[str, nn.modules.batchnorm._BatchNorm],
    ):
        super().__init__()
        steps = config.inner_steps
        self.step_rates = nn.ParameterDict()
        self.element_rates = nn.ParameterDict()
        self.batchnorm_weights = nn.ParameterDict()
        self.batchnorm_statistics = nn.Module()  # a plain holder of buffers
        self.attenuator = None
        self.attenuation_scale = None
        if config.learns_step_rates:
            for name, value in adapted.items():
                self.step_rates[_key(name)] = nn.Parameter(torch.full((max(steps, 1),), config.inner_lr, dtype=value.dtype, device=value.device))
        if config.learns_element_rates:
            for name, value in adapted.items():
                self.element_rates[_key(name)] = nn.Parameter(torch.full_like(value.detach(), config.inner_lr))
        if config.attenuates_initialization:
            layers = len(adapted)
            reference = next(iter(adapted.values()))
            self.attenuator = nn.Sequential(nn.Linear(layers, layers), nn.ReLU(), nn.Linear(layers, layers), nn.Sigmoid())
            self.attenuator.to(dtype=reference.dtype, device=reference.device)
            self.attenuation_scale = nn.Parameter(torch.zeros(1, dtype=reference.dtype, device=reference.device))
        for module_name, module in batchnorm_modules.items():
            for part in ("weight", "bias"):
                value = getattr(module, part)
                if value is not None:
                    copies = value.detach().unsqueeze(0).repeat(steps + 1, *([1] * value.dim()))
                    self.batchnorm_weights[_key(f"{module_name}.{part}")] = nn.Parameter(copies)
            for part in ("running_mean", "running_var"):
                value = getattr(module, part)
                if value is not None:
                    copies = value.detach().unsqueeze(0).repeat(steps + 1, *([1] * value.dim())).clone()
                    self.batchnorm_statistics.register_buffer(_key(f"{module_name}.{part}"), copies)


class MetaLearner:
    """Meta-training and test-time adaptation of one interpolation network.

    ``MetaLearner(model, config=None, **overrides)``: ``overrides`` replace fields of ``config``
    (or of the default :class:`MetaConfig`), e.g. ``MetaLearner(model, algorithm="maml++",
    inner_steps=2)``.

    meta_step(batch): one outer update (puts the model in train mode).
    adapt(sample, steps=None): adapted parameters for one sample, the model untouched.
    predict(sample, params=None): the frame between t-1 and t+1.
    state_dict() / load_state_dict(): network, learned rates/attenuator/per-step BatchNorm,
        outer optimizer and scheduler state, step counter and flip generator (exact resume).
    """

    def __init__(self, model: nn.Module, config: MetaConfig | None = None, *, task_batching: str = "loop", **overrides: Any):
        config = config if config is not None else MetaConfig()
        if overrides:
            config = config.replace(**overrides)
        if task_batching not in TASK_BATCHING:
            raise ValueError(f"task_batching {task_batching!r}: choose one of {TASK_BATCHING}")
        self.model = model
        self.config = config
        # How compute_meta_gradients runs the tasks of a batch (see TASK_BATCHING). Not part of
        # the config or the checkpoint: it changes the cost of a step, not what is computed.
        self.task_batching = task_batching
        self.patterns = tuple(config.adapt_patterns if config.adapt_patterns is not None else model.adapted_parameter_patterns)

        self.batchnorm_modules = (
            {name: module for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)}
            if config.uses_per_step_batchnorm
            else {}
        )
        self.per_step_parameter_names = {
            f"{name}.{part}" for name, module in self.batchnorm_modules.items() for part in ("weight", "bias") if getattr(module, part) is not None
        }
        self.per_step_buffer_names = {
            f"{name}.{part}"
            for name, module in self.batchnorm_modules.items()
            for part in ("running_mean", "running_var")
            if getattr(module, part) is not None
        }
        self.adapted_names = [
            name
            for name, parameter in model.named_parameters()
            if parameter.requires_grad
            and name not in self.per_step_parameter_names
            and any(fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns)
        ]
        if not self.adapted_names:
            raise ValueError(
                f"adapt patterns {self.patterns} match no trainable parameter of {type(model).__name__} "
                f"(first names: {[name for name, _ in model.named_parameters()][:5]})"
            )
        parameters = dict(model.named_parameters())
        self.learned = LearnedInnerLoop(config, {name: parameters[name] for name in self.adapted_names}, self.batchnorm_modules)

        self.step = 0
        self.generator = torch.Generator().manual_seed(config.seed)
        if config.outer_optimizer == "adam":
            self.outer_optimizer = torch.optim.Adam(
                self.meta_parameters(), lr=config.outer_lr, betas=(0.9, 0.99), weight_decay=config.outer_weight_decay
            )
        else:
            self.outer_optimizer = torch.optim.Adamax(
                self.meta_parameters(), lr=config.outer_lr, betas=(0.9, 0.999), weight_decay=config.outer_weight_decay
            )
        self.scheduler = None
        if config.resolved_outer_lr_schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.outer_optimizer, T_max=config.total_outer_steps, eta_min=config.outer_lr_min
            )

    # Parameters ------------------------------------------------------------------------------
    def meta_parameters(self) -> list[nn.Parameter]:
        """Everything the outer optimizer updates: network weights (except BatchNorm weights that
        per-step copies replace) and the learned rates / attenuator / per-step BatchNorm weights."""
        network = [
            parameter
            for name, parameter in self.model.named_parameters()
            if parameter.requires_grad and name not in self.per_step_parameter_names
        ]
        return network + list(self.learned.parameters())

    @property
    def multi_step_loss_steps(self) -> int:
        """MSL annealing length; None in the config means 10% of training for maml++, else 0."""
        if self.config.multi_step_loss_steps is not None:
            return self.config.multi_step_loss_steps
        return max(1, self.config.total_outer_steps // 10) if self.config.algorithm == "maml++" else 0

    def _rates(self, step: int, detach: bool = False) -> dict[str, Tensor | float]:
        config = self.config
        if config.learns_step_rates:
            rates = {name: self.learned.step_rates[_key(name)][min(step, config.inner_steps - 1) if config.inner_steps else 0] for name in self.adapted_names}
        elif config.learns_element_rates:
            rates = {name: self.learned.element_rates[_key(name)] for name in self.adapted_names}
        else:
            return {name: config.inner_lr for name in self.adapted_names}
        return {name: rate.detach() for name, rate in rates.items()} if detach else rates

    def _per_step_batchnorm(self, row: int, clone: bool) -> dict[str, Tensor]:
        """Per-step BatchNorm weights and statistics of copy ``min(row, K)`` under model names."""
        if not self.batchnorm_modules:
            return {}
        row = min(row, self.config.inner_steps)
        result = {name: self.learned.batchnorm_weights[_key(name)][row] for name in self.per_step_parameter_names}
        for name in self.per_step_buffer_names:
            statistics = getattr(self.learned.batchnorm_statistics, _key(name))[row]
            # A view of the row: BatchNorm in train mode updates it in place during meta-training.
            result[name] = statistics.clone() if clone else statistics
        return result

    def _forward(self, params: dict[str, Tensor], row: int, frame0: Tensor, frame1: Tensor, buffers: "_BufferDict"):
        """Run the network with ``params`` over its own parameters, per-step BatchNorm copy ``row``."""
        batchnorm = self._per_step_batchnorm(row, clone=buffers.is_clone)
        merged = {**dict(self.model.named_parameters()), **buffers, **batchnorm, **params}
        return functional_call(self.model, merged, (frame0, frame1))

    def _buffers(self, clone: bool) -> dict[str, Tensor]:
        """The model's buffers: live during meta-training (running statistics update as in any
        training step), cloned for adaptation and prediction (the model is never mutated)."""
        buffers = _BufferDict({name: value.clone() if clone else value for name, value in self.model.named_buffers()})
        buffers.is_clone = clone
        return buffers

    def _loss(self, params, row, triplet: Triplet, buffers) -> Tensor:
        output = self._forward(params, row, triplet.frame0, triplet.frame1, buffers)
        return self.model.loss(output, triplet.target)["total"]

    def _support_in_one_batch(self, task: Task) -> bool:
        """Whether the support triplets may run as one batch: the backbone declares its batch
        items independent and no BatchNorm runs in train mode (batch statistics would mix them)."""
        return (
            len(task.support) > 1
            and getattr(self.model, "independent_batch_items", False)
            and not any(module.training for module in self.model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm))
            and len({tuple(triplet.frame0.shape) for triplet in task.support}) == 1
        )

    def _support_loss(self, params, row, task: Task, buffers) -> Tensor:
        """The inner loss of the config's ``support_loss``: triplets or cycle consistency."""
        if self.config.support_loss == "cycle":
            return self._cycle_support_loss(params, row, task, buffers)
        return self._triplet_support_loss(params, row, task, buffers)

    def _cycle_support_loss(self, params, row, task: Task, buffers) -> Tensor:
        """Cycle consistency on the four input frames (Reda et al. 2019), query never read::

            I2' = f(I1, I3),  I4' = f(I3, I5),  I6' = f(I5, I7)
            L   = loss(f(I2', I4'), I3) + loss(f(I4', I6'), I5)

        Gradients flow through both levels (the predicted frames are not detached): the network
        is asked to be consistent with itself, which is what makes it adapt to the motion.
        With independent batch items each level is one batched call (the sum of the two losses
        is twice the mean over the batch of two), as for the triplets.
        """
        first, third, fifth, seventh = support_inputs(task)
        if self._support_in_one_batch(task):
            between = self._forward(params, row, torch.cat([first, third, fifth]), torch.cat([third, fifth, seventh]), buffers).pred
            second, fourth, sixth = between.chunk(3)
            joined = Triplet(torch.cat([second, fourth]), torch.cat([fourth, sixth]), torch.cat([third, fifth]))
            return 2 * self._loss(params, row, joined, buffers)
        second, fourth, sixth = (self._forward(params, row, frame0, frame1, buffers).pred
                                 for frame0, frame1 in ((first, third), (third, fifth), (fifth, seventh)))
        return (self._loss(params, row, Triplet(second, fourth, third), buffers)
                + self._loss(params, row, Triplet(fourth, sixth, fifth), buffers))

    def _triplet_support_loss(self, params, row, task: Task, buffers) -> Tensor:
        """The paper's inner loss: the sum of the backbone's loss on both support triplets.

        With independent batch items (see ``_support_in_one_batch``) one forward pass over the
        triplets concatenated along the batch gives the mean of their losses, so the sum is
        ``len(support)`` times it: the same value and gradient, with half the network calls.
        """
        if self._support_in_one_batch(task):
            joined = Triplet(*(torch.cat([getattr(triplet, part) for triplet in task.support]) for part in ("frame0", "frame1", "target")))
            return len(task.support) * self._loss(params, row, joined, buffers)
        return sum(self._loss(params, row, triplet, buffers) for triplet in task.support)

    def _gradients(self, loss: Tensor, params: dict[str, Tensor], create_graph: bool) -> dict[str, Tensor]:
        values = list(params.values())
        grads = torch.autograd.grad(loss, values, create_graph=create_graph, allow_unused=True)
        # Unused parameters (a branch the loss does not reach) have zero gradient, not None.
        return {name: torch.zeros_like(value) if grad is None else grad for (name, value), grad in zip(params.items(), grads)}

    def _attenuate(self, task: Task, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """L2F: ``theta_0 = gamma * theta`` layer-wise, ``gamma`` from the support gradients.

        The task embedding (layer-wise mean gradient of the support loss at the unattenuated
        initialization) is an input of the attenuator, not differentiated through (as in the
        SAVFI code, ``create_graph=False``).
        """
        # Cloned buffers: this probe pass must not count as a training forward for BatchNorm.
        loss = self._support_loss(params, 0, task, self._buffers(clone=True))
        grads = self._gradients(loss, params, create_graph=False)
        embedding = torch.stack([grad.mean() for grad in grads.values()]).detach()
        gamma = (1.0 - self.learned.attenuation_scale * self.learned.attenuator(embedding)).clamp(0.0, 1.0)
        return {name: gamma[index] * value for index, (name, value) in enumerate(params.items())}

    # Meta-training ---------------------------------------------------------------------------
    def meta_step(self, batch, *, support_loss_after: bool = False, tasks: Sequence[int] | None = None,
                  synchronize: Callable[[dict[str, float]], dict[str, float]] | None = None) -> dict[str, float]:
        """One outer update on a batch of tasks (a single or collated ``Sample``).

        :meth:`compute_meta_gradients`, then the outer optimizer and scheduler step. Returns
        floats: outer_loss (the loss minimised), query_loss (final query loss), support_loss_before
        (support loss before the inner loop), outer_lr (the rate used in this step), second_order
        (1.0 or 0.0), step (outer steps done after this one) and, only when
        ``support_loss_after=True``, support_loss_after (support loss after the inner loop: one
        extra no-grad support pass per task, which the SAVFI code does not run).
        tasks, synchronize: one rank's share of a distributed step (``savfi_core.train.distributed``):
        the batch items it computes, and what turns its contributions into the whole batch's
        (sums gradients and metrics over the ranks) before the update.
        """
        metrics = self.compute_meta_gradients(batch, support_loss_after=support_loss_after, tasks=tasks)
        if synchronize is not None:
            metrics = synchronize(metrics)
        self.outer_optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        metrics["step"] = float(self.step)
        return metrics

    def task_batching_obstacle(self) -> str | None:
        """Why this learner's tasks cannot run under ``torch.func.vmap`` (None: they can).

        vmap runs one forward over per-task parameters stacked along a new leading dimension; it
        cannot update buffers in place with batched values (BatchNorm running statistics in train
        mode, MAML++'s per-step statistics) and refuses random ops by default (dropout in train
        mode would draw the same mask for every task, not one per task as the loop does).
        Backbones with custom autograd Functions lacking vmap rules fail inside vmap with
        PyTorch's own error; the CPU paths of savfi's kernels are plain tensor ops.
        """
        if self.config.support_loss == "cycle":
            # the vmapped inner loop computes the triplet loss only
            return "the cycle-consistency support loss runs task by task"
        if self.batchnorm_modules:
            return "per-step BatchNorm (maml++) keeps running statistics per inner step"
        training_batchnorm = [name for name, module in self.model.named_modules()
                              if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training and module.track_running_stats
                              and getattr(module, "updates_running_statistics", True)]
        if training_batchnorm:
            return f"BatchNorm in train mode updates its running statistics ({training_batchnorm[0]}, ...)"
        training_dropout = [name for name, module in self.model.named_modules()
                            if isinstance(module, nn.modules.dropout._DropoutNd) and module.training and module.p > 0]
        if training_dropout:
            return f"dropout in train mode draws random masks ({training_dropout[0]}, ...)"
        return None

    def _batches_tasks(self) -> bool:
        """Whether compute_meta_gradients vmaps over tasks (model already in train mode)."""
        if self.task_batching == "loop":
            return False
        obstacle = self.task_batching_obstacle()
        if obstacle is not None and self.task_batching == "vmap":
            raise ValueError(f"task_batching='vmap' cannot run on {type(self.model).__name__}: {obstacle}; use 'auto' or 'loop'")
        return obstacle is None

    def compute_meta_gradients(self, batch, *, support_loss_after: bool = False, tasks: Sequence[int] | None = None) -> dict[str, float]:
        """Outer loss and its gradient in ``.grad`` of every meta-parameter; no update.

        Puts the model in train mode. Each batch item is one task with its own inner loop
        (optimizer state reset). The outer loss is the mean over tasks; gradients are accumulated
        task by task (backward per task keeps one task's graph in memory at a time). Consumes the
        learner's flip generator exactly as ``meta_step`` does (a gradient-clipping caller may
        use this method, clip, then ``outer_optimizer.step()``, ``scheduler.step()`` and
        ``step += 1``).
        tasks: compute only these batch items (one rank's share); losses and metrics are still
        divided by the whole batch size, so they are this share's contribution to the batch mean
        and summing the shares' gradients gives the whole batch's.
        """
        config = self.config
        self.model.train()
        batch_size = batch.frames.shape[0] if batch.frames.dim() == 5 else 1
        if config.temporal_flip:
            flip = torch.rand(batch_size, generator=self.generator) < 0.5
            batch = temporal_flip(batch, flip)
        task = make_task(batch)
        second_order = not config.first_order and self.step >= config.first_order_until_step
        steps = config.inner_steps
        use_msl = steps > 0 and self.step < self.multi_step_loss_steps
        importance = per_step_loss_importance(steps, self.step, self.multi_step_loss_steps) if use_msl else None
        network = dict(self.model.named_parameters())
        buffers = self._buffers(clone=False)
        outer_lr = self.outer_optimizer.param_groups[0]["lr"]

        self.outer_optimizer.zero_grad(set_to_none=True)
        if tasks is None and self._batches_tasks():  # a rank's share of the tasks (``tasks``) runs the loop
            metrics = self._tasks_at_once(task, second_order, importance, support_loss_after)
            metrics.update(outer_lr=float(outer_lr), second_order=float(second_order), step=float(self.step))
            return metrics
        totals = {"outer_loss": 0.0, "query_loss": 0.0, "support_loss_before": 0.0}
        if support_loss_after:
            totals["support_loss_after"] = 0.0
        for index in range(task.batch_size) if tasks is None else tasks:
            item = task.item(index)
            params = {name: network[name] for name in self.adapted_names}
            if config.attenuates_initialization:
                params = self._attenuate(item, params)
            state = inner_rules.initial_state(config.inner_rule, params)
            weighted_query_losses = []
            for step in range(steps):
                support_loss = self._support_loss(params, step, item, buffers)
                if step == 0:
                    totals["support_loss_before"] += support_loss.item()
                grads = self._gradients(support_loss, params, create_graph=second_order)
                params, state = inner_rules.update(
                    config.inner_rule, params, grads, state, self._rates(step), config.inner_betas, config.inner_eps
                )
                if use_msl:
                    # MAML++ multi-step loss: the query loss after every inner step, weighted.
                    query_loss = self._loss(params, step + 1, item.query, buffers)
                    weighted_query_losses.append(importance[step].item() * query_loss)
            if use_msl:
                task_loss = sum(weighted_query_losses)
            else:
                query_loss = self._loss(params, steps, item.query, buffers)
                task_loss = query_loss
            (task_loss / task.batch_size).backward()
            if support_loss_after or steps == 0:
                with torch.no_grad():
                    after = self._support_loss(params, steps, item, self._buffers(clone=True)).item()
                if support_loss_after:
                    totals["support_loss_after"] += after
                if steps == 0:
                    totals["support_loss_before"] += after
            totals["outer_loss"] += task_loss.item()
            totals["query_loss"] += query_loss.item()

        metrics = {name: value / task.batch_size for name, value in totals.items()}
        metrics.update(outer_lr=float(outer_lr), second_order=float(second_order), step=float(self.step))
        return metrics

    # Task-batched meta-steps ---------------------------------------------------------------
    def _task_losses(self, params: dict[str, Tensor], row: int, triplets: list[Triplet], buffers, joined: bool) -> Tensor:
        """Losses [B] of B tasks at once: ``params`` hold one slice per task ([B, ...] each) and
        ``triplets`` the tasks' triplets (frames [B, 3, H, W]); a task's loss is the sum over its
        triplets, as ``_support_loss`` (``joined``: one forward over them, as there)."""
        count = len(triplets)
        stacked = [torch.stack([getattr(triplet, part) for triplet in triplets], dim=1) for part in ("frame0", "frame1", "target")]

        def one_task(task_params, frame0, frame1, target):  # frames [count, 3, H, W]: one task's triplets
            if joined:
                return count * self._loss(task_params, row, Triplet(frame0, frame1, target), buffers)
            return sum(self._loss(task_params, row, Triplet(frame0[i:i + 1], frame1[i:i + 1], target[i:i + 1]), buffers)
                       for i in range(count))

        return vmap(one_task)(params, *stacked)

    def _task_gradients(self, losses: Tensor, params: dict[str, Tensor], create_graph: bool) -> dict[str, Tensor]:
        """Per-task gradients [B, ...]: tasks share nothing in ``params``, so the gradient of the
        summed losses with respect to the stacked parameters is each task's own gradient."""
        return self._gradients(losses.sum(), params, create_graph)

    def _tasks_at_once(self, task: Task, second_order: bool, importance: Tensor | None, support_loss_after: bool) -> dict[str, float]:
        """compute_meta_gradients with every task of the batch in one vmapped inner loop.

        The same computation as the per-task loop (tests hold them equal to 1e-5 in float32),
        one network call per inner step instead of one per task; the graphs of all tasks are kept
        until the single backward, so memory grows with the batch.
        """
        config = self.config
        steps, tasks = config.inner_steps, task.batch_size
        network = dict(self.model.named_parameters())
        buffers = self._buffers(clone=False)
        joined = self._support_in_one_batch(task)
        params = {name: network[name].unsqueeze(0).expand(tasks, *network[name].shape) for name in self.adapted_names}
        if config.attenuates_initialization:
            # L2F, as _attenuate: task embedding from the support gradients at the initialization.
            probe = self._task_losses(params, 0, task.support, self._buffers(clone=True), joined)
            grads = self._task_gradients(probe, params, create_graph=False)
            embedding = torch.stack([grad.flatten(1).mean(1) for grad in grads.values()], dim=1).detach()  # [B, L]
            gamma = (1.0 - self.learned.attenuation_scale * self.learned.attenuator(embedding)).clamp(0.0, 1.0)
            params = {name: gamma[:, index].view(-1, *([1] * (value.dim() - 1))) * value for index, (name, value) in enumerate(params.items())}
        state = inner_rules.initial_state(config.inner_rule, params)
        totals = {"outer_loss": 0.0, "query_loss": 0.0, "support_loss_before": 0.0}  # the loop's order
        if support_loss_after:
            totals["support_loss_after"] = 0.0
        weighted_query_losses = []
        for step in range(steps):
            support_losses = self._task_losses(params, step, task.support, buffers, joined)
            if step == 0:
                totals["support_loss_before"] = support_losses.detach().sum().item()
            grads = self._task_gradients(support_losses, params, create_graph=second_order)
            params, state = inner_rules.update(
                config.inner_rule, params, grads, state, self._rates(step), config.inner_betas, config.inner_eps
            )
            if importance is not None:
                query_losses = self._task_losses(params, step + 1, [task.query], buffers, True)
                weighted_query_losses.append(importance[step].item() * query_losses)
        if importance is not None:
            task_losses = sum(weighted_query_losses)
        else:
            query_losses = self._task_losses(params, steps, [task.query], buffers, True)
            task_losses = query_losses
        (task_losses.sum() / tasks).backward()
        if support_loss_after or steps == 0:
            with torch.no_grad():
                after = self._task_losses(params, steps, task.support, self._buffers(clone=True), joined).sum().item()
            if support_loss_after:
                totals["support_loss_after"] = after
            if steps == 0:
                totals["support_loss_before"] = after
        totals["outer_loss"] = task_losses.detach().sum().item()
        totals["query_loss"] = query_losses.detach().sum().item()
        return {name: value / tasks for name, value in totals.items()}

    # Test time -------------------------------------------------------------------------------
    def adapt(self, sample, steps: int | None = None) -> dict[str, Tensor]:
        """Adapt to one sample's support triplets; the query frame is never read.

        Returns detached tensors under the model's names: every adapted parameter and, with
        per-step BatchNorm, the BatchNorm weights and statistics of the step reached. The model's
        own parameters and buffers are not modified. Works in any grad mode. ``steps`` beyond
        the trained ``inner_steps`` reuse the last learned LSLR rate and BatchNorm copy.
        """
        steps = self.config.inner_steps if steps is None else steps
        return self.adapt_steps(sample, [steps])[0][1]

    def adapt_steps(self, sample, steps: Sequence[int]) -> list[tuple[int, dict[str, Tensor], float]]:
        """:meth:`adapt` after each step count in ``steps``, from one run of the inner loop.

        Returns ``(count, params, seconds)`` in the order of ``steps``; ``seconds`` is the adaptation
        time up to that count. Step ``k`` of the inner loop depends only on ``k`` (its LSLR rate,
        its BatchNorm copy), never on how many steps follow, so the params after 3 steps of a
        5-step run are those of a 3-step run: a test-time sweep costs its largest count, not the
        sum of its counts.
        """
        counts = [int(count) for count in steps]
        if not counts or min(counts) < 0:
            raise ValueError(f"steps must be a non-empty list of counts >= 0, got {list(steps)}")
        config = self.config
        start = time.perf_counter()
        task = make_task(sample, with_query_target=False)
        if task.batch_size != 1:
            raise ValueError(f"adapt takes one sample, got a batch of {task.batch_size} ({task.names})")
        network = dict(self.model.named_parameters())
        params = {name: network[name].detach().clone().requires_grad_(True) for name in self.adapted_names}
        reached: dict[int, tuple[dict[str, Tensor], float]] = {}

        def keep(count: int) -> None:
            if count in counts:
                result = {name: value.detach().clone() for name, value in params.items()}
                result.update({name: value.detach().clone() for name, value in self._per_step_batchnorm(count, clone=True).items()})
                reached[count] = (result, time.perf_counter() - start)

        with torch.enable_grad():
            if config.attenuates_initialization:
                attenuated = self._attenuate(task, params)
                params = {name: value.detach().requires_grad_(True) for name, value in attenuated.items()}
            state = inner_rules.initial_state(config.inner_rule, params)
            keep(0)
            for step in range(max(counts)):
                buffers = self._buffers(clone=True)
                support_loss = self._support_loss(params, step, task, buffers)
                grads = self._gradients(support_loss, params, create_graph=False)
                params, state = inner_rules.update(
                    config.inner_rule, params, grads, state, self._rates(step, detach=True), config.inner_betas, config.inner_eps
                )
                params = {name: value.detach().requires_grad_(True) for name, value in params.items()}
                keep(step + 1)
        return [(count, *reached[count]) for count in counts]

    def support_loss(self, sample, params: dict[str, Tensor] | None = None) -> float:
        """The inner loss (``config.support_loss``) of one sample's support frames with ``params``
        (from :meth:`adapt`) or the unadapted network; the query frame is never read."""
        task = make_task(sample, with_query_target=False)
        # Row 0 of per-step BatchNorm; adapted params carry the copy of the step they reached.
        overrides = self.initial_parameters() if params is None else params
        with torch.no_grad():
            return float(self._support_loss(overrides, 0, task, self._buffers(clone=True)))

    def initial_parameters(self) -> dict[str, Tensor]:
        """What the network runs with before adaptation: per-step BatchNorm copy 0 (if any)."""
        return {name: value.detach().clone() for name, value in self._per_step_batchnorm(0, clone=True).items()}

    def predict(self, sample, params: dict[str, Tensor] | None = None, time: float | None = None) -> Tensor:
        """Frame between positions t-1 and t+1 with ``params`` (from :meth:`adapt`) or the
        unadapted network: [3,H,W] for a single sample, [B,3,H,W] for a collated one.

        time: where between the two frames (0 < time < 1; None is the middle), for networks
        that take it (``model.supports_time``)."""
        task = make_task(sample, with_support=False, with_query_target=False)
        overrides = self.initial_parameters() if params is None else params
        merged = {**dict(self.model.named_parameters()), **self._buffers(clone=True), **overrides}
        keywords = {} if time is None else {"time": time}
        with torch.no_grad():
            prediction = functional_call(self.model, merged, (task.query.frame0, task.query.frame1), keywords).pred
        return prediction[0] if sample.frames.dim() == 4 else prediction

    def adapt_and_predict(self, sample, steps: int | None = None) -> tuple[Tensor, dict[str, Tensor], float]:
        """(prediction, adapted params, seconds spent adapting) for one sample."""
        start = time.perf_counter()
        params = self.adapt(sample, steps)
        seconds = time.perf_counter() - start
        return self.predict(sample, params), params, seconds

    # Checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs; loadable with ``torch.load(weights_only=True)``."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "model_name": getattr(self.model, "model_name", type(self.model).__name__),
            "adapted_names": list(self.adapted_names),
            "model": self.model.state_dict(),
            "learned": self.learned.state_dict(),
            "outer_optimizer": self.outer_optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "step": self.step,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the learner must have been built with the same
        config (it is compared key by key) and model architecture."""
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a MetaLearner state (expected format {CHECKPOINT_FORMAT!r})")
        # Through from_dict, so that a field added since the state was saved counts at its default.
        saved = MetaConfig.from_dict(state["config"]).to_dict()
        current = self.config.to_dict()
        differing = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
        if differing:
            raise ValueError(
                "MetaLearner state was saved with a different config for "
                + ", ".join(f"{key} (saved {saved.get(key)!r}, here {current.get(key)!r})" for key in differing)
                + "; build the learner with MetaConfig.from_dict(state['config'])"
            )
        if list(state["adapted_names"]) != self.adapted_names:
            raise ValueError("MetaLearner state adapts different parameters than this learner (adapted_names differ)")
        self.model.load_state_dict(state["model"])
        self.learned.load_state_dict(state["learned"])
        self.outer_optimizer.load_state_dict(state["outer_optimizer"])
        if (state["scheduler"] is None) != (self.scheduler is None):
            raise ValueError("MetaLearner state and this learner disagree on having an outer LR scheduler")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.generator.set_state(state["generator"])

    @classmethod
    def from_state_dict(cls, model: nn.Module, state: dict[str, Any]) -> "MetaLearner":
        """A learner around ``model`` with the saved config, then :meth:`load_state_dict`."""
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a MetaLearner state (expected format {CHECKPOINT_FORMAT!r})")
        learner = cls(model, MetaConfig.from_dict(state["config"]))
        learner.load_state_dict(state)
        return learner


class _BufferDict(dict):
    """A dict of buffers that remembers whether it holds clones (see ``MetaLearner._buffers``)."""

    is_clone: bool = False
