"""Readers of folders of consecutive frames: the HD evaluation set and user footage.

* ``hd``: the HD set as the SAVFI code reads it: a root of one folder per video, each holding
  that video's consecutive PNG frames; samples are windows of 7 consecutive frames (target = the
  4th) taken with a stride of 2, plus a last window aligned to the video's end when the stride
  does not land there.
* ``frames``: any one folder of consecutive images (natural sort: ``f2`` before ``f10``) for
  test-time adaptation and x2 interpolation of user footage, as sliding windows of 4 frames
  placed at septuplet positions 0, 2, 4, 6. There is no ground truth: positions 1, 3 (the
  target, i.e. the unknown frame between the 2nd and 3rd image of the window) and 5 are invalid
  and hold NaN. A window starting at image ``i`` thus interpolates between images ``i+1`` and
  ``i+2``; with stride 1 the windows cover every gap but the first and the last.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .base import SavfiDataset, require_directory
from .core import (
    DatasetError,
    Sample,
    four_frame_layout,
    list_image_files,
    natural_sort_key,
    read_image,
    stack_same_size,
    window_starts,
)

__all__ = ["HDDataset", "FramesDataset"]


class HDDataset(SavfiDataset):
    """HD evaluation set: septuplets (N=7, target 3, all valid) from folders of frames.

    Args:
        root: folder of video folders (e.g. ``HD_dataset/HD_RGB``).
        window: frames per sample (7: the septuplet layout).
        stride: step between window starts (2 by default, see the module docstring).

    Samples are ordered by video (natural order), then by start frame, and named
    ``<video>/<first frame stem>-<last frame stem>``.
    """

    dataset_name = "hd"

    def __init__(self, root: str | Path, window: int = 7, stride: int = 2) -> None:
        super().__init__()
        self.root = require_directory(Path(root), "HD root")
        self.window = window
        videos = sorted((folder for folder in self.root.iterdir() if folder.is_dir()), key=natural_sort_key)
        if not videos:
            raise DatasetError(f"HD root {self.root} holds no video folders")
        self.windows: list[list[Path]] = []
        for video in videos:
            frame_paths = list_image_files(video)
            if len(frame_paths) < window:
                raise DatasetError(
                    f"HD video folder {video} has {len(frame_paths)} frames, fewer than the {window} a window needs"
                )
            for start in window_starts(len(frame_paths), window, stride, align_last_to_end=True):
                self.windows.append(frame_paths[start : start + window])

    def __len__(self) -> int:
        return len(self.windows)

    def _name(self, paths: list[Path]) -> str:
        return f"{paths[0].parent.name}/{paths[0].stem}-{paths[-1].stem}"

    def sample_info(self, index: int) -> dict:
        paths = self.windows[self._check_index(index)]
        return {"name": self._name(paths), "paths": [str(path) for path in paths], "fps": None}

    def __getitem__(self, index: int) -> Sample:
        paths = self.windows[self._check_index(index)]
        frames = stack_same_size([read_image(path) for path in paths], paths)
        return Sample(
            frames=frames,
            valid=torch.ones(self.window, dtype=torch.bool),
            target_index=self.window // 2,
            name=self._name(paths),
        )


class FramesDataset(SavfiDataset):
    """A folder of consecutive images as 4-frame windows on the septuplet grid, no ground truth.

    Args:
        root: the folder of images (png, jpg, bmp, tif, ppm, webp).
        stride: step between window starts (1: every interior gap once).

    Items: frames [7, 3, H, W] with images i, i+1, i+2, i+3 at positions 0, 2, 4, 6, NaN
    elsewhere; valid = [T, F, T, F, T, F, T]; target_index 3; name
    ``<folder>/<stem of image i+1>-<stem of image i+2>`` (the gap it fills).
    """

    dataset_name = "frames"
    window = 4

    def __init__(self, root: str | Path, stride: int = 1) -> None:
        super().__init__()
        self.root = require_directory(Path(root), "frames folder")
        self.frame_paths = list_image_files(self.root)
        if len(self.frame_paths) < self.window:
            raise DatasetError(
                f"frames folder {self.root} has {len(self.frame_paths)} images, "
                f"fewer than the {self.window} a window needs"
            )
        self.starts = window_starts(len(self.frame_paths), self.window, stride, align_last_to_end=False)

    def __len__(self) -> int:
        return len(self.starts)

    def _window_paths(self, index: int) -> list[Path]:
        start = self.starts[self._check_index(index)]
        return self.frame_paths[start : start + self.window]

    def _name(self, paths: list[Path]) -> str:
        return f"{self.root.name}/{paths[1].stem}-{paths[2].stem}"

    def sample_info(self, index: int) -> dict:
        paths = self._window_paths(index)
        by_position = [paths[0], None, paths[1], None, paths[2], None, paths[3]]
        return {
            "name": self._name(paths),
            "paths": [None if path is None else str(path) for path in by_position],
            "fps": None,
        }

    def __getitem__(self, index: int) -> Sample:
        paths = self._window_paths(index)
        four_frames = stack_same_size([read_image(path) for path in paths], paths)
        frames, valid, target_index = four_frame_layout(four_frames)
        return Sample(frames=frames, valid=valid, target_index=target_index, name=self._name(paths))
