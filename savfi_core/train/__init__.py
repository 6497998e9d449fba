"""Training loops: supervised pretraining of a backbone and meta-training of a MetaLearner.

>>> from savfi_core.train import pretrain, meta_train
>>> curve = pretrain(model, open_dataset("clips", split="train"), steps=2000, batch_size=8,
...                  seed=0, checkpoint_path="runs/sepconv.pt", val_dataset=..., val_every=200)

Both are seeded, show a tqdm bar, validate against frame averaging, write atomic checkpoints
that resume exactly, guard against divergence, and return the curve as a pandas DataFrame
(also written as ``<checkpoint stem>.curve.csv`` beside the checkpoint).
"""
from savfi_core.train.common import DivergenceGuard, curve_path_for, sample_triplet_batch
from savfi_core.train.loop import ResumeMismatchError
from savfi_core.train.meta_train import meta_train
from savfi_core.train.pretrain import pretrain

__all__ = [
    "DivergenceGuard",
    "ResumeMismatchError",
    "curve_path_for",
    "meta_train",
    "pretrain",
    "sample_triplet_batch",
]
