"""Reproduced vs paper: every cell of the paper beside ours, with the difference and a flag.

A metric cell is judged with the training seed as the unit of evidence
(``study.report.evidence.paper_p``): our per-seed scores against the paper's
mean of three runs (six models for PH2) and, where it prints one, its SD; the
p-values are Holm-corrected across the metric cells of a table, and a cell is
flagged when its Holm p < 0.05. With fewer than two runs there is no
between-seed SD and the cell says so. Params are compared at the paper's printed precision, FLOPs
within the complexity check's relative tolerance, and a documented mismatch
(``paper/differences.toml``) is named as such.

Only runs are compared: a table trained on other data than the paper's (the
smoke profile's synthetic set) is "not comparable", and Params / FLOPs counted
from a model without runs are left to ``study complexity --check``. The
rendered document lists the cells of rows with runs only, and says in a line
which tables and rows have nothing to compare, so it stays short when there
is little to compare.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace

from study.complexity import FLOPS_TOLERANCE
from study.paper import mismatches, number, paper_table
from study.report.collect import METRIC_LABELS, Cell, TableData, dataset_label
from study.report.counting import is_counted
from study.report.evidence import ALPHA, holm, paper_p
from study.report.format import DASH, display_name, fixed, latex_escape, markdown_escape, p_text, signed
from study.report.jinja import render

OUTSIDE = "differs from the paper"
ONE_RUN = "1 run: no between-seed SD"
NO_RUNS = "no runs"
DIFFERS = "differs"
DOCUMENTED = "documented mismatch"
NOT_COMPARABLE = "not comparable"
PAPER_RUNS, PH2_RUNS = 3, 6  # "averaged over three runs"; PH2 "averaged from six models"


def comparable(td: TableData) -> bool:
    """Our runs are on the paper's datasets (not the smoke profile's synthetic set)."""
    return bool(td.datasets) and set(td.datasets) <= set(td.table.datasets)


def not_comparable_flag(td: TableData) -> str:
    data = ", ".join("synthetic" if d == "synthetic" else dataset_label(d) for d in td.datasets)
    return f"{NOT_COMPARABLE} ({data})"


@dataclass(frozen=True)
class PaperColumn:
    our_key: str  # key of our cell, e.g. "isic2017_dsc"
    paper_key: str  # column of paper/tableN.csv, e.g. "isic2017_dsc" or "dsc"
    label: str  # "ISIC 2017 DSC (%)"
    decimals: int
    quantity: str | None = None  # "params" / "flops" for complexity columns
    external: bool = False  # PH2: the paper averages six models (three seeds x two training sets)


@dataclass(frozen=True)
class Comparison:
    table_id: str
    row_id: str
    row_name: str
    column: PaperColumn
    paper: str  # as printed, with the paper's std where it gives one
    paper_value: float | None
    ours: Cell | None
    diff: float | None  # ours − paper, in printed units
    flag: str  # "" when consistent
    note: str = ""
    p: float | None = None  # seed-level p against the paper's runs (metric cells)
    p_holm: float | None = None  # Holm-corrected across the table's metric cells

    @property
    def ours_text(self) -> str:
        if self.ours is None or self.ours.mean is None:
            return DASH
        text = fixed(self.ours.mean, self.column.decimals)
        if self.column.quantity is None:
            if self.ours.std is not None:
                text += f" ± {fixed(self.ours.std, self.column.decimals)}"
            text += f" (n={self.ours.n})"
        return text

    @property
    def p_text(self) -> str:
        if self.p is None:
            return DASH
        return f"{p_text(self.p)} ({p_text(self.p_holm)})"

    @property
    def diff_text(self) -> str:
        return DASH if self.diff is None else signed(self.diff, self.column.decimals)


def paper_columns(td: TableData) -> list[PaperColumn]:
    """The paper's columns of this table, mapped to our cells' keys."""
    rows = paper_table(td.table.id)
    header = set(next(iter(rows.values()))) if rows else set()
    out = []
    for d in (*td.table.datasets, *td.table.external):
        for m in ("iou", "dsc"):
            if f"{d}_{m}" in header:
                out.append(PaperColumn(f"{d}_{m}", f"{d}_{m}", f"{dataset_label(d)} {METRIC_LABELS[m]}", 2,
                                       external=d in td.table.external))
            elif m in header and len(td.table.datasets) == 1 and d == td.table.datasets[0]:
                out.append(PaperColumn(f"{d}_{m}", m, f"{dataset_label(d)} {METRIC_LABELS[m]}", 2))
    out.append(PaperColumn("params_m", "params_m", "Params (M)", 3, "params"))
    out.append(PaperColumn("flops_g", "flops_g", "FLOPs (G)", 3, "flops"))
    return [c for c in out if c.paper_key in header]


def _matches_printed(value: float, printed: str) -> bool:
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return round(value, decimals) == round(float(printed), decimals)


def _compare_cell(td: TableData, row, col: PaperColumn, printed: dict) -> Comparison:
    text = printed.get(col.paper_key) or ""
    paper_value = number(text)
    if printed.get(f"{col.paper_key}_std"):
        text = f"{text} ± {printed[f'{col.paper_key}_std']}"
    cell = row.cells.get(col.our_key)
    if is_counted(cell):
        cell = None  # counted from the model, not a run: `study complexity --check` compares those
    if col.quantity is None and not comparable(td):
        # The paper's metric columns are on its datasets; ours on others (synthetic): nothing to compare.
        ran = any(key.endswith(("_iou", "_dsc")) for key in row.cells)
        return Comparison(td.table.id, row.id, display_name(row.name, row.is_reference), col, text or DASH,
                          paper_value, None, None, not_comparable_flag(td) if ran else NO_RUNS)
    diff = None if cell is None or paper_value is None else cell.mean - paper_value
    flag, note = "", ""
    if paper_value is None:
        flag = ""
    elif cell is None:
        flag = NO_RUNS
    elif col.quantity is None:
        if cell.std is None:
            flag = ONE_RUN
        else:
            paper_std = number(printed.get(f"{col.paper_key}_std"))
            p = paper_p(cell.values, paper_value, paper_std, PH2_RUNS if col.external else PAPER_RUNS)
            return Comparison(td.table.id, row.id, display_name(row.name, row.is_reference), col, text or DASH,
                              paper_value, cell, diff, "", note, p)
    else:
        ok = (_matches_printed(cell.mean, printed[col.paper_key]) if col.quantity == "params"
              else abs(cell.mean - paper_value) <= FLOPS_TOLERANCE * paper_value)
        documented = mismatches().get((row.id, col.quantity))
        if not ok:
            flag = DOCUMENTED if documented else DIFFERS
            note = documented.note if documented else ""
    return Comparison(td.table.id, row.id, display_name(row.name, row.is_reference), col, text or DASH,
                      paper_value, cell, diff, flag, note)


def compare_table(td: TableData) -> list[Comparison]:
    """Every cell the paper prints for ``td``'s table, beside ours; metric cells judged seed-level, Holm
    across the table's metric cells."""
    paper = paper_table(td.table.id)
    columns = paper_columns(td)
    out = []
    for row in td.rows:
        printed = paper.get(row.id)
        if printed is None:
            continue
        out.extend(_compare_cell(td, row, col, printed) for col in columns)
    tested = [i for i, c in enumerate(out) if c.p is not None]
    for i, adjusted in zip(tested, holm([out[i].p for i in tested])):
        out[i] = replace(out[i], p_holm=adjusted, flag=OUTSIDE if adjusted < ALPHA else "")
    return out


