"""The whole report in one call: tables, figures, comparison, audit, differences, and the documents.

``build_report(store)`` writes into ``<store root>/report/`` by default, in every format
(``fmt="all"``: LaTeX with its PDF where pdflatex is installed, Markdown, and one
self-contained HTML page); ``fmt`` names one format instead (``csv`` too), and formats add
up in one folder (``study.report.folder``):

    table3.tex | .md | .csv     the tables with runs of their own, in full
    complexity.tex | .md        Params and FLOPs of every variant, counted, beside the paper's
    fig2.png|pdf, fig2_paper.*  accuracy vs params: ours (when Table 1 has runs) and the paper's
    fig4.png|pdf                segmentation results of Table 1's models (from stored predictions)
    curves_table3.png|pdf       training curves of each table with runs (mean over seeds, ±1 std)
    compare.*, audit.*          reproduced vs paper; the claims audit of the ablation tables
    differences.tex | .md       where the paper, the release and the harness differ; Table R's effects
    report.tex (+ report.pdf), report.md, report.html   the documents
    .report-files               what the folder holds
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from study.errors import ConfigError, StudyError, did_you_mean
from study.report import audit as audit_mod
from study.report import compare as compare_mod
from study.report import differences as differences_mod
from study.report.collect import TableData, collect_table, collect_tables, dataset_label, snapshot, table_number
from study.report.coverage import Coverage, coverage, shown_tables, summary
from study.report.folder import MANIFEST, PDF_BYPRODUCTS, compile_pdf, have_pdflatex, tidy_folder  # noqa: F401
from study.report.tables import SUFFIX, render_table
from study.store.runs import Store
from study.store.status import mixed_kernel_notes, mixed_numerics_notes

FORMAT_CHOICES = ("all", "latex", "markdown", "html", "csv")
DOCUMENT_FORMATS = ("latex", "markdown", "html")
SUFFIX = {**SUFFIX, "html": ".html"}


@dataclass
class ReportResult:
    out_dir: Path
    formats: tuple[str, ...] = DOCUMENT_FORMATS
    files: list[Path] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)  # every rendered piece by file name, written or not
    tables: list[TableData] = field(default_factory=list)
    audits: list = field(default_factory=list)
    effects: list = field(default_factory=list)  # Table R's measured differences
    pdf: Path | None = None
    notes: list[str] = field(default_factory=list)
    coverage: dict[str, Coverage] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)  # files of an earlier report, not written this time

    @property
    def summary(self) -> list[str]:
        """Which tables have runs, and which are not shown in full (sentences)."""
        return summary(self.tables, self.coverage)

    def emit(self, name: str, text: str, fmt: str) -> None:
        """Keep ``text`` as piece ``name``; write it when the report writes format ``fmt``."""
        self.texts[name] = text
        if fmt in self.formats:
            path = self.out_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            self.files.append(path)


def parse_tables(spec: str | None, available) -> list[str]:
    """``"1,3,7"`` (or ``"table1,table3"``) -> table ids, in the given order; all tables for None."""
    available = list(available)
    if not spec:
        return available
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        # "3" and "table3" name the paper's Table 3; a lab's own table is named by its file's stem.
        table_id = item if item.startswith("table") or item in available else f"table{item.lower()}"
        if table_id not in available:
            numbers = [table_number(t) for t in available]
            raise ConfigError(f"--tables: unknown table {item!r}; available: {', '.join(numbers)}"
                              + did_you_mean(item, numbers + list(available)))
        if table_id not in out:
            out.append(table_id)
    if not out:
        raise ConfigError("--tables: no table named; e.g. --tables 1,3,7")
    return out


def formats_of(fmt: str) -> tuple[str, ...]:
    if fmt not in FORMAT_CHOICES:
        raise ConfigError(f"--format: unknown {fmt!r}; allowed: {', '.join(FORMAT_CHOICES)}")
    return DOCUMENT_FORMATS if fmt == "all" else (fmt,)


def problems(tables: list[TableData]) -> list[str]:
    seen, out = set(), []
    for td in tables:
        for p in td.problems:
            key = (p.row_id, p.dataset, p.seed, td.profile)
            if key in seen:
                continue
            seen.add(key)
            out.append(f"Table {td.number}, {p.row_name} ({dataset_label(p.dataset)}, seed {p.seed}, profile "
                       f"{td.profile}): {p.status}: {p.reason}")
    return out


def build_report(
    store: Store,
    out_dir: Path | None = None,
    tables: list[str] | None = None,
    profile: str = "auto",
    fmt: str = "all",
    figure: bool = True,
    audit: bool = True,
    n_boot: int = audit_mod.N_BOOT,
    pdf: bool | None = None,
    variants: dict | None = None,
    seeds: list[int] | None = None,
    overrides: dict | None = None,
    cases: list[str] | None = None,
    count: bool = True,
    progress=None,
) -> ReportResult:
    """Render the report of ``store``; ``tables`` are table ids (all by default); ``pdf``: compile
    report.tex (None: where pdflatex is installed and LaTeX is written); ``seeds`` restricts every table,
    figure and audit to those seeds' runs; ``overrides`` are the ``--set`` values the runs were made with;
    ``count``: rows without runs get their Params and FLOPs counted from the model (``counting``)."""
    from study.variants import load_tables

    formats = formats_of(fmt)
    if pdf and "latex" not in formats:
        raise ConfigError("--pdf needs the LaTeX output (--format all or latex)")
    variants = variants if variants is not None else load_tables()
    ids = tables if tables is not None else list(variants)
    unknown = [t for t in ids if t not in variants]
    if unknown:
        raise ConfigError(f"unknown table(s) {', '.join(unknown)}; available: {', '.join(variants)}")
    store = snapshot(store, seeds)
    result = ReportResult(Path(out_dir) if out_dir is not None else store.root / "report", formats)
    result.out_dir.mkdir(parents=True, exist_ok=True)
    if not any(True for _ in store.records()):
        result.notes.append(f"the store at {store.root} holds no runs: every cell is empty")
    result.tables = collect_tables([variants[t] for t in ids], store, profile, overrides)
    if profile == "auto":
        result.tables = _align_empty_tables(result.tables, variants, store, overrides)
    if count:
        from study.report.counting import fill_counted

        fill_counted(result.tables, progress=progress)
    result.coverage = coverage(result.tables)
    _render_pieces(result, store, audit, n_boot)
    from study.report import documents

    figures = documents.write_figures(result, store, figure, cases)
    mixed = mixed_kernel_notes(store.records()) + mixed_numerics_notes(store.records())
    result.notes += mixed
    parts = documents.Parts(store, problems(result.tables) + mixed, figures, "challenge.md" in result.texts, audit)
    if "latex" in formats:
        documents.write_latex(result, parts)
        compile_it = pdf if pdf is not None else have_pdflatex()
        if compile_it:
            result.pdf = compile_pdf(result.out_dir / "report.tex")
            result.files.append(result.pdf)
        elif pdf is None:
            result.notes.append("pdflatex is not installed: report.tex written, no report.pdf")
    if "markdown" in formats:
        documents.write_markdown(result, parts)
    if "html" in formats:
        from study.report.html import write_html

        write_html(result, parts)
    _tidy(result)
    return result


def _render_pieces(result: ReportResult, store: Store, audit: bool, n_boot: int) -> None:
    """Every table and section in every text format (kept in ``result.texts``; written per format)."""
    from study.report import challenge_table, complexity_table

    texts = ("latex", "markdown") + (("csv",) if "csv" in result.formats else ())
    for td in shown_tables(result.tables, result.coverage):  # full tables only where there are runs of their own
        for f in texts:
            result.emit(f"{td.id}{SUFFIX[f]}", render_table(td, f), f)
    lines = complexity_table.complexity_lines(result.tables)
    result.emit("complexity.tex", complexity_table.render_latex(lines), "latex")
    result.emit("complexity.md", complexity_table.render_markdown(lines), "markdown")
    challenge = challenge_table.challenge_lines(result.tables, store)
    if challenge:
        result.emit("challenge.tex", challenge_table.render_latex(challenge), "latex")
        result.emit("challenge.md", challenge_table.render_markdown(challenge), "markdown")
    for f in texts:
        renderer = {"latex": compare_mod.render_latex, "markdown": compare_mod.render_markdown,
                    "csv": compare_mod.render_csv}[f]
        result.emit(f"compare{SUFFIX[f]}", renderer(result.tables), f)
    if audit:
        result.audits = audit_mod.audit_tables(result.tables, store, n_boot)
        for f in texts:
            renderer = {"latex": audit_mod.render_latex, "markdown": audit_mod.render_markdown,
                        "csv": audit_mod.render_csv}[f]
            result.emit(f"audit{SUFFIX[f]}", renderer(result.audits), f)
    table_r = next((td for td in result.tables if td.table.role == "differences"), None)
    result.effects = differences_mod.measure(table_r, store, n_boot) if table_r is not None else []
    result.emit("differences.tex", differences_mod.render_latex(result.effects, table_r), "latex")
    result.emit("differences.md", differences_mod.render_markdown(result.effects, table_r), "markdown")


def _tidy(result: ReportResult) -> None:
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    written = [p.name for p in result.files] + (list(PDF_BYPRODUCTS) if result.pdf else [])
    result.removed, untracked = tidy_folder(out, written)
    if result.removed:
        result.notes.append(f"removed {len(result.removed)} file(s) an earlier report wrote in {out} and this one "
                            f"did not: {', '.join(result.removed)}")
    if untracked:
        result.notes.append(f"{out} also holds {', '.join(untracked)}, not written by this report and not "
                            "recorded as an earlier report's (left alone: delete them if they are stale)")


def _align_empty_tables(tables: list[TableData], variants: dict, store: Store, overrides) -> list[TableData]:
    """Under ``--profile auto``, a table without a completed run takes the profile of the tables that have
    runs (a smoke report's Table 7 is a smoke table with no runs yet, not a paper one)."""
    ran = Counter(td.profile for td in tables if any(c.completed for c in td.cell_runs))
    if not ran:
        return tables
    profile = ran.most_common(1)[0][0]
    return [td if td.profile == profile or any(c.completed for c in td.cell_runs)
            else collect_table(variants[td.id], store, profile, overrides) for td in tables]


__all__ = ["ReportResult", "build_report", "parse_tables", "compile_pdf", "shown_tables", "StudyError", "MANIFEST"]
