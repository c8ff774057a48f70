"""Claims audit: is the paper's chosen row ("Ours") really the best of each ablation table, on our runs?

The paper gives one number per ablation row and no test. For every row of a
table this compares the row with the table's reference row (``reference`` in
its variant file). The verdict rests on the training seed as the unit of
evidence (``study.report.evidence``): each completed run contributes its pooled
test DSC, and the row's seeds are compared with ours by Welch's t-test,
Holm-corrected across the table's rows. A row counts as significantly worse
(better) than ours when its Holm p < 0.05 and its mean is below (above) ours.
Beside each row: the smallest difference its seeds could detect (80% power at
the observed between-seed SD) and how many seeds per row the paper's own gap
between that row and ours would need.

Secondary, and labelled as such (never the verdict): the image-level view of
earlier versions, a percentile bootstrap over test images of the seed-averaged
DSC difference and a Wilcoxon signed-rank test on per-image Dice. It holds the
trained models fixed, so it calls seed-to-seed training noise significant; the
report prints it only to show how the test images spread.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field

import numpy as np

from study.metrics import per_image_dice
from study.paper import number, paper_row
from study.report.collect import TableData, dataset_label
from study.report.evidence import ALPHA, SeedComparison, holm, seeds_text
from study.report.format import DASH, display_name, latex_escape, markdown_escape, p_text, signed
from study.report.jinja import render
from study.store.index import CellRuns
from study.store.record import RunRecord
from study.store.runs import Store

N_BOOT = 2000
# Table 1 compares different architectures (its claims are per dataset, not "best everywhere");
# Table R is this study's own (its effects are in the differences section, study.report.differences).

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


# ---------------------------------------------------------------- image level (secondary)

def pooled_scores(summed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and DSC from TP/FP/FN/TN sums (last axis of 4), as the paper pools them."""
    tp, fp, fn = summed[..., 0], summed[..., 1], summed[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / (tp + fp + fn), 2 * tp / (2 * tp + fp + fn)


@dataclass(frozen=True)
class Paired:
    """Per-image counts of a row and of the reference, aligned by image id, for pairs of seeds
    (the k-th completed seed of each: the seeds of two configs are not matched units)."""

    seeds: tuple[tuple[int, int], ...]  # (row seed, reference seed)
    ids: tuple[tuple[str, ...], ...]  # per pair
    row: tuple[np.ndarray, ...]  # per pair, (n, 4)
    ref: tuple[np.ndarray, ...]

    @property
    def n_images(self) -> int:
        return len({i for ids in self.ids for i in ids})

    @property
    def identical(self) -> bool:
        """Every pair's counts equal, image by image (a switch that changes nothing on this data)."""
        return all(a.shape == b.shape and (a == b).all() for a, b in zip(self.row, self.ref))


def bootstrap_differences(p: Paired, n_boot: int = N_BOOT, rng: np.random.Generator | None = None) -> np.ndarray:
    """(B,) bootstrap draws of the pair-averaged pooled DSC difference (fractions).

    Each draw resamples the image ids with replacement and applies the same
    weights to both rows in every pair: it holds the trained models fixed.
    """
    rng = rng or np.random.default_rng(0)
    universe = sorted({i for ids in p.ids for i in ids})
    position = {i: k for k, i in enumerate(universe)}
    weights = rng.multinomial(len(universe), np.full(len(universe), 1 / len(universe)), size=n_boot)
    weights = weights.astype(np.float64)
    dsc = np.zeros(n_boot)
    for ids, row, ref in zip(p.ids, p.row, p.ref):
        w = weights[:, [position[i] for i in ids]]
        dsc += pooled_scores(w @ row)[1] - pooled_scores(w @ ref)[1]
    return dsc / len(p.seeds)


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    draws = draws[np.isfinite(draws)]
    tail = (1 - level) / 2 * 100
    return float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))


def image_dice_differences(p: Paired) -> np.ndarray:
    """One value per image: its Dice under the row minus under the reference, averaged over pairs."""
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


