"""Tables 1–7 rendered from collected cells: LaTeX (booktabs), Markdown and CSV.

Every format prints the same cells: mean ± sample std over seeds (ddof = 1),
"–" where a cell has no completed run, the best printed value of each column
bold and the second best underlined (italic in Markdown), and a caption that
states the profile, the number of seeds and the std's ddof.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from study.report.collect import DDOF, Cell, Column, TableData, dataset_label
from study.report.format import BEST, DASH, SECOND, fixed, latex_escape, markdown_escape, rank_marks
from study.report.jinja import render

FORMATS = ("latex", "markdown", "csv")
SUFFIX = {"latex": ".tex", "markdown": ".md", "csv": ".csv"}
UNAVAILABLE_MARK = "†"


@dataclass(frozen=True)
class PrintedCell:
    text: str | None  # "79.82 ± 0.73"; None for no data
    mark: str | None  # BEST, SECOND or None
    n_note: int | None  # the cell's number of runs, when it differs from the caption's


def _printed_mean(cell: Cell | None, column: Column) -> str | None:
    return None if cell is None else fixed(cell.mean, column.decimals)


def printed_cells(td: TableData) -> list[list[PrintedCell]]:
    """The printed cells, row by row, with marks chosen on the printed means."""
    grid = [[None] * len(td.columns) for _ in td.rows]
    for j, col in enumerate(td.columns):
        means = [_printed_mean(r.cells.get(col.key), col) for r in td.rows]
        marks = rank_marks(means, col.higher_is_better)
        typical = td.typical_n(col.kind)
        for i, r in enumerate(td.rows):
            cell = r.cells.get(col.key)
            if cell is None or means[i] is None:
                grid[i][j] = PrintedCell(None, None, None)
                continue
            text = means[i]
            if col.spread and cell.std is not None:
                text = f"{text} ± {fixed(cell.std, col.decimals)}"
            n_note = cell.n if col.spread and cell.n != typical else None
            grid[i][j] = PrintedCell(text, marks[i], n_note)
    return grid


def _runs_phrase(n: int, what: str) -> str:
    return f"one {what} (no std)" if n == 1 else f"n = {n} {what}s"


def caption_sentences(td: TableData, markdown: bool = False) -> list[str]:
    """The caption as plain Unicode sentences (escaped later for LaTeX)."""
    table = td.table
    where = ", ".join(dataset_label(d) for d in td.datasets)
    if td.external:
        where += "; external: " + ", ".join(dataset_label(e) for e in td.external)
    out = [f"{table.title} ({where})."]
    setup = _setup(td)
    if td.profile == "paper":
        out.append(f"Profile paper: the paper's protocol{setup}.")
    else:
        out.append(f"Profile {td.profile}{setup}: these numbers check the pipeline and are not "
                   "comparable to the paper's.")
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
    out.append("Params (M) and FLOPs (G, thop MACs at 1×3×256×256) measured on the runs.")
    second = "italic" if markdown else "underline"
    out.append(f"Bold: best, {second}: second best, chosen on the printed values (ties marked alike).")
    gaps = f"{DASH}: no completed run."
    if any(r.unavailable for r in td.rows):
        gaps += f" {UNAVAILABLE_MARK}: model not registered yet."
    out.append(gaps)
    return out


def _setup(td: TableData) -> str:
    for row in td.table.rows:
        if not row.unavailable and td.datasets:
            cfg = row.run_config(td.datasets[0], td.profile)
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
    return text


def _arrow(col: Column, latex: bool) -> str:
    if latex:
        return r"$\uparrow$" if col.higher_is_better else r"$\downarrow$"
    return "↑" if col.higher_is_better else "↓"


def _row_name(row, escape) -> str:
    return escape(row.name) + (escape(UNAVAILABLE_MARK) if row.unavailable else "")


def _groups(columns: list[Column]) -> list[tuple[str, int, int]]:
    """Runs of adjacent columns under one header: (label, first index, span); label "" for none."""
    out: list[tuple[str, int, int]] = []
    for j, c in enumerate(columns):
        if out and c.group and out[-1][0] == c.group and out[-1][1] + out[-1][2] == j:
            out[-1] = (c.group, out[-1][1], out[-1][2] + 1)
        else:
            out.append((c.group, j, 1))
    return out


def render_latex(td: TableData) -> str:
    grid = printed_cells(td)
    ncols = len(td.columns)
    header_top, cmidrules = None, ""
    if td.grouped:
        header_top = ["Model"]
        for label, start, span in _groups(td.columns):
            if label:
                header_top.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(label)}}}")
            else:
                col = td.columns[start]
                header_top.append(f"{latex_escape(col.label)} {_arrow(col, True)}")
        cmidrules = " ".join(rf"\cmidrule(lr){{{start + 2}-{start + span + 1}}}"
                             for label, start, span in _groups(td.columns) if label)
        header = [""] + [f"{latex_escape(c.label)} {_arrow(c, True)}" if c.group else "" for c in td.columns]
    else:
        header = ["Model"] + [f"{latex_escape(c.label)} {_arrow(c, True)}" for c in td.columns]
    body = [[_row_name(r, latex_escape)] + [_latex_cell(pc) for pc in cells] for r, cells in zip(td.rows, grid)]
    return render(
        "table.tex.j2",
        table_id=td.id,
        number=td.number,
        caption=" ".join(latex_escape(s) for s in caption_sentences(td)),
        colspec="l" + "c" * ncols,
        header_top=header_top,
        cmidrules=cmidrules,
        header=header,
        body=body,
        problems=[latex_escape(p) for p in problem_lines(td)],
    )


def render_markdown(td: TableData) -> str:
    grid = printed_cells(td)
    header = ["Model"] + [
        f"{markdown_escape(c.group + ' ' if c.group else '')}{markdown_escape(c.label)} {_arrow(c, False)}"
        for c in td.columns
    ]
    body = [[_row_name(r, markdown_escape)] + [markdown_escape(_markdown_cell(pc)) for pc in cells]
            for r, cells in zip(td.rows, grid)]
    return render(
        "table.md.j2",
        number=td.number,
        caption=" ".join(caption_sentences(td, markdown=True)),
        header=header,
        align=["---"] + ["---:"] * len(td.columns),
        body=body,
        problems=[markdown_escape(p) for p in problem_lines(td)],
    )


def render_csv(td: TableData) -> str:
    """One line per row: each metric's mean, std and n (printed units, unrounded), Params and FLOPs."""
    fields = ["table", "profile", "row_id", "name", "reference", "unavailable"]
    for c in td.columns:
        fields += [c.key] + ([f"{c.key}_std", f"{c.key}_n"] if c.spread else [])
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
        writer.writerow(line)
    return buffer.getvalue()


def render_table(td: TableData, fmt: str = "latex") -> str:
    if fmt == "latex":
        return render_latex(td)
    if fmt == "markdown":
        return render_markdown(td)
    if fmt == "csv":
        return render_csv(td)
    from study.errors import ConfigError

    raise ConfigError(f"--format: unknown {fmt!r}; allowed: {', '.join(FORMATS)}")
