"""The launcher interface: hand a list of planned runs to somewhere that trains them.

A launcher never decides what to run (the plan did) and never owns the truth
about a run (the run record in the store does).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol

from study.errors import ConfigError
from study.plan import PlannedRun
from study.store import Store

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
    def launch(self, runs: list[PlannedRun], store: Store, *, roots: dict[str, str], log) -> LaunchReport: ...


def get_launcher(name: str, **options) -> Launcher:
    if name not in LAUNCHERS:
        raise ConfigError(f"--launcher: unknown {name!r}; allowed: {', '.join(LAUNCHERS)}")
    module, cls = LAUNCHERS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)
