"""The one configuration object of the meta-learning core.

Every algorithm is a set of switches on one inner loop (see :mod:`savfi_core.meta.learner`):

============  ==========================  ================  ==================  ==============
algorithm     inner learning rate         init attenuation  multi-step loss     outer LR
============  ==========================  ================  ==================  ==============
``maml``      fixed scalar ``inner_lr``   no                no                  constant
``maml++``    learned per tensor per      no                annealed (MSL)      cosine
              step (LSLR)
``metasgd``   learned per element         no                no                  constant
``l2f``       fixed scalar ``inner_lr``   learned (L2F)     no                  constant
============  ==========================  ================  ==================  ==============

MAML++ additionally anneals the derivative order (first order for outer steps below
``first_order_until_step``) and keeps per-step BatchNorm weights and running statistics
(``per_step_batchnorm``). Every MAML++ "epoch" of the original code is counted here in outer
steps (one ``meta_step`` call).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from savfi_core.vocabulary import ALGORITHMS, SUPPORT_LOSSES

INNER_RULES = ("sgd", "adam", "adamax")
OUTER_OPTIMIZERS = ("adam", "adamax")
OUTER_LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class MetaConfig:
    """Settings of a :class:`~savfi_core.meta.MetaLearner`.

    algorithm: 'maml' | 'maml++' | 'metasgd' | 'l2f' (table above).
    inner_steps: K, the inner-loop updates per task during meta-training and, unless
        ``adapt(steps=...)`` says otherwise, at test time.
    inner_lr: the inner learning rate (initial value of the learned rates for maml++/metasgd).
        The SAVFI code's default is 1e-5.
    inner_rule: 'sgd' | 'adam' | 'adamax', written functionally in
        :mod:`savfi_core.meta.inner_rules`; optimizer state is reset for every task.
    inner_betas, inner_eps: the inner Adam/Adamax moments (SAVFI code: 0.9, 0.99, 1e-8).
    first_order: True drops the second-order terms (first-order MAML); the inner gradients are
        then constants of the outer graph.
    first_order_until_step: MAML++ derivative-order annealing: outer steps with index below this
        use first order even when ``first_order`` is False (0: second order from the start).
        Applies to every algorithm; MAML++ is where the paper uses it.
    outer_lr, outer_optimizer ('adam' with betas (0.9, 0.99) or 'adamax' with (0.9, 0.999), as
        the SAVFI code), outer_weight_decay: the outer torch optimizer over the meta-parameters.
    outer_lr_schedule: 'constant' | 'cosine' | None (None: cosine for maml++, constant otherwise).
        Cosine anneals from ``outer_lr`` to ``outer_lr_min`` over ``total_outer_steps``.
    total_outer_steps: length of the cosine schedule.
    multi_step_loss_steps: MAML++ multi-step loss (MSL): for outer steps below this count the outer
        loss is the importance-weighted sum of the query losses after every inner step; afterwards
        only the final query loss counts. None: 10% of ``total_outer_steps`` for maml++ and 0
        (no MSL) for the other algorithms; 0 disables MSL.
    per_step_batchnorm: MAML++ per-step BatchNorm weights and running statistics; None means True
        for maml++ and False otherwise. A model without BatchNorm is unaffected.
    adapt_patterns: fnmatch patterns of parameter names adapted in the inner loop; None means the
        model's ``adapted_parameter_patterns``.
    support_loss: the inner loss of every inner step, in meta-training and at test time:
        'triplets' (the paper: the sum of the backbone's loss on the support triplets I1,I5 -> I3
        and I3,I7 -> I5) or 'cycle' (cycle consistency, Reda et al. ICCV 2019, on the same four
        input frames: I2' = f(I1,I3), I4' = f(I3,I5), I6' = f(I5,I7), then the backbone's loss of
        f(I2',I4') against I3 plus that of f(I4',I6') against I5). Neither reads the query frame.
    temporal_flip: training tasks are reversed in time with probability 1/2 (seeded by ``seed``).
    seed: seed of the learner's own generator (temporal flips).
    """

    algorithm: str = "maml"
    inner_steps: int = 1
    inner_lr: float = 1e-5
    inner_rule: str = "adam"
    inner_betas: tuple[float, float] = (0.9, 0.99)
    inner_eps: float = 1e-8
    first_order: bool = False
    first_order_until_step: int = 0
    outer_lr: float = 1e-5
    outer_optimizer: str = "adam"
    outer_weight_decay: float = 0.0
    outer_lr_schedule: str | None = None
    outer_lr_min: float = 1e-6
    total_outer_steps: int = 10_000
    multi_step_loss_steps: int | None = None
    per_step_batchnorm: bool | None = None
    adapt_patterns: tuple[str, ...] | None = None
    support_loss: str = "triplets"
    temporal_flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"MetaConfig.algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.inner_rule not in INNER_RULES:
            raise ValueError(f"MetaConfig.inner_rule must be one of {INNER_RULES}, got {self.inner_rule!r}")
        if self.outer_optimizer not in OUTER_OPTIMIZERS:
            raise ValueError(f"MetaConfig.outer_optimizer must be one of {OUTER_OPTIMIZERS}, got {self.outer_optimizer!r}")
        if self.outer_lr_schedule is not None and self.outer_lr_schedule not in OUTER_LR_SCHEDULES:
            raise ValueError(
                f"MetaConfig.outer_lr_schedule must be one of {OUTER_LR_SCHEDULES} or None, got {self.outer_lr_schedule!r}"
            )
        if self.support_loss not in SUPPORT_LOSSES:
            raise ValueError(f"MetaConfig.support_loss must be one of {SUPPORT_LOSSES}, got {self.support_loss!r}")
        if self.inner_steps < 0:
            raise ValueError(f"MetaConfig.inner_steps must be >= 0, got {self.inner_steps}")
        if self.total_outer_steps < 1:
            raise ValueError(f"MetaConfig.total_outer_steps must be >= 1, got {self.total_outer_steps}")
        # YAML gives lists; the dataclass is frozen and hashable only with tuples.
        if self.adapt_patterns is not None:
            if isinstance(self.adapt_patterns, str):
                raise ValueError("MetaConfig.adapt_patterns must be a list of patterns, not one string")
            object.__setattr__(self, "adapt_patterns", tuple(self.adapt_patterns))
        object.__setattr__(self, "inner_betas", tuple(float(beta) for beta in self.inner_betas))

    # Resolved switches -------------------------------------------------------------------------
    @property
    def learns_step_rates(self) -> bool:
        """LSLR: one learned rate per adapted tensor and inner step (MAML++)."""
        return self.algorithm == "maml++"

    @property
    def learns_element_rates(self) -> bool:
        """Meta-SGD: one learned rate per element of every adapted tensor."""
        return self.algorithm == "metasgd"

    @property
    def attenuates_initialization(self) -> bool:
        """L2F: a learned, task-conditioned shrinking of the initialization."""
        return self.algorithm == "l2f"

    @property
    def uses_per_step_batchnorm(self) -> bool:
        return self.algorithm == "maml++" if self.per_step_batchnorm is None else bool(self.per_step_batchnorm)

    @property
    def resolved_outer_lr_schedule(self) -> str:
        if self.outer_lr_schedule is not None:
            return self.outer_lr_schedule
        return "cosine" if self.algorithm == "maml++" else "constant"

    # YAML round trip ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists for tuples), ready for ``yaml.safe_dump``."""
        result = asdict(self)
        result["inner_betas"] = list(self.inner_betas)
        if self.adapt_patterns is not None:
            result["adapt_patterns"] = list(self.adapt_patterns)
        return result

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MetaConfig":
        """Build from a dict (e.g. a YAML block); unknown keys are an error naming them."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MetaConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "MetaConfig":
        return replace(self, **changes)
