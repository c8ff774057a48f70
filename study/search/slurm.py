"""The search's workers as a SLURM array (the launch layer knows nothing of the search)."""

from __future__ import annotations

import time

import submitit

from study.launch.slurm import SlurmLauncher
from study.launch.slurm.cluster import require
from study.launch.snapshot import live_code, make_snapshot
from study.store.runs import Store


def _tune_worker(spec, threads: int) -> int:
    """Inside a job: one search worker (it claims trials until the study has them all)."""
    from study.launch.workers import set_threads
    from study.search.workers import run_worker

    set_threads(threads)
    return run_worker(spec, log=lambda m: print(m, flush=True))


def submit_tune_workers(spec, workers: int, cluster: str | None = None, threads: int | None = None,
                        log=print) -> list[str]:
    """Submit ``workers`` search workers as one array sharing the study's storage; returns their job ids.

    Workers claim trials from the storage, so a requeued or extra worker never
    runs a trial twice; the storage must be on a file system the nodes share
    (or an RDB URL they reach).
    """
    require("sbatch")
    launcher = SlurmLauncher(cluster, runs_per_task=1, threads=threads)  # one worker per task
    p = launcher.profile
    store = Store(spec.store_root)
    snapshot = make_snapshot(store.root / "snapshots") if p.snapshot else live_code()
    folder = store.root / "slurm" / "logs" / f"tune-{spec.study_name}-{time.strftime('%Y%m%d-%H%M%S')}" / "%j"
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=p.max_requeues)
    executor.update_parameters(**launcher.executor_parameters(snapshot, job_name=f"study-tune-{spec.study_name}"))
    with executor.batch():
        jobs = [executor.submit(_tune_worker, spec, p.threads_per_run) for _ in range(workers)]
    ids = [str(j.job_id) for j in jobs]
    log(f"SLURM: {workers} search worker(s) on cluster profile {p.name}, {p.threads_per_run} thread(s) each; "
        f"logs {folder.parent}")
    return ids
