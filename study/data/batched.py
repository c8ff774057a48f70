"""The data path a run trains on: a split resident as uint8 tensors, transformed a batch at a time.

A split's images and masks are read from the cache once into ``(N, H, W, 3)`` and
``(N, H, W)`` uint8 tensors on the run's device (ISIC 2018 at 256^2 is ~0.5 GB),
and each batch is gathered, normalised and augmented there with whole-batch
tensor operations: no per-sample Python, and on a GPU no host round trip.

The transforms are those of ``study.data.transforms`` (the per-sample path kept
as the oracle): the official normalisation is the per-image min-max stretch it
reduces to, computed from the uint8 values; flips then a rotation about the
centre (bilinear image, nearest mask, zero fill). The draws come from a CPU
``torch.Generator`` seeded per (run seed, epoch), so the same seed gives the
same augmentations on a CPU and on a GPU; they are a different random stream
from the per-sample path's, so ``data.pipeline`` is part of a run's identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from study.data.transforms import TransformConfig


@dataclass(frozen=True)
class BatchAugmentation:
    """The geometric transform of each sample of a batch; ``angle`` NaN = not rotated."""

    hflip: torch.Tensor  # (B,) bool
    vflip: torch.Tensor  # (B,) bool
    angle: torch.Tensor  # (B,) float32 degrees, counter-clockwise


def draw_batch(config: TransformConfig, n: int, generator: torch.Generator,
               run_angle: float | None = None) -> BatchAugmentation:
    # Four draws per sample whatever is enabled, so switching one augmentation off
    # does not reshuffle the others (as the per-sample path does).
    u = torch.rand(n, 4, generator=generator)
    low, high = config.rotation_degrees
    angle = low + u[:, 3] * (high - low)
    if config.rotation == "per_run":
        angle = torch.full((n,), float("nan") if run_angle is None else run_angle)
    rotate = (u[:, 2] < config.rotation_p) & (config.rotation != "none")
    return BatchAugmentation(
        hflip=(u[:, 0] < config.flip_p) & config.hflip,
        vflip=(u[:, 1] < config.flip_p) & config.vflip,
        angle=torch.where(rotate, angle, torch.full_like(angle, float("nan"))),
    )


def rotation_grid(angles_deg: torch.Tensor, height: int, width: int,
                  ratios: torch.Tensor | None = None) -> torch.Tensor:
    """Sampling grids of rotations about the centre, as ``transforms._rotate`` builds one; ``ratios``
    (height / width of each sample's frame, ``rotation_frame = "original"``) default to the map's."""
    radians = angles_deg.double() * (math.pi / 180.0)
    cos, sin = torch.cos(radians).float(), torch.sin(radians).float()
    theta = torch.zeros(len(angles_deg), 2, 3, dtype=torch.float32, device=angles_deg.device)
    ratio = height / width if ratios is None else ratios
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * ratio
    theta[:, 1, 0], theta[:, 1, 1] = sin / ratio, cos
    return F.affine_grid(theta, [len(angles_deg), 1, height, width], align_corners=False)


def _to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on ``device`` without making the host wait: from pinned memory, asynchronously."""
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def augment(images: torch.Tensor, masks: torch.Tensor, aug: BatchAugmentation,
            ratios: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The flips, then the rotations, of (B, 3, H, W) images and their (B, 1, H, W) masks.

    ``aug`` lives on the host (drawn from a CPU generator): every decision that needs a value
    (which flips, which rows rotate) is taken there, and what the device needs goes over in one
    asynchronous copy, so a batch on a GPU never waits for the device.
    """
    device = images.device
    rotated = torch.nonzero(~torch.isnan(aug.angle)).flatten()
    flips = [(flags, dim) for flags, dim in ((aug.hflip, -1), (aug.vflip, -2)) if bool(flags.any())]
    if not flips and not len(rotated):
        return images, masks
    # [hflip (B), vflip (B), rotated rows (R), their angles (R), their frames' height / width (R)]
    # as float32: row numbers are exact. ``ratios`` (host, per sample): None rotates in the map's frame.
    frames = [] if ratios is None else [ratios[rotated].float()]
    packed = _to_device(torch.cat([aug.hflip.float(), aug.vflip.float(), rotated.float(), aug.angle[rotated],
                                   *frames]), device)
    n, r = len(aug.hflip), len(rotated)
    for flags, dim in flips:
        pick = (packed[:n] if dim == -1 else packed[n:2 * n]).bool().view(-1, 1, 1, 1)
        images = torch.where(pick, images.flip(dim), images)
        masks = torch.where(pick, masks.flip(dim), masks)
    if r:
        rows = packed[2 * n:2 * n + r].long()
        grid = rotation_grid(packed[2 * n + r:2 * n + 2 * r], images.shape[-2], images.shape[-1],
                             None if ratios is None else packed[2 * n + 2 * r:])
        images = images.index_copy(0, rows, F.grid_sample(images[rows], grid, mode="bilinear",
                                                          padding_mode="zeros", align_corners=False))
        masks = masks.index_copy(0, rows, F.grid_sample(masks[rows], grid, mode="nearest",
                                                        padding_mode="zeros", align_corners=False))
    return images, masks


def normalize_batch(images_u8: torch.Tensor, normalization: str, ranges: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, W, 3) uint8 to (B, 3, H, W) float32: [0, 255] per-image min-max (official) or /255 (unit).

    The official mean/std standardisation is a positive affine map of every pixel,
    so the min-max stretch after it equals the stretch of the raw values. ``ranges``
    (B, 2): each image's (min, max) to stretch from (its original's, for
    ``normalize_frame = "original"``); default: the batch images' own.
    """
    x = images_u8.permute(0, 3, 1, 2).float()
    if normalization == "unit":
        return x / 255.0
    if ranges is None:
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        span = x.amax(dim=(1, 2, 3), keepdim=True) - low
    else:
        low = ranges[:, 0].float().view(-1, 1, 1, 1)
        span = ranges[:, 1].float().view(-1, 1, 1, 1) - low
    scale = torch.where(span > 0, 255.0 / span.clamp(min=1.0), torch.zeros_like(span))  # constant image: zeros
    return ((x - low) * scale).contiguous()


class ResidentSplit:
    """One split of a cache held as uint8 tensors on ``device``, served a batch at a time."""

    def __init__(self, dataset, device: str | torch.device = "cpu"):
        images, masks = dataset._open()
        rows = np.asarray(dataset.rows)
        self.images = torch.from_numpy(np.ascontiguousarray(images[rows])).to(device)
        self.masks = torch.from_numpy(np.ascontiguousarray(masks[rows])).to(device)
        self.transforms: TransformConfig = dataset.transforms
        self.mask_scale = dataset.mask_scale
        # height / width of each sample's original image, on the host (rotation_frame = "original")
        self.ratios = None if dataset.frame_ratios is None else torch.as_tensor(dataset.frame_ratios,
                                                                                 dtype=torch.float32)
        self.run_angle = dataset.run_angle
        self.device = torch.device(device)
        # (N, 2) original-resolution (min, max) per sample, on the device (normalize_frame = "original")
        self.ranges = None if dataset.value_ranges is None else torch.from_numpy(
            np.ascontiguousarray(dataset.value_ranges)).to(self.device)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None,
              host_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and masks of ``index``, augmented with draws from ``generator`` (None: not augmented);
        ``host_index``: the same rows on the host, when ``index`` is already on the device."""
        host_index = index.cpu() if host_index is None else host_index
        index = index.to(self.device)  # a no-op for ``batches``, which moves an epoch's order at once
        ranges = None if self.ranges is None else self.ranges[index]
        images = normalize_batch(self.images[index], self.transforms.normalization, ranges)
        masks = self.masks[index].unsqueeze(1).float()
        if self.mask_scale != 1.0:
            masks = masks / self.mask_scale
        if generator is not None and self.transforms.augments:
            ratios = None if self.ratios is None else self.ratios[host_index]
            images, masks = augment(images, masks, draw_batch(self.transforms, len(index), generator, self.run_angle),
                                    ratios)
        return images, masks

    def batches(self, batch_size: int, order_seed: int | None = None, augment_seed: int | None = None,
                drop_last: bool = False):
        """(images, masks) batches: shuffled by ``order_seed`` (None: in order), augmented by ``augment_seed``."""
        n = len(self)
        if order_seed is None:
            order = torch.arange(n)
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(order_seed))
        on_device = _to_device(order, self.device)  # one copy per epoch, not one per batch
        generator = None if augment_seed is None else torch.Generator().manual_seed(augment_seed)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            rows = slice(start, start + batch_size)
            yield self.batch(on_device[rows], generator, host_index=order[rows])
