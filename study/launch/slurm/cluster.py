"""What the cluster says: sbatch present, its MaxArraySize, its queue, and our job markers.

A marker ``<store>/slurm/jobs/<run id>.json`` records the job a run was submitted
as; a run whose marker's job is still in ``squeue`` is queued (or running) and is
not submitted again.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from study.errors import StudyError
from study.launch.slurm.profile import ClusterProfile
from study.store.atomic import atomic_write_json
from study.store.record import RunKey
from study.store.runs import Store

DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's own default MaxArraySize


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise StudyError(f"`{tool}` not found: --launcher slurm runs on a SLURM login node "
                         "(or start the local test cluster: slurm/local-cluster.sh start)")
    return path


def cluster_max_array_size(default: int = DEFAULT_MAX_ARRAY_SIZE) -> int:
    """The cluster's MaxArraySize (``scontrol show config``), or ``default`` when it cannot be read."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return default
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
    return int(match.group(1)) if match else default


def array_size(profile: ClusterProfile, cluster: int | None = None) -> int:
    """Tasks per array: indices run 0..MaxArraySize-1, and never more than the profile allows."""
    limit = cluster if cluster is not None else cluster_max_array_size()
    return limit if profile.max_array_size == "auto" else min(int(profile.max_array_size), limit)


def markers_dir(store: Store) -> Path:
    return store.root / "slurm" / "jobs"


def _squeue_ids() -> set[str] | None:
    """Job ids still queued or running ("123" and array tasks "123_4"); None if squeue fails."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    ids = set()
    for line in out.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        if job and state not in ("COMPLETING", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT"):
            ids.add(job)
    return ids


def queued_runs(store: Store, run_ids=None) -> dict[str, str]:
    """Run id -> job id, for runs this launcher submitted whose job is still in the queue."""
    markers = markers_dir(store)
    if not markers.is_dir():
        return {}
    wanted = None if run_ids is None else set(run_ids)
    submitted = {}
    for path in markers.glob("*.json"):
        if wanted is not None and path.stem not in wanted:
            continue
        try:
            submitted[path.stem] = str(json.loads(path.read_text())["job_id"])
        except (OSError, ValueError, KeyError):
            continue
    if not submitted:
        return {}
    alive = _squeue_ids()
    if alive is None:
        return {}
    return {run_id: job for run_id, job in submitted.items() if job in alive}


def completed(store: Store, key: RunKey) -> bool:
    record = store.load(key)
    return record is not None and record.completed


def write_marker(store: Store, run_id: str, job_id: str, submission: str, label: str) -> None:
    atomic_write_json(markers_dir(store) / f"{run_id}.json", {
        "job_id": job_id, "submission": submission, "label": label,
        "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
