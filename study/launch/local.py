"""Local processes: sequential by default, or K worker processes sharing the cores.

By default the free CPUs are shared out by ``study.launch.cpus.local_share``: small
(64x64 smoke) runs one thread each, as many at once as there are free CPUs; larger
runs one at a time on all of them. Two processes each using both cores slowed a
training step about thirty-fold on a 2-core machine.
Students wait for their teachers: runs go in two waves, teachers first.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm import tqdm

from study.launch.core import BUSY, LaunchReport
from study.launch.workers import device_slots, init_worker, set_threads, worker_device
from study.plan import PlannedRun, RunSpec
from study.record import Status
from study.store import Store


def _train_one(spec: RunSpec, store_root, roots, progress: bool = False, device: str | None = None,
               track: str | None = None) -> tuple[str, str, str | None, float | None]:
    """In a worker: (run id, status, reason, test DSC). ``progress``: a bar over the run's epochs."""
    from study.train.run import RunBusy, train_spec

    run_id = spec.run_id
    started = time.monotonic()
    try:
        record = train_spec(spec, Store(store_root), roots=roots, progress=progress,
                            device=device or worker_device(), track=track)
    except RunBusy as exc:
        return run_id, BUSY, str(exc), None, time.monotonic() - started
    except Exception as exc:  # the record holds the traceback; report the reason
        return run_id, Status.FAILED.value, f"{type(exc).__name__}: {exc}", None, time.monotonic() - started
    return record.run_id, record.status.value, record.reason, record.test_dsc, time.monotonic() - started


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class LocalLauncher:
    def __init__(self, jobs: int | None = None, threads: int | None = None, track: str | None = None):
        # None: chosen per launch from the runs' input sizes and the free CPUs (study.launch.cpus).
        self.jobs, self.threads, self.track = jobs, threads, track

    def share(self, runs: list[PlannedRun]):
        from study.launch.cpus import local_share

        return local_share([r.config.data.size for r in runs], self.jobs, self.threads)

    def launch(self, runs: list[PlannedRun], store: Store, *, roots: dict[str, str], log=print) -> LaunchReport:
        report = LaunchReport()
        share = self.share(runs)
        log(f"local: {share.describe()}")
        jobs, threads = share.jobs, share.threads
        waves = [[r for r in runs if not r.is_student], [r for r in runs if r.is_student]]
        total, done = len(runs), 0
        # On a terminal: a bar over the runs (and, one run at a time, one over each run's epochs);
        # otherwise (a log file, CI) just the one line per finished run.
        tty = sys.stderr.isatty()
        bar = tqdm(total=total, desc="runs", unit="run", disable=not tty, position=0)
        if tty:
            log = tqdm.write

        launched = time.monotonic()

        def note(run: PlannedRun, status: str, reason, dsc, seconds: float) -> None:
            nonlocal done
            done += 1
            elapsed = time.monotonic() - launched
            eta = "" if done == total else f"; about {_duration(elapsed / done * (total - done))} left"
            took = f" ({_duration(seconds)}{eta})"
            if status == Status.COMPLETED.value:
                report.completed.append(run.run_id)
                log(f"[{done}/{total}] {run.run_id} {run.label}: completed, test DSC {dsc * 100:.2f}{took}")
            elif status == BUSY:
                report.busy.append(run.run_id)
                log(f"[{done}/{total}] {run.run_id} {run.label}: skipped, another process is training it")
            else:
                report.failed[run.run_id] = reason or status
                log(f"[{done}/{total}] {run.run_id} {run.label}: {status}: {reason}{took}")
            bar.update(1)

        try:
            if jobs == 1:
                set_threads(threads)
                for wave in waves:
                    for run in wave:
                        note(run, *_train_one(run.spec, store.root, roots, tty, track=self.track)[1:])
            else:
                context = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(jobs, mp_context=context, initializer=init_worker,
                                         initargs=(threads, os.getpid(), device_slots(context, jobs))) as pool:
                    for wave in waves:
                        futures = {pool.submit(_train_one, r.spec, store.root, roots, False, None, self.track): r
                                   for r in wave}
                        for future in as_completed(futures):
                            note(futures[future], *future.result()[1:])
        except KeyboardInterrupt:
            # Workers got the same SIGINT: each marks its own run interrupted, never completed.
            report.interrupted = True
            log("interrupted: unfinished runs are marked interrupted and resume on the next `run`")
        finally:
            bar.close()
        return report
