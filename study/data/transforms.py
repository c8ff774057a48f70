"""What the network sees: normalisation and the random geometric augmentation.

Mirrors the official pipeline (inherited from MALUNet), in its order:
normalise, random horizontal flip, random vertical flip, random rotation.
The official pipeline resizes last; here the cache resized first, so by
default the normalisation's per-image min and max are those of the resized
image (``normalize_frame = "working"``). With ``"original"`` the cache keeps
each image stretched at its stored resolution and then resized
(``DatasetCache.stretched_images``), and the stretch here maps its [0, 255]
as it is: the release's order, up to the rounding to uint8 (at most 0.5 grey
levels).

The official normalisation subtracts a per-dataset mean, divides by a
per-dataset std, then rescales each image to [0, 255] by its own min and max.
Both statistics are scalars over all pixels and channels, so the min-max step
cancels them exactly (up to float rounding): the network sees the per-image
min-max stretch. They are still computed over the training images and
recorded, as the official code does.

The official rotation draws ONE angle when the transform is built and uses it,
with probability 0.5, for every sample of the run (MALUNet's bug).
``rotation = "per_run"`` reproduces that; the default draws an angle per sample.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from study.canonical import check_fields
from study.config import MASK_TARGETS, NORMALIZATIONS, NORMALIZE_FRAMES, ROTATION_FRAMES, ROTATIONS
from study.errors import ConfigError

# Recorded: the interpolation of each tensor when rotated (fill is 0 outside).
ROTATION_INTERPOLATION = {"image": "bilinear", "mask": "nearest", "fill": 0}


@dataclass(frozen=True)
class TransformConfig:
    normalization: str = "official"  # official: mean/std then per-image min-max to [0, 255]; unit: /255
    hflip: bool = True
    vflip: bool = True
    flip_p: float = 0.5
    rotation: str = "per_sample"  # per_sample | per_run (the official code's one angle) | none
    rotation_p: float = 0.5  # the official code rotates half of the samples
    rotation_degrees: tuple[float, float] = (0.0, 360.0)
    rotation_frame: str = "working"
    mask_targets: str = "hard"
    normalize_frame: str = "working"  # where the min-max stretch takes its min and max (DataConfig)

    def __post_init__(self):
        for name, allowed in (("rotation_frame", ROTATION_FRAMES), ("mask_targets", MASK_TARGETS),
                              ("normalize_frame", NORMALIZE_FRAMES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"transforms.{name}: {getattr(self, name)!r}; expected one of {', '.join(allowed)}")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"transforms.normalization: {self.normalization!r}; expected one of {', '.join(NORMALIZATIONS)}"
            )
        if self.rotation not in ROTATIONS:
            raise ConfigError(f"transforms.rotation: {self.rotation!r}; expected one of {', '.join(ROTATIONS)}")
        for name in ("flip_p", "rotation_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"transforms.{name}: {getattr(self, name)}; expected a probability in [0, 1]")
        low, high = self.rotation_degrees
        if not low <= high:
            raise ConfigError(
                f"transforms.rotation_degrees: {self.rotation_degrees}; expected (low, high) with low <= high"
            )
        object.__setattr__(self, "rotation_degrees", (float(low), float(high)))

    @property
    def augments(self) -> bool:
        return self.hflip or self.vflip or self.rotation != "none"

    def as_dict(self) -> dict:
        record = asdict(self)
        record["rotation_degrees"] = list(self.rotation_degrees)
        return record

    @classmethod
    def from_dict(cls, values: dict) -> "TransformConfig":
        check_fields(cls, "transforms", values)
        values = dict(values)
        if "rotation_degrees" in values:
            values["rotation_degrees"] = tuple(values["rotation_degrees"])
        return cls(**values)

    def for_evaluation(self) -> "TransformConfig":
        """Same normalisation, no augmentation: what validation and test images get."""
        return replace(self, hflip=False, vflip=False, rotation="none")


@dataclass(frozen=True)
class NormStats:
    """The official per-dataset statistics: scalar mean and std of all training pixels (0-255 scale)."""

    mean: float
    std: float
    images: int  # how many images they were computed over

    def as_dict(self) -> dict:
        return asdict(self)


def compute_norm_stats(images: np.ndarray, rows: np.ndarray | None = None, chunk: int = 64) -> NormStats:
    """Mean and std over ``images[rows]`` ((N, H, W, 3) uint8, memory-mapped), in chunks."""
    rows = np.arange(len(images)) if rows is None else np.sort(np.asarray(rows))
    if len(rows) == 0:
        raise ConfigError("normalisation statistics need at least one image")
    total = total_sq = 0.0
    count = 0
    for start in range(0, len(rows), chunk):
        block = np.asarray(images[rows[start : start + chunk]], dtype=np.float64)
        total += block.sum()
        total_sq += np.square(block).sum()
        count += block.size
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 0.0))
    return NormStats(mean=mean, std=std, images=len(rows))


def normalize(image: np.ndarray, normalization: str, stats: NormStats | None,
              value_range: tuple[float, float] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 to (H, W, 3) float32 in [0, 255] (official) or [0, 1] (unit).

    ``value_range``: the (min, max) the stretch maps to 0 and 255, in the image's 0-255 values
    (the original image's, for ``normalize_frame = "original"``); default: this image's own."""
    if normalization == "unit":
        return image.astype(np.float32) / 255.0
    if stats is None:
        raise ConfigError("the official normalisation needs the dataset's mean and std (NormStats)")
    scale = stats.std or 1.0
    standardized = (image.astype(np.float64) - stats.mean) / scale
    if value_range is None:
        low, high = standardized.min(), standardized.max()
    else:
        low, high = ((float(v) - stats.mean) / scale for v in value_range)
    if high == low:  # a constant image: the official code would divide by zero
        return np.zeros(image.shape, np.float32)
    return ((standardized - low) / (high - low) * 255.0).astype(np.float32)


