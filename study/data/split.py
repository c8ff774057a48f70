"""The paper's random 7:3 train/test split, as a citable manifest of image ids.

The split is defined without any random number generator, so it reads the
same in every numpy version and any language:

    order the ids by sha256("<seed>:<id>") (hex digest, ascending);
    the first round_half_up(N * train_fraction) ids are train, the rest test.

It therefore depends only on the set of ids and the seed, not on the order
files were listed, the machine, or the cache. The manifest is written the
first time (next to the cache, or where the user says) and read back after;
a user may supply their own. A holdout part for model selection is carved out
of the train ids the same way, with a different salt.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

from study.errors import DataError

DEFAULT_SPLIT_SEED = 0
DEFAULT_TRAIN_FRACTION = 0.7
MANIFEST_KIND = "ultralbm-study split manifest"
MANIFEST_VERSION = 1
SPLIT_METHOD = (
    'ids ordered by the hex sha256 of "<seed>:<id>"; the first round_half_up(N * train_fraction) are train, '
    "the rest test"
)
HOLDOUT_METHOD = (
    'train ids ordered by the hex sha256 of "holdout:<seed>:<id>"; the first round_half_up(N * fraction) '
    "(at least 1) are the holdout, the rest fit"
)


@dataclass(frozen=True)
class Split:
    dataset: str
    train: tuple[str, ...]  # sorted
    test: tuple[str, ...]  # sorted
    seed: int | None  # None for a user's manifest that does not state one
    train_fraction: float | None
    method: str

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.train + self.test))


@dataclass(frozen=True)
class Holdout:
    fit: tuple[str, ...]  # sorted: what the model trains on
    holdout: tuple[str, ...]  # sorted: what selects the epoch / the hyper-parameters
    seed: int
    fraction: float
    method: str = HOLDOUT_METHOD


def ids_digest(ids: Iterable[str]) -> str:
    """sha256 of the sorted ids, one per line: names an id list in file names and manifests."""
    return hashlib.sha256("".join(f"{i}\n" for i in sorted(ids)).encode()).hexdigest()


def _count(total: int, fraction: float) -> int:
    # Exact decimal arithmetic: float 0.7 * 2150 is 1504.999..., and floor would lose an image.
    return math.floor(total * Fraction(str(fraction)) + Fraction(1, 2))


def _hash_order(ids: Iterable[str], salt: str) -> list[str]:
    return sorted(set(ids), key=lambda i: hashlib.sha256(f"{salt}{i}".encode()).hexdigest())


def _check_ids(ids: Sequence[str]) -> None:
    if len(set(ids)) != len(ids):
        raise DataError("split: duplicate ids in the id list; expected each image once")
    if not ids:
        raise DataError("split: empty id list; expected the ids of a dataset")


def make_split(
    ids: Sequence[str],
    seed: int = DEFAULT_SPLIT_SEED,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    dataset: str = "",
) -> Split:
    """The deterministic split of ``ids`` (any order) for ``seed``."""
    ids = list(ids)
    _check_ids(ids)
    if not 0 < train_fraction < 1:
        raise DataError(f"split: train fraction must be between 0 and 1, got {train_fraction}")
    ordered = _hash_order(ids, f"{seed}:")
    n_train = _count(len(ordered), train_fraction)
    return Split(
        dataset=dataset,
        train=tuple(sorted(ordered[:n_train])),
        test=tuple(sorted(ordered[n_train:])),
        seed=seed,
        train_fraction=train_fraction,
        method=SPLIT_METHOD,
    )


def carve_holdout(train_ids: Sequence[str], fraction: float = 0.2, seed: int = DEFAULT_SPLIT_SEED) -> Holdout:
    """Split train ids into fit and holdout parts, deterministically from ``seed``."""
    train_ids = list(train_ids)
    _check_ids(train_ids)
    if not 0 < fraction < 1:
        raise DataError(f"holdout: fraction must be between 0 and 1, got {fraction}")
    if len(train_ids) < 2:
        raise DataError(f"holdout: needs at least 2 train ids, got {len(train_ids)}")
    ordered = _hash_order(train_ids, f"holdout:{seed}:")
    n_holdout = min(max(_count(len(ordered), fraction), 1), len(ordered) - 1)
    return Holdout(
        fit=tuple(sorted(ordered[n_holdout:])), holdout=tuple(sorted(ordered[:n_holdout])), seed=seed, fraction=fraction
    )


# Folder names of each supported layout -> the part of the release they are.
RELEASE_PARTS = {"Training": "train", "train": "train", "Validation": "validation", "val": "validation",
                 "Test": "test", "test": "test"}


@dataclass(frozen=True)
class ReleaseSplit:
    """The partition a release ships: train, validation (may be empty) and test.

    Where the release's Test folders are absent, Validation is the test part (``test_part`` says so).
    """

    split: Split
    validation: tuple[str, ...]
    test_part: str  # "Test" or "Validation (no Test folders)"

    def describe(self) -> dict:
        return {"train": len(self.split.train), "validation": len(self.validation), "test": len(self.split.test),
                "test_part": self.test_part, "method": self.split.method}


def split_from_release(dataset: str, parts: dict[str, str]) -> ReleaseSplit:
    """The release's own partition from each id's folder (``{id: "Training" | "Validation" | "Test"}``,
    or a pre-split download's ``train`` / ``val`` / ``test``)."""
    unknown = sorted({p for p in parts.values() if p not in RELEASE_PARTS})
    if unknown:
        raise DataError(f"{dataset}: folder(s) {unknown} are not part of a known release layout")
    by_part: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for sample_id, part in parts.items():
        by_part[RELEASE_PARTS[part]].append(sample_id)
    train, validation, test = (tuple(sorted(by_part[k])) for k in ("train", "validation", "test"))
    folders = sorted(set(parts.values()))
    if not train:
        raise DataError(f"{dataset}: folders {folders} give no training ids; expected the release's Training part")
    test_part = "Test"
    if not test:
        if not validation:
            raise DataError(f"{dataset}: folders {folders} hold only the training part; the release split needs "
                            "its Validation or Test folders (or use data.split = \"random\")")
        test, validation, test_part = validation, (), "Validation (no Test folders)"
    method = f"the release's own partition: train = Training, test = {test_part}"
    if validation:
        method += ", validation = Validation"
    return ReleaseSplit(Split(dataset, train, test, None, None, method), validation, test_part)


def split_from_parts(dataset: str, parts: dict[str, str]) -> Split:
    """The release's partition as a train/test split (``data split --from-folders``)."""
    return split_from_release(dataset, parts).split


# --- manifests ----------------------------------------------------------------------------


def default_manifest_path(
    dataset: str,
    ids: Iterable[str],
    seed: int,
    cache_dir: str | os.PathLike | None = None,
    label: str | None = None,
) -> Path:
    """``<cache root>/<dataset>/splits/<dataset>-seed<seed>-<first 12 hex of the id-list sha256>.json``.

    ``label`` replaces ``seed<seed>`` for splits not made from a seed (``folders``).
    """
    from study.data.cache import cache_root

    name = f"{dataset}-{label or f'seed{seed}'}-{ids_digest(ids)[:12]}.json"
    return cache_root(cache_dir) / dataset / "splits" / name


def manifest_dict(split: Split) -> dict:
    ids = split.ids
    return {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "dataset": split.dataset,
        "seed": split.seed,
        "train_fraction": split.train_fraction,
        "method": split.method,
        "n_ids": len(ids),
        "n_train": len(split.train),
        "n_test": len(split.test),
        "ids_sha256": ids_digest(ids),
        "train": list(split.train),
        "test": list(split.test),
    }


def write_manifest(split: Split, path: str | os.PathLike) -> Path:
    """JSON (any suffix but .csv) or CSV with columns ``id,part``; written atomically."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["id", "part"])
        writer.writerows([i, "train"] for i in split.train)
        writer.writerows([i, "test"] for i in split.test)
        text = buffer.getvalue()
    else:
        text = json.dumps(manifest_dict(split), indent=1) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
    return path


def read_manifest(path: str | os.PathLike, dataset: str = "") -> Split:
    """A manifest written by ``write_manifest`` or by hand (JSON with train/test lists, or CSV id,part)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"{path}: cannot read split manifest ({exc.strerror})") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        if rows and not {"id", "part"} <= set(rows[0]):
            raise DataError(f"{path}: expected CSV columns 'id,part', found {','.join(rows[0])}")
        bad = [row["part"] for row in rows if row["part"] not in ("train", "test")]
        if bad:
            raise DataError(f"{path}: part {bad[0]!r}; expected 'train' or 'test'")
        train = [row["id"] for row in rows if row["part"] == "train"]
        test = [row["id"] for row in rows if row["part"] == "test"]
        seed, fraction, method = None, None, "user manifest (CSV)"
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc}); expected a split manifest") from None
        if not isinstance(data, dict) or not isinstance(data.get("train"), list) or not isinstance(data.get("test"), list):
            raise DataError(f"{path}: expected a JSON object with 'train' and 'test' lists of ids")
        train, test = [str(i) for i in data["train"]], [str(i) for i in data["test"]]
        seed, fraction = data.get("seed"), data.get("train_fraction")
        method = data.get("method", "user manifest")
        dataset = dataset or data.get("dataset", "")
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise DataError(
            f"{path}: {len(overlap)} id(s) in both train and test (first: {overlap[0]}); expected disjoint parts"
        )
    for name, part in (("train", train), ("test", test)):
        if len(set(part)) != len(part):
            raise DataError(f"{path}: duplicate ids in {name}; expected each id once")
        if not part:
            raise DataError(f"{path}: no {name} ids; expected a non-empty {name} list")
    return Split(dataset, tuple(sorted(train)), tuple(sorted(test)), seed, fraction, method)


def validate_split(split: Split, available_ids: Iterable[str], where: str) -> None:
    """DataError when the split names ids the dataset does not have."""
    missing = sorted(set(split.ids) - set(available_ids))
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DataError(
            f"{where}: {len(missing)} id(s) of the split are not in the dataset ({shown}); "
            "expected a manifest made for this dataset"
        )


def ensure_split(
    dataset: str,
    ids: Sequence[str],
    *,
    seed: int = DEFAULT_SPLIT_SEED,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    manifest: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Split, Path, bool]:
    """The split for ``ids``: read from ``manifest`` (or the default path) when it exists, else made and written.

    Returns the split, the manifest path and whether it was written now.
    """
    path = Path(manifest) if manifest is not None else default_manifest_path(dataset, ids, seed, cache_dir)
    if path.is_file():
        split = read_manifest(path, dataset)
        validate_split(split, ids, str(path))
        return split, path, False
    split = make_split(ids, seed, train_fraction, dataset)
    write_manifest(split, path)
    return split, path, True
