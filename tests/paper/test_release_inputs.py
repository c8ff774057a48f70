"""`data.normalize_frame = "original"` feeds the network the release's inputs: checked against a fixture
written by paper/release/make_input_fixture.py from the release's own dataset and transform code
(LinLinLin-X/UltraLBM-UNet at 0a99c43) on the 60 real ISIC 2017 samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT

from study.data import SegmentationDataset, TransformConfig, prepare_cache
from study.data.batched import ResidentSplit
from study.data.transforms import compute_norm_stats

FIXTURE = REPO_ROOT / "paper" / "release" / "input_fixture.npz"


@pytest.fixture(scope="module")
def release_inputs():
    fixture = np.load(FIXTURE)
    assert str(fixture["commit"]).startswith("0a99c43") and str(fixture["dataset"]) == "isic17"
    return fixture


@pytest.fixture(scope="module")
def isic2017_cache(real_samples):
    return prepare_cache("isic2017", real_samples / "ISIC2017", size=256, workers=2)


def _worst_difference(cache, fixture, frame: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image, the largest |harness input - release input| over the fixture's positions, per-sample and
    batched pipelines, and the whole input's (min, max, mean) per image."""
    ids = [str(i) for i in fixture["ids"]]
    norm = compute_norm_stats(cache.images(), cache.indices(ids))
    dataset = SegmentationDataset(cache, ids, TransformConfig(normalize_frame=frame).for_evaluation(),
                                  norm_stats=norm)
    resident = ResidentSplit(dataset)
    positions = fixture["positions"]
    per_sample, batched, summary = [], [], []
    for k in range(len(ids)):
        release = fixture["values"][k].astype(np.float64) / int(fixture["fixed_point"])
        whole = dataset[k][0].numpy().astype(np.float64)
        summary.append((whole.min(), whole.max(), whole.mean()))
        one = whole.reshape(3, -1)[:, positions]
        many = resident.batch(torch.tensor([k]))[0][0].numpy().reshape(3, -1)[:, positions]
        per_sample.append(np.abs(one - release).max())
        batched.append(np.abs(many - release).max())
    return np.asarray(per_sample), np.asarray(batched), np.asarray(summary)


@pytest.mark.slow
def test_the_release_order_gives_the_release_inputs_within_one_grey_level(isic2017_cache, release_inputs):
    per_sample, batched, summary = _worst_difference(isic2017_cache, release_inputs, "original")
    assert len(per_sample) == 60
    assert per_sample.max() <= 1.0 and batched.max() <= 1.0
    # each whole input agrees too: its min, max and mean (the resize has smoothed away the extremes the
    # stretch mapped to 0 and 255, in the release as here)
    assert np.abs(summary - release_inputs["summary"]).max() <= 1.0


def test_the_harness_order_differs_from_the_release(isic2017_cache, release_inputs):
    """Why the switch exists: stretching the resized image moves inputs by tens of grey levels."""
    per_sample, _, _ = _worst_difference(isic2017_cache, release_inputs, "working")
    assert (per_sample > 1.0).sum() >= 40 and per_sample.max() > 20


def test_the_stretched_cache_is_made_once_and_kept(isic2017_cache):
    first = np.asarray(isic2017_cache.stretched_images())
    assert first.shape == (60, 256, 256, 3) and first.dtype == np.uint8
    assert (isic2017_cache.directory / "images_stretched.npy").is_file()
    assert np.array_equal(first, np.asarray(isic2017_cache.stretched_images()))
    assert first.reshape(60, -1).max(1).min() > 150  # stretched, then resized: the extremes smoothed away
