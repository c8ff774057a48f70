"""Local processes: sequential by default, or K worker processes sharing the cores.

With K workers each gets cores // K torch threads: two processes each using
both cores slowed a training step about thirty-fold on a 2-core machine.
Students wait for their teachers: runs go in two waves, teachers first.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed

from study.launch.core import LaunchReport
from study.plan import PlannedRun
from study.store import Store


def _threads_per_worker(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel op of a process
        pass


def _train_one(config, seed, rows, store_root, roots) -> tuple[str, str, str | None, float | None]:
    """In a worker: (run id, status, reason, test DSC)."""
    from study.train.run import RunBusy, train_run

    try:
        record = train_run(config, seed, Store(store_root), rows=tuple(rows), roots=roots, progress=False)
    except RunBusy as exc:
        return f"{config.hash}-s{seed}", "busy", str(exc), None
    except Exception as exc:  # the record holds the traceback; report the reason
        return f"{config.hash}-s{seed}", "failed", f"{type(exc).__name__}: {exc}", None
    return record["run_id"], record["status"], record.get("reason"), (record.get("test") or {}).get("dsc")


class LocalLauncher:
    def __init__(self, jobs: int = 1, threads: int | None = None):
        self.jobs = max(1, jobs)
        self.threads = threads or _threads_per_worker(self.jobs)

    def launch(self, runs: list[PlannedRun], store: Store, *, roots: dict[str, str], log=print) -> LaunchReport:
        report = LaunchReport()
        waves = [[r for r in runs if not r.is_student], [r for r in runs if r.is_student]]
        total, done = len(runs), 0

        def note(run: PlannedRun, status: str, reason, dsc) -> None:
            nonlocal done
            done += 1
            if status == "completed":
                report.completed.append(run.run_id)
                log(f"[{done}/{total}] {run.run_id} {run.label}: completed, test DSC {dsc * 100:.2f}")
            elif status == "busy":
                report.busy.append(run.run_id)
                log(f"[{done}/{total}] {run.run_id} {run.label}: skipped, another process is training it")
            else:
                report.failed[run.run_id] = reason or status
                log(f"[{done}/{total}] {run.run_id} {run.label}: {status}: {reason}")

        try:
            if self.jobs == 1:
                _init_worker(self.threads)
                for wave in waves:
                    for run in wave:
                        note(run, *_train_one(run.config, run.seed, run.rows, store.root, roots)[1:])
            else:
                context = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(self.jobs, mp_context=context, initializer=_init_worker,
                                         initargs=(self.threads,)) as pool:
                    for wave in waves:
                        futures = {pool.submit(_train_one, r.config, r.seed, r.rows, store.root, roots): r
                                   for r in wave}
                        for future in as_completed(futures):
                            note(futures[future], *future.result()[1:])
        except KeyboardInterrupt:
            # Workers got the same SIGINT: each marks its own run interrupted, never completed.
            report.interrupted = True
            log("interrupted: unfinished runs are marked interrupted and resume on the next `run`")
        return report
