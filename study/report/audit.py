"""Claims audit: is the paper's chosen row ("Ours") really the best of each ablation table, on our runs?

The paper gives one number per ablation row and no test. For every row of a
table this compares the row with the table's reference row (``reference`` in
its variant file), on the runs of both:

* the difference in DSC and IoU (row − ours, percentage points; pooled over
  pixels as the tables are, averaged over the seeds both rows completed), with
  a 95% percentile bootstrap interval over test images. Images pair by id
  within a seed; one draw of images is applied to every seed (the test split
  is the same for all seeds), so the interval reflects which images were
  tested, given these trained models: seed-to-seed training variation is not
  in it;
* a Wilcoxon signed-rank test on per-image Dice (the difference of each
  image, averaged over seeds: one value per image), Holm-corrected across the
  rows of the table;
* a paired t-test on the seeds' DSC, shown for completeness: with three seeds
  it has two degrees of freedom and almost no power, and it takes no part in
  the verdict.

A row counts as significantly worse (better) than ours only when the Holm
p < 0.05 and the DSC interval lies wholly below (above) zero: the test is on
per-image Dice and the interval on pooled DSC, and they can disagree.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass, field

import numpy as np

from study.metrics import per_image_dice
from study.report.collect import TableData, dataset_label
from study.report.format import DASH, display_name, latex_escape, markdown_escape, signed
from study.report.jinja import render
from study.store.index import CellRuns
from study.store.runs import Store

ALPHA = 0.05
N_BOOT = 2000
LOW_POWER_SEEDS = 5  # at or below this many seeds the seed-level t-test is flagged as nearly powerless
# Table 1 compares different architectures (its claims are per dataset, not "best everywhere");
# Table R is this study's own (its effects are in the differences section, study.report.differences).
NOT_AUDITED = ("table1", "tabler")

OURS_BETTER = "ours better"
ROW_BETTER = "row better"
NO_DIFFERENCE = "no significant difference"
NOT_COMPARED = "not compared"
SAME_RUNS = "the same runs as ours"
CANNOT = "Cannot be judged"
# The verdict words, exactly as the README defines them (a test holds the two together).
SUPPORTED, CONTRADICTED, NOT_SUPPORTED, NOT_SHOWN = "Supported", "Contradicted", "Not supported", "Not shown"
PIPELINE_CHECK = "Pipeline check"  # synthetic data: the machinery ran; no verdict on the paper's claim
VERDICTS = (SUPPORTED, CONTRADICTED, NOT_SUPPORTED, NOT_SHOWN, CANNOT, PIPELINE_CHECK)


# ---------------------------------------------------------------- statistics

def pooled_scores(summed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and DSC from TP/FP/FN/TN sums (last axis of 4), as the paper pools them."""
    tp, fp, fn = summed[..., 0], summed[..., 1], summed[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / (tp + fp + fn), 2 * tp / (2 * tp + fp + fn)


@dataclass(frozen=True)
class Paired:
    """Per-image counts of a row and of the reference, aligned by image id, for each common seed."""

    seeds: tuple[int, ...]
    ids: tuple[tuple[str, ...], ...]  # per seed
    row: tuple[np.ndarray, ...]  # per seed, (n, 4)
    ref: tuple[np.ndarray, ...]

    @property
    def n_images(self) -> int:
        return len({i for ids in self.ids for i in ids})


def seed_differences(p: Paired) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: pooled DSC and IoU of the row minus the reference (fractions)."""
    d_dsc, d_iou = [], []
    for row, ref in zip(p.row, p.ref):
        iou_r, dsc_r = pooled_scores(row.sum(0))
        iou_f, dsc_f = pooled_scores(ref.sum(0))
        d_dsc.append(dsc_r - dsc_f)
        d_iou.append(iou_r - iou_f)
    return np.asarray(d_dsc), np.asarray(d_iou)


def bootstrap_differences(p: Paired, n_boot: int = N_BOOT, rng: np.random.Generator | None = None):
    """(B,) bootstrap draws of the seed-averaged DSC and IoU differences (fractions).

    Each draw resamples the image ids with replacement (multinomial weights
    over the ids of all seeds) and applies the same weights to both rows in
    every seed: paired by image and by seed.
    """
    rng = rng or np.random.default_rng(0)
    universe = sorted({i for ids in p.ids for i in ids})
    position = {i: k for k, i in enumerate(universe)}
    weights = rng.multinomial(len(universe), np.full(len(universe), 1 / len(universe)), size=n_boot)
    weights = weights.astype(np.float64)
    dsc, iou = np.zeros(n_boot), np.zeros(n_boot)
    for ids, row, ref in zip(p.ids, p.row, p.ref):
        w = weights[:, [position[i] for i in ids]]
        iou_r, dsc_r = pooled_scores(w @ row)
        iou_f, dsc_f = pooled_scores(w @ ref)
        dsc += dsc_r - dsc_f
        iou += iou_r - iou_f
    return dsc / len(p.seeds), iou / len(p.seeds)


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    draws = draws[np.isfinite(draws)]
    tail = (1 - level) / 2 * 100
    return float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))


def image_dice_differences(p: Paired) -> np.ndarray:
    """One value per image: its Dice under the row minus under the reference, averaged over seeds."""
    per_image: dict[str, list[float]] = {}
    for ids, row, ref in zip(p.ids, p.row, p.ref):
        for i, d in zip(ids, per_image_dice(row) - per_image_dice(ref)):
            per_image.setdefault(i, []).append(float(d))
    return np.asarray([np.mean(v) for v in per_image.values()])


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p on paired differences; 1.0 when every difference is zero."""
    from scipy.stats import wilcoxon

    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0 or np.all(np.abs(d) < 1e-12):
        return 1.0
    return float(wilcoxon(d).pvalue)


def seed_ttest_p(differences: np.ndarray) -> float | None:
    """Paired t-test on the seeds' differences (one-sample t on them); None without two seeds or any spread."""
    from scipy.stats import ttest_1samp

    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2 or np.std(d) == 0:
        return None
    return float(ttest_1samp(d, 0.0).pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1), in input order."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for k, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (m - k) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


# ---------------------------------------------------------------- pairing runs

def pair_runs(store: Store, row: CellRuns, ref: CellRuns) -> tuple[Paired | None, str]:
    """The per-image counts of the seeds both cells completed, aligned by image id; or None and why."""
    row_runs = {r.seed: r for r in row.completed}
    ref_runs = {r.seed: r for r in ref.completed}
    seeds = sorted(set(row_runs) & set(ref_runs))
    if not seeds:
        return None, "no seed completed by both this row and ours"
    kept, ids_out, rows_out, refs_out, missing = [], [], [], [], []
    for seed in seeds:
        # Completed runs are verified: their per-image counts are the ones their records vouch for.
        ids_r, counts_r = store.per_image(row_runs[seed], "test")
        ids_f, counts_f = store.per_image(ref_runs[seed], "test")
        where = {i: k for k, i in enumerate(ids_r)}
        common = [i for i in ids_f if i in where]
        if not common:
            missing.append(seed)
            continue
        pos_f = {i: k for k, i in enumerate(ids_f)}
        kept.append(seed)
        ids_out.append(tuple(common))
        rows_out.append(counts_r[[where[i] for i in common]])
        refs_out.append(counts_f[[pos_f[i] for i in common]])
    if not kept:
        return None, f"no per-image counts to pair (seeds {', '.join(map(str, missing))})"
    return Paired(tuple(kept), tuple(ids_out), tuple(rows_out), tuple(refs_out)), ""


# ---------------------------------------------------------------- the audit

@dataclass
class RowAudit:
    row_id: str
    row_name: str
    n_seeds: int = 0
    n_images: int = 0
    delta_dsc: float | None = None  # percentage points, row − ours
    ci_dsc: tuple[float, float] | None = None
    delta_iou: float | None = None
    ci_iou: tuple[float, float] | None = None
    p_wilcoxon: float | None = None
    p_holm: float | None = None
    p_ttest: float | None = None
    result: str = NOT_COMPARED
    note: str = ""

    @property
    def compared(self) -> bool:
        return self.delta_dsc is not None


@dataclass
class TableAudit:
    table_id: str
    number: str
    title: str
    dataset: str
    profile: str
    reference_id: str
    reference_name: str
    rows: list[RowAudit] = field(default_factory=list)
    verdict: str = ""
    ours_n_seeds: int = 0
    low_power: bool = False
    synthetic: bool = False  # trained on synthetic data (a smoke profile): a pipeline check only


def _rng(*tags) -> np.random.Generator:
    digest = hashlib.sha256(":".join(map(str, tags)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def audit_paired(p: Paired, n_boot: int = N_BOOT, rng: np.random.Generator | None = None) -> RowAudit:
    """The statistics of one row against the reference (before the table's Holm correction)."""
    out = RowAudit("", "", n_seeds=len(p.seeds), n_images=p.n_images)
    d_dsc, d_iou = seed_differences(p)
    out.delta_dsc, out.delta_iou = 100 * float(d_dsc.mean()), 100 * float(d_iou.mean())
    boot_dsc, boot_iou = bootstrap_differences(p, n_boot, rng)
    out.ci_dsc = tuple(100 * v for v in percentile_interval(boot_dsc))
    out.ci_iou = tuple(100 * v for v in percentile_interval(boot_iou))
    out.p_wilcoxon = wilcoxon_p(image_dice_differences(p))
    out.p_ttest = seed_ttest_p(d_dsc)
    return out


def _result(r: RowAudit) -> str:
    if not r.compared:
        return NOT_COMPARED
    if r.p_holm is not None and r.p_holm < ALPHA:
        if r.ci_dsc[1] < 0:
            return OURS_BETTER
        if r.ci_dsc[0] > 0:
            return ROW_BETTER
    return NO_DIFFERENCE


def _verdict(audit: TableAudit, reference_has_runs: bool) -> str:
    compared = [r for r in audit.rows if r.compared]
    skipped = [r for r in audit.rows if not r.compared and r.note != SAME_RUNS]
    not_judged = f" Not judged (no paired runs): {_names(skipped)}." if skipped else ""
    if not reference_has_runs:
        return f"{CANNOT}: ours (the reference row) has no completed run."
    if not compared:
        return f"{CANNOT}: no other row has runs paired with ours." + not_judged
    better = [r for r in compared if r.result == ROW_BETTER]
    unclear = [r for r in compared if r.result != OURS_BETTER]
    higher = [r for r in unclear if r.delta_dsc > 0]
    if audit.synthetic:  # what was computed, said plainly: a check of the pipeline, not of the paper
        worse = [r for r in compared if r.result == OURS_BETTER]
        return (f"{PIPELINE_CHECK} (synthetic data, not a verdict on the paper's claim): {len(compared)} row(s) "
                f"compared with ours; {len(better)} significantly better, {len(worse)} significantly worse, "
                f"{len(unclear) - len(better)} not significantly different." + not_judged)
    if better:
        return (f"{CONTRADICTED}: {_names(better)} {_is(better)} significantly better than ours." + not_judged)
    if not unclear:
        scope = "every other row with runs" if skipped else "every other row"
        return f"{SUPPORTED}: ours is significantly better than {scope}." + not_judged
    if higher:
        return (f"{NOT_SUPPORTED}: {_names(higher)} {'has' if len(higher) == 1 else 'have'} a higher mean DSC "
                "than ours (not significantly)." + not_judged)
    return f"{NOT_SHOWN}: ours has the highest mean DSC, but not significantly above {_names(unclear)}." + not_judged


def _names(rows: list[RowAudit]) -> str:
    names = [f"“{r.row_name}”" for r in rows]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _is(rows: list[RowAudit]) -> str:
    return "is" if len(rows) == 1 else "are"


def audit_table(td: TableData, store: Store, n_boot: int = N_BOOT) -> list[TableAudit]:
    """One audit per training dataset of the table: every row against the reference row."""
    out = []
    for dataset in td.datasets:
        ref_cell = td.runs_for(td.table.reference, dataset)
        ref_row = td.row(td.table.reference)
        audit = TableAudit(td.id, td.number, td.table.title, dataset, td.profile, ref_row.id,
                           display_name(ref_row.name, True), synthetic=dataset not in td.table.datasets)
        for row in td.rows:
            if row.id == ref_row.id:
                continue
            r = RowAudit(row.id, row.name)
            cell = td.runs_for(row.id, dataset)
            if row.unavailable:
                r.note = "model not registered yet"
            elif ref_cell is None or cell is None:
                r.note = "no runs"
            elif not cell.completed:
                r.note = "no completed run"
            elif cell.config_hash == ref_cell.config_hash:
                r.note = SAME_RUNS
            else:
                paired, why = pair_runs(store, cell, ref_cell)
                if paired is None:
                    r.note = why
                else:
                    stats = audit_paired(paired, n_boot, _rng(td.id, dataset, row.id))
                    stats.row_id, stats.row_name = row.id, row.name
                    r = stats
            audit.rows.append(r)
        tested = [r for r in audit.rows if r.p_wilcoxon is not None]
        for r, adjusted in zip(tested, holm([r.p_wilcoxon for r in tested])):
            r.p_holm = adjusted
        for r in audit.rows:
            r.result = _result(r)
        ref_runs = ref_cell.completed if ref_cell else ()
        has_counts = bool(ref_runs)  # a completed (verified) run always has its per-image counts
        audit.ours_n_seeds = len(ref_runs)
        audit.low_power = any(0 < r.n_seeds <= LOW_POWER_SEEDS for r in audit.rows)
        audit.verdict = _verdict(audit, has_counts)
        out.append(audit)
    return out


def audited(td: TableData) -> bool:
    return td.id not in NOT_AUDITED


def audit_tables(tables: list[TableData], store: Store, n_boot: int = N_BOOT) -> list[TableAudit]:
    return [a for td in tables if audited(td) for a in audit_table(td, store, n_boot)]


# ---------------------------------------------------------------- rendering

def _delta(value, ci) -> str:
    if value is None:
        return DASH
    return f"{signed(value, 2)} [{signed(ci[0], 2)}, {signed(ci[1], 2)}]"


def _p(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def _cells(r: RowAudit) -> list[str]:
    p = DASH if r.p_wilcoxon is None else f"{_p(r.p_wilcoxon)} ({_p(r.p_holm)})"
    result = r.result if r.compared else f"{NOT_COMPARED}: {r.note}"
    return [r.row_name, str(r.n_seeds) if r.compared else DASH, str(r.n_images) if r.compared else DASH,
            _delta(r.delta_dsc, r.ci_dsc), _delta(r.delta_iou, r.ci_iou), p, _p(r.p_ttest), result]


HEADER = ["Row", "Seeds", "Images", "ΔDSC [95% CI]", "ΔIoU [95% CI]", "Wilcoxon p (Holm)", "t-test p (seeds)",
          "Result"]

CAVEATS = [
    "Δ = row − ours, in percentage points of the pooled DSC and IoU (as the tables print them), averaged over "
    "the seeds both rows completed; negative means ours is better.",
    "95% CI: percentile bootstrap over test images, paired by image id within each seed, with the same draw of "
    f"images for every seed ({N_BOOT} draws). It reflects which images were tested, given these trained models; "
    "seed-to-seed training variation is not in it.",
    "Wilcoxon signed-rank test (two-sided) on per-image Dice, one value per image (its difference averaged over "
    f"seeds), Holm-corrected across the rows of each table. A row is significantly worse (better) than ours only "
    f"when the Holm p < {ALPHA} and the DSC interval lies wholly below (above) zero.",
    "t-test p (seeds): a paired t-test on the seeds' DSC. With three seeds it has two degrees of freedom and "
    "almost no power: only very large differences reach p < 0.05. It is shown for completeness and takes no "
    "part in the result.",
    "The audit is of our runs, not of the paper's; with the paper's checkpoint selection (the lowest test loss) "
    "every row's numbers are optimistic in the same way.",
]


def _verdict_label(a: TableAudit) -> str:
    if a.synthetic:
        return a.verdict
    return f"The paper's claim that {a.reference_name} is the best row: {a.verdict}"


def judged(a: TableAudit) -> bool:
    return not a.verdict.startswith(CANNOT)


def _numbers(numbers: list[str]) -> str:
    if len(numbers) == 1:
        return f"Table {numbers[0]}"
    return "Tables " + ", ".join(numbers[:-1]) + " and " + numbers[-1]


def unjudged_lines(audits: list[TableAudit]) -> list[str]:
    """The audits that cannot be judged, one sentence per reason: "Tables 2, 4 and 5 (Synthetic, profile
    smoke): no other row has runs paired with ours." """
    groups: dict[tuple[str, str, str], list[str]] = {}
    for a in audits:
        if not judged(a):
            reason = a.verdict[len(CANNOT):].lstrip(": ").split(" Not judged")[0].rstrip(".")
            groups.setdefault((reason, dataset_label(a.dataset), a.profile), []).append(a.number)
    return [f"{_numbers(numbers)} ({data}, profile {profile}): {reason}."
            for (reason, data, profile), numbers in groups.items()]


def _sections(audits: list[TableAudit], escape) -> list[dict]:
    return [{
        "heading": escape(f"Table {a.number}: {a.title} ({dataset_label(a.dataset)}, profile {a.profile})"),
        "reference": escape(f"Ours: {a.reference_name}, {a.ours_n_seeds} completed seed(s)."),
        "lines": [[escape(c) for c in _cells(r)] for r in a.rows],
        "verdict": escape(_verdict_label(a)), "low_power": a.low_power,
    } for a in audits if judged(a)]


LOW_POWER = (f"Few seeds (≤ {LOW_POWER_SEEDS}): the seed-level t-test has almost no power here; rely on the "
             "per-image test and the interval.")


def render_latex(audits: list[TableAudit]) -> str:
    return render("audit.tex.j2", header=[latex_escape(h) for h in HEADER], sections=_sections(audits, latex_escape),
                  caveats=[latex_escape(c) for c in CAVEATS], low_power_note=latex_escape(LOW_POWER),
                  unjudged=[latex_escape(line) for line in unjudged_lines(audits)], any_audit=bool(audits))


def render_markdown(audits: list[TableAudit]) -> str:
    return render("audit.md.j2", header=HEADER, sections=_sections(audits, markdown_escape), caveats=CAVEATS,
                  low_power_note=LOW_POWER, unjudged=unjudged_lines(audits), any_audit=bool(audits))


def render_csv(audits: list[TableAudit]) -> str:
    fields = ["table", "dataset", "profile", "reference", "row_id", "name", "n_seeds", "n_images", "delta_dsc",
              "ci_dsc_low", "ci_dsc_high", "delta_iou", "ci_iou_low", "ci_iou_high", "p_wilcoxon", "p_holm",
              "p_ttest_seeds", "result", "note", "verdict"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for a in audits:
        for r in a.rows:
            writer.writerow({
                "table": a.table_id, "dataset": a.dataset, "profile": a.profile, "reference": a.reference_id,
                "row_id": r.row_id, "name": r.row_name, "n_seeds": r.n_seeds, "n_images": r.n_images,
                "delta_dsc": r.delta_dsc, "ci_dsc_low": r.ci_dsc[0] if r.ci_dsc else None,
                "ci_dsc_high": r.ci_dsc[1] if r.ci_dsc else None, "delta_iou": r.delta_iou,
                "ci_iou_low": r.ci_iou[0] if r.ci_iou else None, "ci_iou_high": r.ci_iou[1] if r.ci_iou else None,
                "p_wilcoxon": r.p_wilcoxon, "p_holm": r.p_holm, "p_ttest_seeds": r.p_ttest,
                "result": r.result, "note": r.note, "verdict": a.verdict,
            })
    return buffer.getvalue()
