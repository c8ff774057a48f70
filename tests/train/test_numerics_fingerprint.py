"""Mixed numerics are seen (issue 29, item 2): each attempt records a fingerprint of one fixed step computed as
it computes; status, verify and the report name a config whose runs differ; `run --retrain-mixed` trains the
odd ones again. And a run's threads follow its allocation, never the machine's load (item 1)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT

from study.launch.cpus import local_share
from study.store.runs import Store
from study.store.status import mixed_numerics
from study.train.fingerprint import numerics_fingerprint
from study.variants import find_row

SMOKE = ["--profile", "smoke", "--set", "train.epochs=1"]


def _study(*args):
    done = subprocess.run([sys.executable, "-m", "study", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    return done


def _here(capsys, *args) -> str:
    """A read-only command in this process: its stdout."""
    from study.cli import main

    capsys.readouterr()
    main(list(args))
    return capsys.readouterr().out


def test_the_fingerprint_repeats_and_tells_thread_counts_apart():
    config = find_row("t3-ours").run_config(None, "smoke")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = {numerics_fingerprint(config, "cpu") for _ in range(2)}
        torch.set_num_threads(2)
        two = numerics_fingerprint(config, "cpu")
    finally:
        torch.set_num_threads(before)
    assert len(one) == 1 and two not in one
    state = torch.random.get_rng_state()
    numerics_fingerprint(config, "cpu")
    assert torch.equal(state, torch.random.get_rng_state())  # the run's random streams are untouched


def test_threads_follow_the_allocation_never_the_load():
    for busy in (0, 1, 5):
        assert local_share([256], cpus=6, busy=busy).threads == 6
        assert local_share([64] * 10, cpus=6, busy=busy).threads == 1
    assert local_share([64] * 10, cpus=6, busy=5).jobs == 1  # the load lowers how many runs go at once


@pytest.mark.slow
def test_mixed_runs_are_named_and_retrained(tmp_path, capsys):
    results = ["--results", str(tmp_path)]
    for seed, threads in ((0, "1"), (1, "2")):
        done = _study("train", "--variant", "t3-ours", "--seed", str(seed), "--threads", threads, *SMOKE, *results)
        assert done.returncode == 0, done.stderr[-2000:]
    store = Store(tmp_path)
    records = {r.seed: r for r in store.records()}
    assert records[0].details["attempts"][0]["threads"] == 1 and records[1].details["attempts"][0]["threads"] == 2
    (runs,) = mixed_numerics(store.records()).values()
    assert set(runs) == {records[0].run_id, records[1].run_id}
    status = _here(capsys, "status", *results)
    assert "mixed numerics: config" in status and records[1].run_id in status
    assert "mixed numerics: config" in _here(capsys, "verify", *results)
    from study.report.build import build_report

    report = build_report(store, tmp_path / "report", ["table3"], fmt="markdown", figure=False, n_boot=20)
    assert any("were not computed alike" in note and records[1].run_id in note for note in report.notes)
    again = _study("run", "t3-ours", "--seeds", "2", *SMOKE, "--threads", "1", "--retrain-mixed", *results)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"retrain {records[1].run_id}" in again.stdout and f"retrain {records[0].run_id}" not in again.stdout
    assert not mixed_numerics(store.records())
    assert "mixed numerics" not in _here(capsys, "status", *results)
