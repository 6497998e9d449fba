"""Video files decoded with PyAV, as sliding septuplets (or 4-frame windows) of frames.

Decoding goes through :func:`decode_video`, which keeps recent results in memory
(``functools.lru_cache``, keyed by path, size, modification time and downscale factor):
decoding one of the embedded clips costs about 0.3-2 s, and datasets, notebooks and tests
reopen the same clips many times in one process.
"""
from __future__ import annotations

import functools
import hashlib
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .augment import normalize_crop_size
from .base import SavfiDataset, require_file
from .core import DatasetError, Sample, four_frame_layout, window_starts

__all__ = ["DecodedVideo", "decode_video", "block_average_uint8", "frames_to_float", "VideoDataset", "WINDOW_LAYOUTS"]

#: ``septuplet``: 7 consecutive frames, all valid, target 3 (the middle one, with ground truth).
#: ``four``: 4 consecutive frames at positions 0, 2, 4, 6, no ground truth (user footage).
WINDOW_LAYOUTS = {"septuplet": 7, "four": 4}


@dataclass(frozen=True)
class DecodedVideo:
    """A decoded video: ``frames`` uint8 RGB [T, 3, H, W] (shared, do not modify) and ``fps``."""

    frames: torch.Tensor
    fps: float
    path: str
    downscale: int


# Where decoded frames persist across processes (``decode_video(..., persist=True)``): one
# ``.npz`` per (file, size, modification time, downscale, PyAV version, layout below).
DECODED_CACHE_VARIABLE = "SAVFI_DECODED_CACHE"  # a folder, or "off"
DECODED_CACHE_LAYOUT = 1


def decoded_cache_folder() -> Path | None:
    """``$SAVFI_DECODED_CACHE``, else ``$XDG_CACHE_HOME/savfi/decoded`` (``~/.cache``); None if "off"."""
    configured = os.environ.get(DECODED_CACHE_VARIABLE)
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "savfi" / "decoded"


def decode_video(path: str | Path, downscale: int = 1, persist: bool = False) -> DecodedVideo:
    """All frames of a video file as uint8 RGB [T, 3, H, W], downscaled by an integer factor.

    Downscaling averages each ``downscale x downscale`` block (area filtering, which does not
    alias), after dropping the last ``H mod downscale`` rows and ``W mod downscale`` columns,
    and rounds back to 8 bits (half up; see :func:`block_average_uint8`). The result is cached in memory; callers must not modify it.
    ``persist``: also keep the decoded frames on disk (:func:`decoded_cache_folder`), so that the
    next process reads them instead of decoding again: every job of a grid is a fresh process,
    and decoding and downscaling the embedded clips took 1.5-5 s of each job (meant for small,
    fixed files such as those; a user's full-resolution video would fill the disk).
    Raises :class:`DatasetError` naming the file when it is missing, undecodable or empty.
    """
    path = require_file(Path(path), "video file").resolve()
    if int(downscale) != downscale or downscale < 1:
        raise DatasetError(f"downscale must be a positive integer, got {downscale!r} for {path}")
    status = path.stat()
    return _decode_video_cached(str(path), status.st_size, status.st_mtime_ns, int(downscale), bool(persist))


def _persisted_path(path: str, size: int, modified_ns: int, downscale: int) -> Path | None:
    import av

    folder = decoded_cache_folder()
    if folder is None:
        return None
    key = hashlib.sha256(f"{DECODED_CACHE_LAYOUT}\0{path}\0{size}\0{modified_ns}\0{downscale}\0{av.__version__}".encode()).hexdigest()
    return folder / f"{Path(path).stem}-x{downscale}-{key[:20]}.npz"


@functools.lru_cache(maxsize=8)
def _decode_video_cached(path: str, size: int, modified_ns: int, downscale: int, persist: bool = False) -> DecodedVideo:
    persisted = _persisted_path(path, size, modified_ns, downscale) if persist else None
    if persisted is not None and persisted.is_file():
        try:
            with np.load(persisted) as stored:
                return DecodedVideo(frames=torch.from_numpy(stored["frames"]), fps=float(stored["fps"]), path=path, downscale=downscale)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:  # cut off or foreign: decode again, and say so
            warnings.warn(f"decoded-frame cache {persisted} unreadable ({error}); decoding {path} again", stacklevel=2)
    video = _decode(path, downscale)
    if persisted is not None:
        try:
            persisted.parent.mkdir(parents=True, exist_ok=True)
            temporary = persisted.with_name(f".{persisted.name}.{os.getpid()}.tmp")
            with open(temporary, "wb") as handle:
                np.savez(handle, frames=video.frames.numpy(), fps=np.float64(video.fps))
            os.replace(temporary, persisted)  # concurrent jobs: each writes its own file, the last rename wins
        except OSError as error:
            warnings.warn(f"cannot keep decoded frames of {path} in {persisted.parent} ({error}); "
                          f"set {DECODED_CACHE_VARIABLE} to a writable folder or 'off'", stacklevel=2)
    return video


