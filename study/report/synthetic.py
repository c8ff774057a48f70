"""Stores of constructed records with known values: for the tests and for trying the report.

A constructed run is written where the report looks for it: the run folder of
``row.run_config(dataset, profile).hash`` and the seed, with a ``record.json``
in the harness's format and, when per-image counts are given, a
``per_image_test.csv``. Nothing is trained.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from study.metrics import PooledMetrics
from study.store.atomic import atomic_write_bytes
from study.store.per_image import counts_csv
from study.store.record import Counts, RunKey, RunRecord, Status
from study.store.runs import Store
from study.variants import Row, Table

PIXELS = 64 * 64  # pixels per constructed image


def counts_for_dice(dice: np.ndarray, foreground: int = 1000, pixels: int = PIXELS) -> np.ndarray:
    """(n, 4) TP/FP/FN/TN counts whose per-image Dice is ``dice`` (to the nearest pixel).

    Each image has ``foreground`` true-positive pixels and equal false
    positives and false negatives: Dice = tp / (tp + e) with e = fp = fn.
    """
    dice = np.clip(np.asarray(dice, dtype=np.float64), 0.05, 1.0)
    errors = np.rint(foreground * (1 - dice) / dice).astype(np.int64)
    tp = np.full_like(errors, foreground)
    tn = pixels - tp - 2 * errors
    if (tn < 0).any():
        raise ValueError("counts_for_dice: Dice too low for the image size")
    return np.stack([tp, errors, errors, tn], axis=1)


def write_run(
    store: Store,
    row: Row,
    dataset: str | None,
    seed: int,
    profile: str = "smoke",
    *,
    iou: float | None = None,
    dsc: float | None = None,
    counts: np.ndarray | None = None,
    ids: list[str] | None = None,
    status: str = Status.COMPLETED.value,
    reason: str | None = None,
    params: int | None = None,
    gmacs: float | None = None,
    external: dict[str, dict] | None = None,
) -> Path:
    """Write one run record (fractions, as the harness stores them) and return its folder.

    Give either pooled ``iou``/``dsc`` or per-image ``counts`` (then the pooled
    metrics are computed from them, as training does, and the counts written).
    ``external`` maps a dataset to its metrics dict, e.g. {"ph2": {"iou": .., "dsc": ..}}.
    ``params`` and ``gmacs`` default to the model's own count (as a run records it).
    """
    config = row.run_config(dataset, profile)
    key = RunKey(config.hash, seed)
    record = {
        "run_id": key.id, "config_hash": config.hash, "seed": seed, "status": status,
        "reason": reason, "rows": [row.id], "config": config.to_dict(), "epochs_done": config.train.epochs,
        "history": [{"epoch": e + 1, "train_loss": 1.0 / (e + 1)} for e in range(config.train.epochs)],
    }
    pooled = {}
    if status == Status.COMPLETED.value:
        if counts is not None:
            ids = ids if ids is not None else [f"img{i:04d}" for i in range(len(counts))]
            test = PooledMetrics.from_counts(counts).as_dict()
        else:
            if (dsc is None) == (iou is None):
                # one pooled confusion matrix has one IoU for each DSC: both cannot be chosen
                raise ValueError("write_run: give iou or dsc (not both), or counts, for a completed run")
            dsc = dsc if dsc is not None else 2 * iou / (1 + iou)
            ids, counts = ["pooled"], _counts_near(dsc)  # one row standing for the pooled matrix
            test = PooledMetrics.from_counts(counts).as_dict()  # what the counts give, as a record must
        pooled["test"] = _write_split(store, key, "test", ids, counts)
        external_scores = {}
        for name, metrics in (external or {}).items():
            near = _counts_near(metrics.get("dsc", 0.9))
            pooled[name] = _write_split(store, key, name, ["pooled"], near)
            external_scores[name] = PooledMetrics.from_counts(near).as_dict()
        atomic_write_bytes(store.model_path(key), b"constructed run: no weights\n")
        if params is None or gmacs is None:
            from study.report.counting import counted_config

            counted = counted_config(config)
            params, gmacs = counted[0] if params is None else params, counted[1] if gmacs is None else gmacs
        record.update(test=test, external=external_scores, params=params, gmacs_thop=gmacs, wall_time_s=1.0,
                      selection={"mode": "paper", "split": "test", "epoch": config.train.epochs})
    typed = replace(RunRecord.from_json(record, "constructed record"), pooled=pooled)
    if typed.completed:
        typed = store.seal(typed, list(pooled))
    store.write_record(typed)
    return store.run_dir(key)


def _counts_near(dsc: float) -> np.ndarray:
    """One image's TP/FP/FN/TN whose Dice is ``dsc`` to about 1e-9."""
    tp = 10**9
    errors = int(round(2 * tp * (1 - dsc) / max(dsc, 1e-6)))
    return np.array([[tp, errors // 2, errors - errors // 2, 10**10]], dtype=np.int64)


def _write_split(store: Store, key: RunKey, split: str, ids, counts) -> Counts:
    atomic_write_bytes(store.per_image_path(key, split), counts_csv(ids, counts))
    total = np.asarray(counts, dtype=np.int64).reshape(-1, 4).sum(0)
    return Counts(*(int(v) for v in total), len(ids))


def _rng(*tags) -> np.random.Generator:
    digest = hashlib.sha256(":".join(map(str, tags)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def demo_store(
    root: Path,
    tables: dict[str, Table],
    profile: str = "smoke",
    seeds=(0, 1, 2),
    images: int = 40,
    failed: int = 1,
) -> Store:
    """Every available row of ``tables`` with constructed runs, near the paper's DSC.

    Values are a function of (config hash, seed), so a run shared by two rows
    is the same run. The last ``failed`` seeds of the first ablation row fail
    with a reason, so the report's list of failures has something to show.
    """
    from study.paper import number, paper_table

    store = Store(root)
    first_failed = None
    for table in tables.values():
        paper = paper_table(table.id)
        for row in table.rows:
            if row.unavailable:
                continue
            if first_failed is None and table.role != "comparison":
                first_failed = row.id
            printed = paper.get(row.id, {})
            for dataset in row.default_datasets(profile):
                base = number(printed.get(f"{dataset}_dsc") or printed.get("dsc")) or 88.0
                config = row.run_config(dataset, profile)
                for k, seed in enumerate(seeds):
                    if row.id == first_failed and k >= len(seeds) - failed:
                        write_run(store, row, dataset, seed, profile, status=Status.FAILED.value,
                                  reason="RunFailed: non-finite loss at epoch 3 (constructed)")
                        continue
                    rng = _rng(config.hash, seed)
                    dice = base / 100 + 0.004 * rng.standard_normal() + 0.05 * rng.standard_normal(images)
                    counts = counts_for_dice(np.clip(dice, 0.3, 0.999))
                    external = {}
                    for ext in config.data.external:
                        ph2 = number(printed.get(f"{ext}_dsc")) or 90.0
                        ext_dsc = ph2 / 100 + 0.005 * rng.standard_normal()
                        external[ext] = {"dsc": ext_dsc, "iou": ext_dsc / (2 - ext_dsc)}
                    write_run(store, row, dataset, seed, profile, counts=counts,
                              params=_params(row, printed), gmacs=_gmacs(printed), external=external)
    return store


def _params(row: Row, printed: dict) -> int:
    from study.paper import number

    value = number(printed.get("params_m"))
    return int(round(value * 1e6)) if value is not None else 34_166


def _gmacs(printed: dict) -> float:
    from study.paper import number

    value = number(printed.get("flops_g"))
    return value if value is not None else 0.0587
