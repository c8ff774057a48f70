"""The 7:3 split: deterministic from the id set and the seed, in any process; manifests; holdout."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from study.data.layouts import get_dataset_source
from study.data.split import (
    carve_holdout,
    ensure_split,
    make_split,
    read_manifest,
    split_from_parts,
    write_manifest,
)
from study.errors import DataError


def _ids(count):
    return [f"ISIC_{i:07d}" for i in range(count)]


def test_split_is_7_to_3_disjoint_and_covers_every_id():
    ids = _ids(60)
    split = make_split(ids, seed=0)
    assert (len(split.train), len(split.test)) == (42, 18)
    assert not set(split.train) & set(split.test)
    assert split.ids == tuple(ids)
    assert list(split.train) == sorted(split.train)


@pytest.mark.parametrize("count, train", [(2150, 1505), (2694, 1886), (200, 140), (15, 11)])
def test_split_sizes_round_half_up(count, train):
    # 0.7 * 2150 is 1504.999... in floating point: the split counts exactly.
    assert len(make_split(_ids(count)).train) == train


def test_split_depends_only_on_the_id_set_and_the_seed():
    ids = _ids(100)
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    assert make_split(ids, 3) == make_split(shuffled, 3)
    assert make_split(ids, 3).train != make_split(ids, 4).train


def test_split_follows_its_published_definition(real_samples):
    # The definition a user can re-implement anywhere: order ids by
    # sha256("<seed>:<id>"), the first round_half_up(0.7 N) are train.
    ids = get_dataset_source("isic2017", real_samples / "ISIC2017").ids
    ordered = sorted(ids, key=lambda i: hashlib.sha256(f"0:{i}".encode()).hexdigest())
    assert make_split(ids, 0).train == tuple(sorted(ordered[:42]))


def test_split_is_identical_in_another_process(real_samples):
    ids = get_dataset_source("isic2017", real_samples / "ISIC2017").ids
    program = (
        "import json, sys; from study.data import get_dataset_source, make_split;"
        "s = make_split(get_dataset_source('isic2017', sys.argv[1]).ids, 0);"
        "print(json.dumps([s.train, s.test]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, str(real_samples / "ISIC2017")], capture_output=True, text=True, check=True,
        cwd=REPO_ROOT,
    )
    here = make_split(ids, 0)
    assert json.loads(result.stdout) == [list(here.train), list(here.test)]


def test_manifest_is_written_once_then_reused(tmp_path):
    ids = _ids(30)
    split, path, written = ensure_split("isic2017", ids, seed=5, cache_dir=tmp_path)
    assert written and path.parent == tmp_path / "isic2017" / "splits"
    assert path.name.startswith("isic2017-seed5-")
    stamp = path.stat().st_mtime_ns
    again, again_path, written_again = ensure_split("isic2017", list(reversed(ids)), seed=5, cache_dir=tmp_path)
    assert (again, again_path, written_again) == (split, path, False)
    assert path.stat().st_mtime_ns == stamp
    record = json.loads(path.read_text())
    assert record["seed"] == 5 and record["n_train"] == 21 and record["method"].startswith("ids ordered by")


def test_user_manifest_in_csv_is_used_and_checked(tmp_path):
    ids = _ids(10)
    manifest = tmp_path / "mine.csv"
    manifest.write_text("id,part\n" + "".join(f"{i},train\n" for i in ids[:6]) + f"{ids[6]},test\n")
    split, path, written = ensure_split("isic2017", ids, manifest=manifest)
    assert not written and split.train == tuple(ids[:6]) and split.test == (ids[6],)
    manifest.write_text(f"id,part\n{ids[0]},train\nISIC_9999999,test\n")
    with pytest.raises(DataError, match=r"mine\.csv: 1 id\(s\) of the split are not in the dataset \(ISIC_9999999\)"):
        ensure_split("isic2017", ids, manifest=manifest)
    manifest.write_text(f"id,part\n{ids[0]},train\n{ids[0]},test\n")
    with pytest.raises(DataError, match="in both train and test"):
        read_manifest(manifest)


def test_manifest_round_trips_in_json_and_csv(tmp_path):
    split = make_split(_ids(20), seed=2, dataset="ph2")
    assert read_manifest(write_manifest(split, tmp_path / "s.json")) == split
    from_csv = read_manifest(write_manifest(split, tmp_path / "s.csv"), "ph2")
    assert (from_csv.train, from_csv.test) == (split.train, split.test)


def test_holdout_is_carved_from_train_deterministically():
    train = make_split(_ids(100)).train
    holdout = carve_holdout(train, fraction=0.2, seed=1)
    assert len(holdout.holdout) == 14 and len(holdout.fit) == 56
    assert sorted(holdout.fit + holdout.holdout) == sorted(train)
    assert carve_holdout(list(reversed(train)), 0.2, 1) == holdout
    assert carve_holdout(train, 0.2, 2).holdout != holdout.holdout
    # not simply the first ids of the 7:3 order
    assert carve_holdout(train, 0.2, 0).holdout != make_split(train, 0, 0.8).test


def test_pre_split_folders_can_be_the_split():
    split = split_from_parts("isic2017", {"a": "train", "b": "train", "c": "val"})
    assert (split.train, split.test, split.seed) == (("a", "b"), ("c",), None)
    with pytest.raises(DataError, match="hold only the training part"):
        split_from_parts("isic2017", {"a": "train"})
