"""The preprocessing cache: real samples resized and stored, reused, never half-written."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REAL_SAMPLE_PAIRS
from data_samples import isic_ids, make_isic2017, make_ph2, truncate

from study.data.cache import cache_root, open_cache, prepare_cache
from study.data.layouts import get_dataset_source
from study.data.synthetic import SyntheticSpec, make_synthetic
from study.errors import DataError


@pytest.mark.parametrize("dataset, folder, count", REAL_SAMPLE_PAIRS)
def test_real_samples_are_cached_with_binary_masks(real_samples, cache_dir, dataset, folder, count):
    cache = prepare_cache(dataset, real_samples / folder, size=64, workers=2)
    assert cache.directory.parent == cache_dir / dataset
    assert cache.directory.name.startswith(f"{dataset}-64px-bilinear-t128-")
    images, masks = cache.images(), cache.masks()
    assert isinstance(images, np.memmap) and images.mode == "r"
    assert images.shape == (count, 64, 64, 3) and images.dtype == np.uint8
    assert masks.shape == (count, 64, 64) and masks.dtype == np.uint8
    assert set(np.unique(masks).tolist()) == {0, 1}
    assert all(0 < m.mean() < 1 for m in masks)  # every sample has lesion and skin
    assert cache.ids == get_dataset_source(dataset, real_samples / folder).ids
    assert cache.meta["resize"]["mask"].endswith(">= 128")
    assert len(cache.meta["original_sizes"]) == count


def test_cache_is_reused_not_rebuilt(real_samples, cache_dir):
    first = prepare_cache("isic2018", real_samples / "ISIC2018", size=32)
    stamp = (first.directory / "images.npy").stat().st_mtime_ns
    second = prepare_cache("isic2018", real_samples / "ISIC2018", size=32)
    assert second.directory == first.directory
    assert (second.directory / "images.npy").stat().st_mtime_ns == stamp
    assert prepare_cache("isic2018", real_samples / "ISIC2018", size=48).directory != first.directory


def test_working_size_256_on_a_handful_including_the_rgb_mask(real_samples, tmp_path, cache_dir):
    root = make_ph2(real_samples, tmp_path / "ph2", ["IMD002", "IMD016", "IMD040"])
    cache = prepare_cache("ph2", root)
    assert cache.size == 256 and cache.images().shape == (3, 256, 256, 3)
    masks = cache.masks()
    assert set(np.unique(masks).tolist()) == {0, 1}
    originals = get_dataset_source("ph2", root)
    from study.data.imageio import read_mask

    for row, pair in enumerate(originals.pairs):
        assert abs(masks[row].mean() - read_mask(pair.mask).mean()) < 0.01


def test_cache_key_follows_the_file_list(real_samples, tmp_path, cache_dir):
    ids = isic_ids(real_samples, 4)
    root = make_isic2017(real_samples, tmp_path / "isic", ids[:3])
    before = prepare_cache("isic2017", root, size=16)
    make_isic2017(real_samples, root, ids[3:])
    after = prepare_cache("isic2017", root, size=16)
    assert after.directory != before.directory
    assert after.ids == tuple(ids) and before.ids == tuple(ids[:3])


def test_failed_build_leaves_nothing_that_looks_complete(real_samples, tmp_path, cache_dir):
    ids = isic_ids(real_samples, 6)
    root = make_isic2017(real_samples, tmp_path / "isic", ids)
    truncate(root / "ISIC-2017_Training_Data" / f"{ids[-1]}.jpg")  # the last one: after 5 good writes
    with pytest.raises(DataError, match=rf"{ids[-1]}\.jpg: cannot decode"):
        prepare_cache("isic2017", root, size=16, workers=1)
    leftovers = list((cache_dir / "isic2017").iterdir())
    assert leftovers == []  # no cache folder, no partial folder


def test_skip_bad_builds_without_the_bad_pairs_and_records_them(real_samples, tmp_path, cache_dir):
    ids = isic_ids(real_samples, 4)
    root = make_isic2017(real_samples, tmp_path / "isic", ids)
    truncate(root / "ISIC-2017_Training_Data" / f"{ids[1]}.jpg")
    (root / "ISIC-2017_Training_Part1_GroundTruth" / f"{ids[3]}_segmentation.png").unlink()
    cache = prepare_cache("isic2017", root, size=16, skip_bad=True)
    assert cache.ids == (ids[0], ids[2])
    assert cache.images().shape[0] == 2 and cache.masks().shape[0] == 2
    assert sorted((b["id"], b["kind"]) for b in cache.meta["skipped"]) == [(ids[1], "unreadable"), (ids[3], "unpaired")]
    # The same root without --skip-bad still fails: a skip-bad cache is not reused for it.
    with pytest.raises(DataError):
        prepare_cache("isic2017", root, size=16)


def test_cache_rows_follow_ids(real_samples, cache_dir):
    cache = prepare_cache("isic2018", real_samples / "ISIC2018", size=16)
    wanted = [cache.ids[5], cache.ids[0]]
    assert cache.indices(wanted).tolist() == [5, 0]
    with pytest.raises(DataError, match=r"1 id\(s\) not in the isic2018 cache \(ISIC_9999999\)"):
        cache.indices(["ISIC_9999999"])


def test_synthetic_dataset_goes_through_the_same_cache(cache_dir):
    cache = prepare_cache("synthetic", size=24, synthetic=SyntheticSpec(count=6, seed=3))
    images, masks = make_synthetic(6, 24, 3)
    assert np.array_equal(cache.images(), images) and np.array_equal(cache.masks(), masks)
    assert cache.ids[0] == "synthetic_000000" and cache.meta["synthetic"]["seed"] == 3
    assert open_cache(cache.directory).ids == cache.ids


def test_cache_root_default_and_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("STUDY_CACHE", raising=False)
    assert cache_root().parts[-2:] == (".cache", "ultralbm-study")
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    assert cache_root(tmp_path / "x") == tmp_path / "x"


def test_unfinished_folder_is_not_a_cache(tmp_path):
    (tmp_path / "images.npy").write_bytes(b"")
    with pytest.raises(DataError, match="not a finished cache"):
        open_cache(tmp_path)
