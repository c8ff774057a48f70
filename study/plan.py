"""Expanding tables and rows into runs: rows x datasets x seeds, minus what is done.

A run is (config hash, seed); two rows with the same resolved config (every
ablation table's "Ours" row) are one run that serves both. Distillation runs
depend on their teacher run, which is planned first even when not asked for.
The plan hands each run to the launchers as a ``RunSpec`` (key, config, rows,
teacher key), the one form every launcher and the search pass to ``train_spec``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from study.config import RunConfig
from study.store.record import KeyedByRun, RunKey, Status
from study.store.runs import Store
from study.variants import Row, select_rows


@dataclass(frozen=True)
class RunSpec(KeyedByRun):
    """One run as the plan hands it to every launcher and to ``train_spec``, unchanged:
    its identity, its resolved config, the rows that asked for it, and, for a
    distillation student, its teacher's key (a run planned before it, never trained
    from inside the student's run)."""

    key: RunKey
    config: RunConfig
    rows: tuple[str, ...] = ()
    teacher: RunKey | None = None

    @classmethod
    def of(cls, config: RunConfig, seed: int, rows=()) -> "RunSpec":
        teacher = RunKey(config.teacher_config().hash, seed) if config.distill.enabled else None
        return cls(RunKey(config.hash, seed), config, tuple(rows), teacher)

    @property
    def is_student(self) -> bool:
        return self.teacher is not None

    @property
    def label(self) -> str:
        who = ",".join(self.rows) if self.rows else "teacher"
        return f"{who} {self.config.data.dataset} s{self.key.seed}"

    def to_json(self) -> dict:
        """JSON-native, for a job on another node."""
        return {"run_id": self.run_id, "config_hash": self.key.config_hash, "config": self.config.to_dict(),
                "seed": self.key.seed, "rows": list(self.rows), "label": self.label, "student": self.is_student,
                "teacher": self.teacher.id if self.teacher else None}

    @classmethod
    def from_json(cls, obj: dict, where: str) -> "RunSpec":
        """Parsed and checked: the config this code resolves must hash to the spec's run id."""
        from study.errors import StudyError

        try:
            config, seed = RunConfig.from_dict(obj["config"]), int(obj["seed"])
            rows = tuple(str(r) for r in obj.get("rows") or ())
            expected = str(obj["config_hash"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StudyError(f"{where}: not a run spec ({type(exc).__name__}: {exc})") from None
        if config.hash != expected:
            raise StudyError(f"{where}: run {obj.get('run_id')}: this code hashes its config to {config.hash}, "
                             f"not {expected}: the job does not run the code it was submitted with")
        return cls.of(config, seed, rows)


@dataclass
class Plan:
    todo: list[RunSpec]  # teachers first
    done: list[RunSpec]  # completed in the store: skipped
    busy: list[RunSpec]  # held by another live process right now
    holders: dict[str, str] = field(default_factory=dict)  # run id of a busy run -> who holds it
    damaged: dict[str, str] = field(default_factory=dict)  # run id -> why (trained again, its files set aside)
    unavailable: list[Row] = field(default_factory=list)  # rows asked for that cannot run (and why)

    @property
    def all(self) -> list[RunSpec]:
        return self.done + self.busy + self.todo


def expand(
    names: list[str],
    seeds: list[int],
    *,
    datasets: list[str] | None = None,
    profile: str = "paper",
    overrides: dict | None = None,
) -> list[RunSpec]:
    """Every run the names ask for, deduplicated by (hash, seed), teachers included and first."""
    return _expand_rows([r for r in select_rows(names) if not r.unavailable], seeds, datasets, profile, overrides)


def plan_runs(names: list[str], seeds: list[int], store: Store, *, datasets: list[str] | None = None,
              profile: str = "paper", overrides: dict | None = None) -> Plan:
    """The runs the names ask for, checked against the store; rows that cannot run in ``unavailable``."""
    rows = select_rows(names)
    plan = make_plan(_expand_rows([r for r in rows if not r.unavailable], seeds, datasets, profile, overrides), store)
    plan.unavailable = [r for r in rows if r.unavailable]
    return plan


def null_row_seeds(seeds: list[int]) -> list[int]:
    """The seeds a null row trains: the ones asked for, shifted past them (0..n-1 -> n..2n-1)."""
    offset = max(seeds) + 1 if seeds else 0
    return [s + offset for s in seeds]


def _expand_rows(rows: list[Row], seeds: list[int], datasets, profile: str, overrides) -> list[RunSpec]:
    asked: dict[RunKey, tuple[RunConfig, list[str]]] = {}  # run -> its config and the rows that asked for it

    def add(config: RunConfig, seed: int, row_id: str | None) -> None:
        _, rows_of = asked.setdefault(RunKey(config.hash, seed), (config, []))
        if row_id and row_id not in rows_of:
            rows_of.append(row_id)

    for row in rows:
        for dataset in datasets or row.default_datasets(profile):
            config = row.run_config(dataset, profile, overrides)
            for seed in null_row_seeds(seeds) if row.null_row else seeds:
                add(config, seed, row.id)
                if config.distill.enabled:
                    add(config.teacher_config(), seed, None)
    planned = [RunSpec.of(config, key.seed, rows_of) for key, (config, rows_of) in asked.items()]
    # Teachers (and every other non-student run) before students; otherwise keep the table order.
    return sorted(planned, key=lambda r: r.is_student)


def make_plan(planned: list[RunSpec], store: Store) -> Plan:
    plan = Plan([], [], [])
    for run in planned:
        store.require_folder(run.key)  # a linked run folder: one line, before anything is trained or moved
    for run in planned:
        record = store.load(run.key)
        if record is not None and record.completed:
            plan.done.append(run)
            continue
        holder = store.lease(run.key).holder()
        if holder is not None:
            plan.busy.append(run)
            plan.holders[run.run_id] = holder.describe()
            continue
        if record is not None and record.status is Status.DAMAGED:
            plan.damaged[run.run_id] = record.reason or Status.DAMAGED.value
        plan.todo.append(run)
    return plan
