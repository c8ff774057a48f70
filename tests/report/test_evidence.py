"""The verdict procedure, calibrated by simulation: per-image counts with a seed-level random effect and
image-level noise, at the smoke and the real sizes (48 and 645 test images; 3, 5 and 10 seeds).

With no true effect, the procedure the claims audit and Table R apply (``audit.judge``: Welch's test on
per-seed pooled DSC, Holm across a table's rows) must say "different" in at most 5% of simulated tables,
within Monte Carlo tolerance; with a true effect of two between-seed SDs at 10 seeds it must detect at
least 80%. The paper comparison (``evidence.paper_p``, Holm across a table's cells) is held to the same
false-positive rate, with the paper's three runs drawn from the same distribution as ours.
Numpy and scipy only: seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from study.report.audit import NO_DIFFERENCE, judge, pooled_scores
from study.report.evidence import SeedComparison, holm, paper_p

TABLES = 1000  # simulated tables per condition
ROWS = 4  # rows besides the reference in a table (Holm over 4)
ALPHA = 0.05
# Monte Carlo tolerance: three standard errors of a 5% rate over TABLES tables.
TOLERANCE = 3 * math.sqrt(ALPHA * (1 - ALPHA) / TABLES)
PIXELS = 256 * 256
# The model (logit scale of per-image Dice): base + image difficulty + seed effect + image noise.
BASE, IMAGE_SD, SEED_SD, NOISE_SD = 1.9, 0.8, 0.25, 0.5


class Simulator:
    """Per-image TP/FP/FN/TN of runs: one fixed test set, a training-seed effect per run, image noise."""

    def __init__(self, images: int, rng: np.random.Generator):
        self.rng = rng
        self.lesion = rng.integers(500, 20_000, images).astype(np.float64)  # lesion pixels per image
        self.difficulty = rng.normal(0.0, IMAGE_SD, images)  # shared by every config and seed

    def pooled_dsc(self, runs: tuple[int, ...], shift: float = 0.0) -> np.ndarray:
        """(*runs) pooled DSC (percentage points) of independent runs, each from its own per-image counts."""
        if len(runs) > 1 and runs[0] > 100:  # a hundred tables at a time: the noise of 10 seeds x 645 images
            return np.concatenate([self.pooled_dsc((min(100, runs[0] - k), *runs[1:]), shift)
                                   for k in range(0, runs[0], 100)])
        seed_effect = self.rng.normal(0.0, SEED_SD, runs)[..., None]
        noise = self.rng.normal(0.0, NOISE_SD, (*runs, len(self.lesion)))
        dice = 1 / (1 + np.exp(-(BASE + self.difficulty + seed_effect + noise + shift)))
        tp = np.rint(dice * self.lesion)
        fn = self.lesion - tp  # predicted area = lesion area: FP = FN
        sums = np.stack([tp.sum(-1), fn.sum(-1), fn.sum(-1), (PIXELS - tp - 2 * fn).sum(-1)], axis=-1)
        return 100 * pooled_scores(sums)[1]


def different(tables_rows: np.ndarray, tables_ref: np.ndarray) -> np.ndarray:
    """(tables,) whether the procedure calls any row of each table different from the reference."""
    out = []
    for rows, ref in zip(tables_rows, tables_ref):
        results = judge([SeedComparison(tuple(r), tuple(ref)) for r in rows])
        out.append(any(result != NO_DIFFERENCE for _, result in results))
    return np.asarray(out)


def shift_for(sim: Simulator, dsc_gap: float) -> float:
    """The logit shift that moves the expected pooled DSC by ``dsc_gap`` (bisection on common draws)."""
    state = sim.rng.bit_generator.state
    low, high = 0.0, 3.0
    for _ in range(30):
        middle = (low + high) / 2
        sim.rng.bit_generator.state = state
        base = sim.pooled_dsc((400,))
        sim.rng.bit_generator.state = state
        moved = sim.pooled_dsc((400,), middle)
        low, high = (middle, high) if (moved - base).mean() < dsc_gap else (low, middle)
    return (low + high) / 2


@pytest.mark.parametrize("images", [48, 645])
@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_no_true_effect_is_called_different_in_at_most_5_percent_of_tables(images, seeds):
    sim = Simulator(images, np.random.default_rng([images, seeds]))
    ref = sim.pooled_dsc((TABLES, seeds))
    rows = sim.pooled_dsc((TABLES, ROWS, seeds))
    rate = different(rows, ref).mean()
    # One row alone (Table R's null row against its reference): Welch at 5%, no Holm to hide behind.
    single = different(rows[:, :1], ref).mean()
    print(f"images {images}, seeds {seeds}: false-positive rate {rate:.3f} per table of {ROWS} rows, "
          f"{single:.3f} for one row")
    assert rate <= ALPHA + TOLERANCE
    assert single <= ALPHA + TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("images", [48, 645])
def test_an_effect_of_two_between_seed_sds_is_found_at_10_seeds(images):
    sim = Simulator(images, np.random.default_rng([images, 99]))
    between_seed_sd = sim.pooled_dsc((4000,)).std(ddof=1)  # per-seed pooled DSC: seed effect and image noise
    shift = shift_for(sim, 2 * between_seed_sd)
    ref = sim.pooled_dsc((TABLES, 10))
    rows = np.concatenate([sim.pooled_dsc((TABLES, 1, 10), shift), sim.pooled_dsc((TABLES, ROWS - 1, 10))], axis=1)
    realised = (rows[:, 0].mean(-1) - ref.mean(-1)).mean() / between_seed_sd
    found = []
    for table_rows, table_ref in zip(rows, ref):
        (p_holm, result), *_ = judge([SeedComparison(tuple(r), tuple(table_ref)) for r in table_rows])
        found.append(result != NO_DIFFERENCE)
    power = float(np.mean(found))
    print(f"images {images}: effect {realised:.2f} between-seed SDs ({between_seed_sd:.3f} pp), power {power:.3f} "
          f"at 10 seeds with Holm over {ROWS} rows")
    assert realised == pytest.approx(2.0, abs=0.2)
    assert power >= 0.8


@pytest.mark.slow
@pytest.mark.parametrize("images", [48, 645])
@pytest.mark.parametrize("seeds", [3, 10])
@pytest.mark.parametrize("paper_prints_sd", [False, True])
def test_the_paper_comparison_is_calibrated(images, seeds, paper_prints_sd):
    """Our seeds against the paper's mean of three runs (Table 1 also prints their SD), Holm across a
    table's cells: the same distribution must be flagged in at most 5% of tables."""
    sim = Simulator(images, np.random.default_rng([images, seeds, int(paper_prints_sd)]))
    ours = sim.pooled_dsc((TABLES, ROWS, seeds))
    papers = sim.pooled_dsc((TABLES, ROWS, 3))
    flagged = []
    for our_table, paper_table in zip(ours, papers):
        p = [paper_p(tuple(o), float(q.mean()), float(q.std(ddof=1)) if paper_prints_sd else None)
             for o, q in zip(our_table, paper_table)]
        flagged.append(min(holm(p)) < ALPHA)
    rate = float(np.mean(flagged))
    print(f"paper comparison, images {images}, seeds {seeds}, paper SD printed {paper_prints_sd}: {rate:.3f}")
    assert rate <= ALPHA + TOLERANCE
