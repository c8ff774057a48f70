"""The house's connections (issue 24): layers that import only downwards, one settings module,
threads decided once for every command that takes --threads, and kernels fenced from Python."""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, _missing

from study import kernels
from study.errors import ConfigError
from study.launch import slurm as sl
from study.launch.cpus import local_share
from study.plan import plan_runs
from study.settings import VARIABLES, Settings
from study.store.runs import Store

TINY = ["--profile", "smoke", "--set", "data.synthetic_count=40", "--set", "train.epochs=1"]


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, **(env or {})}, timeout=300)


def _study(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, **(env or {})}, timeout=600)


# ----------------------------------------------------------------------------- layers


def test_importing_the_config_imports_no_torch():
    out = _python("import sys, study.config; print('torch' in sys.modules)")
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_the_store_imports_nothing_above_it():
    """Every module of study.store loads without torch and without the plan, launch, train, search,
    report or cli layers."""
    code = ("import sys, pkgutil, importlib, study.store\n"
            "for m in pkgutil.iter_modules(study.store.__path__): importlib.import_module('study.store.' + m.name)\n"
            "print(sorted(n for n in sys.modules if n == 'torch' or n.split('.')[:2] in "
            "(['study', 'plan'], ['study', 'launch'], ['study', 'train'], ['study', 'search'], ['study', 'report'], "
            "['study', 'cli'], ['study', 'variants'], ['study', 'models'])))")
    out = _python(code)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_study_lists_the_layers():
    names = {p.name for p in (REPO_ROOT / "study").iterdir() if not p.name.startswith((".", "__"))}
    assert {"variants.py", "plan.py", "launch", "train", "store", "report", "search", "cost.py",
            "settings.py"} <= names
    loose = {"store.py", "record.py", "lease.py", "index.py", "verify.py", "status.py", "per_image.py",
             "predictions.py", "manifest.py", "tune.py", "tune_slurm.py"}
    assert not names & loose, names & loose
    assert not (REPO_ROOT / "study" / "train" / "metrics.py").exists()  # one metrics module: study/metrics.py


# ----------------------------------------------------------------------------- settings


def test_every_setting_is_in_the_readme_table_and_read_in_one_module():
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme.split("<!-- settings -->", 1)[1].split("\n\n", 1)[0]
    in_table = re.findall(r"^\| `(STUDY_[A-Z_<>]+)`", table, re.M)
    assert in_table == [v.name for v in VARIABLES]
    readers = {path.relative_to(REPO_ROOT).as_posix() for path in (REPO_ROOT / "study").rglob("*.py")
               if re.search(r"(environ\.get\(|environ\[|getenv\()\s*[\"']STUDY_", path.read_text())}
    assert readers == set(), f"read STUDY_* themselves instead of through study.settings: {readers}"


def test_settings_read_the_environment_and_say_what_is_wrong():
    settings = Settings.read({"STUDY_RESULTS": "/tmp/r", "STUDY_THREADS": "3", "STUDY_NATIVE_KERNELS": "off",
                              "STUDY_DATA_ISIC2017": "/data/i17"})
    assert settings.results == Path("/tmp/r") and settings.threads == 3 and not settings.native_kernels
    assert settings.data_root("STUDY_DATA_ISIC2017") == "/data/i17"
    with pytest.raises(ConfigError, match="STUDY_THREADS='two': expected a positive whole number"):
        _ = Settings.read({"STUDY_THREADS": "two"}).threads


@pytest.mark.slow
def test_env_prints_versions_kernels_cpus_and_settings(tmp_path):
    out = _study("env", env={"STUDY_RESULTS": str(tmp_path), "STUDY_THREADS": "1", "STUDY_TYPO": "x"})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"torch {torch.__version__}" in text and "mamba-ssm:" in text and "causal-conv1d:" in text
    assert "CPU kernels:" in text and "Mamba on cpu" in text
    assert "one run here gets 1 thread(s) (from STUDY_THREADS)" in text
    assert f"STUDY_RESULTS          {tmp_path} (set)" in text
    assert "not a setting of this harness (misspelt?): STUDY_TYPO" in text
    for var in VARIABLES:
        assert var.name in text
    bad = _study("env", env={"STUDY_THREADS": "two"})  # a malformed setting is said; the screen still prints
    assert bad.returncode == 0 and "STUDY_THREADS='two': expected a positive whole number" in bad.stdout, bad.stderr
    assert "settings (a flag" in bad.stdout


# ----------------------------------------------------------------------------- threads


def test_threads_are_decided_once_and_explicit_values_win(monkeypatch):
    share = local_share([256], jobs=2, threads=3, cpus=8, busy=0)
    assert (share.jobs, share.threads, share.chosen) == (2, 3, "--threads")
    monkeypatch.setenv("STUDY_THREADS", "2")
    assert local_share([256], cpus=8, busy=0).threads == 2 and local_share([256], cpus=8, busy=0).chosen == "STUDY_THREADS"
    assert local_share([256], threads=5, cpus=8, busy=0).threads == 5  # the flag wins over the variable
    with pytest.raises(ConfigError, match="--threads 0: expected at least 1"):
        local_share([256], threads=0)


