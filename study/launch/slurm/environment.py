"""A job's environment: the shell lines it starts with, and what SLURM tells it (read here only)."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from study.launch.snapshot import Snapshot


def job_environment(snapshot: Snapshot, threads: int) -> list[str]:
    """Shell lines that make a job import the snapshot's code, record its commit, and give each of
    its runs ``threads`` threads (the launch's one decision, read back by ``study.settings``)."""
    root = shlex.quote(str(snapshot.code_root))
    lines = [f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}", f"cd {root}"]
    if snapshot.commit:
        lines.insert(0, f"export STUDY_GIT_COMMIT={shlex.quote(snapshot.commit)}")
    lines += [f"export STUDY_THREADS={int(threads)}", f"export OMP_NUM_THREADS={int(threads)}"]
    return lines


def _int(value: str | None) -> int | None:
    value = (value or "").split("(")[0].split(",")[0]
    return int(value) if value.isdigit() else None


@dataclass(frozen=True)
class JobEnvironment:
    """The ``SLURM_*`` variables of the job this process runs in (all None outside SLURM)."""

    slurm_job_id: str | None = None
    array_job_id: str | None = None
    array_task_id: int | None = None
    restart_count: int = 0
    node: str | None = None
    cuda_visible_devices: str | None = None  # the GPUs SLURM gave the job
    cluster: str | None = None
    cpus: int | None = None  # SLURM_CPUS_PER_TASK, else the node's CPUs given to the job

    @classmethod
    def read(cls, environ=os.environ) -> "JobEnvironment":
        return cls(
            slurm_job_id=environ.get("SLURM_JOB_ID"),
            array_job_id=environ.get("SLURM_ARRAY_JOB_ID"),
            array_task_id=_int(environ.get("SLURM_ARRAY_TASK_ID")),
            restart_count=_int(environ.get("SLURM_RESTART_COUNT")) or 0,
            node=environ.get("SLURMD_NODENAME"),
            cuda_visible_devices=environ.get("CUDA_VISIBLE_DEVICES"),
            cluster=environ.get("SLURM_CLUSTER_NAME"),
            cpus=_int(environ.get("SLURM_CPUS_PER_TASK")) or _int(environ.get("SLURM_JOB_CPUS_PER_NODE")),
        )

    @property
    def job_id(self) -> str | None:
        """``<array job>_<task>`` for an array task (as squeue shows it), else the job id."""
        if self.array_job_id and self.array_task_id is not None:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.slurm_job_id

    def info(self) -> dict:
        """What a run's record keeps under ``launcher``."""
        return {"kind": "slurm", "job_id": self.job_id, "slurm_job_id": self.slurm_job_id,
                "array_job_id": self.array_job_id, "array_task_id": self.array_task_id,
                "restart_count": self.restart_count, "node": self.node,
                "cuda_visible_devices": self.cuda_visible_devices, "cluster": self.cluster}
