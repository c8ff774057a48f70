"""Reading the store back: an index of all runs, and the runs behind each table cell.

A table cell (row x dataset) maps to runs by config hash: the row's resolved
config under a profile. Nothing is looked up by name, so a run shared by two
rows (every ablation table's "Ours" row is the same model) serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from study.store.record import RunRecord
from study.store.runs import Store

if TYPE_CHECKING:  # the tables come from the caller: the store reads no variant file itself
    from study.variants import Row, Table

METRICS = ("iou", "dsc", "accuracy", "sensitivity", "specificity")


def _flat(record: RunRecord | None) -> dict:
    cfg = (record.config if record else None) or {}
    out = {
        "run_id": record.run_id if record else None,
        "config_hash": record.config_hash if record else None,
        "seed": record.seed if record else None,
        "status": record.status.value if record else None,
        "reason": record.reason if record else None,
        "rows": ",".join(record.rows) if record else "",
        "arch": (cfg.get("model") or {}).get("arch"),
        "dataset": (cfg.get("data") or {}).get("dataset"),
        "epochs": (cfg.get("train") or {}).get("epochs"),
        "epochs_done": record.epochs_done if record else 0,
        "params": record.params if record else None,
        "gmacs_thop": record.gmacs_thop if record else None,
        "wall_time_s": record.wall_time_s if record else None,
        "requeues": record.requeues if record else 0,
        "slurm_job_id": record.launcher.get("job_id") if record else None,
    }
    for m in METRICS:
        out[f"test_{m}"] = ((record.test if record else None) or {}).get(m)
    for name, metrics in (record.external if record else {}).items():
        for m in ("iou", "dsc"):
            out[f"{name}_{m}"] = metrics.get(m)
    return out


def run_index(store: Store):
    """One pandas row per stored run (any status)."""
    import pandas as pd

    columns = list(_flat(None).keys())
    frame = pd.DataFrame([_flat(r) for r in store.records()])
    return frame if len(frame) else pd.DataFrame(columns=columns)


def export_index(store: Store, path: Path) -> Path:
    """CSV or parquet (by the file's suffix)."""
    frame = run_index(store)
    path = Path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401  the parquet writer pandas uses
        except ImportError:
            from study.errors import ConfigError

            raise ConfigError(f"{path}: writing parquet needs pyarrow: pip install 'ultralbm-study[parquet]' "
                              "(or export to a .csv)") from None
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


@dataclass(frozen=True)
class CellRuns:
    """The stored runs of one table cell: a row trained on a dataset under a profile."""

    row: Row
    dataset: str
    config_hash: str
    records: tuple[RunRecord, ...]  # every stored record of that hash, any status (damaged too), by seed

    @property
    def completed(self) -> tuple[RunRecord, ...]:
        """Completed and verified: a damaged run is never among them."""
        return tuple(r for r in self.records if r.completed)


def _records_by_hash(records) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = {}
    for r in records:
        out.setdefault(r.config_hash, []).append(r)
    for records in out.values():
        records.sort(key=lambda r: r.seed)
    return out


class _Snapshot(Store):
    """A store whose records are read (and verified) once: every table looks them up by hash.

    ``seeds`` keeps only those seeds' runs, so the tables and the audit of one
    report always rest on the same runs; a null row (``Row.null_row``) reads the
    seeds after them (n..2n-1 for seeds 0..n-1), kept apart for it alone.
    """

    def __init__(self, store: Store, seeds=None):
        super().__init__(store.root)
        every = list(store.records())
        if seeds is None:
            kept, offset, later = every, None, every
        else:
            kept = [r for r in every if r.seed in set(seeds)]
            offset = max(seeds) + 1 if seeds else 0
            later = [r for r in every if offset <= r.seed < 2 * offset]
        object.__setattr__(self, "_records", kept)
        object.__setattr__(self, "null_offset", offset)
        object.__setattr__(self, "_later", later)

    def records(self):
        return iter(self._records)

    def null_records(self):
        """The records a null row may read: every record, or the seeds after those asked for."""
        return iter(self._later)


def snapshot(store: Store, seeds=None) -> Store:
    if isinstance(store, _Snapshot) and seeds is None:
        return store
    return _Snapshot(store, seeds)


def _null_offset(table: Table, cells: list[CellRuns], targets: set[str]) -> int:
    """Without a seed restriction: n such that the table's other rows ran seeds 0..n-1; with no other
    rows' runs to tell, past every seed the targets have (the null row then reads none)."""
    seeds = {r.seed for c in cells if c.row.id not in targets and not c.row.null_row for r in c.completed}
    if not seeds:
        seeds = {r.seed for c in cells if c.row.id in targets for r in c.records}
    return max(seeds) + 1 if seeds else 0


def _with_null_rows(table: Table, store: Store, cells: list[CellRuns]) -> list[CellRuns]:
    """Split the seeds of each null row's target: the target keeps 0..n-1, the null row reads n..2n-1."""
    nulls = [r for r in table.rows if getattr(r, "null_row", False) and not r.unavailable]
    if not nulls:
        return cells
    targets = {r.compare_with or table.reference for r in nulls}
    snap = store if isinstance(store, _Snapshot) else _Snapshot(store)
    offset = snap.null_offset if snap.null_offset is not None else _null_offset(table, cells, targets)
    later = _records_by_hash(snap.null_records())
    out = []
    for c in cells:
        if c.row.null_row:
            records = tuple(r for r in later.get(c.config_hash, ()) if offset <= r.seed < 2 * offset)
        elif c.row.id in targets:
            records = tuple(r for r in c.records if r.seed < offset)
        else:
            records = c.records
        out.append(CellRuns(c.row, c.dataset, c.config_hash, records))
    return out


def table_cells(table: Table, store: Store, profile: str = "paper", datasets=None,
                overrides: dict | None = None) -> list[CellRuns]:
    """Every (row, dataset) cell of ``table`` with the stored runs behind it.

    ``overrides`` are the ``--set`` values the runs were made with (they are
    part of the config, so of the hash). Rows whose model is not registered
    have no cells.
    """
    by_hash = _records_by_hash(store.records())
    cells = []
    for row in table.rows:
        if row.unavailable:
            continue
        for dataset in datasets or row.default_datasets(profile):
            h = row.run_config(dataset, profile, overrides).hash
            cells.append(CellRuns(row, dataset, h, tuple(by_hash.get(h, ()))))
    return _with_null_rows(table, store, cells)
