"""Real-data protocol: the release's own partition, training past bad files, and reporting
runs made with overrides (issue 15, items 1, 4 and 5)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from study.config import RunConfig
from study.data.split import split_from_release
from study.errors import DataError
from study.report.collect import collect_table
from study.store.runs import Store
from study.variants import find_row, load_tables

ISIC17 = ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth")
PARTS17 = {"Training": ISIC17, "Validation": ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth"),
           "Test": ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth")}


def cli(*args, results=None):
    argv = [sys.executable, "-m", "study", *args] + (["--results", str(results)] if results else [])
    return subprocess.run(argv, cwd=REPO_ROOT, env=dict(os.environ), text=True, capture_output=True, timeout=900)


def release_root(real_samples, tmp_path, counts: dict[str, int]):
    """The real ISIC 2017 samples laid out as a release with the given part sizes."""
    source = real_samples / "ISIC2017"
    images = sorted((source / ISIC17[0]).glob("ISIC_*.jpg"))
    root = tmp_path / "isic2017"
    start = 0
    for part, n in counts.items():
        image_dir, mask_dir = (root / name for name in PARTS17[part])
        image_dir.mkdir(parents=True)
        mask_dir.mkdir(parents=True)
        for image in images[start:start + n]:
            shutil.copy(image, image_dir / image.name)
            mask = f"{image.stem}_segmentation.png"
            shutil.copy(source / ISIC17[1] / mask, mask_dir / mask)
        start += n
    return root


def test_release_partition_rules():
    split = split_from_release("isic2017", {"a": "Training", "b": "Training", "c": "Validation", "d": "Test"})
    assert (split.split.train, split.validation, split.split.test, split.test_part) == (("a", "b"), ("c",), ("d",),
                                                                                         "Test")
    split = split_from_release("isic2018", {"a": "Training", "c": "Validation"})
    assert (split.split.test, split.validation, split.test_part) == (("c",), (), "Validation (no Test folders)")
    split = split_from_release("isic2017", {"a": "train", "c": "val"})  # MALUNet-style folders
    assert (split.split.train, split.split.test) == (("a",), ("c",))
    with pytest.raises(DataError, match="hold only the training part"):
        split_from_release("isic2017", {"a": "Training"})


def test_release_split_is_part_of_a_runs_identity_and_old_hashes_stay():
    row = find_row("ultralbm")
    default = row.run_config("isic2017", "paper")
    release = row.run_config("isic2017", "paper", {"data": {"split": "release"}})
    assert default.hash != release.hash
    assert "split" not in default.identity()["data"]  # runs stored before the field existed keep their hash
    assert RunConfig.from_dict(release.to_dict()).hash == release.hash


def test_data_split_from_folders_on_the_release_layout(real_samples, tmp_path, cache_dir):
    root = release_root(real_samples, tmp_path, {"Training": 40, "Validation": 20})
    out = cli("data", "split", "isic2017", "--root", str(root), "--from-folders", "--out", str(tmp_path / "m.json"))
    assert out.returncode == 0, out.stderr
    assert "40 Training / 0 Validation / 20 test (Validation (no Test folders))" in out.stdout
    assert "40 train / 20 test of 60 ids" in out.stdout
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert len(manifest["train"]) == 40 and len(manifest["test"]) == 20


@pytest.mark.slow
def test_training_on_the_release_split_records_its_parts(real_samples, tmp_path, cache_dir):
    root = release_root(real_samples, tmp_path, {"Training": 36, "Validation": 12, "Test": 12})
    out = cli("train", "--variant", "ultralbm", "--dataset", "isic2017", "--root", f"isic2017={root}",
              "--set", "data.split=release", "--set", "train.selection=holdout", "--set", "data.size=64",
              "--set", "train.epochs=1", "--set", "data.external=[]", "--threads", "1", results=tmp_path / "store")
    assert out.returncode == 0, out.stdout + out.stderr
    (record,) = Store(tmp_path / "store").records()
    split = record.details["data"]["split"]
    assert (split["train"], split["validation"], split["test"], split["test_part"]) == (36, 12, 12, "Test")
    assert record.details["data"]["holdout"]["holdout"] == 12  # the Validation part selects
    assert record.pooled["test"].images == 12


@pytest.mark.slow
def test_a_truncated_jpeg_trains_with_skip_bad_and_is_listed(real_samples, tmp_path, cache_dir):
    root = release_root(real_samples, tmp_path, {"Training": 30})
    victim = sorted((root / ISIC17[0]).glob("*.jpg"))[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])  # truncated mid-file
    args = ["train", "--variant", "ultralbm", "--dataset", "isic2017", "--root", f"isic2017={root}",
            "--set", "data.size=64", "--set", "train.epochs=1", "--set", "data.external=[]", "--threads", "1"]
    strict = cli(*args, results=tmp_path / "store")
    assert strict.returncode == 2 and victim.name in strict.stderr, strict.stderr
    assert not list(Store(tmp_path / "store").keys())  # the strict default left no run folder
    skipping = cli(*args, "--set", "data.skip_bad=true", results=tmp_path / "store")
    assert skipping.returncode == 0, skipping.stdout + skipping.stderr
    (record,) = Store(tmp_path / "store").records()
    skipped = record.details["data"]["skipped"]["isic2017"]
    assert [s["id"] for s in skipped] == [victim.stem]
    assert record.config["data"]["skip_bad"] is True


@pytest.mark.slow
def test_a_table_run_with_overrides_is_reported_with_them(tmp_path):
    store_root = tmp_path / "store"
    sets = ["--set", "data.synthetic_count=40", "--set", "train.epochs=2"]
    run = cli("run", "table6", "--seeds", "1", "--profile", "smoke", *sets, "--threads", "1", results=store_root)
    assert run.returncode == 0, run.stdout + run.stderr
    table = load_tables()["table6"]
    plain = collect_table(table, Store(store_root), "auto")
    assert plain.profile == "paper" and not any(r.cells.get("synthetic_dsc") for r in plain.rows)
    overrides = {"data": {"synthetic_count": 40}, "train": {"epochs": 2}}
    td = collect_table(table, Store(store_root), "auto", overrides)
    assert td.profile == "smoke"
    assert all(r.cells["synthetic_dsc"].n == 1 for r in td.rows)
    out = cli("report", "--tables", "6", "--no-audit", "--no-figure", *sets, "--out", str(tmp_path / "rep"),
              results=store_root)
    assert out.returncode == 0, out.stderr
    tex = (tmp_path / "rep" / "table6.tex").read_text()
    assert "overrides data.synthetic\\_count=40, train.epochs=2" in tex
    bad = cli("report", "--profile", "nosuch", results=store_root)
    assert bad.returncode == 2 and "defined in variants/base.toml: paper, smoke" in bad.stderr


@pytest.mark.slow
def test_real_runs_store_the_challenges_metrics_and_predictions_for_fig4(real_samples, tmp_path, cache_dir):
    """Two Table 1 models on the real ISIC 2017 samples: challenge metrics in the record, a challenge
    table and Fig. 4 in the report, drawn from the stored predictions."""
    from study.challenge import challenge_scores
    from study.store.per_image import read_counts
    from study.store.predictions import read_predictions

    sets = ["--set", "data.size=64", "--set", "train.epochs=1", "--set", "data.external=[]"]
    root = f"isic2017={real_samples / 'ISIC2017'}"
    store_root = tmp_path / "store"
    for variant in ("ultralbm", "ultralbm-t"):
        out = cli("train", "--variant", variant, "--dataset", "isic2017", "--root", root, *sets, "--threads", "1",
                  results=store_root)
        assert out.returncode == 0, out.stdout + out.stderr
    store = Store(store_root)
    for record in store.records():
        assert record.completed
        ids, counts = read_counts(store.challenge_path(record.key, "test"))
        assert len(ids) == 18 and set(record.challenge["test"]) >= {"jaccard", "threshold_jaccard", "dice"}
        assert record.challenge["test"] == pytest.approx(challenge_scores(counts), abs=1e-12)
        pred_ids, masks = read_predictions(store.predictions_path(record.key))
        assert pred_ids == ids and masks.shape == (18, 64, 64)
        assert store.predictions_path(record.key).stat().st_size < 20_000
    report = cli("report", "--tables", "1", "--profile", "paper", *sets, "--no-audit", "--out", str(tmp_path / "rep"),
                 results=store_root)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "Fig. 4: 3 ISIC 2017 test case(s), best, median and worst per-image Dice of UltraLBM-UNet" \
        in report.stdout
    assert (tmp_path / "rep" / "fig4.png").stat().st_size > 10_000
    challenge = (tmp_path / "rep" / "challenge.md").read_text()
    assert "UltraLBM-UNet" in challenge and "Thr. Jaccard" in challenge
    one = next(iter(Store(store_root).records()))
    chosen = cli("report", "--tables", "1", "--profile", "paper", *sets, "--no-audit", "--cases", "nosuch",
                 "--out", str(tmp_path / "rep2"), results=store_root)
    assert chosen.returncode == 2 and "--cases: nosuch not among the 18 test images" in chosen.stderr
    assert one.completed
