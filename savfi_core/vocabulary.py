"""The words of the study, each defined once: stages, meta-learning algorithms, evaluation
protocols, model sizes, and the order in which tables list the methods.

Everything else imports these tuples (the grid schema, ``MetaConfig``, the evaluation, the
report), so a new algorithm or protocol is added here and nowhere else.
"""
from __future__ import annotations

STAGES = ("pretrain", "meta_train", "evaluate", "report")
ALGORITHMS = ("maml", "maml++", "metasgd", "l2f")
# The inner loss of adaptation, from the four input frames I1, I3, I5, I7 of a septuplet:
# 'triplets' (the paper: I1,I5 -> I3 and I3,I7 -> I5) or 'cycle' (Reda et al. 2019: the frames
# between the inputs are predicted, then interpolated again to I3 and I5).
SUPPORT_LOSSES = ("triplets", "cycle")
PROTOCOLS = ("baseline", "retrained", "finetune", "cycle", "meta")
# How a training job's process starts: one Python process, or a torchrun group on one node.
LAUNCHERS = ("python", "torchrun")
# protocols that adapt to each test sequence before predicting (they sweep test-time inner steps)
ADAPTING = ("finetune", "cycle", "meta")
# protocols evaluated from the starting weights; the others from a meta_train checkpoint
FROM_STARTING_WEIGHTS = ("baseline", "finetune", "cycle")
SIZES = ("paper", "tiny")
# The weight-free reference every network is compared with.
FRAME_AVERAGE = "frame_average"
# A meta-trained method is named by its algorithm, with a suffix when its inner loss is the cycle
# loss (``maml_cycle``) and one when it is also trained with second-order gradients where the
# grid's config is first order (``maml_2nd``, ``maml_cycle_2nd``).
CYCLE_SUFFIX = "_cycle"
SECOND_ORDER_SUFFIX = "_2nd"
_TABLE_ALGORITHMS = ("maml", "maml++", "l2f", "metasgd")
_VARIANTS = ("", CYCLE_SUFFIX, SECOND_ORDER_SUFFIX, CYCLE_SUFFIX + SECOND_ORDER_SUFFIX)
META_METHODS = tuple(algorithm + variant for variant in _VARIANTS for algorithm in _TABLE_ALGORITHMS)
# Column order of the tables: the reference, the protocols without meta-training, the algorithms.
METHOD_ORDER = (FRAME_AVERAGE, "baseline", "retrained", "finetune", "cycle") + META_METHODS
NON_META_METHODS = (FRAME_AVERAGE, "baseline", "retrained", "finetune", "cycle")
# What a meta_train job can train: every algorithm with either inner loss and order, or re-training.
META_TRAIN_METHODS = META_METHODS + ("retrained",)


def meta_method(algorithm: str, support_loss: str = "triplets", second_order: bool = False) -> str:
    """The method name of an algorithm meta-trained with a support loss (``maml_cycle``), and
    ``_2nd`` for the second-order copy of a first-order grid."""
    return algorithm + (CYCLE_SUFFIX if support_loss == "cycle" else "") + (SECOND_ORDER_SUFFIX if second_order else "")
