"""The synthetic default dataset: deterministic, fast, learnable, not solvable by a threshold."""

from __future__ import annotations

import time

import numpy as np
import pytest

from study.data.synthetic import make_synthetic, synthetic_pair
from study.errors import DataError


@pytest.fixture(scope="module")
def two_hundred():
    started = time.perf_counter()
    images, masks = make_synthetic(200, 64, seed=0)
    return images, masks, time.perf_counter() - started


def test_shapes_types_and_exact_binary_masks(two_hundred):
    images, masks, _ = two_hundred
    assert images.shape == (200, 64, 64, 3) and images.dtype == np.uint8
    assert masks.shape == (200, 64, 64) and masks.dtype == np.uint8
    assert set(np.unique(masks).tolist()) == {0, 1}
    area = masks.mean(axis=(1, 2))
    assert area.min() > 0.01 and area.max() < 0.7 and 0.1 < area.mean() < 0.35


def test_fast_enough_for_the_smoke_profile(two_hundred):
    assert two_hundred[2] < 3.0  # about half a second on one core


def test_deterministic_from_the_seed_and_a_prefix_for_smaller_counts(two_hundred):
    images, masks, _ = two_hundred
    again_images, again_masks = make_synthetic(10, 64, seed=0)
    assert np.array_equal(again_images, images[:10]) and np.array_equal(again_masks, masks[:10])
    other_images, _ = make_synthetic(10, 64, seed=1)
    assert not np.array_equal(other_images, images[:10])


def test_any_size_draws_the_same_scene():
    _, small = synthetic_pair(0, 4, 64)
    _, large = synthetic_pair(0, 4, 256)
    downsampled = large.reshape(64, 4, 64, 4).mean(axis=(1, 3))
    assert np.mean(np.abs(downsampled - small)) < 0.02


def _dice(prediction, masks):
    overlap = (prediction & (masks > 0)).sum(axis=(1, 2))
    return 2 * overlap / (prediction.sum(axis=(1, 2)) + masks.sum(axis=(1, 2)) + 1e-9)


def test_a_brightness_threshold_does_not_solve_it(two_hundred):
    images, masks, _ = two_hundred
    brightness = images.astype(np.float32).mean(axis=-1)
    best = max(
        _dice(brightness < t if dark else brightness > t, masks).mean()
        for t in range(0, 256, 2)
        for dark in (True, False)
    )
    assert best < 0.65  # about 0.49; a small U-Net reaches about 0.9 in a minute of CPU


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square dilation, separable: rows then columns."""
    out = mask.copy()
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)])
        out = np.zeros_like(mask)
        for shift in range(2 * radius + 1):
            out |= np.take(padded, range(shift, shift + mask.shape[axis]), axis=axis)
    return out


def test_the_lesion_differs_from_its_immediate_surroundings(two_hundred):
    # What makes it learnable: just inside and just outside the border differ in
    # colour in every image, even where a global threshold fails.
    images, masks, _ = two_hundred
    for image, mask in zip(images, masks > 0):
        inner_band = mask & ~_dilate(~mask, 2)
        outer_band = _dilate(mask, 6) & ~_dilate(mask, 2)
        inside = image[inner_band].astype(float).mean(axis=0)
        outside = image[outer_band].astype(float).mean(axis=0)
        assert np.linalg.norm(inside - outside) > 10  # RGB units; the median is about 80


def test_bad_parameters_are_refused():
    with pytest.raises(DataError):
        make_synthetic(0, 64)
    with pytest.raises(DataError):
        make_synthetic(4, 4)
