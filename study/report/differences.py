"""Where the paper, the authors' release and this harness differ: Table R's measured effects, and
the report section generated from ``paper/differences.toml``.

Each Table R row is its reference (the table's, or the row's ``compare_with``) with one
difference switched to the release's behaviour. Its effect is measured with the claims
audit's machinery (``study.report.audit``): the DSC difference averaged over the seeds both
completed, a percentile bootstrap interval over test images, and the Wilcoxon signed-rank test
on per-image Dice, Holm-corrected across Table R's rows. The verdict is plain: "changes DSC by
x [CI]" when the Holm p < 0.05 and the interval excludes 0, else "no detectable effect at n
seeds". On synthetic data (the smoke profile) the effect is the pipeline's, not the real one.
"""

from __future__ import annotations

from dataclasses import dataclass

from study.paper import Difference, differences
from study.report import audit as audit_mod
from study.report.collect import TableData, dataset_label
from study.report.format import DASH, latex_escape, markdown_escape, signed
from study.report.jinja import render
from study.store.runs import Store

TABLE_R = "tabler"


@dataclass
class Effect:
    row_id: str
    row_name: str
    reference_id: str
    reference_name: str
    stats: audit_mod.RowAudit
    identical: bool = False  # every paired image's counts equal the reference's

    @property
    def short_verdict(self) -> str:
        """For the table, whose other columns carry the numbers."""
        s = self.stats
        if not s.compared:
            return f"not measured: {s.note}"
        if self.identical:
            return "no effect: identical results"
        return self.verdict.split(" (ΔDSC")[0]

    @property
    def verdict(self) -> str:
        s = self.stats
        if not s.compared:
            return f"not measured: {s.note}"
        if self.identical:
            return (f"no effect: the same per-image counts as its reference in all {s.n_seeds} seed(s) (the "
                    "switch changes nothing on this data)")
        interval = f"[{signed(s.ci_dsc[0], 2)}, {signed(s.ci_dsc[1], 2)}]"
        if s.p_holm is not None and s.p_holm < audit_mod.ALPHA and (s.ci_dsc[0] > 0 or s.ci_dsc[1] < 0):
            return f"changes DSC by {signed(s.delta_dsc, 2)} pp {interval}"
        return f"no detectable effect at {s.n_seeds} seed{'s' if s.n_seeds != 1 else ''} " \
               f"(ΔDSC {signed(s.delta_dsc, 2)} pp {interval})"


def references(td: TableData) -> set[str]:
    rows = td.table.rows
    return {td.table.reference} | {r.compare_with for r in rows if r.compare_with}


def measure(td: TableData, store: Store, n_boot: int = audit_mod.N_BOOT) -> list[Effect]:
    """Every non-reference row of Table R against its reference, on the table's (first) dataset."""
    dataset = td.datasets[0]
    effects = []
    for row in td.rows:
        if row.id in references(td):
            continue
        ref_id = row.row.compare_with or td.table.reference
        stats, identical = audit_mod.RowAudit(row.id, row.name), False
        cell, ref_cell = td.runs_for(row.id, dataset), td.runs_for(ref_id, dataset)
        if cell is None or ref_cell is None or not cell.completed or not ref_cell.completed:
            stats.note = "no completed runs of this row and its reference"
        else:
            paired, why = audit_mod.pair_runs(store, cell, ref_cell)
            if paired is None:
                stats.note = why
            else:
                stats = audit_mod.audit_paired(paired, n_boot, audit_mod._rng(td.id, dataset, row.id))
                stats.row_id, stats.row_name = row.id, row.name
                identical = all((a == b).all() for a, b in zip(paired.row, paired.ref))
        effects.append(Effect(row.id, row.name, ref_id, td.row(ref_id).name, stats, identical))
    tested = [e.stats for e in effects if e.stats.p_wilcoxon is not None]
    for s, adjusted in zip(tested, audit_mod.holm([s.p_wilcoxon for s in tested])):
        s.p_holm = adjusted
    return effects


EFFECT_HEADER = ["Row", "Against", "Seeds", "ΔDSC (pp) [95% CI]", "Wilcoxon p (Holm)", "Verdict"]


def _effect_cells(e: Effect) -> list[str]:
    s = e.stats
    p = DASH if s.p_wilcoxon is None else f"{audit_mod._p(s.p_wilcoxon)} ({audit_mod._p(s.p_holm)})"
    return [e.row_name, e.reference_name, str(s.n_seeds) if s.compared else DASH,
            audit_mod._delta(s.delta_dsc, s.ci_dsc), p, e.short_verdict]


def effects_note(td: TableData | None) -> str:
    if td is None:
        return "Table R is not in this report (`python -m study report --tables tabler`)."
    synthetic = set(td.datasets) - set(td.table.datasets)
    where = f"{dataset_label(td.datasets[0])}, profile {td.profile}"
    text = (f"Table R ({where}): each row against its reference; Δ = row − reference. Intervals and tests as in "
            "the claims audit, Holm-corrected across Table R's rows.")
    if synthetic:
        text += (" Synthetic data: these effects check the pipeline, they are not the effects on the real "
                 "datasets.")
    return text


# ---------------------------------------------------------------- the registry section

@dataclass(frozen=True)
class Line:
    difference: Difference
    measured: str


def lines(effects: list[Effect]) -> list[Line]:
    by_row = {e.row_id: e for e in effects}
    out = []
    for d in differences().of_kind("release", "protocol"):
        if d.table_r and d.table_r in by_row:
            measured = f"Table R “{by_row[d.table_r].row_name}”: {by_row[d.table_r].verdict}"
        elif d.table_r:
            measured = f"Table R “{d.table_r}”: no runs in this report"
        else:
            measured = d.no_row
        out.append(Line(d, measured))
    return out


def _fields(line: Line) -> list[tuple[str, str]]:
    d = line.difference
    knob = d.knob or f"none: {d.no_knob}"
    release = d.release + (f" ({d.release_ref})" if d.release_ref else "")
    return [("Paper", d.paper), ("Release", release), ("Here", d.harness), ("Switch", knob),
            ("Measured", line.measured)]


def _context(effects: list[Effect], td: TableData | None, escape) -> dict:
    registry = differences()
    return {
        "commit": escape(registry.release_commit[:12]),
        "entries": [{"title": escape(f"{line.difference.id} ({line.difference.area})"),
                     "fields": [(escape(k), escape(v)) for k, v in _fields(line)]} for line in lines(effects)],
        "internal": [escape(f"{d.paper} Here: {d.harness}") for d in registry.of_kind("paper-internal")],
        "complexity": len(registry.of_kind("complexity")),
        "header": [escape(h) for h in EFFECT_HEADER],
        "effects": [[escape(c) for c in _effect_cells(e)] for e in effects],
        "note": escape(effects_note(td)),
    }


def render_latex(effects: list[Effect], td: TableData | None) -> str:
    return render("differences.tex.j2", **_context(effects, td, latex_escape))


def render_markdown(effects: list[Effect], td: TableData | None) -> str:
    return render("differences.md.j2", **_context(effects, td, markdown_escape))
