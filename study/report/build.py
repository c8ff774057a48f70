"""The whole report in one call: tables, figure, comparison, audit, and the standalone document.

``build_report(store)`` writes into ``<store root>/report/`` by default:

    table1.tex ... table7.tex   the tables (or .md / .csv with another format)
    fig2.png, fig2.pdf          accuracy vs params from our Table 1 runs (when Table 1 has runs of its own)
    fig2_paper.png, .pdf        the same figure from the paper's numbers
    compare.tex, compare.md     reproduced vs paper, every cell that can be compared
    audit.tex, audit.md         the claims audit of the ablation tables
    report.tex                  a standalone document that inputs them all
    .report-files               the names of the files above that this report wrote

The folder holds exactly one report: a file that an earlier report wrote there
(named in its ``.report-files``) and this one did not (``--tables 1,3`` after a
report of all seven) is removed, and the notes name it. Nothing else is ever
removed: a file of the report's names that no report recorded is named in a
note and left alone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from study.errors import ConfigError, StudyError
from study.report import audit as audit_mod
from study.report import compare as compare_mod
from study.report import differences as differences_mod
from study.report.collect import TableData, collect_table, collect_tables, dataset_label, snapshot, table_number
from study.report.coverage import Coverage, coverage, summary
from study.report.format import latex_escape, markdown_escape
from study.report.jinja import render
from study.report.tables import FORMATS, SUFFIX, render_table
from study.store import Store

FIGURE_TABLE = "table1"
MANIFEST = ".report-files"
PDF_BYPRODUCTS = ("report.aux", "report.log", "report.out")


@dataclass
class ReportResult:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    tables: list[TableData] = field(default_factory=list)
    audits: list = field(default_factory=list)
    effects: list = field(default_factory=list)  # Table R's measured differences
    pdf: Path | None = None
    notes: list[str] = field(default_factory=list)
    coverage: dict[str, Coverage] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)  # files of an earlier report, not written this time

    @property
    def summary(self) -> list[str]:
        """Which tables have runs, and which are shown compactly (sentences)."""
        return summary(self.tables, self.coverage)


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
    overrides: dict | None = None,
    cases: list[str] | None = None,
    count: bool = True,
    progress=None,
) -> ReportResult:
    """Render the report of ``store``; ``tables`` are table ids (all by default);
    ``seeds`` restricts every table, figure and audit to those seeds' runs; ``overrides`` are the
    ``--set`` values the runs were made with (each cell holds exactly the runs they resolve to);
    ``count``: rows without runs get their Params and FLOPs counted from the model (``counting``),
    ``progress`` (a callable taking a line) hears about it before it starts."""
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
    result.tables = collect_tables([variants[t] for t in ids], store, profile, overrides)
    if profile == "auto":
        result.tables = _align_empty_tables(result.tables, variants, store, overrides)
    if count:
        from study.report.counting import fill_counted

        fill_counted(result.tables, progress=progress)
    result.coverage = coverage(result.tables)
    for td in result.tables:
        cover = result.coverage[td.id]
        _write(out / f"{td.id}{SUFFIX[fmt]}", render_table(td, fmt, cover.compact, cover.shared_with), result.files)
    challenge = _write_challenge(result, store, fmt)
    figures = _write_figures(result, store, figure, cases)
    _write_comparisons(result, store, fmt, audit, n_boot)
    parts = _Parts(store, _problems(result.tables), figures, challenge, audit)
    if fmt == "latex":
        _write_latex_document(result, parts)
        if pdf:
            result.pdf = compile_pdf(out / "report.tex")
            result.files.append(result.pdf)
    elif fmt == "markdown":
        _write_markdown_document(result, parts)
    _tidy(result)
    return result


@dataclass
class _Figures:
    fig2: list[Path] = field(default_factory=list)
    table: TableData | None = None  # Table 1, which the figures draw
    ours_drawn: bool = False
    note: str = ""  # why our Fig. 2 is not drawn
    fig4: object = None  # study.report.fig4.Fig4


@dataclass
class _Parts:
    """What the standalone document puts together."""

    store: Store
    problems: list[str]
    figures: _Figures
    challenge: bool
    audit: bool


def _write_challenge(result: ReportResult, store: Store, fmt: str) -> bool:
    """The challenge's metrics table, when real-data runs carry them; whether it was written."""
    from study.report import challenge_table

    lines = challenge_table.challenge_lines(result.tables, store)
    if lines:
        for f in ("latex", "markdown") if fmt == "latex" else ("markdown",):
            render_challenge = challenge_table.render_latex if f == "latex" else challenge_table.render_markdown
            _write(result.out_dir / f"challenge{SUFFIX[f]}", render_challenge(lines), result.files)
    return bool(lines)