def pair_runs(store: Store, row_runs: tuple[RunRecord, ...], ref_runs: tuple[RunRecord, ...]):
    """The per-image counts of the k-th completed seed of each side, aligned by image id; or None and why."""
    pairs = list(zip(sorted(row_runs, key=lambda r: r.seed), sorted(ref_runs, key=lambda r: r.seed)))
    if not pairs:
        return None, "no completed runs on one side"
    seeds, ids_out, rows_out, refs_out = [], [], [], []
    for row_run, ref_run in pairs:
        # Completed runs are verified: their per-image counts are the ones their records vouch for.
        ids_r, counts_r = store.per_image(row_run, "test")
        ids_f, counts_f = store.per_image(ref_run, "test")
        where = {i: k for k, i in enumerate(ids_r)}
        common = [i for i in ids_f if i in where]
        if not common:
            continue
        pos_f = {i: k for k, i in enumerate(ids_f)}
        seeds.append((row_run.seed, ref_run.seed))
        ids_out.append(tuple(common))
        rows_out.append(counts_r[[where[i] for i in common]])
        refs_out.append(counts_f[[pos_f[i] for i in common]])
    if not seeds:
        return None, "no per-image counts to pair"
    return Paired(tuple(seeds), tuple(ids_out), tuple(rows_out), tuple(refs_out)), ""


@dataclass(frozen=True)
class ImageLevel:
    """The secondary, image-level view of one comparison (models held fixed)."""

    n_images: int
    delta: float  # pp, pair-averaged pooled DSC difference
    ci: tuple[float, float]
    p_wilcoxon: float
    identical: bool


def image_level(p: Paired, n_boot: int = N_BOOT, rng: np.random.Generator | None = None) -> ImageLevel:
    delta = np.mean([pooled_scores(r.sum(0))[1] - pooled_scores(f.sum(0))[1] for r, f in zip(p.row, p.ref)])
    low, high = percentile_interval(bootstrap_differences(p, n_boot, rng))
    return ImageLevel(p.n_images, 100 * float(delta), (100 * low, 100 * high),
                      wilcoxon_p(image_dice_differences(p)), p.identical)


# ---------------------------------------------------------------- seed level (the verdict)

def seed_scores(records: tuple[RunRecord, ...], metric: str = "dsc", split: str = "test") -> tuple[float, ...]:
    """One value per completed run, in percentage points, from the pooled counts its record vouches for."""
    out = []
    for r in sorted(records, key=lambda r: r.seed):
        scores = r.scores(split) if r.completed else None
        if scores is not None and scores.get(metric) is not None:
            out.append(100 * float(scores[metric]))
    return tuple(out)


def classify(comparison: SeedComparison | None, p_holm: float | None) -> str:
    """A row's result against ours from its seed-level comparison and Holm-adjusted p."""
    if comparison is None or p_holm is None:
        return NOT_COMPARED
    if p_holm < ALPHA:
        return ROW_BETTER if comparison.delta > 0 else OURS_BETTER
    return NO_DIFFERENCE


def judge(comparisons: list[SeedComparison | None]) -> list[tuple[float | None, str]]:
    """(Holm-adjusted p, result) of each comparison; the Holm family is the testable ones.

    This is the whole verdict procedure the claims audit and Table R apply; the
    suite measures its false-positive rate and power on simulated tables.
    """
    tested = [i for i, c in enumerate(comparisons) if c is not None and c.p is not None]
    adjusted = dict(zip(tested, holm([comparisons[i].p for i in tested])))
    return [(adjusted.get(i), classify(c, adjusted.get(i))) for i, c in enumerate(comparisons)]


@dataclass
class RowAudit:
    row_id: str
    row_name: str
    dsc: SeedComparison | None = None  # the verdict's comparison (pp per seed)
    iou: SeedComparison | None = None
    p_holm: float | None = None
    paper_gap: float | None = None  # the paper's DSC of this row minus its "Ours" (pp), where printed
    image: ImageLevel | None = None  # secondary
    result: str = NOT_COMPARED
    note: str = ""

    @property
    def compared(self) -> bool:
        return self.dsc is not None and self.dsc.p is not None

    @property
    def delta_dsc(self) -> float | None:
        return None if self.dsc is None else self.dsc.delta

    @property
    def n_seeds(self) -> str:
        return DASH if self.dsc is None else f"{self.dsc.n_row}/{self.dsc.n_ref}"

    @property
    def seeds_for_paper_gap(self) -> int | None:
        return None if self.dsc is None else self.dsc.seeds_for(self.paper_gap)


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
    synthetic: bool = False  # trained on synthetic data (a smoke profile): a pipeline check only


