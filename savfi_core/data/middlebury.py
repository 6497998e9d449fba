"""Middlebury OTHERS (Baker et al., IJCV 2011) in the official layout.

    <root>/other-color-allframes/other-data/<Seq>/frame07.png .. frame14.png
    <root>/other-color-twoframes/other-data/<Seq>/frame10.png, frame11.png
    <root>/other-gt-interp/<Seq>/frame10i11.png

Modes:

* ``allframes`` (the 4-frame protocol of SAVFI's test-time adaptation): frames 09, 10, 11, 12
  at septuplet positions 0, 2, 4, 6 and the ground truth 10i11 at position 3; positions 1 and 5
  are invalid (NaN). As in the SAVFI code, a sequence is used only when all 8 frames
  07..14 are present; the others are skipped, counted in ``skipped_sequences`` and reported with
  a warning.
* ``twoframes``: frame10, ground truth, frame11 (N=3, target 1, all valid), every sequence.

Samples are named by sequence (``RubberWhale``) and ordered by name.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .base import SavfiDataset, require_directory, require_file
from .core import DatasetError, Sample, four_frame_layout, read_image, stack_same_size

__all__ = ["MiddleburyDataset", "ALLFRAMES_NUMBERS"]

#: The frames a sequence must have in ``allframes`` mode; 09..12 are the ones read.
ALLFRAMES_NUMBERS = tuple(range(7, 15))
_FOUR_FRAME_NUMBERS = (9, 10, 11, 12)


class MiddleburyDataset(SavfiDataset):
    """Middlebury OTHERS with interpolation ground truth; see the module docstring for modes."""

    dataset_name = "middlebury"

    def __init__(self, root: str | Path, mode: str = "twoframes") -> None:
        super().__init__()
        if mode not in ("allframes", "twoframes"):
            raise DatasetError(f"middlebury mode must be 'allframes' or 'twoframes', got {mode!r}")
        self.root = require_directory(Path(root), "Middlebury root")
        self.mode = mode
        self.ground_truth_root = require_directory(self.root / "other-gt-interp", "Middlebury ground-truth folder")
        self.skipped_sequences: list[str] = []
        self.items: list[tuple[str, list[Path], Path]] = []
        if mode == "allframes":
            data_root = require_directory(
                self.root / "other-color-allframes" / "other-data", "Middlebury allframes folder"
            )
            # Every sequence with ground truth is a candidate; one without all 8 frames is skipped.
            candidates = sorted(
                {folder.name for folder in self.ground_truth_root.iterdir() if folder.is_dir()}
                | {folder.name for folder in data_root.iterdir() if folder.is_dir()}
            )
            for sequence in candidates:
                folder = data_root / sequence
                if not all((folder / f"frame{number:02d}.png").is_file() for number in ALLFRAMES_NUMBERS):
                    self.skipped_sequences.append(sequence)
                    continue
                paths = [folder / f"frame{number:02d}.png" for number in _FOUR_FRAME_NUMBERS]
                self.items.append((sequence, paths, self._ground_truth_path(sequence)))
            if self.skipped_sequences:
                warnings.warn(
                    f"middlebury allframes: skipped {len(self.skipped_sequences)} of {len(candidates)} "
                    f"sequences without all frames 07..14 in {data_root}: {', '.join(self.skipped_sequences)}",
                    stacklevel=2,
                )
        else:
            data_root = require_directory(
                self.root / "other-color-twoframes" / "other-data", "Middlebury twoframes folder"
            )
            for folder in sorted(folder for folder in data_root.iterdir() if folder.is_dir()):
                paths = [require_file(folder / name, "Middlebury frame") for name in ("frame10.png", "frame11.png")]
                self.items.append((folder.name, paths, self._ground_truth_path(folder.name)))
        if not self.items:
            raise DatasetError(f"no usable Middlebury {mode} sequence under {self.root}")

    def _ground_truth_path(self, sequence: str) -> Path:
        return require_file(self.ground_truth_root / sequence / "frame10i11.png", "Middlebury ground truth")

    def __len__(self) -> int:
        return len(self.items)

    def sample_info(self, index: int) -> dict:
        index = self._check_index(index)
        sequence, paths, ground_truth = self.items[index]
        if self.mode == "allframes":
            by_position = [paths[0], None, paths[1], ground_truth, paths[2], None, paths[3]]
        else:
            by_position = [paths[0], ground_truth, paths[1]]
        return {"name": sequence, "paths": [None if path is None else str(path) for path in by_position], "fps": None}

    def __getitem__(self, index: int) -> Sample:
        index = self._check_index(index)
        sequence, paths, ground_truth_path = self.items[index]
        every_path = [*paths, ground_truth_path]
        images = stack_same_size([read_image(path) for path in every_path], every_path)
        if self.mode == "allframes":
            frames, valid, target_index = four_frame_layout(images[:4], images[4])
        else:
            frames = torch.stack([images[0], images[2], images[1]])
            valid = torch.ones(3, dtype=torch.bool)
            target_index = 1
        return Sample(frames=frames, valid=valid, target_index=target_index, name=sequence)
