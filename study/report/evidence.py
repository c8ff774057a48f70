"""Seed-level evidence: is a difference between two configs larger than training noise?

A change to a row or a switch changes the whole training trajectory, so two
configs differ by seed-to-seed training variation even when the change does
nothing. The unit of evidence is therefore the training seed: each completed
run contributes one number (its pooled test score), and two configs are
compared with Welch's two-sample t-test on those numbers,

    t = (mean_row - mean_ref) / sqrt(s_row^2 / n_row + s_ref^2 / n_ref),

with Welch-Satterthwaite degrees of freedom. The seeds of two configs are not
paired: the same seed gives unrelated trajectories once anything changes (and
Table R's null row compares disjoint seeds). Image-level noise is inside each
seed's score, so the test carries both sources of variation; the suite holds
its false-positive rate to 5% by simulation (``tests/report/test_evidence.py``).

Beside a verdict it says what the seeds at hand can detect: the smallest
difference a two-sample t-test with these numbers of seeds detects with 80%
power, at the observed between-seed SD (pooled over both configs), and how many
seeds per config a given gap would need. With three seeds the SD itself is
uncertain, so both are rough guides, and say so where they are printed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 200  # beyond this many seeds per config, "more than 200" is the answer


def _t():
    from scipy.stats import t

    return t


@dataclass(frozen=True)
class SeedComparison:
    """Per-seed scores of a row and of its reference (percentage points), and Welch's test on them."""

    row: tuple[float, ...]
    ref: tuple[float, ...]

    @property
    def n_row(self) -> int:
        return len(self.row)

    @property
    def n_ref(self) -> int:
        return len(self.ref)

    @property
    def testable(self) -> bool:
        """Two seeds or more on each side: a between-seed SD exists for both."""
        return self.n_row >= 2 and self.n_ref >= 2

    @property
    def delta(self) -> float:
        """mean(row) − mean(reference)."""
        return float(np.mean(self.row) - np.mean(self.ref))

    @cached_property
    def _variances(self) -> tuple[float, float]:
        return float(np.var(self.row, ddof=1)), float(np.var(self.ref, ddof=1))

    @cached_property
    def se(self) -> float | None:
        if not self.testable:
            return None
        v_row, v_ref = self._variances
        return math.sqrt(v_row / self.n_row + v_ref / self.n_ref)

    @cached_property
    def df(self) -> float | None:
        """Welch–Satterthwaite degrees of freedom."""
        if not self.testable:
            return None
        v_row, v_ref = self._variances
        a, b = v_row / self.n_row, v_ref / self.n_ref
        if a + b == 0:
            return float(self.n_row + self.n_ref - 2)
        return (a + b) ** 2 / (a * a / (self.n_row - 1) + b * b / (self.n_ref - 1))

    @cached_property
    def p(self) -> float | None:
        """Two-sided Welch p; 1.0 when both sides are constant and equal; None when not testable or when
        both sides are constant but different (no spread to judge a difference by)."""
        if not self.testable:
            return None
        se = self.se
        if se == 0:
            return 1.0 if self.delta == 0 else None
        return float(2 * _t().sf(abs(self.delta) / se, self.df))

    @property
    def ci(self) -> tuple[float, float] | None:
        """95% Welch interval of the difference of means."""
        if not self.testable:
            return None
        half = float(_t().ppf(1 - ALPHA / 2, self.df)) * self.se
        return self.delta - half, self.delta + half

    @property
    def sd(self) -> float | None:
        """The between-seed SD, pooled over both configs."""
        if not self.testable:
            return None
        v_row, v_ref = self._variances
        return math.sqrt(((self.n_row - 1) * v_row + (self.n_ref - 1) * v_ref) / (self.n_row + self.n_ref - 2))

    @property
    def detectable(self) -> float | None:
        """The smallest |difference| these seeds detect with 80% power at the observed SD."""
        if not self.testable or not self.sd:
            return None
        return detectable_difference(self.sd, self.n_row, self.n_ref)

    def seeds_for(self, gap: float | None) -> int | None:
        """Seeds per config that would detect ``gap`` with 80% power at the observed SD;
        None when it cannot be said (no SD, no gap) or over MAX_SEEDS."""
        if gap is None or not self.testable or not self.sd or gap == 0:
            return None
        return seeds_needed(abs(gap), self.sd)


