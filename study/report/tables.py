"""Tables 1–7 rendered from collected cells: LaTeX (booktabs), Markdown and CSV.

Every format prints the same cells: mean ± sample std over seeds (ddof = 1),
"–" where a cell has no completed run, the best value of each column bold and
the second best underlined (italic in Markdown) where they stand apart
(``format.rank_marks``), and a caption that states the profile, the number of
seeds, the std's ddof and the marking rule. Params and FLOPs of a row without
runs are counted from its model (``counting``) and marked "*".

A table without runs of its own (``coverage``) is rendered compactly: Model,
Params and FLOPs, and a short caption.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from study.report.collect import DDOF, Cell, Column, TableData, dataset_label
from study.report.counting import COUNT_SIZE, is_counted
from study.report.format import (
    BEST,
    DASH,
    MARK_RULE,
    SECOND,
    display_name,
    fixed,
    latex_escape,
    markdown_escape,
    rank_marks,
)
from study.report.jinja import render

FORMATS = ("latex", "markdown", "csv")
SUFFIX = {"latex": ".tex", "markdown": ".md", "csv": ".csv"}
UNAVAILABLE_MARK = "†"
COUNTED_MARK = "*"
COMPLEXITY = f"Params (M) and FLOPs (G, thop MACs at 1×3×{COUNT_SIZE}×{COUNT_SIZE})"


@dataclass(frozen=True)
class PrintedCell:
    text: str | None  # "79.82 ± 0.73"; None for no data
    mark: str | None  # BEST, SECOND or None
    n_note: int | None  # the cell's number of runs, when it differs from the caption's
    counted: bool = False  # Params / FLOPs counted from the model, not read from a run


def _printed_mean(cell: Cell | None, column: Column) -> str | None:
    return None if cell is None else fixed(cell.mean, column.decimals)


def _printed_std(cell: Cell | None, column: Column) -> str | None:
    return None if cell is None or cell.std is None else fixed(cell.std, column.decimals)


def visible_columns(td: TableData, compact: bool = False) -> list[Column]:
    """Every column, or Params and FLOPs only for a compact table."""
    return [c for c in td.columns if c.kind == "complexity"] if compact else list(td.columns)


def printed_cells(td: TableData, compact: bool = False) -> list[list[PrintedCell]]:
    """The printed cells, row by row, with marks chosen on the printed values (none in a compact table)."""
    columns = visible_columns(td, compact)
    grid = [[None] * len(columns) for _ in td.rows]
    for j, col in enumerate(columns):
        means = [_printed_mean(r.cells.get(col.key), col) for r in td.rows]
        spreads = [_printed_std(r.cells.get(col.key), col) for r in td.rows] if col.spread else None
        marks = [None] * len(td.rows) if compact else rank_marks(means, col.higher_is_better, spreads)
        typical = td.typical_n(col.kind)
        for i, r in enumerate(td.rows):
            cell = r.cells.get(col.key)
            if cell is None or means[i] is None:
                grid[i][j] = PrintedCell(None, None, None)
                continue
            text = means[i]
            if col.spread and spreads[i] is not None:
                text = f"{text} ± {spreads[i]}"
            n_note = cell.n if col.spread and cell.n != typical else None
            grid[i][j] = PrintedCell(text, marks[i], n_note, is_counted(cell) and not compact)
    return grid


def _runs_phrase(n: int, what: str) -> str:
    return f"one {what} (no std)" if n == 1 else f"n = {n} {what}s"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def title_sentence(td: TableData) -> str:
    """The paper's title with the data of our runs; where they are not the paper's, both are named."""
    table = td.table
    paper = [dataset_label(d) for d in (*table.datasets, *table.external)]
    ours = [dataset_label(d) for d in (*td.datasets, *td.external)]
    if not td.datasets or set(td.datasets) == set(table.datasets):
        where = ", ".join(dataset_label(d) for d in td.datasets)
        if td.external:
            where += "; external: " + ", ".join(dataset_label(e) for e in td.external)
        return f"{table.title} ({where})." if where else f"{table.title}."
    return f"{table.title} (in the paper: {_and(paper)}; these runs: {_and(ours)})."


def _run_command(td: TableData) -> str:
    return f"python -m study run {td.id} --seeds 3 --profile {td.profile}"


def compact_caption(td: TableData, shared_with: tuple[str, ...] = ()) -> list[str]:
    """The caption of a table without runs of its own: what it shows, and how to fill it."""
    data = ", ".join(dataset_label(d) for d in td.datasets)
    out = [f"{td.table.title}."]
    shared = [r for r in td.rows if any(c.kind != "complexity" and c.key in r.cells for c in td.columns)]
    if shared:
        names = _and([f"“{display_name(r.name, r.is_reference)}”" for r in shared])
        where = (" " + ("Table " if len(shared_with) == 1 else "Tables ") + _and(list(shared_with))
                 if shared_with else " another table")
        verb = "shares" if len(shared) == 1 else "share"
        out.append(f"No runs of its own under profile {td.profile} ({data}): {names} {verb} the runs of{where}, "
                   f"shown there.")
    else:
        out.append(f"No runs under profile {td.profile} ({data}) yet: {_run_command(td)} fills it.")
    if td.overrides:
        out.append(f"Runs looked up with the overrides {td.overrides_text}.")
    out.append(f"{COMPLEXITY} of each row's model: counted from the model, or read from its runs.")
    if any(r.unavailable for r in td.rows):
        out.append(f"{UNAVAILABLE_MARK}: model not registered yet.")
    return out


def caption_sentences(td: TableData, markdown: bool = False, compact: bool = False,
                      shared_with: tuple[str, ...] = ()) -> list[str]:
    """The caption as plain Unicode sentences (escaped later for LaTeX)."""
    if compact:
        return compact_caption(td, shared_with)
    out = [title_sentence(td)]
    setup = _setup(td)
    if td.profile == "paper":
        out.append(f"Profile paper: the paper's protocol{setup}.")
    else:
        out.append(f"Profile {td.profile}{setup}: these numbers check the pipeline and are not "
                   "comparable to the paper's.")
    if td.overrides:
        out.append(f"Runs made with the overrides {td.overrides_text} (not the paper's protocol where they "
                   "change it).")
    n_metric = td.typical_n("metric")
    if n_metric is None:
        out.append("No completed run of this table is stored yet.")
    else:
        if n_metric == 1:
            text = ("IoU and DSC in %: one seed per cell, so no std "
                    f"(where a cell holds more: sample std, ddof = {DDOF})")
        else:
            text = f"IoU and DSC in %: mean ± sample std (ddof = {DDOF}) over n = {n_metric} seeds"
        n_ext = td.typical_n("external")
        if td.external and n_ext is not None:
            trained = " and ".join(dataset_label(d) for d in td.datasets)
            text += (f"; {', '.join(dataset_label(e) for e in td.external)}: over the "
                     f"{_runs_phrase(n_ext, 'run')} of the models trained on {trained} (seeds × training sets)")
        out.append(text + ".")
        if any(pc.n_note is not None for row in printed_cells(td) for pc in row):
            out.append("A cell that holds a different number of runs says so (n=k).")
    counted = [r for r in td.rows if is_counted(r.cells.get("params_m")) or is_counted(r.cells.get("flops_g"))]
    from_runs = [r for r in td.rows if r.cells.get("params_m") is not None and r not in counted]
    if counted and from_runs:
        out.append(f"{COMPLEXITY} counted from each row's model, as its runs count it; {COUNTED_MARK}: a row "
                   "without a completed run.")
    elif counted or from_runs:
        out.append(f"{COMPLEXITY} counted from each row's model.")
    out.append(MARK_RULE.format(second="italic" if markdown else "underline"))
    gaps = f"{DASH}: no completed run."
    if any(r.unavailable for r in td.rows):
        gaps += f" {UNAVAILABLE_MARK}: model not registered yet."
    out.append(gaps)
    return out


def _setup(td: TableData) -> str:
    for row in td.table.rows:
        if not row.unavailable and td.datasets:
            cfg = row.run_config(td.datasets[0], td.profile, td.overrides)
            return f", {cfg.data.size}×{cfg.data.size}, {cfg.train.epochs} epochs"
    return ""


def problem_lines(td: TableData) -> list[str]:
    """One plain sentence per run that did not complete."""
    return [f"{p.row_name} ({dataset_label(p.dataset)}, seed {p.seed}): {p.status}: {p.reason}"
            for p in td.problems]


def _latex_cell(pc: PrintedCell) -> str:
    if pc.text is None:
        return "--"
    text = latex_escape(pc.text)
    if pc.mark == BEST:
        text = rf"\textbf{{{text}}}"
    elif pc.mark == SECOND:
        text = rf"\underline{{{text}}}"
    if pc.n_note is not None:
        text += rf"$^{{n={pc.n_note}}}$"
    if pc.counted:
        text += rf"$^{COUNTED_MARK}$"
    return text


def _markdown_cell(pc: PrintedCell) -> str:
    if pc.text is None:
        return DASH
    text = pc.text
    if pc.mark == BEST:
        text = f"**{text}**"
    elif pc.mark == SECOND:
        text = f"_{text}_"
    if pc.n_note is not None:
        text += f" (n={pc.n_note})"
    if pc.counted:
        text += COUNTED_MARK
    return text


def _arrow(col: Column, latex: bool) -> str:
    if latex:
        return r"$\uparrow$" if col.higher_is_better else r"$\downarrow$"
    return "↑" if col.higher_is_better else "↓"


def _row_name(row, escape) -> str:
    return escape(display_name(row.name, row.is_reference)) + (escape(UNAVAILABLE_MARK) if row.unavailable else "")


def _groups(columns: list[Column]) -> list[tuple[str, int, int]]:
    """Runs of adjacent columns under one header: (label, first index, span); label "" for none."""
    out: list[tuple[str, int, int]] = []
    for j, c in enumerate(columns):
        if out and c.group and out[-1][0] == c.group and out[-1][1] + out[-1][2] == j:
            out[-1] = (c.group, out[-1][1], out[-1][2] + 1)
        else:
            out.append((c.group, j, 1))
    return out


def render_latex(td: TableData, compact: bool = False, shared_with: tuple[str, ...] = ()) -> str:
    grid = printed_cells(td, compact)
    columns = visible_columns(td, compact)
    ncols = len(columns)
    header_top, cmidrules = None, ""
    if td.grouped and not compact:
        header_top = ["Model"]
        for label, start, span in _groups(columns):
            if label:
                header_top.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(label)}}}")
            else:
                col = columns[start]
                header_top.append(f"{latex_escape(col.label)} {_arrow(col, True)}")
        cmidrules = " ".join(rf"\cmidrule(lr){{{start + 2}-{start + span + 1}}}"
                             for label, start, span in _groups(columns) if label)
        header = [""] + [f"{latex_escape(c.label)} {_arrow(c, True)}" if c.group else "" for c in columns]
    else:
        header = ["Model"] + [f"{latex_escape(c.label)} {_arrow(c, True)}" for c in columns]
    body = [[_row_name(r, latex_escape)] + [_latex_cell(pc) for pc in cells] for r, cells in zip(td.rows, grid)]
    return render(
        "table.tex.j2",
        table_id=td.id,
        number=td.number,
        caption=" ".join(latex_escape(s) for s in caption_sentences(td, compact=compact, shared_with=shared_with)),
        colspec="l" + "c" * ncols,
        header_top=header_top,
        cmidrules=cmidrules,
        header=header,
        body=body,
        problems=[latex_escape(p) for p in problem_lines(td)],
    )


def render_markdown(td: TableData, compact: bool = False, shared_with: tuple[str, ...] = ()) -> str:
    grid = printed_cells(td, compact)
    columns = visible_columns(td, compact)
    header = ["Model"] + [
        f"{markdown_escape(c.group + ' ' if c.group else '')}{markdown_escape(c.label)} {_arrow(c, False)}"
        for c in columns
    ]
    body = [[_row_name(r, markdown_escape)] + [markdown_escape(_markdown_cell(pc)) for pc in cells]
            for r, cells in zip(td.rows, grid)]
    return render(
        "table.md.j2",
        number=td.number,
        caption=" ".join(caption_sentences(td, markdown=True, compact=compact, shared_with=shared_with)),
        header=header,
        align=["---"] + ["---:"] * len(columns),
        body=body,
        problems=[markdown_escape(p) for p in problem_lines(td)],
    )


def render_csv(td: TableData) -> str:
    """One line per row: each metric's mean, std and n (printed units, unrounded), Params and FLOPs
    with where they come from (``runs``, ``counted`` from the model, or empty)."""
    fields = ["table", "profile", "row_id", "name", "reference", "unavailable"]
    for c in td.columns:
        fields += [c.key] + ([f"{c.key}_std", f"{c.key}_n"] if c.spread else [f"{c.key}_source"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in td.rows:
        line = {"table": td.id, "profile": td.profile, "row_id": r.id, "name": r.name,
                "reference": int(r.is_reference), "unavailable": r.unavailable or ""}
        for c in td.columns:
            cell = r.cells.get(c.key)
            line[c.key] = "" if cell is None else round(cell.mean, 6)
            if c.spread:
                line[f"{c.key}_std"] = "" if cell is None or cell.std is None else round(cell.std, 6)
                line[f"{c.key}_n"] = 0 if cell is None else cell.n
            else:
                line[f"{c.key}_source"] = "" if cell is None else "counted" if is_counted(cell) else "runs"
        writer.writerow(line)
    return buffer.getvalue()


def render_table(td: TableData, fmt: str = "latex", compact: bool = False, shared_with: tuple[str, ...] = ()) -> str:
    """``td`` in ``fmt``; ``compact``: Params and FLOPs only, for a table without runs of its own
    (``shared_with``: the tables whose runs its rows share). CSV is always complete."""
    if fmt == "latex":
        return render_latex(td, compact, shared_with)
    if fmt == "markdown":
        return render_markdown(td, compact, shared_with)
    if fmt == "csv":
        return render_csv(td)
    from study.errors import ConfigError

    raise ConfigError(f"--format: unknown {fmt!r}; allowed: {', '.join(FORMATS)}")
