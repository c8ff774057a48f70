"""Inside a job: train a task's runs, in this process or several at once.

Also the entry point of a plain sbatch array task:
``python -m study.launch.slurm task RUNS.json INDEX``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from study.launch.core import BUSY
from study.launch.slurm.environment import JobEnvironment
from study.launch.workers import worker_device
from study.record import Status
from study.store import Store


def train_task(spec: dict, store_root: str, roots: dict, threads: int, info: dict,
               device: str | None = None) -> dict:
    """Train or resume one run from its JSON spec (the plan's ``RunSpec``, checked against
    this code's config hash); the record gets ``info`` as record["launcher"]."""
    import study
    from study.launch.cpus import configure_process
    from study.plan import RunSpec
    from study.train.run import RunBusy, train_spec

    configure_process(threads)
    run = RunSpec.from_json(spec, f"code {study.__file__}")
    info = {**info, "code": str(Path(study.__file__).resolve().parent)}
    print(f"run {spec['run_id']} ({spec.get('label', '')}) job {info.get('job_id')} "
          f"restart {info.get('restart_count')} code {info['code']}", flush=True)
    try:
        record = train_spec(run, Store(store_root), roots=roots, progress=False, launcher_info=info,
                            log=lambda line: print(line, flush=True), device=device or worker_device(),
                            track=info.get("track"))
    except RunBusy as exc:
        print(f"skipped: {exc}", flush=True)
        return {"run_id": spec["run_id"], "status": BUSY, "reason": str(exc)}
    dsc = record.test_dsc
    print(f"run {record.run_id}: {record.status}" + (f", test DSC {dsc:.4f}" if dsc is not None else ""),
          flush=True)
    return {"run_id": record.run_id, "status": record.status.value, "test_dsc": dsc}


def _failed(spec: dict, exc: BaseException) -> dict:
    return {"run_id": spec["run_id"], "status": Status.FAILED.value, "reason": f"{type(exc).__name__}: {exc}"}


def train_group(specs: list[dict], store_root: str, roots: dict, threads: int, info: dict) -> list[dict]:
    """Train a task's runs: one in this process, or several at once in as many worker
    processes, each with its share of the task's CPUs and one of the task's GPUs (round robin)."""
    from study.launch.workers import device_slots, init_worker, run_devices

    if len(specs) == 1:
        return [train_task(specs[0], store_root, roots, threads, info, run_devices(1)[0])]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    per_run = max(1, threads // len(specs))
    print(f"task: {len(specs)} runs at once, {per_run} thread(s) each", flush=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(specs), mp_context=context, initializer=init_worker,
                             initargs=(per_run, os.getpid(), device_slots(context, len(specs)))) as pool:
        futures = [pool.submit(train_task, spec, store_root, roots, per_run, info) for spec in specs]
        results = []
        for spec, future in zip(specs, futures):
            try:
                results.append(future.result())
            except Exception as exc:  # the run's own record says more
                results.append(_failed(spec, exc))
    return results


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
        results = train_group(specs, plan["store"], plan.get("roots") or {}, int(plan.get("threads") or 1), info)
    except KeyboardInterrupt:
        runs = ", ".join(s["run_id"] for s in specs)
        print(f"run(s) {runs}: interrupted; each resumes from its last checkpoint", file=sys.stderr)
        return 143
    return 0 if all(r["status"] in (Status.COMPLETED.value, BUSY) for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.launch.slurm",
                                     description="Run one task of an array script written by `study sbatch`.")
    sub = parser.add_subparsers(dest="command", required=True)
    task = sub.add_parser("task", help="train (or resume) the runs of task INDEX of RUNS.json")
    task.add_argument("runs_file", metavar="RUNS.json")
    task.add_argument("index", type=int)
    args = parser.parse_args(argv)
    return run_task(args.runs_file, args.index)
