"""The data and distillation switches that turn the harness to the authors' release (paper/differences.toml)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from runs import tiny

from study.data import prepare_cache
from study.data.batched import ResidentSplit, augment, draw_batch
from study.data.torch_dataset import SegmentationDataset
from study.data.transforms import TransformConfig, _rotate
from study.store.runs import Store
from study.train import objective as objective_mod
from study.train.run import train_run


def test_soft_masks_of_real_samples_are_the_resized_masks_before_the_threshold(real_samples, cache_dir):
    cache = prepare_cache("isic2017", real_samples / "ISIC2017", size=64, workers=2)
    soft, hard = np.asarray(cache.soft_masks()), np.asarray(cache.masks())
    assert soft.dtype == np.uint8 and soft.shape == hard.shape
    assert np.array_equal(soft >= 128, hard.astype(bool))  # hard = soft thresholded, as before
    assert ((soft > 0) & (soft < 255)).sum() > 0  # lesion borders are soft
    again = np.asarray(cache.soft_masks())  # made once, then read
    assert np.array_equal(again, soft)


def test_soft_targets_reach_training_and_the_selection_loss(real_samples, cache_dir):
    cache = prepare_cache("isic2017", real_samples / "ISIC2017", size=64, workers=2)
    soft = TransformConfig(rotation="none", hflip=False, vflip=False, mask_targets="soft")
    train = SegmentationDataset(cache, transforms=soft)
    test = SegmentationDataset(cache, transforms=soft.for_evaluation())
    _, mask = train[0]
    assert mask.min() >= 0 and mask.max() <= 1 and ((mask > 0) & (mask < 1)).any()
    # the test split keeps the soft targets for its loss (the release selects on it); counts threshold at 0.5
    from study.train.confusion import confusion_counts

    assert ((test[0][1] > 0) & (test[0][1] < 1)).any()
    hard = SegmentationDataset(cache, transforms=TransformConfig().for_evaluation())
    assert torch.equal(confusion_counts(test[0][1][None], test[0][1][None]),
                       confusion_counts(test[0][1][None], hard[0][1][None]))
    batch_masks = ResidentSplit(train).batch(torch.arange(4))[1]
    assert ((batch_masks > 0) & (batch_masks < 1)).any()
    torch.testing.assert_close(batch_masks[0], mask)  # both data paths read the same soft target


def test_synthetic_soft_masks_equal_the_hard_ones(cache_dir):
    cache = prepare_cache("synthetic", None, size=32)
    assert np.array_equal(np.asarray(cache.soft_masks()), np.asarray(cache.masks()) * 255)


def test_rotation_in_the_original_frame_is_the_release_s_rotate_then_resize():
    """Rotating a 2:1 image and then squashing it to a square equals rotating the square image in a
    2:1 frame, up to one resampling: measured against doing exactly that at full resolution."""
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    tall = F.interpolate(torch.rand(1, 3, 8, 4, generator=generator), size=(128, 64), mode="bilinear")[0]
    mask = torch.zeros(1, 128, 64)
    rotated_full, _ = _rotate(tall, mask, 30.0)  # at the original size (the release)
    release = F.interpolate(rotated_full[None], size=(64, 64), mode="bilinear", antialias=True)[0]
    square = F.interpolate(tall[None], size=(64, 64), mode="bilinear", antialias=True)[0]
    in_frame, _ = _rotate(square, torch.zeros(1, 64, 64), 30.0, aspect=2.0)
    in_square, _ = _rotate(square, torch.zeros(1, 64, 64), 30.0)
    inner = (slice(None), slice(8, 56), slice(8, 56))  # away from the fill corners' edges
    assert (in_frame - release)[inner].abs().mean() < 0.5 * (in_square - release)[inner].abs().mean()
    # the batched path rotates the same way
    config = TransformConfig(hflip=False, vflip=False, rotation_p=1.0)
    aug = draw_batch(config, 1, torch.Generator().manual_seed(1))
    batched, _ = augment(square[None], torch.zeros(1, 1, 64, 64), aug, torch.tensor([2.0]))
    single, _ = _rotate(square, torch.zeros(1, 64, 64), float(aug.angle[0]), aspect=2.0)
    torch.testing.assert_close(batched[0], single)


def test_original_frames_come_from_the_cache(real_samples, cache_dir):
    cache = prepare_cache("isic2017", real_samples / "ISIC2017", size=64, workers=2)
    frame = SegmentationDataset(cache, transforms=TransformConfig(rotation_frame="original"))
    widths, heights = zip(*cache.meta["original_sizes"])
    assert np.allclose(frame.frame_ratios, np.array(heights) / np.array(widths))
    assert SegmentationDataset(cache).frame_ratios is None


def test_the_release_conv1d_init():
    from study.models import build_model
    from study.models.mamba import Mamba

    torch.manual_seed(0)
    release = [m for m in build_model("ultralbm", {"mamba_conv_init": "release"}).modules() if isinstance(m, Mamba)]
    torch.manual_seed(0)
    harness = [m for m in build_model("ultralbm", {}).modules() if isinstance(m, Mamba)]
    for r, h in zip(release, harness):
        d = r.d_inner
        assert abs(float(r.conv1d.weight.detach().std()) - (2 / (4 * d)) ** 0.5) < 0.35 * (2 / (4 * d)) ** 0.5
        assert abs(float(h.conv1d.weight.detach().std()) - (2 / 4) ** 0.5) < 0.35 * (2 / 4) ** 0.5
        assert bool((r.conv1d.bias != 0).all()) and bool((h.conv1d.bias == 0).all())


@pytest.mark.slow
def test_a_student_chosen_by_training_loss(tmp_path):
    config = tiny("t7-full", distill={"selection": "train_loss"}, train={"epochs": 4})
    record = train_run(config, 0, Store(tmp_path), train_teacher=True, progress=False)
    assert record.completed
    history = record.details["history"]
    losses = [h["train_loss_per_batch"] for h in history]  # the mean of per-batch losses, as the release
    assert record.details["selection"]["mode"] == "train_loss"
    assert record.details["selection"]["epoch"] == 1 + losses.index(min(losses))
    assert not any("selection_loss" in h for h in history)  # no split is scored per epoch
    holdout = train_run(tiny("t7-full", distill={"selection": "train_loss"}, train={"selection": "holdout"}), 0,
                        Store(tmp_path), train_teacher=True, progress=False)
    assert holdout.details["data"]["holdout"] is None  # no holdout carved that nothing would use


@pytest.mark.slow
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
