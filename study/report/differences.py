"""Where the paper, the authors' release and this harness differ: Table R's measured effects, and
the report section generated from ``paper/differences.toml``.

Each Table R row is its reference (the table's, or the row's ``compare_with``) with one
difference switched to the release's behaviour. Its effect is judged as the claims audit judges
a row (``study.report.audit.judge``): the training seed is the unit of evidence, each row's
per-seed pooled DSC against its reference's by Welch's t-test, Holm-corrected across Table R's
rows. The null row (the reference's own config on the next seeds) shows the noise floor: its
verdict is what seed noise alone gives. The verdict is plain: "changes DSC by x [CI]" when the
Holm p < 0.05, else "no detectable effect at n seeds" with the smallest difference those seeds
could detect and the seeds a difference of the observed size would need. On synthetic data (the
smoke profile) every row is a pipeline check, not the real effect.
"""

from __future__ import annotations

from dataclasses import dataclass

from study.paper import Difference, differences
from study.report import audit as audit_mod
from study.report.collect import TableData, dataset_label
from study.report.evidence import seeds_text
from study.report.format import DASH, latex_escape, markdown_escape, p_text, signed
from study.report.jinja import render
from study.store.runs import Store

PIPELINE = "Pipeline check (synthetic data)"


@dataclass
class Effect:
    row_id: str
    row_name: str
    reference_id: str
    reference_name: str
    stats: audit_mod.RowAudit
    synthetic: bool = False  # measured on synthetic data: the pipeline's effect, not the real one
    null_row: bool = False

    @property
    def identical(self) -> bool:
        """Every paired image's counts equal the reference's: the switch changes nothing on this data."""
        image = self.stats.image
        return image is not None and image.identical and not self.null_row

    @property
    def short_verdict(self) -> str:
        """For the table, whose other columns carry the difference, its interval and the detectable one."""
        return self._labelled(self._verdict(short=True))

    @property
    def verdict(self) -> str:
        return self._labelled(self._verdict(short=False))

    def _labelled(self, text: str) -> str:
        return f"{PIPELINE}: {text}" if self.synthetic else text

    def _verdict(self, short: bool) -> str:
        s = self.stats
        if not s.compared:
            return f"not measured: {s.note}"
        if self.identical and short:
            return "no effect: identical results"
        if self.identical:
            return (f"no effect: the same per-image counts as its reference in all {s.dsc.n_row} "
                    "seed(s) (the switch changes nothing on this data)")
        c = s.dsc
        interval = f"[{signed(c.ci[0], 2)}, {signed(c.ci[1], 2)}]"
        seeds = f"{c.n_row}/{c.n_ref} seeds" if c.n_row != c.n_ref else f"{c.n_row} seeds"
        if s.result in (audit_mod.ROW_BETTER, audit_mod.OURS_BETTER):
            return f"changes DSC by {signed(c.delta, 2)} pp" + ("" if short else f" {interval}") + f" at {seeds}"
        if c.delta == 0 or c.detectable is None:
            needed = "no difference between the seed means" if c.delta == 0 else "no spread between seeds"
        else:
            needed = f"{seeds_text(c.seeds_for(c.delta), max(c.n_row, c.n_ref))} for {abs(c.delta):.2f} pp"
        if short:
            return f"no detectable effect at {seeds}; {needed}"
        detectable = "" if c.detectable is None else (
            f"; the smallest difference these seeds detect at 80% power is {c.detectable:.2f} pp")
        return f"no detectable effect at {seeds} (ΔDSC {signed(c.delta, 2)} pp {interval}{detectable}; {needed})"


def references(td: TableData) -> set[str]:
    rows = td.table.rows
    return {td.table.reference} | {r.compare_with for r in rows if r.compare_with and not r.null_row}


def measure(td: TableData, store: Store, n_boot: int = audit_mod.N_BOOT) -> list[Effect]:
    """Every non-reference row of Table R against its reference, on the table's (first) dataset."""
    dataset = td.datasets[0]
    synthetic = dataset not in td.table.datasets
    effects = []
    for row in td.rows:
        if row.id in references(td):
            continue
        ref_id = row.row.compare_with or td.table.reference
        stats = audit_mod.RowAudit(row.id, row.name)
        cell, ref_cell = td.runs_for(row.id, dataset), td.runs_for(ref_id, dataset)
        if cell is None or ref_cell is None or not cell.completed or not ref_cell.completed:
            stats.note = "no completed runs of this row and its reference"
        else:
            audit_mod.compare_cells(store, stats, cell, ref_cell, n_boot, audit_mod._rng(td.id, dataset, row.id))
        effects.append(Effect(row.id, row.name, ref_id, td.row(ref_id).name, stats, synthetic, row.row.null_row))
    judged = audit_mod.judge([e.stats.dsc if e.stats.compared else None for e in effects])
    for e, (p_holm, result) in zip(effects, judged):
        e.stats.p_holm, e.stats.result = p_holm, result
    return effects


EFFECT_HEADER = ["Row", "Against", "Seeds", "ΔDSC (pp) [95% CI]", "Welch p (Holm)", "Detectable Δ (pp)", "Verdict",
                 "Secondary: image-level ΔDSC [CI], Wilcoxon p"]


def _effect_cells(e: Effect) -> list[str]:
    s = e.stats
    c = s.dsc
    p = DASH if c is None or c.p is None else f"{p_text(c.p)} ({p_text(s.p_holm)})"
    return [e.row_name, e.reference_name, s.n_seeds, audit_mod.interval_text(s.delta_dsc, None if c is None else c.ci),
            p, audit_mod.detectable_text(c), e.short_verdict, audit_mod.image_text(s.image)]


def effects_note(td: TableData | None) -> str:
    if td is None:
        return "Table R is not in this report (`python -m study report --tables tabler`)."
    synthetic = set(td.datasets) - set(td.table.datasets)
    where = f"{dataset_label(td.datasets[0])}, profile {td.profile}"
    text = (f"Table R ({where}): each row against its reference; Δ = row − reference. The unit of evidence is "
            "the training seed: Welch's t-test on the per-seed pooled DSC, Holm-corrected across Table R's rows, "
            "as in the claims audit. The null row is the reference's own config on the next seeds: its verdict "
            "is what seed noise alone gives.")
    if synthetic:
        text += (" Synthetic data: every row is a pipeline check; these are not the effects on the real "
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
