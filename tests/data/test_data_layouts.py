"""Listing pairs from the release layouts: real samples, and bad folders built from copies."""

from __future__ import annotations

import os
import random
import shutil

import pytest
from data_samples import PH2_CASES, copy_isic_pair, isic_ids, make_isic2017, make_ph2, make_pre_split

from study.data.layouts import get_dataset_source, scan_dataset
from study.errors import DataError


def test_isic2017_sample_has_60_pairs_matched_by_id(real_samples):
    source = get_dataset_source("isic2017", real_samples / "ISIC2017")
    assert len(source.pairs) == 60
    assert list(source.ids) == sorted(source.ids)
    assert source.part_counts() == {"Training": 60}
    for pair in source.pairs:
        assert pair.image.name == f"{pair.id}.jpg"
        assert pair.mask.name == f"{pair.id}_segmentation.png"


def test_isic2018_sample_has_12_pairs(real_samples):
    source = get_dataset_source("isic2018", real_samples / "ISIC2018")
    assert len(source.pairs) == 12
    assert all(p.image.parent.name == "ISIC2018_Task1-2_Training_Input" for p in source.pairs)
    assert all(p.mask.parent.name == "ISIC2018_Task1_Training_GroundTruth" for p in source.pairs)


@pytest.mark.parametrize("below", ["", "PH2Dataset", "PH2Dataset/PH2 Dataset images"])
def test_ph2_sample_has_20_pairs_from_any_level_of_the_release(real_samples, below):
    source = get_dataset_source("ph2", real_samples / "PH2" / below)
    assert len(source.pairs) == 20
    assert "IMD002" in source.ids
    pair = source.pairs[source.ids.index("IMD002")]
    assert pair.image.name == "IMD002.bmp" and pair.mask.name == "IMD002_lesion.bmp"


def test_isic_release_ignores_superpixels_metadata_and_licences(real_samples, tmp_path):
    ids = isic_ids(real_samples, 3)
    root = make_isic2017(real_samples, tmp_path, ids)
    images = root / "ISIC-2017_Training_Data"
    shutil.copyfile(root / "ISIC-2017_Training_Part1_GroundTruth" / f"{ids[0]}_segmentation.png",
                    images / f"{ids[0]}_superpixels.png")
    (images / "ISIC-2017_Training_Data_metadata.csv").write_text("image_id,age\n")
    (images / "LICENSE.txt").write_text("CC0")
    assert get_dataset_source("isic2017", root).ids == tuple(ids)


def test_validation_folders_join_the_pool_and_test_only_on_request(real_samples, tmp_path):
    ids = isic_ids(real_samples, 6)
    make_isic2017(real_samples, tmp_path, ids[:3], "Training")
    make_isic2017(real_samples, tmp_path, ids[3:5], "Validation")
    make_isic2017(real_samples, tmp_path, ids[5:], "Test_v2")
    source = get_dataset_source("isic2017", tmp_path)
    assert source.part_counts() == {"Training": 3, "Validation": 2}
    with_test = get_dataset_source("isic2017", tmp_path, include_test=True)
    assert with_test.part_counts() == {"Training": 3, "Validation": 2, "Test": 1}
    assert with_test.ids == tuple(ids)


def test_pre_split_folders_pair_by_id_whatever_the_listing_order(real_samples, tmp_path, monkeypatch):
    ids = isic_ids(real_samples, 6)
    root = make_pre_split(real_samples, tmp_path, ids[:4], ids[4:])
    real_scandir = os.scandir

    def shuffled_scandir(path):  # a filesystem that lists in any order, as os.listdir may
        entries = list(real_scandir(path))
        random.Random(str(path)).shuffle(entries)
        return iter(entries)

    monkeypatch.setattr(os, "scandir", shuffled_scandir)
    source = get_dataset_source("isic2017", root)
    assert source.layout.startswith("pre-split")
    assert source.ids == tuple(ids)
    assert {p.id: p.part for p in source.pairs} == {**{i: "train" for i in ids[:4]}, **{i: "val" for i in ids[4:]}}
    for pair in source.pairs:
        assert pair.mask.name == f"{pair.id}_segmentation.png"
        assert pair.image.parent.parent == pair.mask.parent.parent


