"""Septuplets with known motion, rendered from still training frames: :class:`SyntheticMotionDataset`.

Why: the tiny flow networks learn little motion from the nine training shots that exist here
(bikes1, bikes3, bikes5, bikes6, bunny and four Vimeo-90K shots); what they see moving is a few
cars and cyclists. Flow networks are classically taught motion on synthetic layered scenes
(FlyingChairs: a background and foreground objects moving with independent affine motions). This
reader makes such scenes from frames of a *training* dataset only, so the held-out scenes never
enter, and renders every frame of the septuplet exactly, the middle one included: the target of
each triplet is the scene at that instant, not a teacher's guess.

A scene: the background is a window of one training frame; on it lie ``objects`` ellipses, each
textured with a window of another training frame, with a soft edge (the mask goes from 0.9 to 0.1
over about 3 px across the ellipse's short axis, and up to about 12 px along the long axis of the
most elongated ones, whose radii differ by up to 3.75 times). Each layer moves at constant velocity
(pixels per frame), rotation (degrees per frame) and zoom (log-scale per frame); frame k of 7 shows
every layer at time k - 3. A share of the scenes keeps the background still (a fixed camera), a
moving background's speed is drawn with more weight on small motions than on large ones, and objects
move at any speed up to the largest. Frames are sampled bicubically from the sources (reflected at
their borders) and clipped to [0, 1].

Randomness comes from ``(seed, epoch, index)`` (:func:`savfi_core.data.augment.sample_generator`),
so item ``i`` is the same scene whoever reads it; ``set_epoch`` draws new scenes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .augment import sample_generator
from .base import SavfiDataset
from .core import DatasetError, Sample

__all__ = ["SyntheticMotionDataset", "render_layer"]

SEPTUPLET = 7
MIDDLE = 3


def render_layer(
    source: torch.Tensor,
    size: tuple[int, int],
    anchor: tuple[float, float],
    source_anchor: tuple[float, float],
    velocity: tuple[float, float],
    rotation_degrees: float,
    zoom: float,
    time: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One moving layer at ``time``: (image [3,h,w], the layer coordinates of each pixel [h,w,2]).

    Output pixel p (x, y) shows the layer point q = anchor + R(-a t) (p - anchor - v t) / exp(z t),
    where a is the rotation per frame and z the zoom per frame: the layer point at ``anchor``
    moves by ``velocity`` per frame while the layer turns and scales about it. q, in output pixel
    units at time 0, is read from ``source`` at ``source_anchor + (q - anchor)`` (pixel centres;
    bicubic, reflected at the borders). The returned coordinates q let a caller place a mask in
    the layer's own frame.
    """
    height, width = size
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    angle = -math.radians(rotation_degrees) * time
    cosine, sine = math.cos(angle), math.sin(angle)
    scale = math.exp(-zoom * time)
    dx = xs - anchor[0] - velocity[0] * time
    dy = ys - anchor[1] - velocity[1] * time
    qx = anchor[0] + scale * (cosine * dx - sine * dy)
    qy = anchor[1] + scale * (sine * dx + cosine * dy)
    source_height, source_width = source.shape[-2:]
    sx = source_anchor[0] + (qx - anchor[0])
    sy = source_anchor[1] + (qy - anchor[1])
    # grid_sample with align_corners=False: pixel centre i sits at (2 i + 1) / size - 1
    grid = torch.stack([(2 * sx + 1) / source_width - 1, (2 * sy + 1) / source_height - 1], dim=-1)
    # coordinates in float64 (exact motion), sampling in the source's precision
    image = F.grid_sample(source[None], grid[None].to(source.dtype), mode="bicubic", padding_mode="reflection", align_corners=False)[0]
    return image, torch.stack([qx, qy], dim=-1)