def _rng(*tags) -> np.random.Generator:
    digest = hashlib.sha256(":".join(map(str, tags)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def compare_cells(store: Store, row: RowAudit, cell: CellRuns, ref_cell: CellRuns, n_boot: int,
                  rng: np.random.Generator) -> RowAudit:
    """Fill ``row`` with the seed-level comparisons of two cells and the secondary image-level view."""
    row.dsc = SeedComparison(seed_scores(cell.completed), seed_scores(ref_cell.completed))
    row.iou = SeedComparison(seed_scores(cell.completed, "iou"), seed_scores(ref_cell.completed, "iou"))
    if not row.dsc.testable:
        row.note = (f"{row.dsc.n_row}/{row.dsc.n_ref} completed seeds: a between-seed comparison needs at least "
                    "two on each side")
    elif row.dsc.p is None:
        row.note = "no spread between seeds to judge the difference by"
    paired, _ = pair_runs(store, cell.completed, ref_cell.completed)
    if paired is not None:
        row.image = image_level(paired, n_boot, rng)
    return row


def _paper_gap(table_id: str, row_id: str, reference_id: str) -> float | None:
    row, ours = paper_row(table_id, row_id), paper_row(table_id, reference_id)
    if row is None or ours is None:
        return None
    a, b = number(row.get("dsc")), number(ours.get("dsc"))
    return None if a is None or b is None else a - b


def _seed_count(rows: list[RowAudit]) -> str:
    counts = sorted({n for r in rows if r.dsc is not None for n in (r.dsc.n_row, r.dsc.n_ref)})
    if not counts:
        return ""
    return f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def _verdict(audit: TableAudit, reference_has_runs: bool) -> str:
    compared = [r for r in audit.rows if r.compared]
    skipped = [r for r in audit.rows if not r.compared and r.note != SAME_RUNS]
    not_judged = f" Not judged: {_names(skipped)}." if skipped else ""
    if not reference_has_runs:
        return f"{CANNOT}: ours (the reference row) has no completed run."
    if not compared:
        return (f"{CANNOT}: no other row has a seed-level comparison with ours (two or more completed seeds "
                "on each side)." + not_judged)
    better = [r for r in compared if r.result == ROW_BETTER]
    unclear = [r for r in compared if r.result != OURS_BETTER]
    higher = [r for r in unclear if r.delta_dsc > 0]
    at = f" at {_seed_count(compared)} seeds"
    if audit.synthetic:  # what was computed, said plainly: a check of the pipeline, not of the paper
        worse = [r for r in compared if r.result == OURS_BETTER]
        return (f"{PIPELINE_CHECK} (synthetic data, not a verdict on the paper's claim): {len(compared)} row(s) "
                f"compared with ours{at}; {len(better)} significantly better, {len(worse)} significantly worse, "
                f"{len(unclear) - len(better)} not significantly different." + not_judged)
    if better:
        return f"{CONTRADICTED}{at}: {_names(better)} {_is(better)} significantly better than ours." + not_judged
    if not unclear:
        scope = "every other row with runs" if skipped else "every other row"
        return f"{SUPPORTED}{at}: ours is significantly better than {scope}." + not_judged
    if higher:
        return (f"{NOT_SUPPORTED}{at}: {_names(higher)} {'has' if len(higher) == 1 else 'have'} a higher mean DSC "
                "than ours (not significantly)." + not_judged)
    return (f"{NOT_SHOWN}{at}: ours has the highest mean DSC, but not significantly above {_names(unclear)}"
            f"{_seeds_for_claim(unclear)}." + not_judged)


def _seeds_for_claim(rows: list[RowAudit]) -> str:
    """How many seeds the paper's own gaps would need, for the row that needs the most."""
    gaps = [r for r in rows if r.paper_gap]
    if not gaps:
        return ""
    needed = [r.seeds_for_paper_gap for r in gaps]
    worst = None if any(n is None for n in needed) else max(needed)
    return f" ({seeds_text(worst, 0)} to detect the paper's gaps at 80% power, before the Holm correction)"


def _names(rows: list[RowAudit]) -> str:
    names = [f"“{r.row_name}”" for r in rows]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _is(rows: list[RowAudit]) -> str:
    return "is" if len(rows) == 1 else "are"


def _row_audit(td: TableData, store: Store, row, dataset: str, ref_cell: CellRuns | None, n_boot: int) -> RowAudit:
    r = RowAudit(row.id, row.name, paper_gap=_paper_gap(td.id, row.id, td.table.reference))
    cell = td.runs_for(row.id, dataset)
    if row.unavailable:
        r.note = "model not registered yet"
    elif ref_cell is None or cell is None:
        r.note = "no runs"
    elif not cell.completed:
        r.note = "no completed run"
    elif cell.config_hash == ref_cell.config_hash and not row.row.null_row:
        r.note = SAME_RUNS
    else:
        compare_cells(store, r, cell, ref_cell, n_boot, _rng(td.id, dataset, row.id))
    return r


def audit_table(td: TableData, store: Store, n_boot: int = N_BOOT) -> list[TableAudit]:
    """One audit per training dataset of the table: every row against the reference row."""
    out = []
    for dataset in td.datasets:
        ref_cell = td.runs_for(td.table.reference, dataset)
        ref_row = td.row(td.table.reference)
        audit = TableAudit(td.id, td.number, td.table.title, dataset, td.profile, ref_row.id,
                           display_name(ref_row.name, True), synthetic=dataset not in td.table.datasets)
        audit.rows = [_row_audit(td, store, row, dataset, ref_cell, n_boot) for row in td.rows if row.id != ref_row.id]
        for r, (p_holm, result) in zip(audit.rows, judge([r.dsc if r.compared else None for r in audit.rows])):
            r.p_holm, r.result = p_holm, result
        ref_runs = ref_cell.completed if ref_cell else ()
        audit.ours_n_seeds = len(ref_runs)
        audit.verdict = _verdict(audit, bool(ref_runs))
        out.append(audit)
    return out


def audited(td: TableData) -> bool:
    return td.table.audited  # the table file's role: ablation tables only


def audit_tables(tables: list[TableData], store: Store, n_boot: int = N_BOOT) -> list[TableAudit]:
    return [a for td in tables if audited(td) for a in audit_table(td, store, n_boot)]


# ---------------------------------------------------------------- rendering

def interval_text(value, ci) -> str:
    if value is None or ci is None:
        return DASH
    return f"{signed(value, 2)} [{signed(ci[0], 2)}, {signed(ci[1], 2)}]"


def detectable_text(c: SeedComparison | None) -> str:
    d = None if c is None else c.detectable
    return DASH if d is None else f"{d:.2f}"


def seeds_needed_text(n: int | None, gap: float | None) -> str:
    if gap is None:
        return DASH
    return f"{signed(gap, 2)}: " + ("> 200" if n is None else str(n))


def image_text(image: ImageLevel | None) -> str:
    if image is None:
        return DASH
    return f"{interval_text(image.delta, image.ci)}, p {p_text(image.p_wilcoxon)}"


def _cells(r: RowAudit) -> list[str]:
    c = r.dsc
    p = DASH if c is None or c.p is None else f"{p_text(c.p)} ({p_text(r.p_holm)})"
    result = r.result if r.compared else f"{NOT_COMPARED}: {r.note}"
    needed = seeds_needed_text(r.seeds_for_paper_gap, r.paper_gap) if r.compared else DASH
    return [r.row_name, r.n_seeds, interval_text(r.delta_dsc, None if c is None else c.ci), p,
            detectable_text(c), needed, result, image_text(r.image)]


HEADER = ["Row", "Seeds (row/ours)", "ΔDSC (pp) [95% CI]", "Welch p (Holm)", "Detectable Δ (pp)",
          "Paper's Δ: seeds needed", "Result", "Secondary: image-level ΔDSC [CI], Wilcoxon p"]

CAVEATS = [
    "The unit of evidence is the training seed: each completed run gives one pooled test DSC, and a row's "
    "seeds are compared with ours by Welch's t-test, Holm-corrected across the rows of each table. "
    "Δ = row − ours in percentage points of the pooled DSC (negative: ours is better); the 95% CI is Welch's "
    "interval of the difference of the seed means.",
    f"A row is significantly better (worse) than ours when its Holm p < {ALPHA} and its mean is above (below) "
    "ours. With no true difference, this says \"different\" in at most 5% of tables (measured by simulation in "
    "the suite, tests/report/test_evidence.py).",
    "Detectable Δ: the smallest difference these seeds detect with 80% power, at the between-seed SD observed "
    "in the two rows. Paper's Δ: the paper's printed DSC gap between the row and ours, and the seeds per row "
    "that would detect it with 80% power at that SD (before the Holm correction). With few seeds the SD is "
    "itself uncertain: both are rough guides.",
    "Secondary (never the verdict): the image-level view, a bootstrap over test images of the DSC difference "
    f"({N_BOOT} draws) and a Wilcoxon test on per-image Dice, pairing the k-th seed of each row. It holds the "
    "trained models fixed, so it calls seed-to-seed training noise significant.",
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
        "verdict": escape(_verdict_label(a)),
    } for a in audits if judged(a)]


def render_latex(audits: list[TableAudit]) -> str:
    return render("audit.tex.j2", header=[latex_escape(h) for h in HEADER], sections=_sections(audits, latex_escape),
                  caveats=[latex_escape(c) for c in CAVEATS],
                  unjudged=[latex_escape(line) for line in unjudged_lines(audits)], any_audit=bool(audits))


def render_markdown(audits: list[TableAudit]) -> str:
    return render("audit.md.j2", header=HEADER, sections=_sections(audits, markdown_escape), caveats=CAVEATS,
                  unjudged=unjudged_lines(audits), any_audit=bool(audits))


def render_csv(audits: list[TableAudit]) -> str:
    fields = ["table", "dataset", "profile", "reference", "row_id", "name", "n_seeds_row", "n_seeds_ours",
              "delta_dsc", "ci_dsc_low", "ci_dsc_high", "delta_iou", "ci_iou_low", "ci_iou_high", "sd_between_seeds",
              "p_welch", "p_holm", "detectable_dsc", "paper_gap_dsc", "seeds_for_paper_gap", "result", "note",
              "image_n", "image_delta_dsc", "image_ci_low", "image_ci_high", "image_p_wilcoxon", "verdict"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for a in audits:
        for r in a.rows:
            d, i, img = r.dsc, r.iou, r.image
            writer.writerow({
                "table": a.table_id, "dataset": a.dataset, "profile": a.profile, "reference": a.reference_id,
                "row_id": r.row_id, "name": r.row_name, "n_seeds_row": d.n_row if d else None,
                "n_seeds_ours": d.n_ref if d else None, "delta_dsc": r.delta_dsc,
                "ci_dsc_low": d.ci[0] if d and d.ci else None, "ci_dsc_high": d.ci[1] if d and d.ci else None,
                "delta_iou": i.delta if i else None, "ci_iou_low": i.ci[0] if i and i.ci else None,
                "ci_iou_high": i.ci[1] if i and i.ci else None, "sd_between_seeds": d.sd if d else None,
                "p_welch": d.p if d else None, "p_holm": r.p_holm, "detectable_dsc": d.detectable if d else None,
                "paper_gap_dsc": r.paper_gap, "seeds_for_paper_gap": r.seeds_for_paper_gap if r.compared else None,
                "result": r.result, "note": r.note, "image_n": img.n_images if img else None,
                "image_delta_dsc": img.delta if img else None, "image_ci_low": img.ci[0] if img else None,
                "image_ci_high": img.ci[1] if img else None, "image_p_wilcoxon": img.p_wilcoxon if img else None,
                "verdict": a.verdict,
            })
    return buffer.getvalue()