def _write_figures(result: ReportResult, store: Store, figure: bool, cases) -> _Figures:
    figs = _Figures(table=next((td for td in result.tables if td.id == FIGURE_TABLE), None))
    if figure and figs.table is not None:
        from study.report.fig4 import write_fig4
        from study.report.figure import write_fig2

        figs.ours_drawn = result.coverage[figs.table.id].own
        figs.fig2 = write_fig2(figs.table, result.out_dir, ours_too=figs.ours_drawn)
        figs.fig4 = write_fig4(figs.table, store, result.out_dir, cases)
        result.files += figs.fig2 + figs.fig4.files
        result.notes.append(figs.fig4.note)
    figs.note = _figure_note(figs.table, figure, figs.ours_drawn)
    return figs


def _write_comparisons(result: ReportResult, store: Store, fmt: str, audit: bool, n_boot: int) -> None:
    """Reproduced vs paper, and the claims audit."""
    formats = ("latex", "markdown") if fmt == "latex" else (fmt,)
    for f in formats:
        renderer = {"latex": compare_mod.render_latex, "markdown": compare_mod.render_markdown,
                    "csv": compare_mod.render_csv}[f]
        _write(result.out_dir / f"compare{SUFFIX[f]}", renderer(result.tables), result.files)
    if audit:
        result.audits = audit_mod.audit_tables(result.tables, store, n_boot)
        for f in formats:
            renderer = {"latex": audit_mod.render_latex, "markdown": audit_mod.render_markdown,
                        "csv": audit_mod.render_csv}[f]
            _write(result.out_dir / f"audit{SUFFIX[f]}", renderer(result.audits), result.files)
    _write_differences(result, store, formats, n_boot)


def _write_differences(result: ReportResult, store: Store, formats, n_boot: int) -> None:
    """Table R's effects and the registry of differences (differences.tex / .md)."""
    table_r = next((td for td in result.tables if td.id == differences_mod.TABLE_R), None)
    result.effects = differences_mod.measure(table_r, store, n_boot) if table_r is not None else []
    for f in formats:
        if f == "csv":
            continue
        renderer = differences_mod.render_latex if f == "latex" else differences_mod.render_markdown
        _write(result.out_dir / f"differences{SUFFIX[f]}", renderer(result.effects, table_r), result.files)


def _write_latex_document(result: ReportResult, parts: _Parts) -> None:
    from study.report.figure import latex_width

    figs = parts.figures
    fig4 = figs.fig4
    _write(result.out_dir / "report.tex", render(
        "report.tex.j2",
        store=latex_escape(str(parts.store.root)),
        summary=[latex_escape(s) for s in result.summary],
        synthetic=any(set(td.datasets) - set(td.table.datasets) for td in result.tables),
        tables=[{"file": td.id, "profile": td.profile, "number": td.number} for td in result.tables],
        figures=[{"file": p.name, "width": latex_width(_panels(p, figs.table)), "number": number,
                  "caption": latex_escape(_figure_caption(p, figs.table))}
                 for p, number in _numbered([p for p in figs.fig2 if p.suffix == ".pdf"])],
        figure_note=latex_escape(figs.note),
        audit=parts.audit,
        differences=True,
        fig4="fig4.pdf" if fig4 is not None and fig4.files else None,
        challenge=parts.challenge,
        fig4_caption=latex_escape(fig4.note.removeprefix("Fig. 4: ")) if fig4 is not None else "",
        problems=[latex_escape(p) for p in parts.problems],
    ), result.files)


