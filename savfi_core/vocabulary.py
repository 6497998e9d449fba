"""The words of the study, each defined once: stages, meta-learning algorithms, evaluation
protocols, model sizes, and the order in which tables list the methods.

Everything else imports these tuples (the grid schema, ``MetaConfig``, the evaluation, the
report), so a new algorithm or protocol is added here and nowhere else.
"""
from __future__ import annotations

STAGES = ("pretrain", "meta_train", "evaluate", "report")
ALGORITHMS = ("maml", "maml++", "metasgd", "l2f")
PROTOCOLS = ("baseline", "retrained", "finetune", "meta")
# How a training job's process starts: one Python process, or a torchrun group on one node.
LAUNCHERS = ("python", "torchrun")
# protocols that adapt to each test sequence before predicting (they sweep test-time inner steps)
ADAPTING = ("finetune", "meta")
# protocols evaluated from the starting weights; the others from a meta_train checkpoint
FROM_STARTING_WEIGHTS = ("baseline", "finetune")
SIZES = ("paper", "tiny")
# The weight-free reference every network is compared with.
FRAME_AVERAGE = "frame_average"
# Column order of the tables: the reference, the protocols without meta-training, the algorithms.
METHOD_ORDER = (FRAME_AVERAGE, "baseline", "retrained", "finetune", "maml", "maml++", "l2f", "metasgd")
NON_META_METHODS = (FRAME_AVERAGE, "baseline", "retrained", "finetune")
