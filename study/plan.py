"""Expanding tables and rows into runs: rows x datasets x seeds, minus what is done.

A run is (config hash, seed); two rows with the same resolved config (every
ablation table's "Ours" row) are one run that serves both. Distillation runs
depend on their teacher run, which is planned first even when not asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from study.config import RunConfig
from study.lease import RunLease
from study.record import RunKey, Status
from study.store import Store
from study.variants import Row, select_rows


@dataclass
class PlannedRun:
    config: RunConfig
    seed: int
    rows: list[str] = field(default_factory=list)  # the rows that asked for it
    teacher_of: list[str] = field(default_factory=list)  # run ids of students needing it

    @property
    def key(self) -> RunKey:
        return RunKey(self.config.hash, self.seed)

    @property
    def run_id(self) -> str:
        return self.key.id

    @property
    def label(self) -> str:
        who = ",".join(self.rows) if self.rows else "teacher"
        return f"{who} {self.config.data.dataset} s{self.seed}"

    @property
    def is_student(self) -> bool:
        return self.config.distill.enabled


@dataclass
class Plan:
    todo: list[PlannedRun]  # teachers first
    done: list[PlannedRun]  # completed in the store: skipped
    busy: list[PlannedRun]  # held by another live process right now
    holders: dict[str, str] = field(default_factory=dict)  # run id of a busy run -> who holds it
    damaged: dict[str, str] = field(default_factory=dict)  # run id -> why (trained again, its files set aside)

    @property
    def all(self) -> list[PlannedRun]:
        return self.done + self.busy + self.todo


def expand(
    names: list[str],
    seeds: list[int],
    *,
    datasets: list[str] | None = None,
    profile: str = "paper",
    overrides: dict | None = None,
) -> list[PlannedRun]:
    """Every run the names ask for, deduplicated by (hash, seed), teachers included and first."""
    runs: dict[tuple[str, int], PlannedRun] = {}
    rows: list[Row] = [r for r in select_rows(names) if not r.unavailable]

    def add(config: RunConfig, seed: int, row_id: str | None) -> PlannedRun:
        planned = runs.setdefault((config.hash, seed), PlannedRun(config, seed))
        if row_id and row_id not in planned.rows:
            planned.rows.append(row_id)
        return planned

    for row in rows:
        for dataset in datasets or row.default_datasets(profile):
            config = row.run_config(dataset, profile, overrides)
            for seed in seeds:
                student = add(config, seed, row.id)
                if config.distill.enabled:
                    teacher = add(config.teacher_config(), seed, None)
                    teacher.teacher_of.append(student.run_id)
    ordered = list(runs.values())
    # Teachers (and every other non-student run) before students; otherwise keep the table order.
    return sorted(ordered, key=lambda r: r.is_student)


def unavailable_rows(names: list[str]) -> list[Row]:
    return [r for r in select_rows(names) if r.unavailable]


def make_plan(planned: list[PlannedRun], store: Store) -> Plan:
    plan = Plan([], [], [])
    for run in planned:
        record = store.load(run.key)
        if record is not None and record.completed:
            plan.done.append(run)
            continue
        holder = RunLease(store.run_dir(run.key)).holder()
        if holder is not None:
            plan.busy.append(run)
            plan.holders[run.run_id] = holder.describe()
            continue
        if record is not None and record.status is Status.DAMAGED:
            plan.damaged[run.run_id] = record.reason or "damaged"
        plan.todo.append(run)
    return plan


# Rough CPU cost of one training image-epoch at 64 x 64 on 2 cores for the
# UltraLBM family, measured with the smoke profile (about 7 ms incl. evaluation).
_SECONDS_PER_IMAGE_EPOCH_64 = 0.007


def measured_wall_times(store: Store) -> dict[str, float]:
    """Config hash -> wall time of one of its completed runs."""
    return {r.config_hash: float(r.wall_time_s or 0.0) for r in store.records() if r.completed}


def estimate_seconds(run: PlannedRun, measured: dict[str, float]) -> tuple[float, str]:
    """(seconds, how): a completed sibling run (same config, other seed) if any, else a rough CPU estimate."""
    if run.config.hash in measured:
        return measured[run.config.hash], "measured"
    d, t = run.config.data, run.config.train
    images = {"synthetic": d.synthetic_count, "isic2017": 2150, "isic2018": 2694}.get(d.dataset, 1000)
    per_epoch = images * _SECONDS_PER_IMAGE_EPOCH_64 * (d.size / 64) ** 2
    return per_epoch * t.epochs, "estimated"
