"""The whole report in one call: tables, figure, comparison, audit, and the standalone document.

``build_report(store)`` writes into ``<store root>/report/`` by default:

    table1.tex ... table7.tex   the tables (or .md / .csv with another format)
    fig2.png, fig2.pdf          accuracy vs params from our Table 1 runs
    fig2_paper.png, .pdf        the same figure from the paper's numbers
    compare.tex, compare.md     reproduced vs paper, every cell
    audit.tex, audit.md         the claims audit of the ablation tables
    report.tex                  a standalone document that inputs them all
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from study.errors import ConfigError, StudyError
from study.report import audit as audit_mod
from study.report import compare as compare_mod
from study.report.collect import TableData, collect_tables, dataset_label, snapshot, table_number
from study.report.format import latex_escape, markdown_escape
from study.report.jinja import render
from study.report.tables import FORMATS, SUFFIX, render_table
from study.store import Store

FIGURE_TABLE = "table1"


@dataclass
class ReportResult:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    tables: list[TableData] = field(default_factory=list)
    audits: list = field(default_factory=list)
    pdf: Path | None = None
    notes: list[str] = field(default_factory=list)


def parse_tables(spec: str | None, available) -> list[str]:
    """``"1,3,7"`` (or ``"table1,table3"``) -> table ids, in the given order; all tables for None."""
    available = list(available)
    if not spec:
        return available
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        table_id = item if item.startswith("table") else f"table{item}"
        if table_id not in available:
            numbers = ", ".join(table_number(t) for t in available)
            raise ConfigError(f"--tables: unknown table {item!r}; available: {numbers}")
        if table_id not in out:
            out.append(table_id)
    if not out:
        raise ConfigError("--tables: no table named; e.g. --tables 1,3,7")
    return out


def _write(path: Path, text: str, files: list[Path]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    files.append(path)


def _problems(tables: list[TableData]) -> list[str]:
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
    fmt: str = "latex",
    figure: bool = True,
    audit: bool = True,
    n_boot: int = audit_mod.N_BOOT,
    pdf: bool = False,
    variants: dict | None = None,
    seeds: list[int] | None = None,
) -> ReportResult:
    """Render the report of ``store``; ``tables`` are table ids (all by default);
    ``seeds`` restricts every table, figure and audit to those seeds' runs."""
    from study.variants import load_tables

    if fmt not in FORMATS:
        raise ConfigError(f"--format: unknown {fmt!r}; allowed: {', '.join(FORMATS)}")
    if pdf and fmt != "latex":
        raise ConfigError("--pdf needs --format latex")
    variants = variants if variants is not None else load_tables()
    ids = tables if tables is not None else list(variants)
    unknown = [t for t in ids if t not in variants]
    if unknown:
        raise ConfigError(f"unknown table(s) {', '.join(unknown)}; available: {', '.join(variants)}")
    store = snapshot(store, seeds)
    out = Path(out_dir) if out_dir is not None else store.root / "report"
    result = ReportResult(out)
    if not any(True for _ in store.records()):
        result.notes.append(f"the store at {store.root} holds no runs: every cell is empty")
    result.tables = collect_tables([variants[t] for t in ids], store, profile)
    for td in result.tables:
        _write(out / f"{td.id}{SUFFIX[fmt]}", render_table(td, fmt), result.files)

    figures: list[Path] = []
    fig_table = next((td for td in result.tables if td.id == FIGURE_TABLE), None)
    if figure and fig_table is not None:
        from study.report.figure import write_fig2

        figures = write_fig2(fig_table, out)
        result.files += figures

    compare_fmts = ("latex", "markdown") if fmt == "latex" else (fmt,)
    for f in compare_fmts:
        renderer = {"latex": compare_mod.render_latex, "markdown": compare_mod.render_markdown,
                    "csv": compare_mod.render_csv}[f]
        _write(out / f"compare{SUFFIX[f]}", renderer(result.tables), result.files)

    if audit:
        result.audits = audit_mod.audit_tables(result.tables, store, n_boot)
        for f in compare_fmts:
            renderer = {"latex": audit_mod.render_latex, "markdown": audit_mod.render_markdown,
                        "csv": audit_mod.render_csv}[f]
            _write(out / f"audit{SUFFIX[f]}", renderer(result.audits), result.files)

    problems = _problems(result.tables)
    figure_names = [p.name for p in figures if p.suffix == ".pdf"]
    if fmt == "latex":
        _write(out / "report.tex", render(
            "report.tex.j2",
            store=latex_escape(str(store.root)),
            tables=[{"file": td.id, "profile": td.profile, "number": td.number} for td in result.tables],
            figures=figure_names,
            figure_profile=fig_table.profile if fig_table else "",
            audit=audit,
            problems=[latex_escape(p) for p in problems],
        ), result.files)
        if pdf:
            result.pdf = compile_pdf(out / "report.tex")
            result.files.append(result.pdf)
    elif fmt == "markdown":
        parts = [(out / f"{td.id}.md").read_text() for td in result.tables]
        _write(out / "report.md", render(
            "report.md.j2",
            store=str(store.root), tables=parts,
            figures=[p.name for p in figures if p.suffix == ".png"],
            problems=[markdown_escape(p) for p in problems],
            compare=(out / "compare.md").read_text(),
            audit=(out / "audit.md").read_text() if audit else "",
        ), result.files)
    return result


def compile_pdf(tex: Path, timeout: float = 180, passes: int = 2) -> Path:
    """Compile ``tex`` with pdflatex in its own folder (twice: longtable settles its widths)."""
    exe = shutil.which("pdflatex")
    if exe is None:
        raise StudyError("pdflatex is not installed (Debian: apt-get install texlive-latex-base "
                         "texlive-latex-recommended texlive-fonts-recommended)")
    tex = Path(tex)
    for _ in range(passes):
        try:
            proc = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", tex.name], cwd=tex.parent,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StudyError(f"pdflatex on {tex} took longer than {timeout:.0f} s") from None
        if proc.returncode != 0:
            raise StudyError(f"pdflatex failed on {tex} (see {tex.with_suffix('.log')}):\n{proc.stdout[-3000:]}")
    return tex.with_suffix(".pdf")
