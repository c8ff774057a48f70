"""`study bench --concurrent`: K smoke runs at once, and the runs per device it recommends."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from study.bench_concurrency import ConcurrencyResult, recommend


def test_the_fewest_runs_near_the_best_throughput_are_recommended():
    flat = [ConcurrencyResult(1, 60.0, 10), ConcurrencyResult(2, 62.0, 20), ConcurrencyResult(4, 118.0, 40)]
    assert recommend(flat) == 2  # 4 at once is 4% above 2: not worth the memory
    saturated = [ConcurrencyResult(1, 10.0, 10), ConcurrencyResult(2, 20.0, 20)]
    assert recommend(saturated) == 1  # no gain from a second run
    assert ConcurrencyResult(2, 30.0, 6).epochs_per_minute == 12.0


@pytest.mark.slow
def test_concurrent_smoke_runs_are_trained_and_counted_for_real():
    done = subprocess.run([sys.executable, "-m", "study", "bench", "--concurrent", "2,1", "--epochs", "1",
                           "--variant", "t3-ours"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("  1 run(s) at once") and lines[2].startswith("  2 run(s) at once")
    assert "epochs/min in all" in lines[2]
    assert lines[-1].startswith("recommended: ") and "runs_per_task = " in lines[-1]


@pytest.mark.slow
def test_a_bad_k_is_one_clear_error():
    done = subprocess.run([sys.executable, "-m", "study", "bench", "--concurrent", "two"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--concurrent: expected numbers separated by commas, got 'two'" in done.stderr
