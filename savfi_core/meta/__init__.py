"""Meta-learning for scene-adaptive frame interpolation: MAML, MAML++, Meta-SGD and L2F.

>>> from savfi_core.meta import MetaLearner, evaluate
>>> learner = MetaLearner(model, algorithm="maml++", inner_steps=1, inner_lr=1e-5)
>>> metrics = learner.meta_step(batch)          # one outer update
>>> params = learner.adapt(sample)              # test-time adaptation (model untouched)
>>> frame = learner.predict(sample, params)     # [3,H,W]
"""
from savfi_core.meta.config import ALGORITHMS, INNER_RULES, MetaConfig
from savfi_core.meta.evaluate import PROTOCOLS, evaluate, evaluate_frame_average
from savfi_core.meta.learner import LearnedInnerLoop, MetaLearner, per_step_loss_importance
from savfi_core.meta.tasks import Task, Triplet, can_adapt, make_task, temporal_flip

__all__ = [
    "evaluate_frame_average",
    "ALGORITHMS",
    "INNER_RULES",
    "PROTOCOLS",
    "LearnedInnerLoop",
    "MetaConfig",
    "MetaLearner",
    "Task",
    "Triplet",
    "can_adapt",
    "evaluate",
    "make_task",
    "per_step_loss_importance",
    "temporal_flip",
]
