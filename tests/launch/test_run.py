"""`study run`: expansion, the store, skipping, resuming, concurrency and Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT

from study.errors import StudyError
from study.plan import expand, make_plan
from study.store.runs import Store
from study.variants import load_tables

# A tiny smoke table: 3 rows, 40 synthetic images, 2 epochs.
TINY = ["--profile", "smoke", "--set", "data.synthetic_count=40", "--set", "train.epochs=2", "--threads", "1"]


def cli(*args, results, wait=True, env=None):
    argv = [sys.executable, "-m", "study", *args, "--results", str(results)]
    kwargs = dict(cwd=REPO_ROOT, env={**os.environ, **(env or {})}, text=True,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not wait:
        return subprocess.Popen(argv, **kwargs)
    return subprocess.run(argv, timeout=900, **kwargs)


def records(results):
    runs = results / "runs"
    return [json.loads((d / "record.json").read_text()) for d in sorted(runs.iterdir())] if runs.is_dir() else []


@pytest.mark.parametrize("profile", ["paper", "smoke"])
def test_every_row_of_every_table_expands(profile):
    names = list(load_tables())
    planned = expand(names, [0, 1], profile=profile)
    runnable_rows = [r for t in load_tables().values() for r in t.rows if not r.unavailable]
    asked = {row for p in planned for row in p.rows}
    assert asked == {r.id for r in runnable_rows}
    assert len({p.key for p in planned}) == len(planned)  # one run per (hash, seed)
    students = [i for i, p in enumerate(planned) if p.is_student]
    assert students and min(students) > max(i for i, p in enumerate(planned) if not p.is_student)
    # Table 1 trains on both ISIC datasets (paper) and evaluates PH2; ablations on ISIC 2017 only.
    if profile == "paper":
        t1 = [p for p in planned if "ultralbm" in p.rows]
        assert sorted(p.config.data.dataset for p in t1) == ["isic2017", "isic2017", "isic2018", "isic2018"]
        assert all(p.config.data.external == ("ph2",) for p in t1)
        assert {p.config.data.dataset for p in planned if "t3-unshared" in p.rows} == {"isic2017"}
    else:
        assert {p.config.data.dataset for p in planned} == {"synthetic"}


def test_shared_rows_are_one_run_and_teachers_are_planned():
    planned = expand(["table3", "table6", "t7-full"], [0], profile="smoke")
    ours = [p for p in planned if "t3-ours" in p.rows]
    assert len(ours) == 1 and set(ours[0].rows) >= {"t3-ours", "t6-shared"}
    teacher = [p for p in planned if any(s.teacher == p.key for s in planned)]
    assert len(teacher) == 1 and teacher[0].key == ours[0].key  # the teacher is the full smoke model


@pytest.mark.slow
def test_dry_run_prints_the_plan_and_cost(tmp_path):
    out = cli("run", "table6", "--seeds", "2", "--dry-run", *TINY, results=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "plan: 6 run(s): 6 to run, 0 completed (skipped)" in out.stdout
    assert "estimated cost" in out.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_run_skips_completed_and_status_reports(tmp_path):
    first = cli("run", "table6", "--seeds", "2", *TINY, results=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "done: 6 completed, 0 failed" in first.stdout
    assert [r["status"] for r in records(tmp_path)] == ["completed"] * 6
    second = cli("run", "table6", "--seeds", "2", *TINY, results=tmp_path)
    assert "plan: 6 run(s): 0 to run, 6 completed (skipped)" in second.stdout and "nothing to do" in second.stdout
    assert all(len(r["attempts"]) == 1 for r in records(tmp_path))
    status = cli("status", "table6", "--seeds", "2", *TINY[:-2], "--export", str(tmp_path / "i.csv"),
                 results=tmp_path)
    assert "table6 (smoke profile, seeds 0-1): 6 completed" in status.stdout
    assert "paper profile" not in status.stdout  # no runs under it, not asked for: not shown
    one = cli("status", "table6", "--seeds", "1", *TINY[:-2], results=tmp_path).stdout
    assert "table6 (smoke profile, seeds 0-0): 3 completed" in one  # only the seeds asked for are counted
    assert one.count("(+1 run(s) at seed(s) 1, not counted)") == 3
    run_id = records(tmp_path)[0]["run_id"]
    shown = cli("show", run_id, results=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"# run {run_id}: t6-") and "; completed" in shown.stdout.splitlines()[0]
    assert "test: DSC " in shown.stdout and "from the pooled counts of" in shown.stdout and "attempt 1:" in shown.stdout
    import pandas as pd

    index = pd.read_csv(tmp_path / "i.csv")
    assert len(index) == 6 and set(index["status"]) == {"completed"}
    assert index["test_dsc"].between(0, 1).all()

    # Cost estimates: a third seed is priced from its completed siblings, a new config of the
    # same model and input size from the epoch times those runs recorded.
    third = cli("run", "table6", "--seeds", "3", "--dry-run", *TINY, results=tmp_path).stdout
    assert third.count("(measured)") == 3, third
    longer = cli("run", "table6", "--seeds", "1", "--dry-run", *TINY, "--set", "train.epochs=4",
                 results=tmp_path).stdout
    assert longer.count("(recorded cpu epochs)") == 3, longer


@pytest.mark.slow
def test_dry_run_estimates_gpu_hours_from_a_bench_figure(tmp_path):
    """On a GPU cluster profile the plan is priced in GPU-hours, K runs per task sharing a GPU."""
    (tmp_path / "bench").mkdir()
    # 80 s per batch of 8 at 64x64: 13 s per image-epoch with the epoch's data and selection.
    (tmp_path / "bench" / "cuda.json").write_text(json.dumps(
        {"arch": "ultralbm", "size": 64, "batch": 8, "train_step_s": 80.0}))
    profile = tmp_path / "gpu.toml"
    profile.write_text("gpus_per_task = 1\nruns_per_task = 2\n")
    out = cli("run", "table6", "--seeds", "2", "--dry-run", "--launcher", "slurm", "--cluster", str(profile),
              *TINY, results=tmp_path)
    assert out.returncode == 0, out.stderr
    # 28 training images (70% of 40) x 2 epochs x 13 s = 728 s per run; 6 runs, 2 per GPU: 0.6 GPU-hours.
    assert out.stdout.count("~12.1 min (bench figure on cuda)") == 6, out.stdout
    assert "estimated cost: 0.6 GPU-hours on cluster profile gpu (1 GPU(s) per task, 2 run(s) per task" in out.stdout


@pytest.mark.slow
def test_two_invocations_at_once_run_everything_exactly_once(tmp_path):
    a = cli("run", "table6", "--seeds", "2", *TINY, results=tmp_path, wait=False)
    b = cli("run", "table6", "--seeds", "2", *TINY, results=tmp_path, wait=False)
    outs = [p.communicate(timeout=900) for p in (a, b)]
    # A run left to the other invocation is said, and makes that invocation exit 1.
    for proc, (out, err) in zip((a, b), outs):
        assert proc.returncode == 0 or (proc.returncode == 1 and "held by a live process" in out), (out, err)
    recs = records(tmp_path)
    assert len(recs) == 6
    assert all(r["status"] == "completed" and len(r["attempts"]) == 1 for r in recs)
    assert not list((tmp_path / "runs").glob("*/lease.*"))
    assert not list((tmp_path / "runs").glob("*/.*.tmp"))


def _wait_for_epoch(results, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for m in (results / "runs").glob("*/metrics.csv") if (results / "runs").is_dir() else []:
            if m.read_text().count("\n") >= 2:
                return m.parent
        time.sleep(0.05)
    raise AssertionError("no epoch finished in time")


@pytest.mark.slow
def test_killed_run_is_resumed_not_restarted(tmp_path):
    args = ["run", "t6-none", "--seeds", "1", "--profile", "smoke", "--set", "data.synthetic_count=40",
            "--set", "train.epochs=4", "--threads", "1"]
    victim = cli(*args, results=tmp_path, wait=False)
    run_dir = _wait_for_epoch(tmp_path)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert json.loads((run_dir / "record.json").read_text())["status"] == "running"
    status = cli("status", "table6", "--seeds", "1", *args[4:-2], results=tmp_path)
    assert "interrupted 1" in status.stdout
    from study.report.collect import collect_table

    overrides = {"data": {"synthetic_count": 40}, "train": {"epochs": 4}}
    (problem,) = collect_table(load_tables()["table6"], Store(tmp_path), "smoke", overrides).problems
    assert problem.status == "interrupted" and "killed, or its node lost" in problem.reason  # not "in progress"
    again = cli(*args, results=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "completed" and record["resumed_from_epoch"] >= 1 and len(record["attempts"]) == 2
    # The plan said so before it trained: from the epoch the checkpoint holds.
    assert f"resume  {run_dir.name} " in again.stdout
    assert f"from its last checkpoint ({record['resumed_from_epoch']} of 4 epochs recorded done)" in again.stdout


@pytest.mark.slow
def test_ctrl_c_leaves_nothing_falsely_completed(tmp_path):
    # A run that cannot finish before the signal however slow this machine is (it used to be 30 epochs:
    # on a busy machine the whole run could end before the test got to send SIGINT).
    args = ["run", "t6-none", "--seeds", "1", "--profile", "smoke", "--set", "data.synthetic_count=40",
            "--set", "train.epochs=100000", "--threads", "1"]
    proc = cli(*args, results=tmp_path, wait=False)
    run_dir = _wait_for_epoch(tmp_path)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "interrupted"
    assert not list(run_dir.glob("lease.*"))


@pytest.mark.slow
def test_unconfigured_real_dataset_fails_at_once(tmp_path):
    env = {"STUDY_DATA_ISIC2017": "", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    out = cli("run", "t6-none", "--seeds", "1", results=tmp_path, env=env)
    assert out.returncode == 2
    assert "no root folder set for isic2017" in out.stderr and "STUDY_DATA_ISIC2017" in out.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_make_plan_sees_completed_runs(tmp_path):
    from study.train.run import train_run

    planned = expand(["t6-none"], [0], profile="smoke", overrides={"data": {"synthetic_count": 40},
                                                                   "train": {"epochs": 1}})
    store = Store(tmp_path)
    assert len(make_plan(planned, store).todo) == 1
    train_run(planned[0].config, 0, store, progress=False)
    plan = make_plan(planned, store)
    assert not plan.todo and len(plan.done) == 1


@pytest.mark.slow
def test_bad_names_and_seeds(tmp_path):
    out = cli("run", "table99", "--dry-run", results=tmp_path)
    assert out.returncode == 2 and "unknown table or row 'table99'" in out.stderr
    out = cli("run", "table6", "--seed-list", "0,x", "--dry-run", results=tmp_path)
    assert out.returncode == 2 and "--seed-list '0,x': expected comma-separated integers" in out.stderr
    with pytest.raises(StudyError):
        expand(["t6-none"], [0], profile="fast")


@pytest.mark.slow
def test_jobs_run_in_worker_processes_with_divided_threads(tmp_path):
    args = [a for a in TINY if a not in ("--threads", "1")]
    proc = cli("run", "table6", "--seeds", "1", "--jobs", "2", *args, results=tmp_path, wait=False)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, out + err
    recs = records(tmp_path)
    assert len(recs) == 3 and all(r["status"] == "completed" for r in recs)
    assert all(r["pid"] != proc.pid for r in recs)  # trained in worker processes
    assert {r["threads"] for r in recs} == {max(1, (os.cpu_count() or 1) // 2)}


@pytest.mark.slow
def test_every_table1_row_trains_on_smoke(tmp_path):
    # 23 images: 16 train, two full batches (MambaU-Lite cannot train on a last batch of one).
    out = cli("run", "table1", "--seeds", "1", "--profile", "smoke", "--set", "data.synthetic_count=23",
              "--set", "train.epochs=1", results=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "unavailable" not in out.stdout
    recs = records(tmp_path)
    runnable = [r for r in load_tables()["table1"].rows if not r.unavailable]
    assert len(recs) == len(runnable) == 16
    assert all(r["status"] == "completed" for r in recs)
    assert {r["config"]["model"]["arch"] for r in recs} == {r.arch for r in runnable}


def test_status_shows_runs_waiting_in_a_cluster_queue(tmp_path):
    from study.store.status import table_status

    table = load_tables()["table6"]
    run_id = f"{table.row('t6-none').run_config(profile='smoke').hash}-s0"
    cells = table_status(table, Store(tmp_path), [0], "smoke", queued={run_id: "12_0"})
    by_row = {c.row_id: c for c in cells}
    assert by_row["t6-none"].counts == {"queued": 1} and by_row["t6-none"].job_ids == ["12_0"]
    assert by_row["t6-shared"].counts == {"missing": 1}


@pytest.mark.slow
def test_run_shows_progress_over_runs_and_epochs_on_a_terminal(tmp_path):
    import pty

    argv = [sys.executable, "-m", "study", "run", "t6-none", "--seeds", "1", *TINY, "--results", str(tmp_path)]
    pid, fd = pty.fork()
    if pid == 0:  # the child: `run` on a terminal of 120 x 40 (a new pty has no size)
        import fcntl
        import struct
        import termios

        fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.chdir(REPO_ROOT)
        os.execv(sys.executable, argv)
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    out = b"".join(chunks).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert "runs:" in out and "1/1" in out  # the bar over runs
    assert "epoch 1/2" in out and "epoch 2/2" in out  # the bar over each epoch's batches
    assert "completed, test DSC" in out