def _write_markdown_document(result: ReportResult, parts: _Parts) -> None:
    out, figs = result.out_dir, parts.figures
    fig4 = figs.fig4
    _write(out / "report.md", render(
        "report.md.j2",
        store=str(parts.store.root), tables=[(out / f"{td.id}.md").read_text() for td in result.tables],
        summary=result.summary,
        synthetic=any(set(td.datasets) - set(td.table.datasets) for td in result.tables),
        figures=[{"file": p.name, "caption": _figure_caption(p, figs.table)}
                 for p in figs.fig2 if p.suffix == ".png"],
        figure_note=figs.note,
        problems=[markdown_escape(p) for p in parts.problems],
        challenge=(out / "challenge.md").read_text() if parts.challenge else "",
        fig4="fig4.png" if fig4 is not None and fig4.files else None,
        fig4_caption=fig4.note if fig4 is not None else "",
        compare=(out / "compare.md").read_text(),
        audit=(out / "audit.md").read_text() if parts.audit else "",
        differences=(out / "differences.md").read_text(),
    ), result.files)


def _tidy(result: ReportResult) -> None:
    out = result.out_dir
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


def _numbered(paths: list[Path]) -> list[tuple[Path, str]]:
    """Fig. 2, or Fig. 2a (ours) and 2b (the paper's)."""
    if len(paths) == 1:
        return [(paths[0], "2")]
    return [(p, f"2{chr(ord('a') + k)}") for k, p in enumerate(paths)]


def _panels(path: Path, td: TableData | None) -> int:
    if path.stem.endswith("_paper") or td is None:
        from study.report.figure import PAPER_DATASETS

        return len(PAPER_DATASETS)
    return max(1, len(td.datasets))


def _figure_caption(path: Path, td: TableData | None) -> str:
    common = ("DSC (%) against Params (M, log scale); colour: FLOPs (G, log scale, one scale for both figures); "
              "stars: the rows marked (Ours); grey bars: ±1 std")
    if path.stem.endswith("_paper"):
        return f"The paper's Table 1. {common} as the paper prints it."
    return (f"Our Table 1 runs (profile {td.profile}, mean over seeds). {common} over seeds (sample std, "
            f"ddof = 1); Params and FLOPs as in Table 1.")


def _figure_note(td: TableData | None, figure: bool, ours_drawn: bool) -> str:
    if td is None or not figure or ours_drawn:
        return ""
    return (f"Our Fig. 2 needs runs of Table 1's models (python -m study run table1 --seeds 3 --profile "
            f"{td.profile}): only the paper's is shown.")


def _report_names(out: Path) -> list[str]:
    """Files in ``out`` with a name the report writes (whatever wrote them)."""
    pattern = re.compile(r"^(table\w+\.(tex|md|csv)|fig\d+(_paper)?\.(png|pdf)|(compare|audit|challenge)\.(tex|md|csv)"
                         r"|report\.(tex|md|pdf|aux|log|out))$")
    return sorted(p.name for p in out.iterdir() if p.is_file() and pattern.match(p.name))


def tidy_folder(out: Path, written: list[str]) -> tuple[list[str], list[str]]:
    """Remove the files an earlier report recorded in ``.report-files`` that this one did not write, and
    record what this one wrote. Returns (removed, left alone: report-like names nobody recorded)."""
    manifest = out / MANIFEST
    try:
        earlier = {line.strip() for line in manifest.read_text().splitlines() if line.strip()}
    except OSError:
        earlier = set()
    keep = set(written)
    removed = []
    for name in sorted(earlier - keep):
        path = out / name
        if "/" in name or name.startswith(".") or not path.is_file():
            continue
        path.unlink()
        removed.append(name)
    untracked = [n for n in _report_names(out) if n not in keep and n not in earlier]
    manifest.write_text("".join(f"{n}\n" for n in sorted(keep)), encoding="utf-8")
    return removed, untracked


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
