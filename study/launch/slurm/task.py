"""Inside a job: train a task's runs, in this process or several at once.

Also the entry point of a plain sbatch array task:
``python -m study.launch.slurm task RUNS.json INDEX``.
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import subprocess
import sys
from pathlib import Path

from study.launch.core import BUSY, is_success, train_outcome
from study.launch.pool import Outcome, WorkerPool
from study.launch.slurm.environment import JobEnvironment


def train_task(spec: dict, store_root: str, roots: dict, info: dict) -> Outcome:
    """Train or resume one run from its JSON spec (the plan's ``RunSpec``, checked against
    this code's config hash); the record gets ``info`` as record["launcher"]."""
    import study
    from study.plan import RunSpec

    try:
        run = RunSpec.from_json(spec, f"code {study.__file__}")
    except Exception as exc:  # a spec this code cannot run: the task says why
        return Outcome.failed(str(spec.get("run_id")), exc)
    info = {**info, "code": str(Path(study.__file__).resolve().parent)}
    print(f"run {run.run_id} ({run.label}) job {info.get('job_id')} restart {info.get('restart_count')} "
          f"code {info['code']}", flush=True)
    outcome = train_outcome(run, store_root, roots, launcher_info=info, track=info.get("track"),
                            log=lambda line: print(line, flush=True))
    if outcome.status == BUSY:
        print(f"skipped: {outcome.reason}", flush=True)
    elif not is_success(outcome):  # the job's stderr says why (its record holds the traceback)
        print(f"run {outcome.name}: {outcome.status}: {outcome.reason}", file=sys.stderr, flush=True)
    else:
        dsc = outcome.test_dsc
        print(f"run {outcome.name}: {outcome.status}" + (f", test DSC {dsc:.4f}" if dsc is not None else "")
              + (f" ({outcome.reason})" if outcome.reason else ""), flush=True)
    return outcome


def train_group(specs: list[dict], store_root: str, roots: dict, threads: int, info: dict) -> list[Outcome]:
    """Train a task's runs at once, each in its own worker process of one pool (one run: this
    process) with ``threads`` threads (the launch's decision) and one of the task's GPUs (round robin)."""
    if len(specs) > 1:
        print(f"task: {len(specs)} runs at once, {threads} thread(s) each", flush=True)
    work = functools.partial(train_task, store_root=store_root, roots=roots, info=info)
    with WorkerPool(len(specs), threads) as pool:
        done = dict((spec["run_id"], outcome) for spec, outcome in
                    pool.run(work, specs, name=lambda spec: str(spec.get("run_id"))))
    return [done[spec["run_id"]] for spec in specs]


def _requeue_on_warning(max_requeues: int):
    """USR2 (sbatch --signal=B:USR2@S, before the time limit): ask SLURM to requeue this job.
    SLURM then sends SIGTERM, which train_run records as an interruption; the job
    restarts later and resumes from its last checkpoint."""
    def handler(signum, frame):
        env = JobEnvironment.read()
        job, restarts = env.slurm_job_id, env.restart_count
        if job and restarts < max_requeues:
            print(f"time-limit warning: requeueing job {job} (restart {restarts + 1} of at most {max_requeues})",
                  flush=True)
            subprocess.run(["scontrol", "requeue", job], timeout=60, check=False)
        else:
            print(f"time-limit warning: not requeued ({restarts} restarts, at most {max_requeues})", flush=True)

    signal.signal(signal.SIGUSR2, handler)


def run_task(runs_file: str | Path, index: int) -> int:
    plan = json.loads(Path(runs_file).read_text())
    tasks = plan.get("tasks") or [[i] for i in range(len(plan["runs"]))]
    if not 0 <= index < len(tasks):
        print(f"{runs_file} has {len(tasks)} tasks; no task {index}", file=sys.stderr)
        return 2
    specs = [plan["runs"][i] for i in tasks[index]]
    _requeue_on_warning(int(plan.get("max_requeues", 0)))
    env = JobEnvironment.read()
    info = env.info()
    stem = env.job_id
    info.update({"launcher": "sbatch", "runs_file": str(runs_file),
                 "stdout_path": f"{plan['log_dir']}/{stem}.out", "stderr_path": f"{plan['log_dir']}/{stem}.err",
                 "snapshot": plan.get("snapshot"), "snapshot_id": plan.get("snapshot_id"),
                 "commit": plan.get("commit"), "dirty": plan.get("dirty"),
                 "cluster_profile": plan.get("cluster_profile")})
    try:
        threads = (plan.get("task_threads") or [])[index:index + 1] or [plan.get("threads") or 1]  # older files: one figure
        results = train_group(specs, plan["store"], plan.get("roots") or {}, int(threads[0]), info)
    except KeyboardInterrupt:
        runs = ", ".join(s["run_id"] for s in specs)
        print(f"run(s) {runs}: interrupted; each resumes from its last checkpoint", file=sys.stderr)
        return 143
    return 0 if all(is_success(r) for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.launch.slurm",
                                     description="Run one task of an array script written by `study sbatch`.")
    sub = parser.add_subparsers(dest="command", required=True)
    task = sub.add_parser("task", help="train (or resume) the runs of task INDEX of RUNS.json")
    task.add_argument("runs_file", metavar="RUNS.json")
    task.add_argument("index", type=int)
    args = parser.parse_args(argv)
    return run_task(args.runs_file, args.index)
