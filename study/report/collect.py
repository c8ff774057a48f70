"""Reading the store into the cells of each table: values per seed, gaps and failures.

A table is collected under one profile (``paper`` or ``smoke``): its columns
are the datasets that profile trains on (ISIC 2017 and 2018 for Table 1 under
``paper``; ``synthetic`` under ``smoke``), then the external evaluations the
runs carry (PH2), then Params and FLOPs. A cell holds one value per completed
run behind it; nothing is averaged until it is printed.
"""

from __future__ import annotations

import csv
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from study.errors import ConfigError, StudyError
from study.index import CellRuns, table_cells
from study.store import Store
from study.variants import EXTERNAL_FOR, PROFILES, Row, Table

METRICS = ("iou", "dsc")
METRIC_LABELS = {"iou": "IoU (%)", "dsc": "DSC (%)"}
DATASET_LABELS = {"isic2017": "ISIC 2017", "isic2018": "ISIC 2018", "ph2": "PH2", "synthetic": "Synthetic"}
PROFILE_CHOICES = (*PROFILES, "auto")
DDOF = 1  # the sample standard deviation, stated in every caption


def dataset_label(name: str) -> str:
    return DATASET_LABELS.get(name, name)


@dataclass(frozen=True)
class Column:
    key: str  # "isic2017_dsc", "ph2_iou", "params_m", "flops_g"
    group: str  # header over the column ("ISIC 2017"); "" for none
    label: str  # "DSC (%)"
    decimals: int
    higher_is_better: bool
    kind: str  # "metric" (a training dataset), "external" (pooled over training sets), "complexity"

    @property
    def spread(self) -> bool:
        """Printed as mean ± std (metrics), or as one number (Params, FLOPs)."""
        return self.kind != "complexity"


