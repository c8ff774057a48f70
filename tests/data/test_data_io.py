"""Decoding and validating single files: masks of every release format, and broken files."""

from __future__ import annotations

import numpy as np
import pytest
from data_samples import PH2_CASES, isic_ids, make_isic2017, truncate
from PIL import Image, ImageFile

from study.data.check import check_source
from study.data.imageio import (
    MaskNotBinary,
    SizeMismatch,
    UnreadableFile,
    read_image,
    read_mask,
    read_pair,
    resize_pair,
)
from study.data.layouts import get_dataset_source, scan_dataset
from study.errors import DataError


def _ph2(real_samples, case, kind):
    folder = real_samples / "PH2" / PH2_CASES / case
    if kind == "mask":
        return folder / f"{case}_lesion" / f"{case}_lesion.bmp"
    return folder / f"{case}_Dermoscopic_Image" / f"{case}.bmp"


def test_one_bit_and_rgb_ph2_masks_read_as_binary(real_samples):
    with Image.open(_ph2(real_samples, "IMD016", "mask")) as one_bit:
        with Image.open(_ph2(real_samples, "IMD002", "mask")) as rgb:
            assert (one_bit.mode, rgb.mode) == ("1", "RGB")  # the quirks this test is about
    for case in ("IMD016", "IMD002"):
        mask = read_mask(_ph2(real_samples, case, "mask"))
        assert mask.dtype == bool
        assert 0.01 < mask.mean() < 0.99
        assert mask.shape == read_image(_ph2(real_samples, case, "image")).shape[:2]


def test_zero_one_mask_is_accepted(tmp_path):
    path = tmp_path / "mask.png"
    values = np.zeros((10, 12), np.uint8)
    values[2:5, 3:9] = 1
    Image.fromarray(values).save(path)
    assert np.array_equal(read_mask(path), values.astype(bool))


def test_non_binary_mask_is_refused_with_the_count_of_values(tmp_path):
    path = tmp_path / "soft_segmentation.png"
    Image.fromarray(np.array([[0, 128, 255]] * 4, np.uint8)).save(path)
    with pytest.raises(MaskNotBinary, match=r"soft_segmentation\.png: expected a binary mask .* found 3 distinct values"):
        read_mask(path)


def test_coloured_mask_is_refused(tmp_path):
    path = tmp_path / "colour.png"
    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels[0, 0] = (255, 0, 0)
    Image.fromarray(pixels).save(path)
    with pytest.raises(MaskNotBinary, match="colour mask"):
        read_mask(path)


def test_truncated_jpeg_is_an_error_naming_the_file(real_samples, tmp_path, monkeypatch):
    sample_id = isic_ids(real_samples, 1)[0]
    root = make_isic2017(real_samples, tmp_path, [sample_id])
    image = root / "ISIC-2017_Training_Data" / f"{sample_id}.jpg"
    truncate(image)
    # Even when someone switched Pillow to pad truncated files.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(UnreadableFile, match=rf"{sample_id}\.jpg: cannot decode the image"):
        read_image(image)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_garbage_file_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "ISIC_0000000.jpg"
    path.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"ISIC_0000000\.jpg: cannot decode the image .*expected a readable image"):
        read_image(path)


def test_mask_of_another_size_is_an_error_naming_both(real_samples, tmp_path):
    ids = isic_ids(real_samples, 2)
    root = make_isic2017(real_samples, tmp_path, ids)
    mask = root / "ISIC-2017_Training_Part1_GroundTruth" / f"{ids[0]}_segmentation.png"
    with Image.open(mask) as original:
        original.resize((original.width // 2, original.height // 2), Image.Resampling.NEAREST).save(mask)
    with pytest.raises(SizeMismatch, match=rf"{mask.name}: mask is \d+x\d+ but its image {ids[0]}\.jpg is .*same size"):
        read_pair(root / "ISIC-2017_Training_Data" / f"{ids[0]}.jpg", mask)


def test_resize_keeps_masks_binary_and_close_in_area(real_samples):
    pair = read_pair(_ph2(real_samples, "IMD002", "image"), _ph2(real_samples, "IMD002", "mask"))
    image, mask = resize_pair(pair, 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert mask.shape == (64, 64) and set(np.unique(mask).tolist()) <= {0, 1}
    assert abs(mask.mean() - pair.foreground_fraction) < 0.02


def test_check_collects_every_problem_and_counts_non_binary_masks(real_samples, tmp_path):
    ids = isic_ids(real_samples, 5)
    root = make_isic2017(real_samples, tmp_path, ids)
    truncate(root / "ISIC-2017_Training_Data" / f"{ids[0]}.jpg")
    grey_mask = root / "ISIC-2017_Training_Part1_GroundTruth" / f"{ids[1]}_segmentation.png"
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(grey_mask)
    (root / "ISIC-2017_Training_Part1_GroundTruth" / f"{ids[2]}_segmentation.png").unlink()
    report = check_source(scan_dataset("isic2017", root), workers=2)
    assert report.pairs_good == 2
    assert sorted(p.kind for p in report.problems) == ["non-binary", "unpaired", "unreadable"]
    assert report.non_binary_masks == 1
    assert not report.ok
    with pytest.raises(DataError):
        report.raise_if_bad()
    text = report.format()
    assert "3 problem(s)" in text and f"{ids[0]}.jpg: cannot decode" in text
    skipping = check_source(get_dataset_source("isic2017", root, skip_bad=True), skip_bad=True, workers=1)
    assert skipping.ok and skipping.pairs_good == 2
    assert "skipped 3 bad pair(s)" in skipping.format()  # the unpaired one included