def _heading(td: TableData) -> str:
    return f"Table {td.number}: {td.table.title} (our runs: profile {td.profile})"


def _counts(items: list[Comparison]) -> str:
    flagged = sum(c.flag in (OUTSIDE, DIFFERS) for c in items)
    compared = sum(c.ours is not None and c.paper_value is not None for c in items)
    return f"{compared} of {len(items)} cells have our runs; {flagged} flagged"


LEGEND = (f"Ours: mean ± sample std (ddof = 1) over the runs, n = their number. Diff: ours − paper. "
          f"p: the seed as the unit of evidence, our runs' scores against the paper's mean of three runs (six "
          f"models for PH2) with its printed SD where it gives one, else with ours; Holm-corrected across the "
          f"table's metric cells (in brackets). Flags: “{OUTSIDE}”: Holm p < {ALPHA}; "
          f"“{ONE_RUN}”: no std to judge by; "
          f"“{DIFFERS}”: Params differ at the paper's printed precision, or FLOPs by more than "
          f"{FLOPS_TOLERANCE:.0%} (thop convention); “{DOCUMENTED}”: a mismatch explained in "
          f"paper/differences.toml; “{NO_RUNS}”: no completed run for the cell. Only rows with runs are listed.")


def _blank_repeats(lines: list[list[str]]) -> None:
    """Print a row's name on its first line only."""
    previous = None
    for line in lines:
        name, line[0] = line[0], "" if line[0] == previous else line[0]
        previous = name