@dataclass(frozen=True)
class Cell:
    """The values behind one printed cell, one per completed run, in printed units (%, M, G)."""

    values: tuple[float, ...]
    runs: tuple[str, ...] = ()  # which runs: "s0", or "isic2017/s0" for a pooled external cell

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample std (ddof = 1); None with fewer than two values."""
        return statistics.stdev(self.values) if self.n > DDOF else None


@dataclass(frozen=True)
class RunProblem:
    """A run behind a cell that did not complete, with the reason it gives."""

    row_id: str
    row_name: str
    dataset: str
    seed: int
    status: str
    reason: str


@dataclass
class RowData:
    row: Row
    is_reference: bool
    cells: dict[str, Cell] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def unavailable(self) -> str | None:
        return self.row.unavailable


@dataclass
class TableData:
    table: Table
    profile: str
    datasets: tuple[str, ...]  # training datasets (columns)
    external: tuple[str, ...]  # external evaluations (pooled columns)
    columns: list[Column]
    rows: list[RowData]
    problems: list[RunProblem]
    cell_runs: list[CellRuns]

    @property
    def id(self) -> str:
        return self.table.id

    @property
    def number(self) -> str:
        return table_number(self.table.id)

    @property
    def grouped(self) -> bool:
        """Table 1's layout (dataset groups, metrics first) or the ablations' (one dataset, complexity first)."""
        return len(self.table.datasets) > 1 or bool(self.table.external)

    def row(self, row_id: str) -> RowData:
        for r in self.rows:
            if r.id == row_id:
                return r
        raise KeyError(row_id)

    def typical_n(self, kind: str) -> int | None:
        """The most common number of runs per cell among the columns of ``kind`` (None: no data)."""
        counts = Counter(r.cells[c.key].n for r in self.rows for c in self.columns
                         if c.kind == kind and c.key in r.cells)
        if not counts:
            return None
        return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]

    def runs_for(self, row_id: str, dataset: str) -> CellRuns | None:
        for c in self.cell_runs:
            if c.row.id == row_id and c.dataset == dataset:
                return c
        return None

    @property
    def has_data(self) -> bool:
        return any(r.cells for r in self.rows)


class _Snapshot(Store):
    """A store whose records are read once: every table looks them up by hash.

    ``seeds`` keeps only those seeds' runs, so the tables and the audit of one
    report always rest on the same runs.
    """

    def __init__(self, store: Store, seeds=None):
        super().__init__(store.root)
        records = [r for r in store.records() if seeds is None or r.get("seed") in set(seeds)]
        object.__setattr__(self, "_records", records)

    def records(self):
        return iter(self._records)


def snapshot(store: Store, seeds=None) -> Store:
    if isinstance(store, _Snapshot) and seeds is None:
        return store
    return _Snapshot(store, seeds)


def table_number(table_id: str) -> str:
    return table_id[len("table"):] if table_id.startswith("table") else table_id


def profile_datasets(table: Table, profile: str) -> tuple[str, ...]:
    """The training datasets of ``table`` under ``profile``, in table order."""
    out: list[str] = []
    for row in table.rows:
        for d in row.default_datasets(profile):
            if d not in out:
                out.append(d)
    return tuple(out)


def profile_external(table: Table, profile: str, datasets: tuple[str, ...]) -> tuple[str, ...]:
    """The external evaluations the runs of ``table`` carry under ``profile`` (PH2 for Table 1's paper runs)."""
    available = [r for r in table.rows if not r.unavailable]
    if not available:
        return table.external if any(d in EXTERNAL_FOR for d in datasets) else ()
    carried = {e for r in available for d in datasets for e in r.run_config(d, profile).data.external}
    return tuple(e for e in table.external if e in carried)


def resolve_profile(table: Table, store: Store, profile: str = "auto") -> str:
    """``auto``: the paper profile if any of the table's paper runs is stored, else smoke if any, else paper."""
    if profile not in PROFILE_CHOICES:
        raise ConfigError(f"profile: unknown {profile!r}; allowed: {', '.join(PROFILE_CHOICES)}")
    if profile != "auto":
        return profile
    for candidate in PROFILES:
        if any(c.records for c in table_cells(table, store, candidate)):
            return candidate
    return "paper"


def _columns(table: Table, datasets, external) -> list[Column]:
    metric_cols = [Column(f"{d}_{m}", dataset_label(d), METRIC_LABELS[m], 2, True, "metric")
                   for d in datasets for m in METRICS]
    metric_cols += [Column(f"{e}_{m}", dataset_label(e), METRIC_LABELS[m], 2, True, "external")
                    for e in external for m in METRICS]
    complexity = [Column("params_m", "", "Params (M)", 3, False, "complexity"),
                  Column("flops_g", "", "FLOPs (G)", 3, False, "complexity")]
    grouped = len(table.datasets) > 1 or bool(table.external)
    return metric_cols + complexity if grouped else complexity + metric_cols


def collect_table(table: Table, store: Store, profile: str = "auto") -> TableData:
    """Every cell of ``table`` from the store, with the runs that did not complete."""
    store = snapshot(store)
    profile = resolve_profile(table, store, profile)
    datasets = profile_datasets(table, profile)
    external = profile_external(table, profile, datasets)
    cell_runs = table_cells(table, store, profile, datasets)
    rows = [RowData(r, r.id == table.reference) for r in table.rows]
    by_id = {r.id: r for r in rows}
    problems: list[RunProblem] = []
    pooled: dict[tuple[str, str], list[tuple[float, str]]] = {}
    complexity: dict[str, dict[str, list[float]]] = {}
    for c in cell_runs:
        data = by_id[c.row.id]
        for m in METRICS:
            values = [(100 * r["test"][m], f"s{r['seed']}") for r in c.completed
                      if (r.get("test") or {}).get(m) is not None]
            if values:
                data.cells[f"{c.dataset}_{m}"] = Cell(tuple(v for v, _ in values), tuple(s for _, s in values))
        for r in c.completed:
            for e in external:
                metrics = (r.get("external") or {}).get(e) or {}
                for m in METRICS:
                    if metrics.get(m) is not None:
                        pooled.setdefault((c.row.id, f"{e}_{m}"), []).append(
                            (100 * metrics[m], f"{c.dataset}/s{r['seed']}"))
            per_row = complexity.setdefault(c.row.id, {"params_m": [], "flops_g": []})
            if r.get("params") is not None:
                per_row["params_m"].append(r["params"] / 1e6)
            if r.get("gmacs_thop") is not None:
                per_row["flops_g"].append(float(r["gmacs_thop"]))
        for r in c.records:
            if r.get("status") != "completed":
                reason = r.get("reason") or ("in progress" if r.get("status") == "running" else "no reason recorded")
                problems.append(RunProblem(c.row.id, c.row.name, c.dataset, int(r.get("seed", 0)),
                                           str(r.get("status")), str(reason)))
            elif not r.get("test"):
                problems.append(RunProblem(c.row.id, c.row.name, c.dataset, int(r.get("seed", 0)),
                                           "completed", "the record has no test metrics"))
    for (row_id, key), values in pooled.items():
        by_id[row_id].cells[key] = Cell(tuple(v for v, _ in values), tuple(s for _, s in values))
    for row_id, quantities in complexity.items():
        for key, values in quantities.items():
            if values:
                by_id[row_id].cells[key] = Cell(tuple(values))
    return TableData(table, profile, datasets, external, _columns(table, datasets, external), rows,
                     problems, cell_runs)


def collect_tables(tables: list[Table], store: Store, profile: str = "auto") -> list[TableData]:
    store = snapshot(store)
    return [collect_table(t, store, profile) for t in tables]


def read_counts(path: Path) -> tuple[list[str], np.ndarray]:
    """Image ids and their (n, 4) TP/FP/FN/TN counts from a ``per_image_<split>.csv``."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header != ["id", "tp", "fp", "fn", "tn"]:
                raise StudyError(f"{path}: expected the header id,tp,fp,fn,tn, got {header}")
            ids, counts = [], []
            for line_no, line in enumerate(reader, start=2):
                if not line:
                    continue
                if len(line) != 5:
                    raise StudyError(f"{path} line {line_no}: expected 5 fields, got {len(line)}")
                ids.append(line[0])
                counts.append([int(v) for v in line[1:]])
    except ValueError as exc:
        raise StudyError(f"{path}: a count is not an integer ({exc})") from None
    return ids, np.asarray(counts, dtype=np.int64).reshape(-1, 4)
