"""Datasets as data: the paper's in variants/datasets.toml, a lab's own in its study folder; the
reader is chosen by the declared layout kind, never by the dataset's name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from study.datasets import LAYOUTS, dataset_info, known_datasets, read_datasets
from study.errors import ConfigError
from study.own_study import init_study

FOLDERS = """[datasets.mylesions]
title = "Our clinic's lesions"
layout = "folders"
images = "img"
masks = "gt"
mask_name = "{id}_mask.png"
pairs = 60
"""


def test_the_paper_datasets_are_declared_with_their_layouts():
    known = known_datasets()
    assert {n: i.layout for n, i in known.items()} == {
        "isic2017": "isic-release", "isic2018": "isic-release", "ph2": "ph2", "synthetic": "synthetic"}
    assert [p.name for p in known["isic2017"].parts] == ["Training", "Validation", "Test"]
    assert [p.default for p in known["isic2018"].parts] == [True, True, False]
    assert known["isic2017"].pairs == 2150 and not known["synthetic"].needs_root


@pytest.mark.parametrize("body,message", [
    ('[datasets.x]\nlayout = "zip"\n', r"\[datasets.x\] field 'layout': 'zip' is not a layout the readers know"),
    ('[datasets.x]\nlayout = "folders"\ncolour = 1\n', r"\[datasets.x\]: unknown field\(s\) colour"),
    ('[datasets.x]\nlayout = "folders"\nmask_name = "mask.png"\n', r"field 'mask_name': expected a file name with"),
    ('[datasets.x]\nlayout = "isic-release"\n', r"layout \"isic-release\" needs its `parts`"),
    ('[datasets.X-1]\nlayout = "folders"\n', r"\[datasets.X-1\]: the name must be lower-case"),
    ('[datasets.x]\nlayout = "folders"\npairs = 0\n', r"field 'pairs': expected a positive whole number"),
    ('[sets.x]\n', r"unknown section\(s\) sets"),
])
def test_declaration_mistakes_are_one_clear_error_naming_file_and_field(tmp_path, body, message):
    path = tmp_path / "datasets.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message):
        read_datasets(path)
    assert set(LAYOUTS) == {"isic-release", "ph2", "folders", "synthetic"}


def test_a_study_folder_adds_a_dataset_and_may_not_redefine_the_paper_ones(tmp_path):
    init_study(tmp_path / "lab")
    (tmp_path / "lab" / "datasets.toml").write_text(FOLDERS)
    known = known_datasets(own=tmp_path / "lab")
    assert known["mylesions"].layout == "folders" and "isic2017" in known
    (tmp_path / "lab" / "datasets.toml").write_text('[datasets.ph2]\nlayout = "folders"\n')
    with pytest.raises(ConfigError, match=r"the paper's study already declares 'ph2'"):
        known_datasets(own=tmp_path / "lab")


@pytest.mark.slow
def test_a_folders_dataset_of_real_images_is_read_checked_and_trained(real_samples, tmp_path):
    # The 60 real ISIC 2017 samples, laid out as a lab's own dataset: img/ID.jpg and gt/ID_mask.png.
    root = tmp_path / "clinic"
    (root / "img").mkdir(parents=True)
    (root / "gt").mkdir()
    release = real_samples / "ISIC2017"
    for image in sorted((release / "ISIC-2017_Training_Data").glob("ISIC_*.jpg")):
        shutil.copy(image, root / "img" / image.name)
        mask = release / "ISIC-2017_Training_Part1_GroundTruth" / f"{image.stem}_segmentation.png"
        shutil.copy(mask, root / "gt" / f"{image.stem}_mask.png")
    lab = tmp_path / "lab"
    init_study(lab)
    (lab / "datasets.toml").write_text(FOLDERS)
    env = {k: v for k, v in os.environ.items() if k not in ("STUDY_RESULTS", "STUDY_DIR")}

    def study(*args):
        return subprocess.run([sys.executable, "-m", "study", "--study", str(lab), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)

    check = study("data", "check", "mylesions", "--root", f"mylesions={root}")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "60" in check.stdout and "img/ and gt/ ({id}_mask.png)" in check.stdout
    (root / "gt" / "ISIC_0000000_mask.png").unlink()  # an image without its mask: named, with the expected file
    broken = study("data", "check", "mylesions", "--root", f"mylesions={root}")
    assert broken.returncode != 0 and "ISIC_0000000_mask.png" in broken.stdout + broken.stderr
    shutil.copy(release / "ISIC-2017_Training_Part1_GroundTruth" / "ISIC_0000000_segmentation.png",
                root / "gt" / "ISIC_0000000_mask.png")
    run = study("run", "mine-paper", "--seeds", "1", "--datasets", "mylesions", "--root", f"mylesions={root}",
                "--set", "train.epochs=1", "--set", "data.size=64")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 completed" in run.stdout
    assert dataset_info("isic2017").layout == "isic-release"  # this process never pointed at the lab
