"""The data and distillation switches that turn the harness to the authors' release (paper/differences.toml)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from study.data import prepare_cache
from study.data.batched import ResidentSplit, augment, draw_batch
from study.data.torch_dataset import SegmentationDataset
from study.data.transforms import TransformConfig, _rotate
from study.store import Store
from study.train import objective as objective_mod
from study.train.run import train_run
from test_train import tiny


def test_soft_masks_of_real_samples_are_the_resized_masks_before_the_threshold(real_samples, cache_dir):
    cache = prepare_cache("isic2017", real_samples / "ISIC2017", size=64, workers=2)
    soft, hard = np.asarray(cache.soft_masks()), np.asarray(cache.masks())
    assert soft.dtype == np.uint8 and soft.shape == hard.shape
    assert np.array_equal(soft >= 128, hard.astype(bool))  # hard = soft thresholded, as before
    assert ((soft > 0) & (soft < 255)).sum() > 0  # lesion borders are soft
    again = np.asarray(cache.soft_masks())  # made once, then read
    assert np.array_equal(again, soft)


def test_soft_targets_reach_training_and_never_evaluation(real_samples, cache_dir):
    cache = prepare_cache("isic2017", real_samples / "ISIC2017", size=64, workers=2)
    soft = TransformConfig(rotation="none", hflip=False, vflip=False, mask_targets="soft")
    train = SegmentationDataset(cache, transforms=soft)
    test = SegmentationDataset(cache, transforms=soft.for_evaluation())
    _, mask = train[0]
    assert mask.min() >= 0 and mask.max() <= 1 and ((mask > 0) & (mask < 1)).any()
    assert set(torch.unique(test[0][1]).tolist()) <= {0.0, 1.0}
    batch_masks = ResidentSplit(train).batch(torch.arange(4))[1]
    assert ((batch_masks > 0) & (batch_masks < 1)).any()
    torch.testing.assert_close(batch_masks[0], mask)  # both data paths read the same soft target


def test_synthetic_soft_masks_equal_the_hard_ones(cache_dir):
    cache = prepare_cache("synthetic", None, size=32)
    assert np.array_equal(np.asarray(cache.soft_masks()), np.asarray(cache.masks()) * 255)


@pytest.mark.parametrize("interpolation, new_values", [("nearest", False), ("bilinear", True)])
def test_rotation_interpolation(interpolation, new_values):
    image = torch.arange(3 * 16 * 16, dtype=torch.float32).reshape(3, 16, 16)
    mask = (torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    rotated, rotated_mask = _rotate(image, mask, 33.0, interpolation)
    # nearest keeps the image's own values (and the 0 fill); bilinear blends new ones
    assert bool(torch.isin(rotated, torch.cat([image.flatten(), torch.zeros(1)])).all()) is not new_values
    assert set(torch.unique(rotated_mask).tolist()) <= {0.0, 1.0}
    # the batched path rotates the same way
    config = TransformConfig(hflip=False, vflip=False, rotation_p=1.0)
    aug = draw_batch(config, 1, torch.Generator().manual_seed(1))
    batched, _ = augment(image[None], mask[None], aug, interpolation)
    single, _ = _rotate(image, mask, float(aug.angle[0]), interpolation)
    torch.testing.assert_close(batched[0], single)


def test_a_student_chosen_by_training_loss(tmp_path):
    config = tiny("t7-full", distill={"selection": "train_loss"}, train={"epochs": 4})
    record = train_run(config, 0, Store(tmp_path), train_teacher=True, progress=False)
    assert record.completed
    history = record.details["history"]
    losses = [h["train_loss"] for h in history]
    assert record.details["selection"]["mode"] == "train_loss"
    assert record.details["selection"]["epoch"] == 1 + losses.index(min(losses))
    assert not any("selection_loss" in h for h in history)  # no split is scored per epoch


def test_a_student_dropping_its_last_short_batch(tmp_path, monkeypatch):
    sizes = []
    real_call = objective_mod.Objective.__call__

    def recording(self, logits, images, masks):
        sizes.append(images.shape[0])
        return real_call(self, logits, images, masks)

    monkeypatch.setattr(objective_mod.Objective, "__call__", recording)
    # 40 synthetic images, 28 for training: batches of 8, 8, 8 and a last one of 4
    store = Store(tmp_path)
    train_run(tiny("t7-full", train={"epochs": 1}), 0, store, train_teacher=True, progress=False)
    kept = list(sizes)
    sizes.clear()
    train_run(tiny("t7-full", train={"epochs": 1}, distill={"drop_last": True}), 0, store, progress=False)
    assert kept[-4:] == [8, 8, 8, 4] and sizes == [8, 8, 8]
