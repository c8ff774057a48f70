"""SLURM: profiles, job arrays, dependencies, snapshots, sbatch scripts; then a real cluster.

The first tests need no SLURM. The rest use ``slurm_cluster`` (conftest.py):
the single-node cluster of ``slurm/local-cluster.sh``, started once per session
and stopped by PID afterwards; without SLURM (or root) they skip, under CI=true
they fail.

Golden sbatch scripts: ``tests/golden/slurm/``. After an intended change,
regenerate with ``STUDY_REGEN_GOLDEN=1 python -m pytest tests/launch/test_slurm.py``
and review the diff before committing it.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from study.config import parse_overrides
from study.errors import ConfigError
from study.launch import get_launcher
from study.launch import slurm as sl
from study.launch.slurm import cluster as sl_cluster
from study.plan import expand, make_plan
from study.store.record import RunKey
from study.store.runs import Store

GOLDEN = REPO_ROOT / "tests" / "golden" / "slurm"
TINY = ["--set", "data.synthetic_count=40", "--set", "train.epochs=2"]


def plan_runs(names, seeds, store, profile="smoke", overrides=()):
    return make_plan(expand(names, seeds, profile=profile, overrides=parse_overrides(list(overrides))), store).todo


# ----------------------------------------------------------------------------- without a cluster


def test_shipped_profiles_load():
    assert {"generic-gpu", "local"} <= set(sl.available_profiles())
    gpu = sl.load_profile("generic-gpu")
    assert gpu.gpus_per_task == 1 and gpu.partition == "gpu" and gpu.account is None  # "" = not sent
    local = sl.load_profile("local")
    assert local.cpus_per_task == 1 and local.array_parallelism == 2 and local.gpus_per_task == 0


def test_profile_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('partition = "gpu"\ngpus = 2\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: unknown field 'gpus'"):
        sl.load_profile(str(bad))
    bad.write_text('cpus_per_task = "8"\n')
    with pytest.raises(ConfigError, match=r"cpus_per_task = '8': expected int"):
        sl.load_profile(str(bad))
    bad.write_text('extra_sbatch = ["-C a100"]\n')
    with pytest.raises(ConfigError, match="long option"):
        sl.load_profile(str(bad))
    with pytest.raises(ConfigError, match="profiles in .*generic-gpu"):
        sl.load_profile("no-such-cluster")
    with pytest.raises(ConfigError, match="--launcher: unknown"):
        get_launcher("pbs")


def test_submitit_script_carries_every_resource(tmp_path):
    """The sbatch text submitit writes for an array, from a profile with every field set."""
    from submitit.slurm.slurm import _make_sbatch_string

    profile = sl.profile_from_dict({
        "partition": "gpu", "account": "proj42", "qos": "high", "constraint": "a100", "gpus_per_task": 2,
        "runs_per_task": 2, "cpus_per_task": 8, "mem_gb": 1.5, "time_min": 90, "array_parallelism": 4, "signal_delay_s": 300,
        "extra_sbatch": ["--mail-type=FAIL", "#SBATCH --exclusive"], "setup": ["module load cuda"]})
    snap = sl.Snapshot(tmp_path / "snap", "abc123", False)
    params = sl.SlurmLauncher(profile=profile).executor_parameters(snap, dependency="afterany:7_0:7_1")
    text = _make_sbatch_string(command="CMD", folder=tmp_path / "%j", map_count=30, **params)
    for line in ("--array=0-29%4", "--partition=gpu", "--account=proj42", "--qos=high", "--constraint=a100",
                 "--gpus-per-task=2", "--cpus-per-task=8", "--mem=1536M", "--time=90", "--signal=USR2@300",
                 "--dependency=afterany:7_0:7_1", "--requeue", "--mail-type=FAIL", "--exclusive"):
        assert f"#SBATCH {line}\n" in text, line
    setup = text.split("# setup\n")[1]
    assert setup.index("module load cuda") < setup.index("export STUDY_GIT_COMMIT=abc123")
    assert f"cd {tmp_path / 'snap'}" in setup and f"PYTHONPATH={tmp_path / 'snap'}" in setup
    gres = sl.profile_from_dict({"gpus_per_task": 1, "gpu_flag": "gres"})
    assert sl.SlurmLauncher(profile=gres).executor_parameters(snap)["gres"] == "gpu:1"


class FakeSubmit:
    """Stands in for sbatch: records each array and gives its tasks ids."""

    def __init__(self):
        self.arrays = []

    def __call__(self, tasks, store, roots, snapshot, submission, folder, dependency, job_name):
        job = 100 + len(self.arrays)
        specs = [s for task in tasks for s in task]
        self.arrays.append({"runs": [s["run_id"] for s in specs], "dependency": dependency, "name": job_name,
                            "snapshot": snapshot, "specs": specs, "tasks": tasks})
        return [f"{job}_{i}" for i in range(len(tasks))]


def test_arrays_are_chunked_and_students_wait_for_their_teachers(tmp_path, monkeypatch):
    store = Store(tmp_path)
    runs = plan_runs(["t7-kl", "t7-dkd", "t3-ours"], [0, 1, 2], store)
    teachers = [r for r in runs if not r.is_student]
    students = [r for r in runs if r.is_student]
    assert len(students) == 6 and len(teachers) == 3  # t3-ours is the teacher: one run serves both
    fake = FakeSubmit()
    monkeypatch.setattr(sl.SlurmLauncher, "_submit_array", fake)
    monkeypatch.setattr(sl_cluster, "require", lambda tool: tool)
    monkeypatch.setattr(sl_cluster, "_squeue_ids", lambda: set())
    launcher = sl.SlurmLauncher(profile=sl.profile_from_dict({"max_array_size": 2}, name="test"))
    report = launcher.launch(runs, store, roots={}, log=lambda *a: None)

    assert [len(a["runs"]) for a in fake.arrays] == [2, 1, 2, 2, 2]
    assert sorted(report.submitted) == sorted(r.run_id for r in runs) and not report.failed
    order = [run for a in fake.arrays for run in a["runs"]]
    assert set(order[:len(teachers)]) == {r.run_id for r in teachers}  # every teacher array first
    for array in fake.arrays:
        if array["name"].endswith("-students"):
            wanted = {report.submitted[sl.teacher_run_id(next(r for r in students if r.run_id == s))]
                      for s in array["runs"]}
            assert array["dependency"] == "afterany:" + ":".join(sorted(wanted))
        else:
            assert array["dependency"] is None
    snapshot = fake.arrays[0]["snapshot"]
    assert snapshot.path.parent == tmp_path / "snapshots" and (snapshot.path / "study" / "plan.py").is_file()
    markers = {p.stem: json.loads(p.read_text())["job_id"] for p in (tmp_path / "slurm" / "jobs").glob("*.json")}
    assert markers == report.submitted

    # Submitting again while those jobs are queued submits nothing twice.
    monkeypatch.setattr(sl_cluster, "_squeue_ids", lambda: set(report.submitted.values()))
    again = sl.SlurmLauncher(profile=launcher.profile).launch(runs, store, roots={}, log=lambda *a: None)
    assert not again.submitted and sorted(again.busy) == sorted(report.submitted)
    # ... and a student whose teacher is still queued depends on that queued job.
    still = {k: v for k, v in report.submitted.items() if k in {r.run_id for r in teachers}}
    monkeypatch.setattr(sl_cluster, "_squeue_ids", lambda: set(still.values()))
    fake.arrays.clear()
    sl.SlurmLauncher(profile=launcher.profile).launch(students[:1], store, roots={}, log=lambda *a: None)
    assert fake.arrays[0]["dependency"] == f"afterany:{still[sl.teacher_run_id(students[0])]}"


def test_array_size_follows_the_cluster_and_the_profile():
    assert sl.array_size(sl.profile_from_dict({}), cluster=1001) == 1001
    assert sl.array_size(sl.profile_from_dict({"max_array_size": 50}), cluster=1001) == 50
    assert sl.array_size(sl.profile_from_dict({"max_array_size": 5000}), cluster=1001) == 1001
    assert [len(c) for c in sl.chunked(list(range(2500)), 1001)] == [1001, 1001, 498]


def _fake_source(root: Path, body: str) -> Path:
    (root / "study").mkdir(parents=True, exist_ok=True)
    (root / "study" / "__init__.py").write_text(body)
    (root / "study" / "__pycache__").mkdir(exist_ok=True)
    (root / "study" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (root / "variants").mkdir(exist_ok=True)
    (root / "variants" / "base.toml").write_text("x = 1\n")
    return root


def test_snapshot_is_content_addressed_and_frozen(tmp_path):
    source = _fake_source(tmp_path / "src", "VERSION = 1\n")
    first = sl.make_snapshot(tmp_path / "snaps", source)
    assert sl.make_snapshot(tmp_path / "snaps", source).path == first.path  # unchanged code: reused
    assert not (first.path / "study" / "__pycache__").exists()
    (source / "study" / "__init__.py").write_text("VERSION = 2\n")  # an edit after submitting
    second = sl.make_snapshot(tmp_path / "snaps", source)
    assert second.path != first.path
    assert (first.path / "study" / "__init__.py").read_text() == "VERSION = 1\n"  # queued jobs keep theirs
    meta = json.loads((first.path / "SNAPSHOT.json").read_text())
    assert meta["source"] == str(source) and meta["files"] == 2


def _normalise(text: str, files: sl.SbatchFiles, store: Store) -> str:
    snap = files.snapshot
    text = text.replace(str(snap.path), "<SNAPSHOT>").replace(str(files.out_dir), "<OUT>")
    text = text.replace(str(store.root), "<STORE>")
    return text.replace(snap.commit, "<COMMIT>") if snap.commit else text


def _check_golden(name: str, rendered: str) -> None:
    golden = GOLDEN / name
    if os.environ.get("STUDY_REGEN_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered)
    expected = golden.read_text()
    diff = "".join(difflib.unified_diff(expected.splitlines(True), rendered.splitlines(True), str(golden),
                                        "rendered"))
    assert rendered == expected, (
        f"the generated script differs from {golden}.\nIf the change is intended, regenerate it with\n"
        f"  STUDY_REGEN_GOLDEN=1 python -m pytest tests/launch/test_slurm.py\nand review the diff.\n{diff}")


def test_sbatch_scripts_match_golden(tmp_path):
    store = Store(tmp_path / "store")
    profile = sl.load_profile("generic-gpu")
    table3 = sl.write_sbatch(plan_runs(["table3"], [0], store), store, profile, tmp_path / "t3", roots={},
                             name="table3", command="python -m study sbatch table3 --seeds 1 --profile smoke "
                             "--cluster generic-gpu", max_array_size=1001, python="PYTHON")
    assert len(table3.scripts) == 1 and not table3.student_scripts
    _check_golden("table3-generic-gpu.sbatch", _normalise(table3.scripts[0].read_text(), table3, store))
    runs = json.loads(table3.runs_file.read_text())
    assert len(runs["runs"]) == 8 and runs["store"] == str(store.root) and runs["max_requeues"] == 3

    t7 = sl.write_sbatch(plan_runs(["t7-kl"], [0, 1], store), store, sl.load_profile("local"), tmp_path / "t7",
                         roots={}, name="t7-kl", command="python -m study sbatch t7-kl --seeds 2 --profile smoke "
                         "--cluster local", max_array_size=1001, python="PYTHON")
    assert [p.name for p in t7.scripts + t7.student_scripts] == ["t7-kl.sbatch", "t7-kl-students.sbatch"]
    _check_golden("t7-kl-students.sbatch", _normalise(t7.student_scripts[0].read_text(), t7, store))
    _check_golden("t7-kl-submit.sh", _normalise(t7.submit_script.read_text(), t7, store))
    with pytest.raises(ConfigError, match="already holds scripts"):
        sl.write_sbatch(plan_runs(["t7-kl"], [0], store), store, sl.load_profile("local"), tmp_path / "t7",
                        roots={}, name="t7-kl", command="x", max_array_size=1001)


# ----------------------------------------------------------------------------- on the local cluster


def study(*args, timeout=300, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "study", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=timeout)
    if check:
        assert out.returncode == 0, f"study {' '.join(args)} -> {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


def squeue(*args) -> str:
    return subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, timeout=60).stdout


def records(store_root: Path) -> dict[str, dict]:
    out = {}
    for path in (Path(store_root) / "runs").glob("*/record.json"):
        try:
            out[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError):  # being replaced right now
            pass
    return out


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    start = time.time()
    end = start + timeout
    while time.time() < end:
        value = predicate()
        if value:
            print(f"{time.strftime('%H:%M:%S')} {what}: {time.time() - start:.1f} s")
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\nsqueue:\n{squeue()}")


def wait_until_finished(store_root: Path, run_ids, timeout: float) -> dict[str, dict]:
    def finished():
        recs = records(store_root)
        done = {r: recs[r] for r in run_ids if r in recs and recs[r]["status"] in ("completed", "failed")}
        return recs if len(done) == len(run_ids) else None
    return wait_for(finished, timeout, f"{len(run_ids)} runs to finish in {store_root}", poll=1.0)


def release_requeued(job_id: str) -> None:
    """A requeued job waits ~2 min (Reason=BeginTime) before SLURM starts it again: start it now."""
    def pending():
        return "PENDING" in squeue("-j", job_id, "-o", "%T")
    wait_for(pending, 60, f"job {job_id} to be requeued", poll=0.2)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, timeout=60)


@pytest.mark.slow
def test_table3_smoke_through_slurm(slurm_cluster, tmp_path):
    """The issue's done-when: the smoke Table 3 (8 rows x 3 seeds) through --launcher slurm.

    With TINY overrides (40 images, 2 epochs) to spare the 2-core CI machine; the
    command without them is the same path (measured here: 24 runs in 160-210 s)."""
    store_root = tmp_path / "store"
    args = ["table3", "--seeds", "3", "--profile", "smoke", "--launcher", "slurm", "--cluster", "local",
            "--results", str(store_root), *TINY]
    started = time.time()
    out = study("run", *args)
    assert time.time() - started < 60 and "submitted 24 run(s)" in out.stdout, out.stdout
    run_ids = [p.stem for p in (store_root / "slurm" / "jobs").glob("*.json")]
    assert len(run_ids) == 24
    (script,) = (store_root / "slurm" / "logs").glob("*/*/*_submission.sh")
    assert "#SBATCH --array=0-23%2\n" in script.read_text()  # one array, at most 2 tasks at once
    # The same command while they are queued: nothing is submitted twice.
    twice = study("run", *args).stdout
    assert "submitted" not in twice and "still in the queue" in twice, twice
    assert len(list((store_root / "slurm" / "logs").iterdir())) == 1
    recs = wait_until_finished(store_root, run_ids, timeout=1200)
    failed = {r: recs[r].get("reason") for r in run_ids if recs[r]["status"] != "completed"}
    assert not failed, failed

    snapshots = list((store_root / "snapshots").iterdir())
    assert len(snapshots) == 1
    commit = json.loads((snapshots[0] / "SNAPSHOT.json").read_text())["commit"]
    job_ids = set()
    for run_id in run_ids:
        launcher = recs[run_id]["launcher"]
        assert launcher["kind"] == "slurm" and launcher["restart_count"] == 0
        assert launcher["code"] == str(snapshots[0] / "study")  # the jobs imported the snapshot
        assert launcher["commit"] == commit == recs[run_id]["git_commit"]
        assert Path(launcher["stderr_path"]).is_file()
        job_ids.add(launcher["job_id"])
    assert len(job_ids) == 24

    again = study("run", *args).stdout
    assert "nothing to do" in again


@pytest.mark.slow
def test_requeue_resumes_from_checkpoint_with_the_same_result(slurm_cluster, tmp_path):
    """`scontrol requeue` of a running job (SIGTERM), then submitit's time-limit path (USR2:
    checkpoint, requeue itself): the run resumes from its checkpoint both times and ends
    exactly like an uninterrupted run of the same config."""
    from study.train.run import train_run

    store = Store(tmp_path / "store")
    overrides = ["data.synthetic_count=40", "train.epochs=10"]
    (run,) = plan_runs(["t3-ours"], [0], store, overrides=overrides)
    launcher = get_launcher("slurm", cluster="local")
    report = launcher.launch([run], store, roots={}, log=lambda *a: None)
    job = report.submitted[run.run_id]
    run_dir = store.run_dir(run.key)

    def epochs_done(at_least):
        record = records(store.root).get(run.run_id) or {}
        return record.get("status") == "running" and record.get("epochs_done", 0) >= at_least

    wait_for(lambda: epochs_done(2), 300, "epoch 2 of the first attempt", poll=0.1)
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)  # as SLURM does on preemption
    release_requeued(job)
    wait_for(lambda: (records(store.root)[run.run_id].get("launcher", {}).get("restart_count") == 1
                      and epochs_done(5)), 300, "epoch 5 after the first requeue", poll=0.1)
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=60)  # the time-limit warning
    release_requeued(job)
    (record,) = [wait_until_finished(store.root, [run.run_id], timeout=600)[run.run_id]]

    assert record["status"] == "completed", record.get("reason")
    assert record["requeues"] == 2 and record["launcher"]["restart_count"] == 2
    assert record["resumed_from_epoch"] >= 5 and len(record["attempts"]) == 3
    assert (run_dir / "checkpoints" / "last.pt").is_file()  # under the run's hash, not a job id
    log = Path(record["launcher"]["stdout_path"]).read_text()
    assert "checkpoint and requeue" in log  # submitit called TrainJob.checkpoint

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(launcher.profile.cpus_per_task)  # as in the job: same float summation order
    try:
        reference = train_run(run.config, 0, Store(tmp_path / "reference"), progress=False).to_json()
    finally:
        torch.set_num_threads(threads)
    assert record["test"] == reference["test"]
    # every timing (seconds, step_seconds, data_seconds, select_seconds) differs; the rest must not
    drop_time = lambda history: [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in history]  # noqa: E731
    assert drop_time(record["history"]) == drop_time(reference["history"])
    assert (run_dir / "per_image_test.csv").read_text() == \
        (Store(tmp_path / "reference").run_dir(run.key) / "per_image_test.csv").read_text()


@pytest.mark.slow
def test_failed_job_keeps_its_stderr_for_status(slurm_cluster, tmp_path):
    from study.store.status import stderr_tail

    store_root = tmp_path / "store"
    out = study("run", "t3-ours", "--seeds", "1", "--profile", "smoke", "--launcher", "slurm", "--cluster",
                "local", "--results", str(store_root), *TINY, "--set", "train.lr=inf")
    assert "submitted 1 run(s)" in out.stdout
    (record,) = wait_until_finished(store_root, [p.stem for p in (store_root / "slurm" / "jobs").glob("*.json")],
                                    timeout=300).values()
    assert record["status"] == "failed" and "non-finite loss" in record["reason"]
    tail = stderr_tail(Store(store_root).load(RunKey.from_id(record["run_id"])), Store(store_root), lines=40)
    assert tail and "RunFailed: non-finite loss" in tail


@pytest.mark.slow
def test_plain_sbatch_scripts_run_students_after_teachers(slurm_cluster, tmp_path):
    """`study sbatch` writes the scripts, submit.sh submits them; `study status` shows the job ids.
    (The plain smoke config, no overrides: `status` knows the table's runs by their config hash.)"""
    store_root = tmp_path / "store"
    out_dir = tmp_path / "scripts"
    out = study("sbatch", "t7-kl", "--seeds", "1", "--profile", "smoke", "--cluster", "local", "--results",
                str(store_root), "--out", str(out_dir))
    assert "submit with" in out.stdout, out.stdout
    spec = json.loads((out_dir / "runs.json").read_text())
    assert [r["student"] for r in spec["runs"]] == [False, True]
    submitted = subprocess.run(["bash", str(out_dir / "submit.sh")], capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    run_ids = [r["run_id"] for r in spec["runs"]]

    # The time-limit warning (sbatch --signal=B:USR2@S) to the teacher: the task requeues itself.
    def teacher_at_epoch_2():
        record = records(store_root).get(run_ids[0]) or {}
        return record.get("status") == "running" and record.get("epochs_done", 0) >= 2 and record["launcher"]
    job = wait_for(teacher_at_epoch_2, 300, "the teacher's epoch 2", poll=0.1)["slurm_job_id"]
    subprocess.run(["scancel", "--batch", "--signal=USR2", job], check=True, timeout=60)
    release_requeued(job)

    recs = wait_until_finished(store_root, run_ids, timeout=600)
    teacher, student = (recs[r] for r in run_ids)
    assert teacher["status"] == student["status"] == "completed", (teacher.get("reason"), student.get("reason"))
    assert teacher["requeues"] == 1 and teacher["launcher"]["restart_count"] == 1 and teacher["resumed_from_epoch"] >= 2
    assert student["teacher"] == teacher["run_id"]
    assert student["attempts"][0]["started_at"] >= teacher["finished_at"]  # the dependency held through the requeue
    for record in (teacher, student):
        launcher = record["launcher"]
        assert launcher["launcher"] == "sbatch" and launcher["job_id"].count("_") == 1
        assert launcher["code"] == str(Path(spec["snapshot"]) / "study")
        assert Path(launcher["stdout_path"]).is_file()
    status = study("status", "table7", "--profile", "smoke", "--seeds", "1", "--results", str(store_root)).stdout
    line = next(line for line in status.splitlines() if line.strip().startswith("t7-kl "))
    assert "completed 1" in line and student["launcher"]["job_id"] in line, status


@pytest.mark.slow
def test_gpu_requests_are_scheduled(slurm_cluster, tmp_path):
    """Every GPU syntax of a profile is accepted by sbatch, and a job gets its GPU (the local
    cluster's are stand-ins: the run still trains on the CPU)."""
    from submitit.slurm.slurm import _make_sbatch_string

    base = {"partition": "debug", "cpus_per_task": 1, "time_min": 10, "mem_gb": 1, "array_parallelism": 2,
            "extra_sbatch": ["--mail-type=FAIL"]}
    for flag in sl.GPU_FLAGS:
        profile = sl.profile_from_dict({**base, "gpus_per_task": 1, "gpu_flag": flag}, name=flag)
        params = sl.SlurmLauncher(profile=profile).executor_parameters(sl.live_code())
        script = tmp_path / f"{flag}.sh"
        script.write_text(_make_sbatch_string(command="true", folder=tmp_path / "%j", map_count=3, **params))
        test = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, timeout=60)
        assert test.returncode == 0 and "to start at" in test.stderr, (flag, test.stderr)

    store = Store(tmp_path / "store")
    (run,) = plan_runs(["t3-ours"], [0], store, overrides=["data.synthetic_count=40", "train.epochs=1"])
    profile = sl.profile_from_dict({**base, "gpus_per_task": 1, "gpu_flag": "gres"}, name="gres")
    report = sl.SlurmLauncher(profile=profile).launch([run], store, roots={}, log=lambda *a: None)
    assert list(report.submitted) == [run.run_id]
    record = wait_until_finished(store.root, [run.run_id], timeout=300)[run.run_id]
    assert record["status"] == "completed", record.get("reason")
    assert record["launcher"]["cuda_visible_devices"] == "0" and record["device"] == "cpu"


def test_runs_per_task_groups_runs_into_tasks(tmp_path, monkeypatch):
    """runs_per_task = 2: half as many array tasks, each holding two runs of one wave."""
    store = Store(tmp_path / "store")
    profile = sl.profile_from_dict({"runs_per_task": 2, "cpus_per_task": 2}, name="pairs")
    runs = plan_runs(["t7-kl", "t3-ours"], [0, 1, 2], store)  # 3 teachers, 3 students
    files = sl.write_sbatch(runs, store, profile, tmp_path / "out", roots={}, name="pairs", command="x",
                            max_array_size=1001, python="PYTHON")
    plan = json.loads(files.runs_file.read_text())
    assert plan["tasks"] == [[0, 1], [2], [3, 4], [5]]  # teachers and students never share a task
    assert [plan["runs"][i]["student"] for i in (3, 4, 5)] == [True, True, True]
    assert "#SBATCH --array=0-1%2\n" in files.scripts[0].read_text()
    assert "#SBATCH --cpus-per-task=2\n" in files.scripts[0].read_text()
    assert '"$((2 + SLURM_ARRAY_TASK_ID))"' in files.student_scripts[0].read_text()
    with pytest.raises(ConfigError, match="runs_per_task = 0: expected at least 1"):
        sl.profile_from_dict({"runs_per_task": 0}, name="bad")

    fake = FakeSubmit()
    monkeypatch.setattr(sl.SlurmLauncher, "_submit_array", fake)
    monkeypatch.setattr(sl_cluster, "require", lambda tool: tool)
    monkeypatch.setattr(sl_cluster, "_squeue_ids", lambda: set())
    report = sl.SlurmLauncher(profile=profile).launch(runs, store, roots={}, log=lambda *a: None)
    assert [[len(t) for t in a["tasks"]] for a in fake.arrays] == [[2, 1], [2, 1]]
    assert len(set(report.submitted.values())) == 4  # two runs share each task's job id


@pytest.mark.slow
def test_runs_per_task_trains_a_table_on_the_cluster(slurm_cluster, tmp_path):
    """The local cluster trains Table 6 (smoke, one seed) with two runs at once in each task."""
    store_root = tmp_path / "store"
    profile = tmp_path / "pairs.toml"
    profile.write_text('partition = "debug"\ncpus_per_task = 2\nruns_per_task = 2\ntime_min = 30\n'
                       'array_parallelism = 1\n')
    out = study("run", "table6", "--seeds", "1", "--profile", "smoke", "--launcher", "slurm",
                "--cluster", str(profile), "--results", str(store_root), *TINY)
    assert "2 runs per task" in out.stdout, out.stdout
    run_ids = [p.stem for p in (store_root / "slurm" / "jobs").glob("*.json")]
    assert len(run_ids) == 3
    recs = wait_until_finished(store_root, run_ids, timeout=900)
    assert all(recs[r]["status"] == "completed" for r in run_ids), {r: recs[r].get("reason") for r in run_ids}
    by_job: dict[str, list[dict]] = {}
    for r in run_ids:
        by_job.setdefault(recs[r]["launcher"]["job_id"], []).append(recs[r])
    assert sorted(len(v) for v in by_job.values()) == [1, 2]
    (pair,) = [v for v in by_job.values() if len(v) == 2]
    assert all(rec["threads"] == 1 for rec in pair)  # the task's 2 CPUs shared by its 2 runs
    # The two runs of one task trained at the same time, in two processes.
    spans = sorted((a["attempts"][0]["started_at"], a["finished_at"]) for a in pair)
    assert spans[1][0] < spans[0][1]


# ----------------------------------------------------------------------------- fake sbatch/squeue on PATH


def _fake_slurm_tools(tmp_path: Path, monkeypatch, queue: str = "") -> Path:
    """``sbatch``, ``squeue`` and ``scontrol`` stand-ins on PATH, as submitit's own tests do:
    sbatch keeps its command line and the script it was given, and answers with a job id."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    log.mkdir()
    tools = {
        "sbatch": 'echo "$@" >> "$FAKE_SLURM/sbatch.args"\n'
                  'cp "${@: -1}" "$FAKE_SLURM/script-$(ls "$FAKE_SLURM" | grep -c script).sh"\n'
                  'echo "Submitted batch job 4242"\n',
        "squeue": 'echo "$@" >> "$FAKE_SLURM/squeue.args"\ncat "$FAKE_SLURM/queue"\n',
        "scontrol": 'echo "MaxArraySize            = 5"\n',
    }
    for name, body in tools.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)
    (log / "queue").write_text(queue)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(log))
    return log


def test_submitit_command_line_and_queue_through_fake_tools(tmp_path, monkeypatch):
    log = _fake_slurm_tools(tmp_path, monkeypatch)
    store = Store(tmp_path / "store")
    runs = plan_runs(["t6-none"], [0, 1, 2], store)
    profile = sl.profile_from_dict({"partition": "gpu", "cpus_per_task": 4, "time_min": 30,
                                    "extra_sbatch": ["--mail-type=FAIL"]}, name="fake")
    report = sl.SlurmLauncher(profile=profile).launch(runs, store, roots={}, log=lambda *a: None)
    assert report.submitted == {r.run_id: f"4242_{i}" for i, r in enumerate(runs)}
    (args,) = (log / "sbatch.args").read_text().splitlines()  # one array, one sbatch call
    # sbatch gets one argument, the script submitit wrote in the submission's log folder
    assert args.startswith(str(store.root / "slurm" / "logs")) and args.endswith(".sh") and " " not in args
    script = (log / "script-0.sh").read_text()
    for line in ("--array=0-2%3", "--partition=gpu", "--cpus-per-task=4", "--time=30", "--requeue",
                 "--mail-type=FAIL", "--signal=USR2@120"):
        assert f"#SBATCH {line}\n" in script, line
    assert "export OMP_NUM_THREADS=4" in script

    # The queue decides what counts as still queued: array tasks as squeue prints them.
    (log / "queue").write_text("4242_0|RUNNING\n4242_1|PENDING\n4242_2|COMPLETED\n")
    assert sl.queued_runs(store) == {runs[0].run_id: "4242_0", runs[1].run_id: "4242_1"}
    assert "-h -r -o %i|%T" in (log / "squeue.args").read_text()
    again = sl.SlurmLauncher(profile=profile).launch(runs, store, roots={}, log=lambda *a: None)
    assert sorted(again.busy) == sorted(r.run_id for r in runs[:2])
    assert again.submitted == {runs[2].run_id: "4242"}  # submitted anew, alone: submitit sends a plain job
    assert len((log / "sbatch.args").read_text().splitlines()) == 2
    (log / "queue").unlink()  # squeue failing: nothing is taken for queued
    assert sl.queued_runs(store) == {}