@dataclass(frozen=True)
class Augmentation:
    """The geometric transform drawn for one sample."""

    hflip: bool
    vflip: bool
    angle: float | None  # degrees counter-clockwise, None = not rotated


def draw_run_angle(config: TransformConfig, rng: np.random.Generator) -> float | None:
    """The one angle of a ``per_run`` rotation; None otherwise."""
    if config.rotation != "per_run":
        return None
    return float(rng.uniform(*config.rotation_degrees))


def draw_augmentation(config: TransformConfig, rng: np.random.Generator, run_angle: float | None = None) -> Augmentation:
    # Always the same number of draws per sample, whatever is enabled, so that
    # switching one augmentation off does not reshuffle the others.
    hflip_draw, vflip_draw, rotate_draw = rng.random(3)
    angle_draw = float(rng.uniform(*config.rotation_degrees))
    angle = None
    if config.rotation != "none" and rotate_draw < config.rotation_p:
        angle = run_angle if config.rotation == "per_run" else angle_draw
        if angle is None:
            raise ConfigError("rotation = 'per_run' needs the run's angle (draw_run_angle)")
    return Augmentation(
        hflip=config.hflip and hflip_draw < config.flip_p,
        vflip=config.vflip and vflip_draw < config.flip_p,
        angle=angle,
    )


def _rotate(image: torch.Tensor, mask: torch.Tensor, degrees: float,
            aspect: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate (C, H, W) tensors about their centre by the same angle, filling with 0; ``aspect``
    (height / width): rotate in a frame of that shape, as if before resizing (None: the tensor's)."""
    _, height, width = image.shape
    ratio = height / width if aspect is None else aspect
    radians = math.radians(degrees)
    cos, sin = math.cos(radians), math.sin(radians)
    # Output pixel (x, y) samples the input at the inverse rotation of (x, y), in
    # grid_sample's [-1, 1] coordinates corrected for the aspect ratio. With rows
    # running downwards, a positive angle turns the picture counter-clockwise.
    theta = torch.tensor([[cos, -sin * ratio, 0.0], [sin / ratio, cos, 0.0]], dtype=torch.float32).unsqueeze(0)
    grid = F.affine_grid(theta, [1, 1, height, width], align_corners=False)
    rotated_image = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    rotated_mask = F.grid_sample(mask[None], grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
    return rotated_image, rotated_mask


def apply_augmentation(
    image: torch.Tensor, mask: torch.Tensor, augmentation: Augmentation, aspect: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same flips and rotation on a (3, H, W) image and its (1, H, W) mask."""
    if augmentation.hflip:
        image, mask = image.flip(-1), mask.flip(-1)
    if augmentation.vflip:
        image, mask = image.flip(-2), mask.flip(-2)
    if augmentation.angle is not None:
        image, mask = _rotate(image, mask, augmentation.angle, aspect)
    return image.contiguous(), mask.contiguous()
