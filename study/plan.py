"""Expanding tables and rows into runs: rows x datasets x seeds, minus what is done.

A run is (config hash, seed); two rows with the same resolved config (every
ablation table's "Ours" row) are one run that serves both. Distillation runs
depend on their teacher run, which is planned first even when not asked for.
The plan hands each run to the launchers as a ``RunSpec`` (key, config, rows,
teacher key), the one form every launcher and the search pass to ``train_spec``.
"""

from __future__ import annotations

import json
import statistics

from dataclasses import dataclass, field

from study.config import RunConfig
from study.lease import RunLease
from study.record import RunRecord, Status
from study.store import RunKey, Store
from study.variants import Row, select_rows


@dataclass(frozen=True)
class RunSpec:
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
    def run_id(self) -> str:
        return self.key.id

    @property
    def seed(self) -> int:
        return self.key.seed

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
        return self.spec.label

    @property
    def is_student(self) -> bool:
        return self.config.distill.enabled

    @property
    def spec(self) -> RunSpec:
        """What every launcher hands to the trainer."""
        return RunSpec.of(self.config, self.seed, self.rows)


@dataclass
class Plan:
    todo: list[PlannedRun]  # teachers first
    done: list[PlannedRun]  # completed in the store: skipped
    busy: list[PlannedRun]  # held by another live process right now
    holders: dict[str, str] = field(default_factory=dict)  # run id of a busy run -> who holds it
    damaged: dict[str, str] = field(default_factory=dict)  # run id -> why (trained again, its files set aside)
    unavailable: list[Row] = field(default_factory=list)  # rows asked for that cannot run (and why)

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
    return _expand_rows([r for r in select_rows(names) if not r.unavailable], seeds, datasets, profile, overrides)


def plan_runs(names: list[str], seeds: list[int], store: Store, *, datasets: list[str] | None = None,
              profile: str = "paper", overrides: dict | None = None) -> Plan:
    """The runs the names ask for, checked against the store; rows that cannot run in ``unavailable``."""
    rows = select_rows(names)
    plan = make_plan(_expand_rows([r for r in rows if not r.unavailable], seeds, datasets, profile, overrides), store)
    plan.unavailable = [r for r in rows if r.unavailable]
    return plan


def _expand_rows(rows: list[Row], seeds: list[int], datasets, profile: str, overrides) -> list[PlannedRun]:
    runs: dict[tuple[str, int], PlannedRun] = {}

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
            plan.damaged[run.run_id] = record.reason or Status.DAMAGED.value
        plan.todo.append(run)
    return plan


# Rough CPU cost of one training image-epoch at 64 x 64 on 2 cores for the
# UltraLBM family, measured with the smoke profile (about 7 ms incl. evaluation).
_SECONDS_PER_IMAGE_EPOCH_64 = 0.007


def measured_wall_times(records: list[RunRecord]) -> dict[str, float]:
    """Config hash -> wall time of one of its completed runs (``records``: the store's, read once)."""
    return {r.config_hash: float(r.wall_time_s or 0.0) for r in records if r.completed}


def _train_images(config) -> int:
    """About how many images one epoch trains on."""
    d = config.data
    from study.data.registry import dataset_info

    pairs = d.synthetic_count if d.dataset == "synthetic" else (dataset_info(d.dataset).pairs or 1000)
    holdout = config.train.selection == "holdout" and not config.selects_on_train_loss
    fraction = d.train_fraction * ((1 - d.holdout_fraction) if holdout else 1.0)
    return max(1, round(pairs * fraction))


def epoch_rates(records: list[RunRecord]) -> dict[tuple[str, int, str], float]:
    """(arch, input size, device) -> median seconds per training image-epoch, from the
    epoch times runs recorded (completed or not; data and selection included)."""
    samples: dict[tuple[str, int, str], list[float]] = {}
    for record in records:
        details, config = record.details or {}, record.config or {}
        history = details.get("history") or []
        images = (((details.get("data") or {}).get("train") or {}).get("samples"))
        size = (config.get("data") or {}).get("size")
        arch = (config.get("model") or {}).get("arch")
        if not history or not images or not size or not arch:
            continue
        key = (str(arch), int(size), str(details.get("device") or "cpu").split(":")[0])
        samples.setdefault(key, []).extend(
            float(e["seconds"]) / images for e in history if isinstance(e, dict) and e.get("seconds"))
    return {k: statistics.median(v) for k, v in samples.items() if v}


# Per-epoch data and selection on top of the training steps, measured on the real samples
# under the paper protocol (epochs 2-3: 1.31 s and 1.23 s for 1.05 s and 1.01 s of steps,
# more in epoch 1; rounded up): turns a bench step into an epoch.
_EPOCH_OVER_STEPS = 1.3


def bench_rates(store: Store) -> dict[tuple[str, int, str], float]:
    """(arch, input size, device) -> seconds per training image-epoch from ``study bench --record``."""
    out = {}
    for device in ("cpu", "cuda"):
        path = store.bench_path(device)
        try:
            figures = json.loads(path.read_text())
            step, batch = float(figures["train_step_s"]), int(figures["batch"])
            key = (str(figures["arch"]), int(figures["size"]), device)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # absent or not ours: no bench figure
        if step > 0 and batch > 0:
            out[key] = step / batch * _EPOCH_OVER_STEPS
    return out


def cost_rates(store: Store, records: list[RunRecord]) -> dict[tuple[str, int, str], tuple[float, str]]:
    """(seconds per image-epoch, where from): recorded epoch times where there are any, else bench figures."""
    rates = {k: (v, f"bench figure on {k[2]}") for k, v in bench_rates(store).items()}
    rates.update({k: (v, f"recorded {k[2]} epochs") for k, v in epoch_rates(records).items()})
    return rates


def estimate_seconds(run: PlannedRun, measured: dict[str, float],
                     rates: dict[tuple[str, int, str], tuple[float, str]] | None = None,
                     device: str = "cpu") -> tuple[float, str]:
    """(seconds, how): a completed sibling run (same config, other seed); else the recorded epoch
    times of the same model and input size on ``device``; else a rough 2-core CPU figure."""
    if run.config.hash in measured:
        return measured[run.config.hash], "measured"
    d, t = run.config.data, run.config.train
    rate = (rates or {}).get((run.config.arch, d.size, device))
    if rate is not None:
        return rate[0] * _train_images(run.config) * t.epochs, rate[1]
    per_epoch = _train_images(run.config) / d.train_fraction * _SECONDS_PER_IMAGE_EPOCH_64 * (d.size / 64) ** 2
    return per_epoch * t.epochs, "rough CPU figure"