@pytest.mark.slow
def test_run_dry_run_prints_the_share_the_launch_uses(tmp_path):
    from study.cli.run import make_launcher

    out = _study("run", "t3-ours", "--seeds", "2", "--dry-run", "--jobs", "2", "--threads", "1", *TINY,
                 "--results", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "local: 2 run(s) at once x 1 thread(s) from --threads" in out.stdout
    args = Namespace(launcher="local", jobs=2, threads=1, track="none", cluster=None)
    launcher = make_launcher(args, plan_runs(["t3-ours"], [0, 1], Store(tmp_path), profile="smoke"))
    assert (launcher.share.jobs, launcher.share.threads) == (2, 1)


@pytest.mark.slow
def test_slurm_threads_are_per_run_and_written_into_the_jobs_environment(tmp_path, monkeypatch):
    profile_file = tmp_path / "pairs.toml"
    profile_file.write_text('partition = "debug"\ncpus_per_task = 4\nruns_per_task = 2\n')
    # run --launcher slurm --dry-run: the same share the submission uses
    out = _study("run", "t3-ours", "--seeds", "1", "--dry-run", "--launcher", "slurm", "--cluster", str(profile_file),
                 "--threads", "3", *TINY, "--results", str(tmp_path / "store"))
    assert out.returncode == 0, out.stderr
    assert "SLURM: 2 runs per task, 3 thread(s) each (--cpus-per-task=6)" in out.stdout
    default = _study("run", "t3-ours", "--seeds", "1", "--dry-run", "--launcher", "slurm", "--cluster",
                     str(profile_file), *TINY, "--results", str(tmp_path / "store"))
    assert "SLURM: 2 runs per task, 2 thread(s) each (--cpus-per-task=4)" in default.stdout, default.stderr
    # submitit: the task's CPUs and each run's threads in the job's environment
    launcher = sl.SlurmLauncher(str(profile_file), threads=3)
    params = launcher.executor_parameters(sl.Snapshot(tmp_path / "snap", "abc", False))
    assert params["cpus_per_task"] == 6
    assert "export STUDY_THREADS=3" in params["setup"] and "export OMP_NUM_THREADS=3" in params["setup"]
    # a last, smaller task: its CPUs shared among fewer runs, unless --threads fixed them per run
    assert sl.load_profile(str(profile_file)).threads_for(1) == 4
    assert launcher.profile.threads_for(1) == 3
    # STUDY_THREADS stands for --threads where the flag is not given (the flag wins)
    monkeypatch.setenv("STUDY_THREADS", "5")
    assert sl.SlurmLauncher(str(profile_file)).profile.threads_per_run == 5
    assert sl.SlurmLauncher(str(profile_file), threads=3).profile.threads_per_run == 3
    monkeypatch.delenv("STUDY_THREADS")
    # the search's workers: one per task, the task's CPUs all its own
    assert sl.SlurmLauncher(str(profile_file), runs_per_task=1, threads=3).profile.cpus_per_task == 3
    # sbatch: the script asks for the CPUs, exports the threads, and runs.json carries them to the task
    out = _study("sbatch", "t3-ours", "--seeds", "2", "--cluster", str(profile_file), "--threads", "3",
                 "--no-snapshot", "--out", str(tmp_path / "scripts"), *TINY, "--results", str(tmp_path / "store"))
    assert out.returncode == 0, out.stderr
    script = next((tmp_path / "scripts").glob("*.sbatch")).read_text()
    assert "#SBATCH --cpus-per-task=6" in script and "export STUDY_THREADS=3" in script
    runs_file = json.loads((tmp_path / "scripts" / "runs.json").read_text())
    assert runs_file["threads"] == 3 and runs_file["task_threads"] == [3] * len(runs_file["tasks"])
    three = _study("sbatch", "t3-ours", "--seeds", "3", "--cluster", str(profile_file), "--no-snapshot", "--out",
                   str(tmp_path / "three"), *TINY, "--results", str(tmp_path / "store"))
    assert three.returncode == 0, three.stderr
    runs_file = json.loads((tmp_path / "three" / "runs.json").read_text())
    assert [len(t) for t in runs_file["tasks"]] == [2, 1] and runs_file["task_threads"] == [2, 4]
    assert "2 runs per task, 3 thread(s) each (--cpus-per-task=6)" in out.stdout
    with pytest.raises(ConfigError, match="--threads 0"):
        sl.SlurmLauncher(str(profile_file), threads=0)


@pytest.mark.slow
def test_train_and_bench_take_the_threads_they_are_given(tmp_path):
    out = _study("train", "--variant", "t3-ours", "--threads", "1", *TINY, "--results", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/record.json")]
    assert [a["threads"] for a in record["attempts"]] == [1]
    # What the attempt says of its numerics: the host clock timed it, no op warned (none does on a CPU).
    assert record["attempts"][0]["epoch_clock"] == "host clock"
    assert record["attempts"][0]["nondeterministic_ops"] == []
    assert record["numerics"]["deterministic_algorithms"] is True
    fast = _study("train", "--variant", "t3-ours", "--threads", "1", *TINY, "--set", "train.deterministic=false",
                  "--results", str(tmp_path))
    assert fast.returncode == 0, fast.stdout + fast.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/record.json")]
    (other,) = [r for r in records if r["config"]["train"].get("deterministic") is False]
    assert other["numerics"]["deterministic_algorithms"] is False and other["config_hash"] != record["config_hash"]
    bench = _study("bench", "--batch", "2", "--size", "64", "--repeats", "1", "--scan-length", "0", "--no-reference",
                   "--threads", "1")
    assert bench.returncode == 0, bench.stderr
    assert "1 CPU threads" in bench.stdout


# ----------------------------------------------------------------------------- kernels


_C_TYPES = {"int64_t": ctypes.c_int64, "double": ctypes.c_double}


def _prototypes() -> dict[str, list]:
    """The exported (non-static) functions of the kernels' C files, with each parameter as ctypes sees it."""
    found = {}
    for path in (REPO_ROOT / "study" / "kernels").glob("*.c"):
        text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
        for match in re.finditer(r"^int\s+(\w+)\s*\(([^)]*)\)\s*\{", text, re.M):
            params = []
            for param in (p.strip() for p in match.group(2).split(",")):
                if "*" in param:
                    params.append(ctypes.c_void_p)
                else:
                    kind = param.replace("const", "").split()[0]
                    assert kind in _C_TYPES, f"{path.name}: {match.group(1)}: parameter {param!r}"
                    params.append(_C_TYPES[kind])
            found[match.group(1)] = params
    return found


def test_the_python_signature_table_matches_the_c_prototypes():
    prototypes = _prototypes()
    assert set(prototypes) == set(kernels.SIGNATURES)
    for name, params in prototypes.items():
        assert kernels.SIGNATURES[name] == params, name


@pytest.fixture
def native():
    if kernels.library() is None:
        _missing(f"the C kernels do not build here: {kernels.status()}")
    return kernels.library()


def test_group_norm_wrappers_check_shapes_before_c_runs(native):
    from study.kernels import ops

    x = torch.randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="8 channels do not split into 3 groups"):
        ops.group_norm(x, 3, None, None, 1e-5)
    with pytest.raises(ValueError, match=r"weight of shape \(4,\) for 8 channels"):
        ops.group_norm(x, 4, torch.ones(4), None, 1e-5)
    with pytest.raises(ValueError, match=r"bias of shape \(16,\) for 8 channels"):
        ops.group_norm_pool_gelu(x, 4, torch.ones(8), torch.zeros(16), 1e-5)
    odd = torch.randn(1, 8, 5, 4).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="height and width must be even"):
        ops.group_norm_pool_gelu(odd, 4, None, None, 1e-5)
    assert torch.isfinite(ops.group_norm(x, 4, torch.ones(8), torch.zeros(8), 1e-5)).all()


