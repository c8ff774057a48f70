"""Local processes: sequential by default, or K worker processes sharing the cores.

The CPUs are shared out once per launch (``study.launch.cpus.local_share``: small
64x64 smoke runs one thread each, as many at once as there are free CPUs; larger
runs one at a time on all of them), and ``run --dry-run`` prints that same share.
Students wait for their teachers: runs go in two waves, teachers first, through
one ``WorkerPool``.
"""

from __future__ import annotations

import functools
import sys
import time

from tqdm import tqdm

from study.launch.core import BUSY, LaunchReport, train_outcome
from study.launch.cpus import CpuShare
from study.launch.pool import Outcome, WorkerPool
from study.plan import RunSpec
from study.store.record import Status
from study.store.runs import Store


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class LocalLauncher:
    def __init__(self, share: CpuShare, track: str | None = None):
        # The share is decided once, by the caller, and is what its --dry-run printed.
        self.share, self.track = share, track

    def launch(self, runs: list[RunSpec], store: Store, *, roots: dict[str, str], log=print) -> LaunchReport:
        report = LaunchReport()
        log(f"local: {self.share.describe()}")
        waves = [[r for r in runs if not r.is_student], [r for r in runs if r.is_student]]
        total, done = len(runs), 0
        # On a terminal: a bar over the runs (and, one run at a time, one over each run's epochs);
        # otherwise (a log file, CI) just the one line per finished run.
        tty = sys.stderr.isatty()
        bar = tqdm(total=total, desc="runs", unit="run", disable=not tty, position=0)
        if tty:
            log = tqdm.write

        launched = time.monotonic()

        def note(run: RunSpec, outcome: Outcome) -> None:
            nonlocal done
            done += 1
            elapsed = time.monotonic() - launched
            eta = "" if done == total else f"; about {_duration(elapsed / done * (total - done))} left"
            took = f" ({_duration(outcome.seconds)}{eta})"
            if outcome.status == Status.COMPLETED.value:
                report.completed.append(run.run_id)
                log(f"[{done}/{total}] {run.run_id} {run.label}: completed, test DSC {outcome.test_dsc * 100:.2f}{took}")
            elif outcome.status == BUSY:
                report.busy.append(run.run_id)
                log(f"[{done}/{total}] {run.run_id} {run.label}: skipped, another process is training it")
            else:
                report.failed[run.run_id] = outcome.reason or outcome.status
                log(f"[{done}/{total}] {run.run_id} {run.label}: {outcome.status}: {outcome.reason}{took}")
            bar.update(1)

        # One run at a time on a terminal: a bar over its epochs too.
        work = functools.partial(train_outcome, store_root=str(store.root), roots=roots,
                                 progress=tty and self.share.jobs == 1, track=self.track)
        try:
            with WorkerPool(self.share.jobs, self.share.threads) as pool:
                for wave in waves:
                    for run, outcome in pool.run(work, wave, name=lambda r: r.run_id):
                        note(run, outcome)
        except KeyboardInterrupt:
            # Workers got the same SIGINT: each marks its own run interrupted, never completed.
            report.interrupted = True
            log("interrupted: unfinished runs are marked interrupted and resume on the next `run`")
        finally:
            bar.close()
        return report
