"""``python -m study data ...``: the issue's acceptance commands and the error paths."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REAL_SAMPLE_PAIRS, REPO_ROOT
from data_samples import isic_ids, make_isic2017, truncate

from study.cli import main


@pytest.fixture(autouse=True)
def _own_cache(cache_dir):
    """Every CLI test here gets its own cache (conftest's cache_dir)."""
    return cache_dir


@pytest.mark.parametrize("dataset, folder, pairs", REAL_SAMPLE_PAIRS)
def test_check_reports_the_pair_count_of_each_sample(real_samples, capsys, dataset, folder, pairs):
    assert main(["data", "check", dataset, "--root", str(real_samples / folder)]) == 0
    out = capsys.readouterr().out
    assert f"pairs:        {pairs} (" in out
    assert "non-binary:   0 mask(s)" in out and "problems:     none" in out
    assert "image size:   width" in out and "lesion area:  min" in out


def test_check_runs_as_a_module(real_samples):
    result = subprocess.run(
        [sys.executable, "-m", "study", "data", "check", "ph2", "--root", str(real_samples / "PH2")],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "pairs:        20 (PH2 20)" in result.stdout


def test_check_of_a_bad_root_fails_with_one_line(tmp_path, capsys):
    assert main(["data", "check", "isic2017", "--root", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "absent" in err


def test_check_lists_bad_pairs_and_skip_bad_skips_them(real_samples, tmp_path, capsys):
    ids = isic_ids(real_samples, 3)
    root = make_isic2017(real_samples, tmp_path / "isic", ids)
    truncate(root / "ISIC-2017_Training_Data" / f"{ids[2]}.jpg")
    assert main(["data", "check", "isic2017", "--root", str(root)]) == 2
    captured = capsys.readouterr()
    assert "1 problem(s)" in captured.out and f"{ids[2]}.jpg" in captured.err
    assert main(["data", "check", "isic2017", "--root", str(root), "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "pairs:        2 (" in out and "skipped 1 bad pair(s)" in out and "[unreadable] " in out


def test_root_from_the_environment(real_samples, monkeypatch, capsys):
    monkeypatch.setenv("STUDY_DATA_ISIC2018", str(real_samples / "ISIC2018"))
    assert main(["data", "check", "isic2018"]) == 0
    assert "(from STUDY_DATA_ISIC2018)" in capsys.readouterr().out


def test_cache_and_split_commands(real_samples, cache_dir, tmp_path, capsys):
    assert main(["data", "cache", "isic2018", "--root", str(real_samples / "ISIC2018"), "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "pairs:   12 at 32x32 px" in out and str(cache_dir / "isic2018") in out
    manifest = tmp_path / "split.json"
    assert main(["data", "split", "isic2018", "--root", str(real_samples / "ISIC2018"), "--out", str(manifest)]) == 0
    assert "8 train / 4 test of 12 ids, seed 0" in capsys.readouterr().out
    assert json.loads(manifest.read_text())["n_test"] == 4
    assert main(["data", "split", "isic2018", "--root", str(real_samples / "ISIC2018"), "--out", str(manifest)]) == 0
    assert "existing, reused" in capsys.readouterr().out


def test_synthetic_needs_no_root(capsys, cache_dir):
    assert main(["data", "cache", "synthetic", "--size", "16", "--count", "5"]) == 0
    assert "pairs:   5 at 16x16 px" in capsys.readouterr().out
    assert main(["data", "split", "synthetic", "--count", "10"]) == 0
    assert "7 train / 3 test of 10 ids" in capsys.readouterr().out


def test_split_from_pre_split_folders(real_samples, tmp_path, capsys):
    from data_samples import make_pre_split

    ids = isic_ids(real_samples, 5)
    root = make_pre_split(real_samples, tmp_path / "pre", ids[:3], ids[3:])
    out_path = tmp_path / "folders.csv"
    assert main(["data", "split", "isic2017", "--root", str(root), "--from-folders", "--out", str(out_path)]) == 0
    assert "3 train / 2 test of 5 ids" in capsys.readouterr().out
    assert out_path.read_text().splitlines()[0] == "id,part"


def test_unknown_dataset_is_refused(capsys):
    assert main(["data", "check", "isic2019"]) == 2
    assert "expected one of: isic2017, isic2018, ph2, synthetic" in capsys.readouterr().err


def test_split_with_skip_bad_leaves_out_pairs_that_do_not_decode(real_samples, tmp_path, capsys):
    ids = isic_ids(real_samples, 4)
    root = make_isic2017(real_samples, tmp_path / "isic", ids)
    truncate(root / "ISIC-2017_Training_Data" / f"{ids[0]}.jpg")
    manifest = tmp_path / "split.json"
    assert main(["data", "split", "isic2017", "--root", str(root), "--skip-bad", "--out", str(manifest)]) == 0
    assert "skipped:  1 bad pair(s)" in capsys.readouterr().out
    assert ids[0] not in json.loads(manifest.read_text())["train"] + json.loads(manifest.read_text())["test"]
