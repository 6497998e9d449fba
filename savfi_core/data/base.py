"""What all readers share: the Dataset base class and checks on roots and list files."""
from __future__ import annotations

from pathlib import Path

import torch.utils.data

from .core import DatasetError, Sample

__all__ = ["SavfiDataset", "require_directory", "require_file", "read_list_file"]


class SavfiDataset(torch.utils.data.Dataset):
    """Base of every reader: items are :class:`Sample`, order is fixed at construction.

    Subclasses implement ``__len__``, ``__getitem__`` and ``sample_info``; those that augment
    draw their randomness from ``(seed, self.epoch, index)``.
    """

    #: the name under which :func:`savfi_core.data.open_dataset` knows the reader
    dataset_name = ""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops and flips training items draw (default 0)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        raise NotImplementedError

    def sample_info(self, index: int) -> dict:
        """Where item ``index`` comes from: at least ``name``, plus ``paths`` (one per position,
        None where invalid) or the source video, ``frame_indices`` and ``fps`` where known."""
        raise NotImplementedError

    def _check_index(self, index: int) -> int:
        length = len(self)
        if not -length <= index < length:
            raise IndexError(f"{type(self).__name__} has {length} samples, index {index} is out of range")
        return index % length

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples)"


def require_directory(path: Path, what: str) -> Path:
    """``path`` if it is a directory, else :class:`DatasetError` naming it and what it should be."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path} is not a directory")
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else :class:`DatasetError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}")
    return path


def read_list_file(path: Path, what: str) -> list[tuple[int, str]]:
    """Non-blank, stripped lines of a list file as (1-based line number, text), in file order."""
    require_file(path, what)
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read {what} {path}: {error}") from error
    entries = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not entries:
        raise DatasetError(f"{what} {path} lists nothing")
    return entries
