"""The evaluation protocols of the paper as objects: each predicts a sample's middle frame, and
the adapting ones first adapt to the sample's support triplets.

==========  ================================================================================
protocol    what predicts
==========  ================================================================================
baseline    the given network, no adaptation
retrained   the same computation; the label says the network was re-trained on septuplet
            tasks without an inner loop (``meta_train`` with ``inner_steps=0``)
finetune    the given network adapted at test time with plain MAML inner steps (same steps, rule
            and ``inner_lr`` as the config: no learned rates, attenuation or per-step BatchNorm)
cycle       the same fine-tuning with the cycle-consistency loss as the inner loss (Reda et al.
            2019; ``MetaConfig.support_loss``): from I1, I3, I5, I7 only, never the query frame
meta        a meta-trained ``MetaLearner``'s own adaptation
==========  ================================================================================

``savfi_core.meta.evaluate`` measures them; the evaluate stage also draws its qualitative crops
with the same objects, so the crops show exactly what was measured.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from savfi_core.meta.config import MetaConfig
from savfi_core.meta.learner import MetaLearner
from savfi_core.vocabulary import ADAPTING, PROTOCOLS


@dataclass
class EvaluationProtocol:
    """One protocol bound to the learner that carries it out."""

    name: str
    learner: MetaLearner

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.name!r}; choose from {PROTOCOLS}")

    @property
    def adapts(self) -> bool:
        return self.name in ADAPTING

    @property
    def algorithm(self) -> str:
        """The algorithm column of the metrics: the learner's for 'meta', 'none' otherwise."""
        return self.learner.config.algorithm if self.name == "meta" else "none"

    @property
    def inner_rule(self) -> str:
        return self.learner.config.inner_rule if self.adapts else "none"

    def predict(self, sample) -> Tensor:
        """The prediction before (or without) adaptation."""
        return self.learner.predict(sample)

    def adapt_and_predict(self, sample, steps: int | None = None) -> tuple[Tensor, float]:
        """(prediction, seconds spent adapting); the non-adapting protocols just predict."""
        if not self.adapts:
            return self.predict(sample), 0.0
        prediction, _, seconds = self.learner.adapt_and_predict(sample, steps)
        return prediction, seconds

    def adapt_and_predict_steps(self, sample, steps: list[int]) -> list[tuple[int, Tensor, float]]:
        """(count, prediction, seconds spent adapting) after each count of a test-time sweep, from
        one run of the inner loop (``MetaLearner.adapt_steps``)."""
        if not self.adapts:
            raise ValueError(f"protocol {self.name!r} does not adapt; it has no test-time steps")
        return [(count, self.learner.predict(sample, params), seconds)
                for count, params, seconds in self.learner.adapt_steps(sample, steps)]


def unadapted(name: str, model: nn.Module) -> EvaluationProtocol:
    """baseline or retrained: the network as it is (no per-step BatchNorm copies)."""
    return EvaluationProtocol(name, MetaLearner(model, MetaConfig(per_step_batchnorm=False)))


def finetune(model: nn.Module, config: MetaConfig | None = None) -> EvaluationProtocol:
    """Plain MAML inner steps on the given weights, with the config's steps, rule and inner_lr."""
    config = config or MetaConfig()
    return EvaluationProtocol("finetune", MetaLearner(model, config.replace(algorithm="maml", per_step_batchnorm=False)))


def cycle(model: nn.Module, config: MetaConfig | None = None) -> EvaluationProtocol:
    """Test-time fine-tuning on the given weights with the cycle-consistency inner loss."""
    config = config or MetaConfig()
    plain = config.replace(algorithm="maml", per_step_batchnorm=False, support_loss="cycle")
    return EvaluationProtocol("cycle", MetaLearner(model, plain))


def meta(learner: MetaLearner) -> EvaluationProtocol:
    return EvaluationProtocol("meta", learner)