def _numbers(tds: list[TableData]) -> str:
    numbers = [td.number for td in tds]
    if len(numbers) == 1:
        return f"Table {numbers[0]}"
    return "Tables " + ", ".join(numbers[:-1]) + " and " + numbers[-1]


def _names(names: list[str]) -> str:
    return ", ".join(f"“{n}”" for n in names)


@dataclass
class Section:
    td: TableData
    items: list[Comparison]  # the cells of rows with runs
    without_runs: list[str]  # names of rows the paper prints that have no runs


def plan(tables: list[TableData]) -> tuple[list[Section], list[str]]:
    """The tables with something to compare (their rows with runs), and one sentence per kind of nothing."""
    sections, incomparable, empty = [], [], []
    for td in tables:
        items = compare_table(td)
        if not items:
            continue
        if not any(k.endswith(("_iou", "_dsc")) for r in td.rows for k in r.cells):
            empty.append(td)
            continue
        if not comparable(td):
            incomparable.append(td)
            continue
        with_runs = {c.row_id for c in items if c.ours is not None}
        names = list(dict.fromkeys(c.row_name for c in items if c.row_id not in with_runs))
        sections.append(Section(td, [c for c in items if c.row_id in with_runs], names))
    nothing = []
    if incomparable:
        groups: dict[str, list[TableData]] = {}
        for td in incomparable:
            groups.setdefault(not_comparable_flag(td), []).append(td)
        for flag, tds in groups.items():
            profiles = ", ".join(sorted({td.profile for td in tds}))
            nothing.append(f"{_numbers(tds)}: {flag}: trained on other data than the paper (profile {profiles}); "
                           "their numbers check the pipeline only.")
    if empty:
        nothing.append(f"{_numbers(empty)}: no runs under profile "
                       f"{', '.join(sorted({td.profile for td in empty}))}.")
    return sections, nothing


def _intro(sections: list[Section], nothing: list[str]) -> str:
    if not sections:
        return "Nothing to compare with the paper's numbers yet."
    return LEGEND


def render_latex(tables: list[TableData]) -> str:
    sections, nothing = plan(tables)
    out = []
    for sec in sections:
        lines = [[latex_escape(c.row_name), latex_escape(c.column.label), latex_escape(c.paper),
                  latex_escape(c.ours_text), latex_escape(c.diff_text), latex_escape(c.p_text),
                  rf"\textbf{{{latex_escape(c.flag)}}}" if c.flag in (OUTSIDE, DIFFERS) else latex_escape(c.flag)]
                 for c in sec.items]
        _blank_repeats(lines)
        out.append({"heading": latex_escape(_heading(sec.td)), "summary": latex_escape(_counts(compare_table(sec.td))),
                    "without": latex_escape(_names(sec.without_runs)), "lines": lines})
    return render("compare.tex.j2", legend=latex_escape(_intro(sections, nothing)), sections=out,
                  nothing=[latex_escape(n) for n in nothing])


def render_markdown(tables: list[TableData]) -> str:
    sections, nothing = plan(tables)
    out = []
    for sec in sections:
        lines = [[markdown_escape(c.row_name), c.column.label, c.paper, c.ours_text, c.diff_text, c.p_text,
                  f"**{c.flag}**" if c.flag in (OUTSIDE, DIFFERS) else c.flag]
                 for c in sec.items]
        _blank_repeats(lines)
        out.append({"heading": _heading(sec.td), "summary": _counts(compare_table(sec.td)),
                    "without": markdown_escape(_names(sec.without_runs)), "lines": lines})
    return render("compare.md.j2", legend=_intro(sections, nothing), sections=out, nothing=nothing)


def render_csv(tables: list[TableData]) -> str:
    fields = ["table", "profile", "row_id", "name", "column", "paper", "paper_value", "ours_mean", "ours_std",
              "ours_n", "diff", "p_seeds", "p_holm", "flag", "note"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for td in tables:
        for c in compare_table(td):
            writer.writerow({
                "table": c.table_id, "profile": td.profile, "row_id": c.row_id, "name": c.row_name,
                "column": c.column.our_key, "paper": c.paper, "paper_value": c.paper_value,
                "ours_mean": "" if c.ours is None else round(c.ours.mean, 6),
                "ours_std": "" if c.ours is None or c.ours.std is None else round(c.ours.std, 6),
                "ours_n": 0 if c.ours is None else c.ours.n,
                "diff": "" if c.diff is None else round(c.diff, 6), "p_seeds": "" if c.p is None else c.p,
                "p_holm": "" if c.p_holm is None else c.p_holm, "flag": c.flag, "note": c.note,
            })
    return buffer.getvalue()
