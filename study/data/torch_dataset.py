"""A torch Dataset over a preprocessing cache, with recorded, seedable transforms.

Randomness comes only from the dataset's own ``numpy.random.Generator``: seed
it from the run seed, and use ``seed_worker`` as the DataLoader's
``worker_init_fn`` (with a seeded DataLoader ``generator``) so that each worker
gets its own stream derived from that seed. The cache's arrays are opened
lazily in each process, so a worker never receives a pickled copy of them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from study.data.cache import DatasetCache, open_cache
from study.data.transforms import (
    ROTATION_INTERPOLATION,
    NormStats,
    TransformConfig,
    apply_augmentation,
    compute_norm_stats,
    draw_augmentation,
    draw_run_angle,
    normalize,
)

# Independent streams from one seed: per-sample draws, and the per-run angle.
_SAMPLE_STREAM = 0
_RUN_ANGLE_STREAM = 1


class SegmentationDataset(Dataset):
    """``(image, mask)`` pairs: float32 (3, H, W) and float32 (1, H, W) in {0, 1} ([0, 1] for soft targets).

    ``ids`` selects and orders the samples (default: the whole cache).
    ``norm_stats`` are needed by the official normalisation; when omitted they
    are computed over this dataset's own images, so pass the training set's
    to a test set (they do not change what the network sees; see transforms).
    """

    def __init__(
        self,
        cache: DatasetCache,
        ids: Sequence[str] | None = None,
        transforms: TransformConfig = TransformConfig(),
        *,
        seed: int = 0,
        norm_stats: NormStats | None = None,
    ):
        self.cache_dir = cache.directory
        self.dataset_name = cache.dataset
        self.ids = tuple(cache.ids if ids is None else ids)
        self.rows = cache.indices(self.ids)
        self.transforms = transforms
        self.seed = seed
        if transforms.normalization == "official" and norm_stats is None:
            norm_stats = compute_norm_stats(cache.images(), self.rows)
        self.norm_stats = norm_stats
        self.run_angle = draw_run_angle(transforms, np.random.default_rng([seed, _RUN_ANGLE_STREAM]))
        self.rng = np.random.default_rng([seed, _SAMPLE_STREAM])
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        # height / width of each sample's original image, where rotations happen in that frame
        self.frame_ratios = None
        sizes = cache.meta.get("original_sizes")
        if transforms.rotation_frame == "original" and sizes:
            self.frame_ratios = np.array([sizes[row][1] / sizes[row][0] for row in self.rows], dtype=np.float32)
        # normalize_frame = "original": the images come stretched at their stored resolution, and
        # the stretch maps their own [0, 255] (never the resized image's min and max)
        self.prestretched = transforms.normalization == "official" and transforms.normalize_frame == "original"
        self.value_ranges = np.tile(np.array([0, 255], np.uint8), (len(self.rows), 1)) if self.prestretched else None

    def reseed(self, seed: int) -> None:
        """Restart the per-sample stream (the per-run angle stays: it belongs to the run)."""
        self.rng = np.random.default_rng([seed, _SAMPLE_STREAM])

    @property
    def mask_scale(self) -> float:
        """What a stored mask value is divided by: 1 for hard {0, 1} masks, 255 for soft ones."""
        return 255.0 if self.transforms.mask_targets == "soft" else 1.0

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        """(images, masks) memory-mapped; the masks are the soft ones (0-255) for soft targets."""
        if self._arrays is None:
            cache = open_cache(self.cache_dir)
            masks = cache.soft_masks() if self.transforms.mask_targets == "soft" else cache.masks()
            self._arrays = (cache.stretched_images() if self.prestretched else cache.images(), masks)
        return self._arrays

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = None  # memory maps are reopened, never pickled
        return state

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, masks = self._open()
        row = self.rows[index]
        value_range = None if self.value_ranges is None else tuple(self.value_ranges[index])
        image = normalize(np.asarray(images[row]), self.transforms.normalization, self.norm_stats, value_range)
        image_tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        mask_tensor = torch.from_numpy(np.asarray(masks[row], dtype=np.float32)[None])
        if self.mask_scale != 1.0:
            mask_tensor = mask_tensor / self.mask_scale
        if self.transforms.augments:
            augmentation = draw_augmentation(self.transforms, self.rng, self.run_angle)
            aspect = None if self.frame_ratios is None else float(self.frame_ratios[index])
            image_tensor, mask_tensor = apply_augmentation(image_tensor, mask_tensor, augmentation, aspect)
        return image_tensor, mask_tensor

    def describe(self) -> dict:
        """Everything that decides what the network sees, for the run record."""
        return {
            "dataset": self.dataset_name,
            "cache": str(self.cache_dir),
            "samples": len(self.ids),
            "transforms": self.transforms.as_dict(),
            "rotation_interpolation": ROTATION_INTERPOLATION,
            "norm_stats": self.norm_stats.as_dict() if self.norm_stats else None,
            "run_angle": self.run_angle,
            "seed": self.seed,
        }


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker's dataset copy its own stream.

    torch derives each worker's seed from the DataLoader's generator and the
    worker id, so a seeded generator makes the whole epoch reproducible.
    """
    info = get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(info.seed)
