"""Per row and dataset: how many seeds are completed, failed (why), running or missing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from study.errors import StudyError
from study.store.files import inside, printable, tail_regular
from study.store.index import table_cells
from study.store.record import MISSING, QUEUED, RunKey, RunRecord, Status
from study.store.runs import Store

if TYPE_CHECKING:  # the table comes from the caller
    from study.variants import Table


def run_state(record: RunRecord | None, store: Store) -> str:
    """A status value, or missing; a 'running' record whose lease is dead (its process
    killed, its node lost) is interrupted."""
    if record is None:
        return MISSING
    if record.status is not Status.RUNNING:
        return record.status.value
    holder = store.lease(record.key).holder()
    return Status.RUNNING.value if holder is not None else Status.INTERRUPTED.value


def stderr_tail(record: RunRecord, store: Store, lines: int = 8) -> str | None:
    """The last lines of a cluster job's stderr log, when the launcher recorded its path: only a regular
    file in the store's own log folders (``Store.log_folders``), its last 64 KB, control characters escaped.
    Whatever else a record names is not opened."""
    path = record.launcher.get("stderr_path")
    if not isinstance(path, str) or not path or not any(inside(Path(path), f) for f in store.log_folders):
        return None
    try:
        text = tail_regular(Path(path)).decode("utf-8", errors="replace")
    except (OSError, StudyError):
        return None
    return printable("\n".join(text.strip().splitlines()[-lines:])) or None


@dataclass
class CellStatus:
    row_id: str
    row_name: str
    dataset: str
    config_hash: str
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # "seed N: reason"
    job_ids: list[str] = field(default_factory=list)
    other_seeds: list[int] = field(default_factory=list)  # runs stored at seeds not asked for: not counted


def table_status(table: Table, store: Store, seeds: list[int], profile: str = "paper",
                 overrides: dict | None = None, queued: dict[str, str] | None = None) -> list[CellStatus]:
    """``queued``: run id -> SLURM job id of runs still waiting in a cluster queue."""
    queued = queued or {}
    out = []
    for cell in table_cells(table, store, profile, overrides=overrides):
        by_seed = {r.seed: r for r in cell.records}
        st = CellStatus(cell.row.id, cell.row.name, cell.dataset, cell.config_hash)
        # a null row trains the seeds after those asked for (study.plan.null_row_seeds)
        expected = [s + max(seeds) + 1 for s in seeds] if getattr(cell.row, "null_row", False) and seeds else seeds
        # Only the seeds asked for are counted; runs at other seeds are named, so that `--seeds 1`
        # says what one seed per cell has and still shows that more exist.
        st.other_seeds = sorted(s for s in by_seed if s not in expected)
        for seed in expected:
            record = by_seed.get(seed)
            state = run_state(record, store)
            run_id = RunKey(cell.config_hash, seed).id
            if state in (MISSING, Status.INTERRUPTED.value) and run_id in queued:
                state = QUEUED  # submitted, waiting (or requeued) in the cluster's queue
                st.job_ids.append(queued[run_id])
            st.counts[state] = st.counts.get(state, 0) + 1
            if state in (Status.FAILED.value, Status.DAMAGED.value):
                st.failures.append(f"seed {seed} {state}: {record.reason}")
                tail = stderr_tail(record, store) if state == Status.FAILED.value else None
                if tail:
                    st.failures.append("    " + tail.strip().replace("\n", "\n    "))
            job = (record.launcher if record else {}).get("job_id")
            if job:
                st.job_ids.append(str(job))
        out.append(st)
    return out


def mixed_kernel_notes(records) -> list[str]:
    """One sentence per run whose attempts used kernels that round differently (resumed on another
    node or device): its numbers mix two roundings under one run id."""
    notes = []
    for record in records:
        if record.mixed_kernels:
            steps = " -> ".join(dict.fromkeys(record.attempt_kernels()))
            notes.append(f"run {record.run_id}: its attempts used different kernels ({steps}); its numbers mix "
                         "two roundings (train it again in one place to compare it bit for bit)")
    return notes


def mixed_numerics(records) -> dict[str, dict[str, list[str]]]:
    """Config hash -> {run id: its attempts' fingerprints} for every config whose completed runs were not
    all computed alike (another thread count, kernels, device or code version gave another fingerprint)."""
    by_config: dict[str, dict[str, list[str]]] = {}
    for record in records:
        prints = record.fingerprints() if record.completed else []
        if prints:
            by_config.setdefault(record.config_hash, {})[record.run_id] = list(dict.fromkeys(prints))
    return {h: runs for h, runs in by_config.items() if len({p for ps in runs.values() for p in ps}) > 1}


def mixed_numerics_notes(records) -> list[str]:
    """One sentence per config whose runs were computed differently: which run carries which fingerprint."""
    notes = []
    for config_hash, runs in mixed_numerics(records).items():
        which = "; ".join(f"{run_id}: {' -> '.join(prints)}" for run_id, prints in sorted(runs.items()))
        notes.append(f"config {config_hash}: its runs were not computed alike (numerics fingerprints {which}); "
                     "another thread count, kernel, device or code version rounds differently, so their numbers "
                     "are not comparable bit for bit (`python -m study run ... --retrain-mixed` trains the runs "
                     "that differ from this machine's again)")
    return notes
