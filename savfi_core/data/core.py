"""The sample type every reader returns, the error every reader raises, and image decoding.

A sample is a short stretch of video laid out on a fixed grid of temporal positions (the
"septuplet layout" of SAVFI): the frame to predict sits at ``target_index``, the two frames the
interpolator reads sit at ``target_index - 1`` and ``target_index + 1``, and test-time adaptation
uses positions ``target_index - 3, -1, +1, +3`` (support triplets ``(t-3, t+1) -> t-1`` and
``(t-1, t+3) -> t+1``). Positions for which a dataset has no frame are marked invalid in
``valid`` and their pixels are NaN, never zeros, so that any accidental use of them poisons the
result loudly instead of silently interpolating towards black.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DatasetError",
    "Sample",
    "collate_samples",
    "read_image",
    "natural_sort_key",
    "four_frame_layout",
    "place_on_grid",
    "stack_same_size",
    "window_starts",
    "list_image_files",
    "IMAGE_EXTENSIONS",
]


class DatasetError(ValueError):
    """A dataset cannot be read as asked; the message names the offending path."""


@dataclass
class Sample:
    """One stretch of video on the septuplet grid.

    Attributes:
        frames: float32 RGB in [0, 1], shape [N, 3, H, W] (or [B, N, 3, H, W] after
            :func:`collate_samples`). Invalid positions hold NaN.
        valid: bool, shape [N] (or [B, N]); False where the dataset has no frame.
        target_index: the position of the frame to predict (the ground truth, when valid).
        name: the sample's id, unique within its dataset (a list of ids after collation).
    """

    frames: torch.Tensor
    valid: torch.Tensor
    target_index: int
    name: str | list[str]

    @property
    def target(self) -> torch.Tensor:
        """The frame at ``target_index``: [3, H, W] (or [B, 3, H, W] when batched)."""
        return self.frames.select(-4, self.target_index)


def collate_samples(samples: Sequence[Sample]) -> Sample:
    """Batch samples: frames [B, N, 3, H, W], valid [B, N], name a list of B ids.

    All samples must share N, ``target_index``, the valid pattern's length and H, W
    (crop first when sizes differ); anything else raises :class:`DatasetError` naming the
    samples that disagree. For use as ``DataLoader(..., collate_fn=collate_samples)``.
    """
    if len(samples) == 0:
        raise DatasetError("collate_samples: got an empty list of samples")
    first = samples[0]
    for sample in samples[1:]:
        if sample.target_index != first.target_index:
            raise DatasetError(
                f"collate_samples: target_index {sample.target_index} of {sample.name!r} differs "
                f"from {first.target_index} of {first.name!r}"
            )
        if sample.frames.shape != first.frames.shape:
            raise DatasetError(
                f"collate_samples: frames of {sample.name!r} have shape {tuple(sample.frames.shape)}, "
                f"those of {first.name!r} {tuple(first.frames.shape)}; crop to one size before batching"
            )
    return Sample(
        frames=torch.stack([sample.frames for sample in samples]),
        valid=torch.stack([sample.valid for sample in samples]),
        target_index=first.target_index,
        name=[sample.name for sample in samples],
    )


def natural_sort_key(path: str | Path) -> list:
    """Key that sorts ``frame2.png`` before ``frame10.png`` (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", Path(path).name)]


def _png_bit_depth_and_color_type(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, or None when the file is no PNG."""
    with open(path, "rb") as handle:
        header = handle.read(26)
    if len(header) < 26 or header[:8] != b"\x89PNG\r\n\x1a\n" or header[12:16] != b"IHDR":
        return None
    return header[24], header[25]


def _read_png16_color(path: Path) -> np.ndarray:
    """A 16-bit colour PNG at full precision, [H, W, 3] float32 in [0, 1].

    Pillow reduces 16-bit RGB(A) PNGs to 8 bits on opening, so these go through FFmpeg's PNG
    decoder (PyAV), which hands out the 16-bit samples unchanged.
    """
    import av

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            pixels = frame.to_ndarray(format="rgb48le")
    except (av.error.FFmpegError, StopIteration) as error:
        raise DatasetError(f"cannot decode 16-bit PNG {path}: {error}") from error
    return pixels.astype(np.float32) / 65535.0


def read_image(path: str | Path) -> torch.Tensor:
    """Read one image file as RGB float32 in [0, 1], shape [3, H, W].

    Conversions: 8-bit RGB as is (x / 255); grayscale (``L``, ``1``) replicated to three
    channels; palette images through their palette; alpha channels (``RGBA``, ``LA``) dropped
    (the stored colour is kept, not composited); 16-bit PNGs, grey or colour, scaled by 1/65535
    at full 16-bit precision. Raises :class:`DatasetError` naming ``path`` when the file is
    missing, unreadable or of an unsupported pixel format.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}")
    png_header = _png_bit_depth_and_color_type(path)
    # PNG colour types 2 (RGB), 4 (grey + alpha) and 6 (RGBA) at 16 bits: Pillow would truncate.
    if png_header is not None and png_header[0] == 16 and png_header[1] in (2, 4, 6):
        pixels = _read_png16_color(path)
    else:
        try:
            with Image.open(path) as image:
                # load() decodes all pixels now, so truncated files fail here, inside the try.
                image.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise DatasetError(f"cannot read image {path}: {error}") from error
        pixels = _pil_to_float_rgb(image, path)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def _pil_to_float_rgb(image: Image.Image, path: Path) -> np.ndarray:
    """[H, W, 3] float32 in [0, 1] from an opened Pillow image."""
    if image.mode in ("I;16", "I;16B", "I;16L"):
        grey = np.asarray(image, dtype=np.float32) / 65535.0
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "I" and image.format == "PNG":
        # Older Pillow opens 16-bit grey PNGs as 32-bit "I"; their values are still 0..65535.
        grey = np.asarray(image, dtype=np.float32) / 65535.0
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("I", "F", "I;16S", "CMYK", "YCbCr", "LAB", "HSV"):
        raise DatasetError(
            f"unsupported pixel format {image.mode!r} in {path}: save it as 8- or 16-bit PNG/JPEG RGB"
        )
    rgb = image.convert("RGB")
    return np.asarray(rgb, dtype=np.float32) / 255.0


def stack_same_size(images: Sequence[torch.Tensor], paths: Sequence[str | Path]) -> torch.Tensor:
    """Stack [3, H, W] images into [N, 3, H, W]; raise naming both files when sizes differ."""
    reference_shape = images[0].shape
    for image, path in zip(images, paths):
        if image.shape != reference_shape:
            raise DatasetError(
                f"frames of one sample differ in size: {path} is {image.shape[2]}x{image.shape[1]}, "
                f"{paths[0]} is {reference_shape[2]}x{reference_shape[1]} (width x height)"
            )
    return torch.stack(list(images))


def place_on_grid(images: torch.Tensor, positions: Sequence[int], frame_count: int):
    """Put images [K, 3, H, W] at ``positions`` of an N=``frame_count`` grid, NaN elsewhere.

    Returns (frames [N, 3, H, W] float32, valid [N] bool, True exactly at ``positions``).
    """
    _, channels, height, width = images.shape
    frames = torch.full((frame_count, channels, height, width), float("nan"), dtype=torch.float32)
    valid = torch.zeros(frame_count, dtype=torch.bool)
    frames[list(positions)] = images
    valid[list(positions)] = True
    return frames, valid


def four_frame_layout(four_frames: torch.Tensor, ground_truth: torch.Tensor | None = None):
    """Place frames (t-3, t-1, t+1, t+3) at septuplet positions 0, 2, 4, 6; GT (if any) at 3.

    Args:
        four_frames: [4, 3, H, W].
        ground_truth: [3, H, W] or None.

    Returns:
        (frames [7, 3, H, W] with NaN at invalid positions, valid [7] bool, target_index 3).
    """
    if ground_truth is None:
        frames, valid = place_on_grid(four_frames, (0, 2, 4, 6), 7)
    else:
        frames, valid = place_on_grid(torch.cat([four_frames, ground_truth[None]]), (0, 2, 4, 6, 3), 7)
    return frames, valid, 3


def window_starts(length: int, window: int, stride: int, align_last_to_end: bool) -> list[int]:
    """First indices of sliding windows of ``window`` items with ``stride`` over ``length`` items.

    With ``align_last_to_end`` a final window ``[length - window, length)`` is added when the
    stride steps past the end without covering the last items (the HD protocol). The caller
    checks ``length >= window``.
    """
    if stride < 1:
        raise DatasetError(f"stride must be >= 1, got {stride}")
    starts = list(range(0, length - window + 1, stride))
    if align_last_to_end and starts and starts[-1] != length - window:
        starts.append(length - window)
    return starts


#: Extensions :func:`list_image_files` treats as frames (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp")


def list_image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, in natural order (frame2 before frame10)."""
    return sorted(
        (path for path in Path(folder).iterdir() if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS),
        key=natural_sort_key,
    )