class SyntheticMotionDataset(SavfiDataset):
    """Layered scenes with known motion, built from the frames of a training dataset.

    Args:
        source: the dataset whose valid frames texture the layers (a training split only).
        length: items per epoch (each a different scene).
        size: (height, width) of the rendered frames.
        max_speed: largest speed of a layer, pixels per frame (so up to 2 x that between the
            inputs t-1, t+1 of a triplet); a moving background's speed is ``max_speed * u**2``
            and an object's ``max_speed * u``, u uniform.
        objects: (least, most) foreground ellipses per scene.
        still_background_share: share of scenes whose background does not move.
        max_rotation_degrees: per frame, uniform in [-x, x], for every layer.
        max_zoom: log-scale per frame, uniform in [-x, x], for every layer.
        seed: with the epoch and the index, fixes every draw.
    """

    dataset_name = "synthetic_motion"

    def __init__(
        self,
        source: SavfiDataset,
        length: int = 10_000,
        size: tuple[int, int] = (128, 128),
        max_speed: float = 4.0,
        objects: tuple[int, int] = (1, 3),
        still_background_share: float = 0.5,
        max_rotation_degrees: float = 0.5,
        max_zoom: float = 0.01,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if len(source) == 0:
            raise DatasetError(f"synthetic motion needs source frames; {source!r} has no samples")
        if length < 1:
            raise DatasetError(f"length must be >= 1, got {length}")
        if min(size) < 8:
            raise DatasetError(f"size must be at least 8x8, got {size}")
        if not max_speed >= 0:
            raise DatasetError(f"max_speed must be >= 0, got {max_speed}")
        if not 0 <= objects[0] <= objects[1]:
            raise DatasetError(f"objects must be (least, most) with 0 <= least <= most, got {objects}")
        if not 0.0 <= still_background_share <= 1.0:
            raise DatasetError(f"still_background_share must be in [0, 1], got {still_background_share}")
        if max_rotation_degrees < 0 or max_zoom < 0:
            raise DatasetError(f"max_rotation_degrees and max_zoom must be >= 0, got {max_rotation_degrees}, {max_zoom}")
        self.source = source
        self.length = int(length)
        self.size = (int(size[0]), int(size[1]))
        self.max_speed = float(max_speed)
        self.objects = (int(objects[0]), int(objects[1]))
        self.still_background_share = float(still_background_share)
        self.max_rotation_degrees = float(max_rotation_degrees)
        self.max_zoom = float(max_zoom)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.length

    def _uniform(self, generator: torch.Generator, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))

    def _source_frame(self, generator: torch.Generator) -> tuple[torch.Tensor, str]:
        index = int(torch.randint(0, len(self.source), (1,), generator=generator))
        sample = self.source[index]
        valid = [position for position, ok in enumerate(torch.as_tensor(sample.valid).tolist()) if ok]
        position = valid[int(torch.randint(0, len(valid), (1,), generator=generator))]
        return torch.as_tensor(sample.frames)[position], f"{sample.name}[{position}]"

    def _motion(self, generator: torch.Generator, still: bool, background: bool) -> dict:
        if still:
            return {"velocity": (0.0, 0.0), "rotation_degrees": 0.0, "zoom": 0.0}
        # camera motion mostly small, objects at any speed up to the largest
        speed = self.max_speed * self._uniform(generator, 0, 1) ** (2 if background else 1)
        direction = self._uniform(generator, 0, 2 * math.pi)
        return {
            "velocity": (speed * math.cos(direction), speed * math.sin(direction)),
            "rotation_degrees": self._uniform(generator, -self.max_rotation_degrees, self.max_rotation_degrees),
            "zoom": self._uniform(generator, -self.max_zoom, self.max_zoom),
        }

    def scene(self, index: int) -> dict:
        """The drawn layers of item ``index`` (sources, anchors, motions): what ``__getitem__`` renders."""
        index = self._check_index(index)
        generator = sample_generator(self.seed, self.epoch, index)
        height, width = self.size
        layers = []
        count = int(torch.randint(self.objects[0], self.objects[1] + 1, (1,), generator=generator))
        for layer in range(count + 1):
            frame, frame_name = self._source_frame(generator)
            source_height, source_width = frame.shape[-2:]
            if layer == 0:
                anchor = ((width - 1) / 2, (height - 1) / 2)
                still = self._uniform(generator, 0, 1) < self.still_background_share
                shape = None
            else:
                anchor = (self._uniform(generator, 0, width - 1), self._uniform(generator, 0, height - 1))
                still = False
                radius = min(height, width)
                shape = {"radii": (self._uniform(generator, 0.08, 0.3) * radius, self._uniform(generator, 0.08, 0.3) * radius),
                         "angle": self._uniform(generator, 0, math.pi)}
            source_anchor = (self._uniform(generator, 0, source_width - 1), self._uniform(generator, 0, source_height - 1))
            layers.append({"source": frame, "source_name": frame_name, "anchor": anchor, "source_anchor": source_anchor,
                           "shape": shape, **self._motion(generator, still, background=layer == 0)})
        return {"layers": layers}

    def render(self, scene: dict, time: float) -> torch.Tensor:
        """The scene at ``time`` (frames from the middle of the septuplet): [3, h, w] in [0, 1]."""
        image = None
        for layer in scene["layers"]:
            texture, coordinates = render_layer(layer["source"], self.size, layer["anchor"], layer["source_anchor"],
                                                layer["velocity"], layer["rotation_degrees"], layer["zoom"], time)
            if layer["shape"] is None:
                image = texture
                continue
            (radius_x, radius_y), angle = layer["shape"]["radii"], layer["shape"]["angle"]
            offset_x = coordinates[..., 0] - layer["anchor"][0]
            offset_y = coordinates[..., 1] - layer["anchor"][1]
            along = (math.cos(angle) * offset_x + math.sin(angle) * offset_y) / radius_x
            across = (-math.sin(angle) * offset_x + math.cos(angle) * offset_y) / radius_y
            # 1 - r^2 falls by 2 / radius per pixel at the edge, so the logit falls by 1.33 per pixel
            # across the short axis (0.9 -> 0.1 over 3.3 px) and less along a longer one
            sharpness = min(radius_x, radius_y) / 1.5
            mask = torch.sigmoid(sharpness * (1 - along**2 - across**2)).to(texture.dtype)
            image = mask * texture + (1 - mask) * image
        return image.clamp(0, 1)

    def __getitem__(self, index: int) -> Sample:
        scene = self.scene(index)
        frames = torch.stack([self.render(scene, float(position - MIDDLE)) for position in range(SEPTUPLET)])
        return Sample(frames=frames.float(), valid=torch.ones(SEPTUPLET, dtype=torch.bool), target_index=MIDDLE,
                      name=f"synthetic_motion/{self.seed}/{self.epoch}/{self._check_index(index)}")

    def sample_info(self, index: int) -> dict:
        scene = self.scene(index)
        return {
            "name": f"synthetic_motion/{self.seed}/{self.epoch}/{self._check_index(index)}",
            "paths": [None] * SEPTUPLET,
            "layers": [{"source": layer["source_name"], "velocity": layer["velocity"],
                        "rotation_degrees": layer["rotation_degrees"], "zoom": layer["zoom"]} for layer in scene["layers"]],
        }

    @property
    def settings(self) -> dict:
        """The drawing parameters (a resumed training run compares them)."""
        return {"length": self.length, "size": list(self.size), "max_speed": self.max_speed, "objects": list(self.objects),
                "still_background_share": self.still_background_share, "max_rotation_degrees": self.max_rotation_degrees,
                "max_zoom": self.max_zoom, "seed": self.seed}

    def describe(self) -> str:
        return (f"{self.length} layered scenes of {self.size[1]}x{self.size[0]} from {self.source!r}: "
                f"{self.objects[0]}-{self.objects[1]} ellipses over a background, speeds up to {self.max_speed:g} px/frame "
                f"(background max_speed * u^2, objects max_speed * u), rotation up to {self.max_rotation_degrees:g} deg/frame, zoom up to {self.max_zoom:g}/frame, "
                f"still background in {self.still_background_share:.0%}")

    def __repr__(self) -> str:
        return f"SyntheticMotionDataset({self.length} scenes of {self.size[1]}x{self.size[0]})"