def test_pre_split_folder_whose_ids_do_not_pair_is_refused(real_samples, tmp_path):
    # Sorted positional pairing (the official loaders) would silently pair
    # image 2 with mask 3 and image 3 with mask 4 here.
    ids = isic_ids(real_samples, 4)
    images, masks = tmp_path / "train" / "images", tmp_path / "train" / "masks"
    for sample_id in ids[:3]:
        copy_isic_pair(real_samples, sample_id, images, masks)
    (masks / f"{ids[1]}_segmentation.png").rename(masks / f"{ids[3]}_segmentation.png")
    with pytest.raises(DataError) as error:
        get_dataset_source("isic2017", tmp_path)
    message = str(error.value)
    assert f"{ids[1]}.jpg: image without mask" in message
    assert "1 more problem" in message
    problems = scan_dataset("isic2017", tmp_path).problems
    assert {(p.id, p.kind) for p in problems} == {(ids[1], "unpaired"), (ids[3], "unpaired")}
    assert "mask without image" in problems[1].problem


def test_missing_mask_folder_names_it(real_samples, tmp_path):
    root = make_isic2017(real_samples, tmp_path, isic_ids(real_samples, 2))
    shutil.rmtree(root / "ISIC-2017_Training_Part1_GroundTruth")
    with pytest.raises(DataError, match=r"ISIC-2017_Training_Part1_GroundTruth: no such folder"):
        get_dataset_source("isic2017", root)


def test_root_without_any_known_layout_says_what_was_expected(tmp_path):
    expected = r"no ISIC 2018 Task 1 layout found; expected folders ISIC2018_Task1-2_Training_Input/"
    with pytest.raises(DataError, match=expected):
        get_dataset_source("isic2018", tmp_path)
    with pytest.raises(DataError, match=r"no PH2 layout found"):
        get_dataset_source("ph2", tmp_path)


def test_empty_dataset_is_an_error(tmp_path):
    (tmp_path / "ISIC-2017_Training_Data").mkdir()
    (tmp_path / "ISIC-2017_Training_Part1_GroundTruth").mkdir()
    with pytest.raises(DataError, match=r"ISIC-2017_Training_Data: no ISIC_xxxxxxx.jpg images"):
        get_dataset_source("isic2017", tmp_path)
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "masks").mkdir(parents=True)
    with pytest.raises(DataError, match="empty dataset"):
        get_dataset_source("isic2018", tmp_path)


def test_image_without_mask_is_named_and_skip_bad_drops_it(real_samples, tmp_path):
    ids = isic_ids(real_samples, 3)
    root = make_isic2017(real_samples, tmp_path, ids)
    missing = root / "ISIC-2017_Training_Part1_GroundTruth" / f"{ids[1]}_segmentation.png"
    missing.unlink()
    with pytest.raises(DataError, match=rf"{ids[1]}\.jpg: image without mask; expected .*{missing.name}"):
        get_dataset_source("isic2017", root)
    source = get_dataset_source("isic2017", root, skip_bad=True)
    assert source.ids == (ids[0], ids[2])
    assert [p.id for p in source.problems] == [ids[1]]


def test_mask_without_image_is_named(real_samples, tmp_path):
    ids = isic_ids(real_samples, 2)
    root = make_isic2017(real_samples, tmp_path, ids)
    (root / "ISIC-2017_Training_Data" / f"{ids[0]}.jpg").unlink()
    with pytest.raises(DataError, match=rf"{ids[0]}_segmentation\.png: mask without image"):
        get_dataset_source("isic2017", root)


def test_ph2_case_without_lesion_mask_is_named(real_samples, tmp_path):
    root = make_ph2(real_samples, tmp_path, ["IMD002", "IMD016"])
    shutil.rmtree(root / PH2_CASES / "IMD016" / "IMD016_lesion")
    with pytest.raises(DataError, match=r"IMD016\.bmp: image without mask; expected .*IMD016_lesion\.bmp"):
        get_dataset_source("ph2", root)
    assert get_dataset_source("ph2", root, skip_bad=True).ids == ("IMD002",)


def test_id_in_two_release_parts_is_refused(real_samples, tmp_path):
    ids = isic_ids(real_samples, 2)
    make_isic2017(real_samples, tmp_path, ids, "Training")
    make_isic2017(real_samples, tmp_path, ids[:1], "Validation")
    with pytest.raises(DataError, match=rf"id {ids[0]} also in part Training"):
        get_dataset_source("isic2017", tmp_path)
