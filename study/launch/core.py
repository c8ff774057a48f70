"""The launcher interface: hand a list of planned runs to somewhere that trains them.

A launcher never decides what to run (the plan did) and never owns the truth
about a run (the run record in the store does).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Protocol

from study.errors import ConfigError
from study.launch.pool import Outcome
from study.plan import RunSpec
from study.store.record import Status
from study.store.runs import Store

BUSY = "busy"  # not a run status: another live process held the run, so this launcher left it

LAUNCHERS = {"local": "study.launch.local:LocalLauncher", "slurm": "study.launch.slurm:SlurmLauncher"}


@dataclass
class LaunchReport:
    """What happened to each run this launcher was handed (local: final; SLURM: submitted)."""

    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run id -> reason
    busy: list[str] = field(default_factory=list)  # another process held the run
    submitted: dict[str, str] = field(default_factory=dict)  # run id -> job id (SLURM)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


class Launcher(Protocol):
    def launch(self, runs: list[RunSpec], store: Store, *, roots: dict[str, str], log) -> LaunchReport: ...


def get_launcher(name: str, **options) -> Launcher:
    if name not in LAUNCHERS:
        raise ConfigError(f"--launcher: unknown {name!r}; allowed: {', '.join(LAUNCHERS)}")
    module, cls = LAUNCHERS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)


def train_outcome(spec: RunSpec, store_root: str, roots: dict[str, str], *, progress: bool = False,
                  track: str | None = None, launcher_info: dict | None = None, log=None) -> Outcome:
    """Train or resume one run into the store (in whatever process a launcher's pool put it), as an
    Outcome: left to another live process is BUSY; an error is its failed Outcome (the record holds
    the traceback)."""
    from study.launch.workers import worker_device
    from study.train.run import RunBusy, train_spec

    started = time.monotonic()
    try:
        record = train_spec(spec, Store(store_root), roots=roots, progress=progress, device=worker_device(),
                            track=track, launcher_info=launcher_info, log=log)
    except RunBusy as exc:
        return Outcome(spec.run_id, BUSY, str(exc), None, time.monotonic() - started)
    except Exception as exc:
        return Outcome.failed(spec.run_id, exc, time.monotonic() - started)
    return Outcome(record.run_id, record.status.value, record.reason, record.test_dsc, time.monotonic() - started)


def is_success(outcome: Outcome) -> bool:
    """Completed, or left to the live process that holds it."""
    return outcome.status in (Status.COMPLETED.value, BUSY)
