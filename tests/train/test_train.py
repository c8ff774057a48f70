"""Training per the paper's protocol: learning, determinism, kill-and-resume,
selection, external evaluation, distillation, and failures."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO_ROOT
from runs import TINY, tiny  # noqa: F401

from study.errors import StudyError
from study.store.record import RunKey
from study.store.runs import Store
from study.train import loop as loop_mod
from study.train.run import train_run
from study.variants import find_row


# Small and fast: 40 synthetic images at 64 x 64.
@pytest.mark.slow
def test_smoke_run_learns_synthetic_lesions(tmp_path):
    # CPU budget: 20 epochs over 210 training images at 64 x 64, about 40 s on 2 cores.
    config = find_row("ultralbm").run_config(
        "synthetic", "smoke", {"train": {"epochs": 20, "lr": 2e-3}, "data": {"synthetic_count": 300}})
    torch.set_num_threads(2)
    record = train_run(config, 0, Store(tmp_path), progress=False)
    assert record.completed
    assert record.test["dsc"] > 0.9


@pytest.mark.slow
def test_same_seed_is_bit_identical_and_seeds_differ(tmp_path):
    a = train_run(tiny(), 0, Store(tmp_path / "a"), progress=False)
    b = train_run(tiny(), 0, Store(tmp_path / "b"), progress=False)
    c = train_run(tiny(), 1, Store(tmp_path / "a"), progress=False)
    assert a.test == b.test
    assert [h["train_loss"] for h in a.details["history"]] == [h["train_loss"] for h in b.details["history"]]
    assert a.test != c.test


def test_record_is_complete(tmp_path):
    store = Store(tmp_path)
    record = train_run(tiny(), 0, store, rows=("ultralbm",), progress=False)
    run_dir = store.run_dir(record.key)
    assert record.to_json() == json.loads((run_dir / "record.json").read_text())
    record = record.to_json()
    for key in ("config", "config_hash", "seed", "status", "history", "test", "params", "gmacs_thop",
                "wall_time_s", "device", "versions", "git_commit", "selection", "data", "files", "pooled",
                "kernels"):
        assert key in record, key
    assert record["params"] == 34_166 and record["rows"] == ["ultralbm"]
    from study import kernels
    scan = "C scan" if kernels.library() is not None else "PyTorch scan"
    assert record["kernels"] == {"mamba_backend": "auto", "scan": scan, "conv1d": "nn.Conv1d",
                                 "memory_format": "channels_last", "cpu": kernels.status()}
    # every attempt keeps its own device and kernels
    assert [a["kernels"] for a in record["attempts"]] == [record["kernels"]]
    assert record["attempts"][0]["device"] == "cpu" and record["numerics"]["deterministic_algorithms"]
    assert len(record["history"]) == 3 and (run_dir / "metrics.csv").read_text().count("\n") == 4
    lines = (run_dir / "per_image_test.csv").read_text().splitlines()
    assert lines[0] == "id,tp,fp,fn,tn" and len(lines) - 1 == record["data"]["split"]["test"]
    sums = [sum(int(line.split(",")[i]) for line in lines[1:]) for i in (1, 2, 3, 4)]
    assert sums == [record["test"][k] for k in ("tp", "fp", "fn", "tn")]
    assert (run_dir / "model.pt").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()
    # A second call does nothing: the completed record comes back unchanged.
    assert train_run(tiny(), 0, store, progress=False).to_json() == record


@pytest.mark.slow
def test_stop_and_resume_equals_uninterrupted(tmp_path):
    config = tiny(train={"epochs": 4})
    whole = train_run(config, 0, Store(tmp_path / "whole"), progress=False)
    store = Store(tmp_path / "parts")
    part = train_run(config, 0, store, progress=False, stop_after_epochs=2)
    assert part.status.value == "interrupted" and part.epochs_done == 2
    resumed = train_run(config, 0, store, progress=False)
    assert resumed.details["resumed_from_epoch"] == 2
    assert resumed.test == whole.test
    assert [h["train_loss"] for h in resumed.details["history"]] == [h["train_loss"] for h in whole.details["history"]]


@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted(tmp_path):
    args = [sys.executable, "-m", "study", "train", "--variant", "ultralbm", "--dataset", "synthetic",
            "--profile", "smoke", "--seed", "0", "--set", "data.synthetic_count=40", "--set", "train.epochs=5",
            "--threads", "1"]
    env = {**os.environ, "STUDY_CACHE": os.environ["STUDY_CACHE"]}
    whole = subprocess.run(args + ["--results", str(tmp_path / "whole")], cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    victim = subprocess.Popen(args + ["--results", str(tmp_path / "killed")], cwd=REPO_ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / "killed" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline:
        metrics = list(runs.glob("*/metrics.csv")) if runs.is_dir() else []
        if metrics and metrics[0].read_text().count("\n") >= 3:  # header + two epochs
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_dir = next(runs.iterdir())
    assert json.loads((killed_dir / "record.json").read_text())["status"] == "running"
    resumed = subprocess.run(args + ["--results", str(tmp_path / "killed")], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads(next((tmp_path / "whole" / "runs").iterdir()).joinpath("record.json").read_text())
    b = json.loads((killed_dir / "record.json").read_text())
    assert b["resumed_from_epoch"] >= 2 and b["requeues"] == 1
    assert a["test"] == b["test"]
    assert (killed_dir / "per_image_test.csv").read_text() == \
        next((tmp_path / "whole" / "runs").iterdir()).joinpath("per_image_test.csv").read_text()


@pytest.mark.parametrize("selection,split", [("last", None), ("holdout", "holdout")])
def test_selection_modes_are_recorded(tmp_path, selection, split):
    record = train_run(tiny(train={"selection": selection}), 0, Store(tmp_path), progress=False).to_json()
    assert record["selection"]["mode"] == selection and record["selection"]["split"] == split
    if selection == "last":
        assert record["selection"]["epoch"] == 3
        assert "selection_loss" not in record["history"][0]
    else:
        assert record["data"]["holdout"]["holdout"] > 0
        assert record["data"]["holdout"]["fit"] + record["data"]["holdout"]["holdout"] == record["data"]["split"]["train"]


def test_non_finite_loss_fails_the_run(tmp_path, monkeypatch):
    def nan_objective(self, logits, images, masks):
        return logits.sum() * float("nan"), {}

    monkeypatch.setattr(loop_mod.Objective, "__call__", nan_objective)
    store = Store(tmp_path)
    with pytest.raises(StudyError, match="non-finite loss"):
        train_run(tiny(), 0, store, progress=False)
    record = store.load(RunKey(tiny().hash, 0))
    assert record.status.value == "failed" and "non-finite loss (nan) at epoch 1, batch 1" in record.reason


@pytest.mark.slow
def test_distillation_needs_its_teacher_then_trains(tmp_path):
    store = Store(tmp_path)
    student = tiny("t7-full")
    with pytest.raises(StudyError, match=r"teacher run [0-9a-f]+-s0 .* missing"):
        train_run(student, 0, store, progress=False)
    record = train_run(student, 0, store, progress=False, train_teacher=True)
    teacher_hash = student.teacher_config().hash
    assert record.completed and record.details["teacher"] == f"{teacher_hash}-s0"
    assert store.load(RunKey(teacher_hash, 0)).completed
    assert record.params == 10_956
    assert set(record.details["history"][0]) >= {"train_hard", "train_soft", "train_attention", "train_grad"}


@pytest.mark.slow
def test_real_isic2017_samples_learn(tmp_path, real_samples):
    config = find_row("ultralbm").run_config("isic2017", "paper", {
        "data": {"size": 64, "external": ["ph2"]}, "train": {"epochs": 12, "lr": 3e-3}})
    roots = {"isic2017": str(real_samples / "ISIC2017"), "ph2": str(real_samples / "PH2")}
    record = train_run(config, 0, Store(tmp_path), roots=roots, progress=False).to_json()
    t = record["test"]
    # Predicting all foreground scores 2 * fg / (1 + fg) Dice.
    fg = (t["tp"] + t["fn"]) / (t["tp"] + t["fp"] + t["fn"] + t["tn"])
    assert t["dsc"] > 2 * fg / (1 + fg) + 0.1
    assert record["data"]["split"] == {**record["data"]["split"], "train": 42, "test": 18}
    ph2 = record["external"]["ph2"]
    assert 0 <= ph2["dsc"] <= 1
    run_dir = Store(tmp_path).run_dir(RunKey(config.hash, 0))
    assert (run_dir / "per_image_ph2.csv").read_text().count("\n") == 21
