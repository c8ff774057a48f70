"""Per row and dataset: how many seeds are completed, failed (why), running or missing."""

from __future__ import annotations

from dataclasses import dataclass, field

from study.index import table_cells
from study.store import RunLock, Store
from study.variants import Table


def run_state(record: dict | None, store: Store) -> str:
    """completed | failed | running | interrupted | missing; a 'running' record whose
    process is gone (killed, node lost) is interrupted."""
    if record is None:
        return "missing"
    status = record.get("status")
    if status != "running":
        return status
    lock = RunLock(store.run_dir(record["config_hash"], record["seed"]))
    return "running" if lock.held_by_live_process() else "interrupted"


def stderr_tail(record: dict, lines: int = 8) -> str | None:
    """The last lines of a cluster job's stderr log, when the launcher recorded its path."""
    path = (record.get("launcher") or {}).get("stderr_path")
    if not path:
        return None
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return None
    return "\n".join(text.strip().splitlines()[-lines:]) or None


@dataclass
class CellStatus:
    row_id: str
    row_name: str
    dataset: str
    config_hash: str
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # "seed N: reason"
    job_ids: list[str] = field(default_factory=list)


def table_status(table: Table, store: Store, seeds: list[int], profile: str = "paper",
                 overrides: dict | None = None, queued: dict[str, str] | None = None) -> list[CellStatus]:
    """``queued``: run id -> SLURM job id of runs still waiting in a cluster queue."""
    queued = queued or {}
    out = []
    for cell in table_cells(table, store, profile, overrides=overrides):
        by_seed = {r.get("seed"): r for r in cell.records}
        st = CellStatus(cell.row.id, cell.row.name, cell.dataset, cell.config_hash)
        for seed in sorted(set(seeds) | set(by_seed)):
            record = by_seed.get(seed)
            state = run_state(record, store)
            run_id = f"{cell.config_hash}-s{seed}"
            if state in ("missing", "interrupted") and run_id in queued:
                state = "queued"  # submitted, waiting (or requeued) in the cluster's queue
                st.job_ids.append(queued[run_id])
            if state == "missing" and seed not in seeds:
                continue
            st.counts[state] = st.counts.get(state, 0) + 1
            if state == "failed":
                st.failures.append(f"seed {seed}: {record.get('reason')}")
                tail = stderr_tail(record)
                if tail:
                    st.failures.append("    " + tail.strip().replace("\n", "\n    "))
            job = (record or {}).get("launcher", {}).get("job_id")
            if job:
                st.job_ids.append(str(job))
        out.append(st)
    return out
