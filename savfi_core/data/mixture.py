"""Training data from several readers at fixed shares: :class:`MixtureDataset`.

Pooling datasets by concatenation weights them by their sample counts: the 8 Vimeo-90K train
septuplets of ``../shared/data`` beside the 256 of the embedded clips would be drawn 3% of the
time, although they show more distinct scenes than the clips' five. A mixture instead draws a
part with its declared share, then a sample uniformly within that part. Indexing stays plain
concatenation (part 0's samples first), so evaluation and ``sample_info`` see every sample once.
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch

from .base import SavfiDataset
from .core import DatasetError, Sample

__all__ = ["MixtureDataset"]


class MixtureDataset(SavfiDataset):
    """Datasets concatenated for indexing, drawn from at fixed shares for training.

    Args:
        parts: ``(dataset, share)`` pairs; shares are positive and are normalised to sum to 1.

    ``draw_index(generator)`` returns a global index: a part with probability equal to its share,
    then a uniform sample of it. The training samplers (``savfi_core.train.common``) use it where a
    dataset has it, and a uniform index over ``len(dataset)`` where not.
    """

    dataset_name = "mixture"

    def __init__(self, parts: Sequence[tuple[SavfiDataset, float]]) -> None:
        super().__init__()
        if not parts:
            raise DatasetError("a mixture needs at least one (dataset, share) part")
        for dataset, share in parts:
            if not share > 0:
                raise DatasetError(f"mixture share of {dataset!r} must be positive, got {share!r}")
            if len(dataset) == 0:
                raise DatasetError(f"mixture part {dataset!r} has no samples")
        self.datasets = [dataset for dataset, _ in parts]
        total = float(sum(share for _, share in parts))
        self.shares = [float(share) / total for _, share in parts]
        self._starts = [0]
        for dataset in self.datasets:
            self._starts.append(self._starts[-1] + len(dataset))

    def __len__(self) -> int:
        return self._starts[-1]

    def _locate(self, index: int) -> tuple[SavfiDataset, int]:
        index = self._check_index(index)
        part = bisect.bisect_right(self._starts, index) - 1
        return self.datasets[part], index - self._starts[part]

    def __getitem__(self, index: int) -> Sample:
        dataset, local = self._locate(index)
        return dataset[local]

    def sample_info(self, index: int) -> dict:
        dataset, local = self._locate(index)
        return {**dataset.sample_info(local), "dataset": getattr(dataset, "dataset_name", type(dataset).__name__)}

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for dataset in self.datasets:
            dataset.set_epoch(epoch)

    def draw_index(self, generator: torch.Generator) -> int:
        """A global index: part by share, then uniform within the part (two draws from ``generator``)."""
        part = int(torch.multinomial(torch.tensor(self.shares, dtype=torch.float64), 1, generator=generator))
        local = int(torch.randint(0, len(self.datasets[part]), (1,), generator=generator))
        return self._starts[part] + local

    def describe(self) -> str:
        """One line per part: name, samples and share (for logs and provenance)."""
        return "; ".join(f"{getattr(dataset, 'dataset_name', type(dataset).__name__)}: {len(dataset)} samples, "
                         f"share {share:.3f}" for dataset, share in zip(self.datasets, self.shares))

    def __repr__(self) -> str:
        return f"MixtureDataset({self.describe()})"