def power(difference: float, sd: float, n1: int, n2: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided two-sample t-test (equal variances) at a true ``difference``."""
    from scipy.stats import nct, norm

    df = n1 + n2 - 2
    critical = float(_t().ppf(1 - alpha / 2, df))
    ncp = difference / (sd * math.sqrt(1 / n1 + 1 / n2))
    upper, lower = float(nct.sf(critical, df, ncp)), float(nct.cdf(-critical, df, ncp))
    # scipy's noncentral t gives NaN far in its tails (large ncp): there the normal approximation is exact
    # to many digits.
    if math.isnan(upper):
        upper = float(norm.sf(critical - ncp))
    if math.isnan(lower):
        lower = float(norm.cdf(-critical - ncp))
    return upper + lower


def detectable_difference(sd: float, n1: int, n2: int, alpha: float = ALPHA, target: float = POWER) -> float:
    """The difference a two-sample t-test with ``n1`` and ``n2`` seeds detects with ``target`` power."""
    from scipy.optimize import brentq

    high = sd
    while power(high, sd, n1, n2, alpha) < target:
        high *= 2
    return float(brentq(lambda d: power(d, sd, n1, n2, alpha) - target, 0.0, high, xtol=sd * 1e-4))


def seeds_needed(gap: float, sd: float, alpha: float = ALPHA, target: float = POWER) -> int | None:
    """The fewest seeds per config with which ``gap`` is detected with ``target`` power (None: over MAX_SEEDS)."""
    low, high = 2, MAX_SEEDS
    if power(gap, sd, high, high, alpha) < target:
        return None
    while low < high:  # power grows with n: bisect
        middle = (low + high) // 2
        if power(gap, sd, middle, middle, alpha) >= target:
            high = middle
        else:
            low = middle + 1
    return low


def paper_p(ours: Sequence[float], paper_mean: float, paper_std: float | None = None,
            paper_runs: int = 3) -> float | None:
    """Two-sided p that our seeds and the paper's runs come from one protocol.

    The paper reports the mean of ``paper_runs`` runs ("averaged over three runs"; PH2 over six
    models) and, in Table 1, their SD (taken as the sample SD). Under the hypothesis tested, the
    same protocol, both sets of runs share one distribution, so the SD is pooled (Student's
    two-sample t from summary numbers, n + paper_runs - 2 degrees of freedom). Where the paper
    prints no SD (the ablation tables), its runs are taken to spread as ours do:
    t = (mean_ours - mean_paper) / (s_ours * sqrt(1/n + 1/paper_runs)) with n - 1 degrees of
    freedom. None with fewer than two seeds of ours, or no spread at all."""
    n = len(ours)
    if n < 2:
        return None
    mean, var = float(np.mean(ours)), float(np.var(ours, ddof=1))
    if paper_std is not None:
        df = n + paper_runs - 2
        var = ((n - 1) * var + (paper_runs - 1) * paper_std ** 2) / df
    else:
        df = n - 1
    if var == 0:
        return None
    se = math.sqrt(var * (1 / n + 1 / paper_runs))
    return float(2 * _t().sf(abs(mean - paper_mean) / se, df))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1), in input order."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for k, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (m - k) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def seeds_text(n: int | None, at: int) -> str:
    """"≈7 seeds per config would be needed" / "more than 200 seeds per config would be needed"."""
    if n is None:
        return f"more than {MAX_SEEDS} seeds per config would be needed"
    if n <= at:
        return f"{n} seeds per config should suffice"
    return f"≈{n} seeds per config would be needed"