def test_a_kernel_missing_from_a_built_library_is_an_error_not_a_fallback(native, monkeypatch):
    monkeypatch.setattr(kernels, "_state", {})
    monkeypatch.setitem(kernels.SIGNATURES, "no_such_kernel", [ctypes.c_void_p])
    with pytest.raises(AttributeError, match="no_such_kernel"):
        kernels.library()


@pytest.mark.slow
def test_a_run_resumed_on_other_kernels_is_flagged(tmp_path):
    from study.report.synthetic import write_run
    from study.store.status import mixed_kernel_notes
    from study.variants import find_row

    store = Store(tmp_path)
    folder = write_run(store, find_row("t3-ours"), None, 0, dsc=0.8)
    record_path = folder / "record.json"
    record = json.loads(record_path.read_text())
    same = {"device": "cpu", "kernels": {"scan": "C scan", "conv1d": "nn.Conv1d", "cpu": "native CPU kernels (/a.so)"}}
    record["attempts"] = [same, {**same, "kernels": {**same["kernels"], "cpu": "native CPU kernels (/b.so)"}}]
    record_path.write_text(json.dumps(record))
    assert mixed_kernel_notes(store.records()) == []  # another node's build of the same kernels
    record["attempts"].append({"device": "cpu", "kernels": {"scan": "PyTorch scan", "conv1d": "nn.Conv1d",
                                                            "cpu": "PyTorch ops (no C compiler)"}})
    record_path.write_text(json.dumps(record))
    (note,) = mixed_kernel_notes(store.records())
    assert "C scan" in note and "PyTorch scan" in note and "mix two roundings" in note
    status = _study("status", "--profile", "smoke", "--results", str(tmp_path))
    assert status.returncode == 0, status.stderr
    assert "mixed kernels: run " in status.stdout
    report = _study("report", "--tables", "3", "--format", "markdown", "--no-audit", "--no-figure", "--profile",
                    "smoke", "--out", str(tmp_path / "report"), "--results", str(tmp_path))
    assert report.returncode == 0, report.stderr
    assert "mix two roundings" in report.stdout and "mix two roundings" in (tmp_path / "report" / "report.md").read_text()