def _decode(path: str, downscale: int) -> DecodedVideo:
    import av

    frames = []
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise DatasetError(f"{path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else float("nan")
            for frame in container.decode(stream):
                pixels = frame.to_ndarray(format="rgb24")
                if downscale > 1:
                    # Pool each frame as it arrives: a full-resolution copy of a clip would not fit.
                    pixels = block_average_uint8(pixels, downscale)
                frames.append(torch.from_numpy(pixels.transpose(2, 0, 1).copy()))
    except av.error.FFmpegError as error:
        raise DatasetError(f"cannot decode video {path}: {error}") from error
    if not frames:
        raise DatasetError(f"video {path} holds no decodable frames")
    return DecodedVideo(frames=torch.stack(frames), fps=fps, path=path, downscale=downscale)


def block_average_uint8(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor x factor`` block of a uint8 [H, W, C] image, rounded half up.

    out[i, j, c] = floor((sum of the block + factor^2 / 2) / factor^2), in exact integer
    arithmetic; the last H mod factor rows and W mod factor columns are dropped. NumPy rather
    than torch on purpose: these small single-frame reductions run single-threaded, which
    keeps decoding fast on a busy machine where torch's thread pool would contend.
    Returns uint8 [H // factor, W // factor, C].
    """
    height, width, channels = pixels.shape
    out_height, out_width = height // factor, width // factor
    blocks = pixels[: out_height * factor, : out_width * factor]
    sums = blocks.reshape(out_height, factor, out_width, factor, channels).sum(axis=(1, 3), dtype=np.uint32)
    area = factor * factor
    return ((sums + area // 2) // area).astype(np.uint8)


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32 in [0, 1]."""
    return frames.to(torch.float32) / 255.0


class VideoDataset(SavfiDataset):
    """Any video file PyAV decodes, as sliding windows of consecutive frames.

    Args:
        path: the video file.
        window: ``septuplet`` (7 frames, all valid, target 3 = the true middle frame) or
            ``four`` (4 frames at positions 0, 2, 4, 6, NaN elsewhere, target 3 without ground
            truth: the unknown frame between the window's 2nd and 3rd frame).
        stride: step between window starts.
        downscale: integer area-downscaling factor applied on decoding.
        crop: ``(top, left, height, width)`` in downscaled pixels, or None for full frames.

    Items are ordered by start frame and named ``<file name>:<first>-<last>`` (0-based decoded
    frame numbers). ``fps`` is the stream's average frame rate (for writing results back).
    """

    dataset_name = "video"

    def __init__(
        self,
        path: str | Path,
        window: str = "septuplet",
        stride: int = 1,
        downscale: int = 1,
        crop: tuple[int, int, int, int] | None = None,
    ) -> None:
        super().__init__()
        if window not in WINDOW_LAYOUTS:
            raise DatasetError(f"video window must be one of {sorted(WINDOW_LAYOUTS)}, got {window!r}")
        self.path = Path(path)
        self.window = window
        self.window_length = WINDOW_LAYOUTS[window]
        decoded = decode_video(self.path, downscale)
        self.fps = decoded.fps
        self.downscale = downscale
        self.frame_count, _, height, width = decoded.frames.shape
        if crop is not None:
            top, left = int(crop[0]), int(crop[1])
            crop_height, crop_width = normalize_crop_size(tuple(crop[2:4]))
            if top < 0 or left < 0 or top + crop_height > height or left + crop_width > width:
                raise DatasetError(
                    f"crop {tuple(crop)} (top, left, height, width) does not fit {self.path} "
                    f"of size {width}x{height} after downscale {downscale}"
                )
            crop = (top, left, crop_height, crop_width)
        self.crop = crop
        if self.frame_count < self.window_length:
            raise DatasetError(
                f"video {self.path} has {self.frame_count} frames, fewer than the {self.window_length} a window needs"
            )
        self.starts = window_starts(self.frame_count, self.window_length, stride, align_last_to_end=False)

    def __len__(self) -> int:
        return len(self.starts)

    def _name(self, start: int) -> str:
        return f"{self.path.name}:{start}-{start + self.window_length - 1}"

    def sample_info(self, index: int) -> dict:
        start = self.starts[self._check_index(index)]
        indices = list(range(start, start + self.window_length))
        if self.window == "four":
            indices = [indices[0], None, indices[1], None, indices[2], None, indices[3]]
        return {"name": self._name(start), "path": str(self.path), "frame_indices": indices, "fps": self.fps}

    def __getitem__(self, index: int) -> Sample:
        start = self.starts[self._check_index(index)]
        frames = decode_video(self.path, self.downscale).frames[start : start + self.window_length]
        if self.crop is not None:
            top, left, crop_height, crop_width = self.crop
            frames = frames[..., top : top + crop_height, left : left + crop_width]
        frames = frames_to_float(frames)
        if self.window == "four":
            frames, valid, target_index = four_frame_layout(frames)
        else:
            valid = torch.ones(self.window_length, dtype=torch.bool)
            target_index = self.window_length // 2
        return Sample(frames=frames, valid=valid, target_index=target_index, name=self._name(start))
