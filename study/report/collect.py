"""Reading the store into the cells of each table: values per seed, gaps and failures.

A table is collected under one profile (``paper`` or ``smoke``): its columns
are the datasets that profile trains on (ISIC 2017 and 2018 for Table 1 under
``paper``; ``synthetic`` under ``smoke``), then the external evaluations the
runs carry (PH2), then Params and FLOPs. A cell holds one value per completed
run behind it; nothing is averaged until it is printed.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from study.errors import ConfigError
from study.store.index import CellRuns, snapshot, table_cells
from study.store.per_image import read_counts  # noqa: F401  (the report's callers read counts here)
from study.store.record import Status
from study.store.runs import Store
from study.store.status import run_state
from study.variants import EXTERNAL_FOR, PROFILES, Row, Table

METRICS = ("iou", "dsc")
METRIC_LABELS = {"iou": "IoU (%)", "dsc": "DSC (%)"}
DDOF = 1  # the sample standard deviation, stated in every caption


def dataset_label(name: str) -> str:
    """A dataset's column header, from the dataset registry (the name itself if unknown)."""
    from study.datasets import DATASETS

    info = DATASETS.get(name)
    return info.label if info is not None and info.label else name


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
    overrides: dict = field(default_factory=dict)  # the --set values the runs were made with

    @property
    def overrides_text(self) -> str:
        """``train.epochs=2, data.split=release`` (empty without overrides)."""
        def flat(prefix, node):
            for k, v in node.items():
                if isinstance(v, dict):
                    yield from flat(f"{prefix}{k}.", v)
                else:
                    yield f"{prefix}{k}={v}"
        return ", ".join(flat("", self.overrides))

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


def table_number(table_id: str) -> str:
    """"3" for table3; "R" for tabler (a table of this study, not of the paper)."""
    rest = table_id[len("table"):] if table_id.startswith("table") else table_id
    return rest.upper() if rest.isalpha() and len(rest) == 1 else rest


def profile_datasets(table: Table, profile: str) -> tuple[str, ...]:
    """The training datasets of ``table`` under ``profile``, in table order."""
    out: list[str] = []
    for row in table.rows:
        for d in row.default_datasets(profile):
            if d not in out:
                out.append(d)
    return tuple(out)


def profile_external(table: Table, profile: str, datasets: tuple[str, ...],
                     overrides: dict | None = None) -> tuple[str, ...]:
    """The external evaluations the runs of ``table`` carry under ``profile`` (PH2 for Table 1's paper runs)."""
    available = [r for r in table.rows if not r.unavailable]
    if not available:
        return table.external if any(d in EXTERNAL_FOR for d in datasets) else ()
    carried = {e for r in available for d in datasets for e in r.run_config(d, profile, overrides).data.external}
    return tuple(e for e in table.external if e in carried)


def defined_profiles(table: Table) -> tuple[str, ...]:
    """The profiles of ``variants/base.toml``: paper and smoke first, then the user's own."""
    names = list(table.rows[0].profiles) if table.rows else []
    return tuple([p for p in PROFILES if p in names] + sorted(p for p in names if p not in PROFILES))


def resolve_profile(table: Table, store: Store, profile: str = "auto", overrides: dict | None = None) -> str:
    """``auto``: the first profile (paper, smoke, then the user's own) with a completed run of the
    table under ``overrides``, else paper. Only completed runs count: a failed or damaged run (a
    mistyped command) never switches a table."""
    profiles = defined_profiles(table)
    if profile != "auto":
        if profile not in profiles:
            raise ConfigError(f"--profile: unknown {profile!r}; defined in variants/base.toml: "
                              f"{', '.join(profiles)} (or auto)")
        return profile
    for candidate in profiles:
        if any(c.completed for c in table_cells(table, store, candidate, overrides=overrides)):
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


def collect_table(table: Table, store: Store, profile: str = "auto", overrides: dict | None = None) -> TableData:
    """Every cell of ``table`` from the store, with the runs that did not complete.

    ``overrides`` are the ``--set`` values the runs were made with: the cells hold exactly
    the runs whose configs they resolve to."""
    store = snapshot(store)
    profile = resolve_profile(table, store, profile, overrides)
    datasets = profile_datasets(table, profile)
    external = profile_external(table, profile, datasets, overrides)
    cell_runs = table_cells(table, store, profile, datasets, overrides=overrides)
    rows = [RowData(r, r.id == table.reference) for r in table.rows]
    by_id = {r.id: r for r in rows}
    problems: list[RunProblem] = []
    pooled: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for c in cell_runs:
        data = by_id[c.row.id]
        # Every number from the pooled counts a (verified) record vouches for, never its summary fields.
        test_scores = [(r, r.scores("test")) for r in c.completed]
        for m in METRICS:
            values = [(100 * sc[m], f"s{r.seed}") for r, sc in test_scores if sc is not None and sc.get(m) is not None]
            if values:
                data.cells[f"{c.dataset}_{m}"] = Cell(tuple(v for v, _ in values), tuple(s for _, s in values))
        for r in c.completed:
            for e in external:
                metrics = r.scores(e) or {}
                for m in METRICS:
                    if metrics.get(m) is not None:
                        pooled.setdefault((c.row.id, f"{e}_{m}"), []).append(
                            (100 * metrics[m], f"{c.dataset}/s{r.seed}"))
        for r in c.records:
            if not r.completed:
                state = run_state(r, store)  # a "running" record whose lease is dead was interrupted
                if r.status is Status.RUNNING:
                    reason = "in progress" if state == Status.RUNNING.value else (
                        "its trainer stopped without recording why (killed, or its node lost); the next run "
                        "resumes it from its last checkpoint")
                else:
                    reason = r.reason or "no reason recorded"
                problems.append(RunProblem(c.row.id, c.row.name, c.dataset, r.seed, state, reason))
    for (row_id, key), values in pooled.items():
        by_id[row_id].cells[key] = Cell(tuple(v for v, _ in values), tuple(s for _, s in values))
    return TableData(table, profile, datasets, external, _columns(table, datasets, external), rows,
                     problems, cell_runs, dict(overrides or {}))


def collect_tables(tables: list[Table], store: Store, profile: str = "auto",
                   overrides: dict | None = None) -> list[TableData]:
    store = snapshot(store)
    return [collect_table(t, store, profile, overrides) for t in tables]
