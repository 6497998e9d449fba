"""Vimeo-90K septuplets and triplets (Xue et al., IJCV 2019) in their official layout.

    <root>/sequences/<xxxxx>/<yyyy>/im1.png .. im7.png   (septuplet; im1..im3 for triplets)
    <root>/sep_trainlist.txt, sep_testlist.txt           (tri_trainlist.txt, tri_testlist.txt)

Each list line is one ``xxxxx/yyyy`` folder. Septuplets give N=7, target 3 (im4); triplets
N=3, target 1 (im2); all positions valid. The train split is augmented as in the SAVFI code: a
random 256x256 crop and a random temporal flip (p=1/2), drawn from a generator seeded by
(seed, epoch, index) so that crops repeat for one seed and change with it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from .augment import augment_for_training, sample_generator
from .base import SavfiDataset, read_list_file, require_directory
from .core import DatasetError, Sample, read_image, stack_same_size

__all__ = ["VimeoDataset"]

_LAYOUTS = {"septuplet": ("sep", 7), "triplet": ("tri", 3)}


class VimeoDataset(SavfiDataset):
    """Vimeo-90K septuplets (``kind='septuplet'``) or triplets (``kind='triplet'``).

    Args:
        root: folder holding ``sequences/`` and the list files.
        split: ``train`` or ``test``.
        kind: ``septuplet`` or ``triplet``.
        augment: crop and flip; default True for ``train``, False for ``test`` (full frames).
        crop_size: side (or (height, width)) of the training crop; default 256 as in SAVFI.
        crop_sampler: ``uniform`` (as in SAVFI) or ``moving`` (see ``choose_moving_crop``).
        flip: random temporal flip when augmenting.
        seed: seed of the augmentation generators.
    """

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "test"] = "test",
        kind: str = "septuplet",
        augment: bool | None = None,
        crop_size: int | tuple[int, int] | None = 256,
        crop_sampler: str = "uniform",
        flip: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if split not in ("train", "test"):
            raise DatasetError(f"vimeo split must be 'train' or 'test', got {split!r}")
        if kind not in _LAYOUTS:
            raise DatasetError(f"vimeo kind must be one of {sorted(_LAYOUTS)}, got {kind!r}")
        prefix, self.frames_per_sample = _LAYOUTS[kind]
        self.dataset_name = f"vimeo_{kind}"
        self.root = require_directory(Path(root), f"Vimeo-90K {kind} root")
        self.split = split
        self.augment = split == "train" if augment is None else bool(augment)
        self.crop_size = crop_size
        self.crop_sampler = crop_sampler
        self.flip = flip
        self.seed = seed
        list_path = self.root / f"{prefix}_{split}list.txt"
        sequences_root = require_directory(self.root / "sequences", "Vimeo-90K sequences folder")
        self.entries: list[str] = []
        for line_number, entry in read_list_file(list_path, f"Vimeo-90K {split} list"):
            folder = sequences_root / entry
            if not folder.is_dir():
                raise DatasetError(
                    f"{list_path}:{line_number} lists {entry!r}, but folder {folder} does not exist"
                )
            self.entries.append(entry)

    def __len__(self) -> int:
        return len(self.entries)

    def _paths(self, index: int) -> list[Path]:
        folder = self.root / "sequences" / self.entries[index]
        return [folder / f"im{position}.png" for position in range(1, self.frames_per_sample + 1)]

    def sample_info(self, index: int) -> dict:
        index = self._check_index(index)
        return {"name": self.entries[index], "paths": [str(path) for path in self._paths(index)], "fps": None}

    def __getitem__(self, index: int) -> Sample:
        index = self._check_index(index)
        paths = self._paths(index)
        frames = stack_same_size([read_image(path) for path in paths], paths)
        valid = torch.ones(self.frames_per_sample, dtype=torch.bool)
        target_index = self.frames_per_sample // 2
        if self.augment:
            frames, valid, target_index = augment_for_training(
                frames, valid, target_index, sample_generator(self.seed, self.epoch, index),
                crop_size=self.crop_size, crop_sampler=self.crop_sampler, flip=self.flip,
                name=str(paths[0].parent),
            )
        return Sample(frames=frames, valid=valid, target_index=target_index, name=self.entries[index])
