"""Normalisation, augmentation and the torch Dataset over a cache."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from study.data.cache import build_synthetic_cache
from study.data.synthetic import SyntheticSpec
from study.data.torch_dataset import SegmentationDataset, seed_worker
from study.data.transforms import (
    Augmentation,
    NormStats,
    TransformConfig,
    apply_augmentation,
    compute_norm_stats,
    draw_augmentation,
    draw_run_angle,
    normalize,
)
from study.errors import ConfigError


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    return build_synthetic_cache(SyntheticSpec(count=12, seed=7), 32, cache_dir=tmp_path_factory.mktemp("cache"))


def test_config_validates_and_round_trips():
    config = TransformConfig(normalization="unit", rotation="per_run")
    assert TransformConfig.from_dict(config.as_dict()) == config
    assert config.as_dict()["rotation_degrees"] == [0.0, 360.0]
    with pytest.raises(ConfigError, match="expected one of official, unit"):
        TransformConfig(normalization="imagenet")
    with pytest.raises(ConfigError, match="expected one of per_sample, per_run, none"):
        TransformConfig(rotation="sometimes")
    with pytest.raises(ConfigError, match="unknown field"):
        TransformConfig.from_dict({"hflip": True, "jitter": 0.1})
    evaluation = TransformConfig().for_evaluation()
    assert not evaluation.augments and evaluation.normalization == "official"


def test_official_normalisation_is_the_per_image_min_max_stretch():
    rng = np.random.default_rng(0)
    image = rng.integers(30, 200, (16, 16, 3), dtype=np.uint8)
    official = normalize(image, "official", NormStats(mean=157.561, std=26.706, images=1))
    assert official.dtype == np.float32 and official.min() == 0 and official.max() == pytest.approx(255)
    stretch = (image - image.min()) / (image.max() - image.min()) * 255
    assert np.allclose(official, stretch, atol=1e-3)  # mean and std cancel out
    unit = normalize(image, "unit", None)
    assert unit.min() >= 0 and unit.max() <= 1
    assert not normalize(np.full((4, 4, 3), 9, np.uint8), "official", NormStats(1, 1, 1)).any()


def test_norm_stats_are_mean_and_std_over_the_chosen_images(small_cache):
    images = small_cache.images()
    rows = np.array([3, 1, 8])
    stats = compute_norm_stats(images, rows, chunk=2)
    values = np.asarray(images[[1, 3, 8]], dtype=np.float64)
    assert stats.mean == pytest.approx(values.mean()) and stats.std == pytest.approx(values.std())
    assert stats.images == 3


def test_flips_and_right_angle_rotations_move_image_and_mask_together():
    mask = torch.zeros(1, 8, 8)
    mask[0, 1:3, 5:8] = 1
    image = mask.repeat(3, 1, 1) * 200
    for augmentation in (Augmentation(True, False, None), Augmentation(False, True, None), Augmentation(True, True, 90.0),
                         Augmentation(False, False, 270.0)):
        out_image, out_mask = apply_augmentation(image, mask, augmentation)
        assert torch.allclose(out_image[0] / 200, out_mask[0], atol=1e-4), augmentation
        assert out_mask.sum() == mask.sum()


def test_any_rotation_keeps_the_mask_binary_and_aligned():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    mask = (((yy - 24) ** 2 + (xx - 36) ** 2) < 150).float()[None]
    image = mask.repeat(3, 1, 1)
    out_image, out_mask = apply_augmentation(image, mask, Augmentation(False, False, 33.0))
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
    disagreement = ((out_image[0] > 0.5).float() != out_mask[0]).float().mean()
    assert disagreement < 0.01  # only along the border, where bilinear and nearest differ


def test_per_sample_rotation_draws_new_angles_per_run_reuses_one():
    per_sample = TransformConfig(rotation="per_sample", rotation_p=1.0)
    rng = np.random.default_rng(0)
    angles = {draw_augmentation(per_sample, rng).angle for _ in range(20)}
    assert len(angles) == 20 and all(0 <= a < 360 for a in angles)
    per_run = TransformConfig(rotation="per_run")
    run_angle = draw_run_angle(per_run, np.random.default_rng(1))
    angles = {draw_augmentation(per_run, rng, run_angle).angle for _ in range(50)}
    assert angles == {None, run_angle}  # rotated half the time, always by the run's angle
    assert {draw_augmentation(TransformConfig(rotation="none"), rng).angle for _ in range(10)} == {None}


def test_dataset_outputs_and_record(small_cache):
    dataset = SegmentationDataset(small_cache, small_cache.ids[:8], TransformConfig(), seed=3)
    image, mask = dataset[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert mask.shape == (1, 32, 32) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert 0 <= image.min() and image.max() <= 255
    record = dataset.describe()
    assert record["transforms"]["rotation"] == "per_sample" and record["norm_stats"]["images"] == 8
    plain = SegmentationDataset(small_cache, transforms=TransformConfig(normalization="unit").for_evaluation())
    image, mask = plain[2]
    assert torch.equal(mask[0], torch.from_numpy(small_cache.masks()[2].astype(np.float32)))
    assert torch.allclose(image, torch.from_numpy(small_cache.images()[2].transpose(2, 0, 1) / 255.0).float())


def test_dataset_is_deterministic_from_its_seed(small_cache):
    def epoch(seed):
        dataset = SegmentationDataset(small_cache, transforms=TransformConfig(rotation_p=1.0), seed=seed)
        return torch.stack([dataset[i][1] for i in range(len(dataset))])

    assert torch.equal(epoch(1), epoch(1))
    assert not torch.equal(epoch(1), epoch(2))


def test_dataloader_workers_are_seeded_reproducibly(small_cache):
    dataset = SegmentationDataset(small_cache, transforms=TransformConfig(normalization="unit"), seed=0)
    assert len(pickle.dumps(dataset)) < 20_000  # the memory maps are not shipped to workers

    def masks_of_one_epoch(loader_seed):
        loader = DataLoader(dataset, batch_size=4, num_workers=2, worker_init_fn=seed_worker,
                            generator=torch.Generator().manual_seed(loader_seed))
        return torch.cat([mask for _, mask in loader])

    assert torch.equal(masks_of_one_epoch(11), masks_of_one_epoch(11))
    assert not torch.equal(masks_of_one_epoch(11), masks_of_one_epoch(12))  # the workers were reseeded
