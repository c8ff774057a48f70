"""The Optuna search: parallel workers on one journal, a killed worker, export, RDB storage."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import REPO_ROOT
from optuna.trial import TrialState

from study.own_study import init_study
from study.search.space import TuneSpec, official_weights
from study.search.storage import load_study
from study.store.runs import Store

TINY = ["--dataset", "synthetic", "--profile", "smoke", "--set", "data.synthetic_count=40",
        "--set", "train.epochs=2"]


def cli(*args, results, env=None, wait=True):
    argv = [sys.executable, "-m", "study", *args, "--results", str(results)]
    kwargs = dict(cwd=REPO_ROOT, env={**os.environ, **(env or {})}, text=True,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(argv, timeout=900, **kwargs) if wait else subprocess.Popen(argv, **kwargs)


def study_of(results, name="distill"):
    storage = str(results / "tune" / f"{name}.journal")
    return load_study(TuneSpec("", 0, storage, name, str(results)), create=False)


@pytest.mark.slow
def test_two_workers_run_exactly_the_requested_trials(tmp_path):
    out = cli("tune", "distill", "--trials", "5", "--workers", "2", *TINY, results=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    study = study_of(tmp_path)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 5 and len(trials) == 5  # none lost, none extra, none left running
    assert sorted(t.number for t in trials) == list(range(5))
    assert len({t.user_attrs["run_id"] for t in trials}) == 5  # no trial duplicated another's run
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both workers took trials
    first = study.trials[0]
    # The preset of variants/base.toml, which Table 7's Full Strategy row also takes.
    assert first.params == pytest.approx(official_weights()) and first.user_attrs["origin"] == "official weights"
    # The objective is the holdout DSC of the selected epoch, never a test number.
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = json.loads((Store(tmp_path).root / "runs" / t.user_attrs["run_id"] / "record.json").read_text())
        assert record["config"]["train"]["selection"] == "holdout"
        assert t.value == record["history"][record["selection"]["epoch"] - 1]["selection_dsc"]
    again = cli("tune", "distill", "--trials", "5", "--workers", "2", *TINY, results=tmp_path)
    assert again.returncode == 0 and "continuing study 'distill': 5 trial(s)" in again.stdout
    assert len(study_of(tmp_path).trials) == 5


@pytest.mark.slow
def test_killed_worker_leaves_a_study_that_resumes(tmp_path):
    args = ["tune", "distill", "--trials", "2", "--workers", "1", *TINY[:-1], "train.epochs=4"]
    victim = cli(*args, results=tmp_path, wait=False)
    deadline = time.time() + 300
    killed_run = None
    while time.time() < deadline and killed_run is None:
        journal = tmp_path / "tune" / "distill.journal"
        if journal.exists():
            running = study_of(tmp_path).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            for t in running:
                metrics = tmp_path / "runs" / t.user_attrs.get("run_id", "-") / "metrics.csv"
                if metrics.exists() and metrics.read_text().count("\n") >= 2:
                    killed_run = t.user_attrs["run_id"]
        time.sleep(0.1)
    assert killed_run, "no trial got past its first epoch"
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert len(study_of(tmp_path).get_trials(deepcopy=False, states=(TrialState.RUNNING,))) == 1

    resumed = cli(*args, results=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study = study_of(tmp_path)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 1 and TrialState.RUNNING not in states
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == 2
    failed = next(t for t in study.trials if t.state == TrialState.FAIL)
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == failed.number)
    assert retry.params == failed.params and retry.user_attrs["run_id"] == killed_run
    record = json.loads((tmp_path / "runs" / killed_run / "record.json").read_text())
    assert record["resumed_from_epoch"] >= 1  # the retry resumed the run, it did not restart it


@pytest.mark.slow
def test_export_row_trains_and_is_reported(tmp_path):
    out = cli("tune", "distill", "--trials", "2", "--threads", "1", *TINY, results=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "local: 1 run(s) at once x 1 thread(s) from --threads" in out.stdout
    attempts = [a for p in (tmp_path / "runs").glob("*/record.json") for a in json.loads(p.read_text())["attempts"]]
    assert len(attempts) >= 3 and {a["threads"] for a in attempts} == {1}  # the teacher and every trial
    # Without a study folder of one's own the export refuses: the paper's files are never written.
    refused = cli("tune", "show", "--export", "t7-tuned", results=tmp_path)
    assert refused.returncode == 2 and "--study DIR" in refused.stderr
    assert 'id = "t7-tuned"' not in (REPO_ROOT / "variants" / "table7.toml").read_text()
    into_paper = cli("tune", "show", "--export", "t7-tuned", "--variants-file", str(REPO_ROOT / "variants" / "table7.toml"),
                     results=tmp_path)
    assert into_paper.returncode == 2 and "never written" in into_paper.stderr
    lab = tmp_path / "lab"
    init_study(lab)
    env = {"STUDY_DIR": str(lab)}
    show = cli("tune", "show", "--export", "t7-tuned", results=tmp_path, env=env)
    assert show.returncode == 0, show.stdout + show.stderr
    assert "best trials" in show.stdout and "parameter importances" in show.stdout
    assert 'id = "t7-tuned"' in (lab / "tables" / "tuned.toml").read_text()
    again = cli("tune", "show", "--export", "t7-tuned", results=tmp_path, env=env)
    assert again.returncode == 2 and "already exists" in again.stderr
    run = cli("run", "t7-tuned", "--seeds", "1", "--profile", "smoke", "--set", "data.synthetic_count=40",
              "--set", "train.epochs=2", results=tmp_path, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    report = cli("report", "--tables", "tuned", "--no-audit", "--no-figure", "--profile", "smoke",
                 "--set", "data.synthetic_count=40", "--set", "train.epochs=2",  # as the runs were made
                 "--out", str(tmp_path / "rep"), results=tmp_path, env=env)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "Tuned weights (t7-tuned)" in (tmp_path / "rep" / "tuned.tex").read_text()


@pytest.mark.slow
def test_sqlite_storage_for_one_worker(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    out = cli("tune", "distill", "--trials", "1", "--storage", url, "--study-name", "s", *TINY, results=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == 1 and study.trials[0].state in (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.mark.slow
def test_a_tiny_study_through_the_local_slurm_cluster(slurm_cluster, tmp_path):
    out = cli("tune", "distill", "--trials", "2", "--workers", "2", "--launcher", "slurm", "--cluster", "local",
              *TINY, results=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted 2 worker task(s)" in out.stdout
    deadline = time.time() + 600
    while time.time() < deadline:
        finished = study_of(tmp_path).get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if len(finished) == 2:
            break
        time.sleep(2)
    study = study_of(tmp_path)
    assert len(study.trials) == 2 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert all(t.user_attrs.get("slurm_job_id") for t in study.trials)


def test_an_odd_record_fails_its_trial_once_retried_and_the_search_moves_on(tmp_path, monkeypatch):
    """A completed run whose record gives no holdout DSC (an older harness, an edit) never crashes the search."""
    import optuna

    from study.search import workers as tune_mod
    from study.search.space import TuneSpec
    from study.search.storage import load_study
    from study.search.workers import run_trial
    from study.store.record import RunKey, RunRecord, Status
    from study.train import run as run_mod

    spec = TuneSpec("synthetic", 3, str(tmp_path / "s.journal"), "odd", str(tmp_path), profile="smoke")
    study = load_study(spec)
    odd = RunRecord(RunKey("0" * 16, 0), Status.COMPLETED, {}, details={"selection": {"epoch": 3}, "history": []})
    monkeypatch.setattr(run_mod, "train_spec", lambda *a, **k: odd)
    lines = []
    trial = tune_mod._claim(study, spec)
    run_trial(study, trial, spec, log=lines.append)
    states = [t.state for t in study.trials]
    assert states[0] == optuna.trial.TrialState.FAIL and states[1] == optuna.trial.TrialState.WAITING
    assert "gives no holdout DSC for its selected epoch" in study.trials[0].user_attrs["failure"]
    assert "enqueued again" in lines[-1]
    retry = tune_mod._claim(study, spec)  # the retry fails too: not enqueued a third time
    run_trial(study, retry, spec, log=lines.append)
    assert [t.state for t in study.trials].count(optuna.trial.TrialState.WAITING) == 0
