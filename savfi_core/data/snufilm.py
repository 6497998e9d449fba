"""SNU-FILM (Choi et al., AAAI 2020, released with CAIN) from its official list files.

    <root>/test-<difficulty>.txt        one triplet a line: "<frame t-1> <frame t> <frame t+1>"
    <root>/test-<difficulty>-meta.txt   the longer variant of SAVFI: "<t-3> <t-1> <t> <t+1> <t+3>"
    <root>/test/GOPRO_test/<video>/000001.png ...  (and test/YouTube_test/...)

with difficulty easy, medium, hard or extreme. The official lines hold paths relative to the
CAIN repository, e.g. ``data/SNU-FILM/test/GOPRO_test/GOPR0384_11_00/000001.png``. A listed
path is resolved against ``root`` by trying it whole and then without its leading components,
one at a time (``data/SNU-FILM/test/...``, ``SNU-FILM/test/...``, ``test/...``, ...); the first
existing file wins, so the lists work unmodified whatever folder the data was unpacked into.
Absolute listed paths that exist are used as they are.

Items: triplets give N=3, target 1, all valid. The ``meta`` variant puts its 5 frames at
septuplet positions 0, 2, 3, 4, 6 (target 3 = ground truth) with positions 1 and 5 invalid
(NaN): the extra frames t-3 and t+3 feed test-time adaptation. Names are the ground-truth
frame's path relative to ``root`` (after resolution).
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from .base import SavfiDataset, read_list_file, require_directory
from .core import DatasetError, Sample, place_on_grid, read_image, stack_same_size

__all__ = ["SnuFilmDataset", "DIFFICULTIES", "resolve_listed_path"]

DIFFICULTIES = ("easy", "medium", "hard", "extreme")
# Septuplet positions of the frames listed on one line of each list variant.
_TRIPLET_POSITIONS = (0, 1, 2)
_META_POSITIONS = (0, 2, 3, 4, 6)


def resolve_listed_path(root: Path, listed: str, list_path: Path, line_number: int) -> Path:
    """The file a list entry names, searched under ``root`` (see the module docstring)."""
    candidate = Path(listed)
    if candidate.is_absolute():
        if candidate.is_file():
            return candidate
        parts = PurePosixPath(listed).parts[1:]
    else:
        parts = PurePosixPath(listed.replace("\\", "/")).parts
    for first in range(len(parts)):
        candidate = root.joinpath(*parts[first:])
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"{list_path}:{line_number} lists {listed!r}, which is not a file under {root}: "
        f"{_first_missing_path(root, parts)} does not exist"
    )


def _first_missing_path(root: Path, parts: tuple[str, ...]) -> Path:
    """For an error message: the missing folder or file that breaks the best-matching suffix.

    Among the suffixes of ``parts`` tried under ``root``, take the one whose existing leading
    folders reach deepest, and return the first path along it that does not exist.
    """
    best_depth, best_missing = -1, root.joinpath(*parts)
    for first in range(len(parts)):
        suffix = parts[first:]
        depth = 0
        while depth < len(suffix) and root.joinpath(*suffix[: depth + 1]).exists():
            depth += 1
        if depth > best_depth:
            best_depth, best_missing = depth, root.joinpath(*suffix[: depth + 1])
    return best_missing


class SnuFilmDataset(SavfiDataset):
    """SNU-FILM test triplets, or the 5-frame ``meta`` variant for test-time adaptation.

    Args:
        root: folder with the ``test-<difficulty>[-meta].txt`` lists and the frames.
        difficulty: easy, medium, hard or extreme.
        meta: read ``test-<difficulty>-meta.txt`` (5 frames a line) instead of the triplets.
        list_file: a list file elsewhere, overriding the default name.
    """

    dataset_name = "snufilm"

    def __init__(
        self,
        root: str | Path,
        difficulty: str = "hard",
        meta: bool = False,
        list_file: str | Path | None = None,
    ) -> None:
        super().__init__()
        if difficulty not in DIFFICULTIES:
            raise DatasetError(f"snufilm difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
        self.root = require_directory(Path(root), "SNU-FILM root")
        self.difficulty = difficulty
        self.meta = meta
        suffix = "-meta" if meta else ""
        self.list_path = Path(list_file) if list_file is not None else self.root / f"test-{difficulty}{suffix}.txt"
        self.positions = _META_POSITIONS if meta else _TRIPLET_POSITIONS
        self.frame_count = 7 if meta else 3
        self.target_index = 3 if meta else 1
        self.items: list[list[Path]] = []
        for line_number, line in read_list_file(self.list_path, "SNU-FILM list"):
            listed = line.split()
            if len(listed) != len(self.positions):
                raise DatasetError(
                    f"{self.list_path}:{line_number} has {len(listed)} paths, expected {len(self.positions)} "
                    f"({'meta: t-3 t-1 t t+1 t+3' if meta else 'triplet: t-1 t t+1'})"
                )
            self.items.append(
                [resolve_listed_path(self.root, entry, self.list_path, line_number) for entry in listed]
            )

    def __len__(self) -> int:
        return len(self.items)

    def _name(self, paths: list[Path]) -> str:
        ground_truth = paths[self.positions.index(self.target_index)]
        try:
            return ground_truth.relative_to(self.root).as_posix()
        except ValueError:
            return str(ground_truth)

    def sample_info(self, index: int) -> dict:
        paths = self.items[self._check_index(index)]
        by_position: list[str | None] = [None] * self.frame_count
        for position, path in zip(self.positions, paths):
            by_position[position] = str(path)
        return {"name": self._name(paths), "paths": by_position, "fps": None}

    def __getitem__(self, index: int) -> Sample:
        paths = self.items[self._check_index(index)]
        images = stack_same_size([read_image(path) for path in paths], paths)
        frames, valid = place_on_grid(images, self.positions, self.frame_count)
        return Sample(frames=frames, valid=valid, target_index=self.target_index, name=self._name(paths))
