"""Datasets of savfi: one entry point, :func:`open_dataset`, and one item type, :class:`Sample`.

Every reader returns a ``torch.utils.data.Dataset`` whose items are :class:`Sample`:

* ``frames``: float32 RGB in [0, 1], [N, 3, H, W], any H and W (padding is the model's job);
* ``valid``: bool [N]; invalid positions have no frame and hold NaN (never zeros), so any
  accidental use of them is loud;
* ``target_index``: the position of the frame to predict;
* ``name``: the sample's id within its dataset.

The septuplet layout (N=7) used by the meta-learning code: interpolation reads positions
``target-1`` and ``target+1``; test-time adaptation uses ``target-3, -1, +1, +3`` (support
triplets ``(t-3, t+1) -> t-1`` and ``(t-1, t+3) -> t+1``).

=================  ===============================================  ===  ======  =========
name               options                                          N    target  valid
=================  ===============================================  ===  ======  =========
vimeo_septuplet    root, split, crop_size, crop_sampler, flip, seed  7    3       all
vimeo_triplet      same                                             3    1       all
middlebury         root, mode=allframes                             7    3       0,2,3,4,6
middlebury         root, mode=twoframes                             3    1       all
hd                 root, window=7, stride=2                         7    3       all
snufilm            root, difficulty, meta=False, list_file          3    1       all
snufilm            ..., meta=True                                   7    3       0,2,3,4,6
frames             root, stride=1                                   7    3       0,2,4,6
video              path, window=septuplet|four, stride, downscale,  7    3       all | 0,2,4,6
                   crop
clips              split, stride, crop_size, crop_sampler, flip,    7    3       all
                   seed, candidates
=================  ===============================================  ===  ======  =========

Readers raise :class:`DatasetError` (a ``ValueError``) naming the offending path. Each dataset
also has ``sample_info(index)`` (source paths or video frame numbers, and ``fps`` where known)
and ``set_epoch(epoch)`` (new random crops and flips per epoch for training splits).
:class:`MixtureDataset` pools readers for training at declared shares rather than by size;
:class:`SyntheticMotionDataset` renders septuplets with known layered motion from a training
reader's frames.
"""
from __future__ import annotations

import functools

from .augment import (
    augment_for_training,
    choose_moving_crop,
    crop_frames,
    random_crop_origin,
    sample_generator,
    reverse_time,
)
from .base import SavfiDataset
from .clips import CLIP_FILES, CLIP_SCENES, ClipsDataset, clip_path, find_shot_cuts, load_clip
from .core import (
    DatasetError,
    Sample,
    collate_samples,
    four_frame_layout,
    list_image_files,
    natural_sort_key,
    read_image,
)
from .folders import FramesDataset, HDDataset
from .middlebury import MiddleburyDataset
from .mixture import MixtureDataset
from .snufilm import SnuFilmDataset
from .synthetic import SyntheticMotionDataset
from .video import VideoDataset, decode_video
from .vimeo import VimeoDataset

__all__ = [
    "DATASETS",
    "DatasetError",
    "Sample",
    "SavfiDataset",
    "open_dataset",
    "collate_samples",
    "read_image",
    "natural_sort_key",
    "list_image_files",
    "four_frame_layout",
    "sample_generator",
    "random_crop_origin",
    "choose_moving_crop",
    "crop_frames",
    "reverse_time",
    "augment_for_training",
    "decode_video",
    "clip_path",
    "load_clip",
    "find_shot_cuts",
    "CLIP_FILES",
    "CLIP_SCENES",
    "VimeoDataset",
    "MiddleburyDataset",
    "HDDataset",
    "SnuFilmDataset",
    "FramesDataset",
    "VideoDataset",
    "ClipsDataset",
    "MixtureDataset",
    "SyntheticMotionDataset",
]


#: dataset name -> constructor taking the reader's options as keywords
DATASETS = {
    # partials, not wrappers, so that the grid checks see the reader's keyword arguments
    "vimeo_septuplet": functools.partial(VimeoDataset, kind="septuplet"),
    "vimeo_triplet": functools.partial(VimeoDataset, kind="triplet"),
    "middlebury": MiddleburyDataset,
    "hd": HDDataset,
    "snufilm": SnuFilmDataset,
    "frames": FramesDataset,
    "video": VideoDataset,
    "clips": ClipsDataset,
}


def open_dataset(name: str, **options) -> SavfiDataset:
    """Open the dataset ``name`` (a key of :data:`DATASETS`) with reader-specific options.

    Example: ``open_dataset('vimeo_septuplet', root='../shared/data/vimeo_septuplet',
    split='test')``. See the module docstring for each reader's options and layout.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {sorted(DATASETS)}")
    return DATASETS[name](**options)
