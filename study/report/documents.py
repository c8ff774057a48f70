"""The report's figures and its LaTeX and Markdown documents (the HTML page: ``study.report.html``).

The documents read as an appendix: the tables with runs of their own in full, one line naming
the tables without, one complexity table for every variant, our Fig. 2 and Fig. 4 where runs
allow (the paper's Fig. 2 beside), each table's training curves, the comparison with the paper,
the claims audit, and where the paper, the release and the harness differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from study.report.collect import TableData
from study.report.format import latex_escape, markdown_escape
from study.report.jinja import render
from study.store.runs import Store


@dataclass
class Figures:
    fig2: list[Path] = field(default_factory=list)
    table: TableData | None = None  # Table 1, which Figs. 2 and 4 draw
    ours_drawn: bool = False
    note: str = ""  # why our Fig. 2 is not drawn
    fig4: object = None  # study.report.fig4.Fig4
    curves: list[tuple[TableData, Path]] = field(default_factory=list)  # each shown table's curves (png, pdf)


@dataclass
class Parts:
    """What the documents put together."""

    store: Store
    problems: list[str]
    figures: Figures
    challenge: bool
    audit: bool


def write_figures(result, store: Store, figure: bool, cases) -> Figures:
    from study.report.coverage import shown_tables

    figs = Figures(table=next((td for td in result.tables if td.table.figure == "fig2"), None))
    if figure and figs.table is not None:
        from study.report.fig4 import write_fig4
        from study.report.figure import write_fig2

        figs.ours_drawn = result.coverage[figs.table.id].own
        figs.fig2 = write_fig2(figs.table, result.out_dir, ours_too=figs.ours_drawn)
        figs.fig4 = write_fig4(figs.table, store, result.out_dir, cases)
        result.files += figs.fig2 + figs.fig4.files
        result.notes.append(figs.fig4.note)
    if figure:
        from study.report.curves import write_table_curves

        for td in shown_tables(result.tables, result.coverage):
            paths = write_table_curves(td, result.out_dir)
            result.files += paths
            figs.curves += [(td, p) for p in paths]
    figs.note = figure_note(figs.table, figure, figs.ours_drawn)
    return figs


def numbered(paths: list[Path]) -> list[tuple[Path, str]]:
    """Fig. 2, or Fig. 2a (ours) and 2b (the paper's)."""
    if len(paths) == 1:
        return [(paths[0], "2")]
    return [(p, f"2{chr(ord('a') + k)}") for k, p in enumerate(paths)]


def panels(path: Path, td: TableData | None) -> int:
    if path.stem.endswith("_paper") or td is None:
        from study.report.figure import PAPER_DATASETS

        return len(PAPER_DATASETS)
    return max(1, len(td.datasets))


def figure_caption(path: Path, td: TableData | None) -> str:
    common = ("DSC (%) against Params (M, log scale); colour: FLOPs (G, log scale, one scale for both figures); "
              "stars: the rows marked (Ours); grey bars: ±1 std")
    if path.stem.endswith("_paper"):
        return f"The paper's Table 1. {common} as the paper prints it."
    return (f"Our Table 1 runs (profile {td.profile}, mean over seeds). {common} over seeds (sample std, "
            f"ddof = 1); Params and FLOPs as in Table 1.")


def figure_note(td: TableData | None, figure: bool, ours_drawn: bool) -> str:
    if td is None or not figure or ours_drawn:
        return ""
    return (f"Our Fig. 2 needs runs of Table 1's models (python -m study run table1 --seeds 3 --profile "
            f"{td.profile}): only the paper's is shown.")


def curves_caption(td: TableData) -> str:
    return (f"Table {td.number}: training curves of every row with runs (profile {td.profile}); mean over seeds, "
            "band ±1 std; points: each run's selected epoch.")


def _synthetic(result) -> bool:
    return any(set(td.datasets) - set(td.table.datasets) for td in result.tables)


def write_latex(result, parts: Parts) -> None:
    from study.report.coverage import shown_tables
    from study.report.figure import latex_width

    figs, fig4 = parts.figures, parts.figures.fig4
    result.emit("report.tex", render(
        "report.tex.j2",
        store=latex_escape(str(parts.store.root)),
        summary=[latex_escape(s) for s in result.summary],
        synthetic=_synthetic(result),
        tables=[{"file": td.id, "number": td.number} for td in shown_tables(result.tables, result.coverage)],
        figures=[{"file": p.name, "width": latex_width(panels(p, figs.table)), "number": number,
                  "caption": latex_escape(figure_caption(p, figs.table))}
                 for p, number in numbered([p for p in figs.fig2 if p.suffix == ".pdf"])],
        figure_note=latex_escape(figs.note),
        curves=[{"file": p.name, "caption": latex_escape(curves_caption(td))}
                for td, p in figs.curves if p.suffix == ".pdf"],
        audit=parts.audit,
        fig4="fig4.pdf" if fig4 is not None and fig4.files else None,
        challenge=parts.challenge,
        fig4_caption=latex_escape(fig4.note.removeprefix("Fig. 4: ")) if fig4 is not None else "",
        problems=[latex_escape(p) for p in parts.problems],
    ), "latex")


def write_markdown(result, parts: Parts) -> None:
    from study.report.coverage import shown_tables

    figs, fig4, texts = parts.figures, parts.figures.fig4, result.texts
    result.emit("report.md", render(
        "report.md.j2",
        store=str(parts.store.root), tables=[texts[f"{td.id}.md"] for td in shown_tables(result.tables, result.coverage)],
        summary=result.summary,
        synthetic=_synthetic(result),
        complexity=texts["complexity.md"],
        figures=[{"file": p.name, "caption": figure_caption(p, figs.table)} for p in figs.fig2 if p.suffix == ".png"],
        figure_note=figs.note,
        curves=[{"file": p.name, "caption": curves_caption(td)} for td, p in figs.curves if p.suffix == ".png"],
        problems=[markdown_escape(p) for p in parts.problems],
        challenge=texts.get("challenge.md", ""),
        fig4="fig4.png" if fig4 is not None and fig4.files else None,
        fig4_caption=fig4.note if fig4 is not None else "",
        compare=texts["compare.md"],
        audit=texts.get("audit.md", "") if parts.audit else "",
        differences=texts["differences.md"],
    ), "markdown")
