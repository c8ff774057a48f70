"""SLURM through submitit: job arrays, GPU resources, requeue from checkpoints, code snapshots.

    python -m study run table3 --seeds 3 --launcher slurm --cluster generic-gpu

The launcher submits and returns. The run records in the store are the truth
about a run; submitit's job states are not (without an accounting database
sacct fails and submitit reports UNKNOWN).

* Resources come from a cluster profile ``slurm/<name>.toml`` (``ClusterProfile``).
* Runs go as job arrays, chunked to the cluster's MaxArraySize, each array
  with at most ``array_parallelism`` tasks running at once (``--array=0-N%K``).
* Students (distillation) go in later arrays that depend (``afterany``) on the
  array tasks of their teachers. ``afterany``, not ``afterok``: a student whose
  teacher failed starts, fails at once with that reason in its record, and
  does not sit pending forever with DependencyNeverSatisfied.
* Each task is a submitit ``Checkpointable``. Near the time limit (the
  ``--signal`` warning) submitit checkpoints it, a DelayedSubmission of the
  same task, and requeues it, at most ``max_requeues`` times; ``scontrol
  requeue`` and preemption restart it the same way. The run resumes from its
  own ``<store>/runs/<config hash>-s<seed>/checkpoints/last.pt``: checkpoint
  paths derive from the run's hash, never from a job id or a time. ``train_run``
  counts the restarts in ``record["requeues"]``; ``record["launcher"]`` holds
  the job id, log paths, ``SLURM_RESTART_COUNT``, snapshot and commit.
* Every submission runs from a snapshot of the code, ``<store>/snapshots/<id>/``
  (the id is a hash of the copied files: unchanged code reuses it), so edits
  made after submitting don't change queued jobs.
* ``write_sbatch`` writes plain sbatch array scripts for users who submit
  themselves (``python -m study sbatch``); their tasks run
  ``python -m study.launch.slurm task RUNS.json INDEX``.
* A task trains ``runs_per_task`` runs at once (one by default), in as many
  processes sharing its CPUs and GPU.

One concept per module: ``profile`` (cluster profiles and their sbatch options),
``environment`` (a job's shell lines and its SLURM_* variables), ``cluster``
(sbatch, MaxArraySize, the queue, job markers), ``runs`` (run specs, tasks),
``task`` (inside a job), ``submitit_launcher`` and ``scripts`` (plain sbatch).
Code snapshots are ``study.launch.snapshot``; the search's SLURM workers are
``study.search.slurm``. Names are loaded on first use, so importing this package
(to read a job's environment, say) does not import submitit.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ClusterProfile": "profile", "GPU_FLAGS": "profile", "PROFILES_DIR": "profile", "available_profiles": "profile",
    "load_profile": "profile", "profile_from_dict": "profile", "format_mem": "profile",
    "JobEnvironment": "environment", "job_environment": "environment",
    "array_size": "cluster", "cluster_max_array_size": "cluster", "queued_runs": "cluster",
    "run_spec": "runs", "teacher_run_id": "runs", "chunked": "runs", "tasks_of": "runs",
    "run_task": "task", "train_group": "task",
    "SlurmLauncher": "submitit_launcher", "TrainJob": "submitit_launcher",
    "SbatchFiles": "scripts", "write_sbatch": "scripts", "sbatch_line": "scripts", "sbatch_value": "scripts",
    "comment": "scripts",
    "Snapshot": "study.launch.snapshot", "make_snapshot": "study.launch.snapshot",
    "live_code": "study.launch.snapshot",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _EXPORTS[name]
    target = importlib.import_module(module if "." in module else f"{__name__}.{module}")
    return getattr(target, name)


__all__ = sorted(_EXPORTS)
