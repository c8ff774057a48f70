"""The submitit launcher: planned runs as job arrays, students after their teachers.

The launcher submits and returns. The run records in the store are the truth
about a run; submitit's job states are not (without an accounting database
sacct fails and submitit reports UNKNOWN).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from pathlib import Path

import submitit
import submitit.helpers

from study.errors import StudyError
from study.launch.core import LaunchReport
from study.launch.pool import FAILED
from study.launch.slurm import cluster
from study.launch.slurm.environment import JobEnvironment, job_environment
from study.launch.slurm.profile import ClusterProfile, load_profile
from study.launch.slurm.runs import chunked, run_spec, tasks_of, teacher_run_id
from study.launch.slurm.task import train_group
from study.launch.snapshot import Snapshot, live_code, make_snapshot
from study.plan import RunSpec
from study.store.runs import Store

# sbatch options submitit writes from named parameters; every other option of the
# profile passes through ``additional_parameters`` as it is.
_SUBMITIT_NAMED = {"partition", "account", "qos", "constraint", "nodes", "ntasks-per-node", "cpus-per-task",
                   "gpus-per-task", "gpus-per-node", "gres", "mem", "time"}
_INTEGER_OPTIONS = {"nodes", "ntasks-per-node", "cpus-per-task", "gpus-per-task", "gpus-per-node", "time"}


class TrainJob(submitit.helpers.Checkpointable):
    """A task's runs (``runs_per_task`` of them) as a submitit task. Checkpointable: on the
    time-limit signal submitit pickles ``checkpoint()``'s DelayedSubmission (this same
    task) and requeues it; each run then resumes from its own checkpoint files (a
    completed one is not redone), so no state is pickled."""

    def __init__(self, specs: list[dict], store_root: str, roots: dict, threads: int, submission: dict):
        self.specs, self.store_root, self.roots = list(specs), store_root, dict(roots)
        self.threads, self.submission = threads, submission

    def __call__(self) -> list[dict]:
        paths = submitit.JobEnvironment().paths
        info = {**JobEnvironment.read().info(), **self.submission, "launcher": "submitit",
                "stdout_path": str(paths.stdout), "stderr_path": str(paths.stderr)}
        outcomes = train_group(self.specs, self.store_root, self.roots, self.threads, info)
        failed = [o for o in outcomes if o.status == FAILED]
        if failed:  # the job ends failed in SLURM's accounting (an interrupted run is requeued instead)
            raise StudyError("; ".join(f"run {o.name}: {o.status}: {o.reason}" for o in failed))
        return outcomes

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        runs = ", ".join(s["run_id"] for s in self.specs)
        print(f"run(s) {runs}: checkpoint and requeue; each resumes from its last epoch checkpoint", flush=True)
        return submitit.helpers.DelayedSubmission(self)


class SlurmLauncher:
    """Submits planned runs as submitit job arrays and returns at once (``report.submitted``)."""

    def __init__(self, cluster: str | None = None, profile: ClusterProfile | None = None, track: str | None = None,
                 threads: int | None = None, runs_per_task: int | None = None):
        # Threads are decided here once, per run of a task, and written into the job's environment.
        profile = profile or load_profile(cluster)
        if runs_per_task is not None:
            profile = replace(profile, runs_per_task=runs_per_task)
        self.profile = profile.with_threads(threads)
        self.track = track

    def executor_parameters(self, snapshot: Snapshot, *, dependency: str | None = None,
                            job_name: str | None = None) -> dict:
        """submitit.SlurmExecutor parameters for one array, from the profile's sbatch options."""
        p = self.profile
        params: dict = {"job_name": job_name or p.job_name, "signal_delay_s": p.signal_delay_s,
                        "array_parallelism": p.array_parallelism,
                        "setup": list(p.setup) + job_environment(snapshot, p.threads_per_run)}
        extra: dict = {"requeue": True}  # requeue on preemption / `scontrol requeue` even where JobRequeue=0
        for option, value in p.sbatch_options():
            if option in _SUBMITIT_NAMED:
                params[option.replace("-", "_")] = int(value) if option in _INTEGER_OPTIONS else value
            else:
                extra[option] = True if value is None else value
        if dependency:
            params["dependency"] = dependency
        params["additional_parameters"] = extra
        return params

    def _submit_array(self, tasks: list[list[dict]], store: Store, roots: dict, snapshot: Snapshot,
                      submission: dict, folder: Path, dependency: str | None, job_name: str) -> list[str]:
        """Submit one array (one task per group of specs); returns the task job ids ("123_0", ...)."""
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.profile.max_requeues)
        executor.update_parameters(**self.executor_parameters(snapshot, dependency=dependency, job_name=job_name))
        jobs = []
        with executor.batch():
            for specs in tasks:
                jobs.append(executor.submit(TrainJob(specs, str(store.root), roots,
                                                     self.profile.threads_for(len(specs)), submission)))
        return [str(j.job_id) for j in jobs]

    def launch(self, runs: list[RunSpec], store: Store, *, roots: dict[str, str], log=print) -> LaunchReport:
        report = LaunchReport()
        if not runs:
            return report
        cluster.require("sbatch")
        p = self.profile
        teachers_of = {t for t in map(teacher_run_id, runs) if t}  # a teacher may be queued from before
        queued = cluster.queued_runs(store, {r.run_id for r in runs} | teachers_of)
        for run in runs:
            if run.run_id in queued:
                report.busy.append(run.run_id)
                log(f"  queued  {run.run_id} {run.label}: still in the queue as job {queued[run.run_id]}")
        # A job that left the queue between the plan and squeue has written its record by now.
        todo = [r for r in runs if r.run_id not in queued and not cluster.completed(store, r.key)]
        if not todo:
            return report

        snapshot = make_snapshot(store.root / "snapshots") if p.snapshot else live_code()
        submission_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        submission = {"submission": submission_id, "cluster_profile": p.name, "snapshot": str(snapshot.code_root),
                      "snapshot_id": snapshot.id, "commit": snapshot.commit, "dirty": snapshot.dirty,
                      "track": self.track or "none"}
        folder = store.root / "slurm" / "logs" / submission_id / "%j"  # submitit's logs and pickles
        size = cluster.array_size(p)
        log(f"SLURM: cluster profile {p.name}; code snapshot {snapshot.code_root} (commit "
            f"{(snapshot.commit or 'unknown')[:12]}{', uncommitted changes' if snapshot.dirty else ''}); "
            f"arrays of at most {size} tasks, {p.array_parallelism} running at once each; "
            f"{p.describe_share()}")

        job_of: dict[str, str] = dict(queued)
        teachers = [r for r in todo if not r.is_student]
        students = [r for r in todo if r.is_student]
        try:
            for wave, name in ((teachers, p.job_name), (students, f"{p.job_name}-students")):
                for chunk in chunked(tasks_of(wave, p.runs_per_task), size):
                    runs_in = [r for task in chunk for r in task]
                    deps = sorted({job_of[t] for t in map(teacher_run_id, runs_in) if t in job_of})
                    dependency = "afterany:" + ":".join(deps) if deps else None
                    ids = self._submit_array([[run_spec(r) for r in task] for task in chunk], store, roots,
                                             snapshot, submission, folder, dependency, name)
                    for task, job_id in zip(chunk, ids):
                        for run in task:
                            job_of[run.run_id] = job_id
                            report.submitted[run.run_id] = job_id
                            cluster.write_marker(store, run.run_id, job_id, submission_id, run.label)
                    array = ids[0].split("_")[0]
                    log(f"  array {array}: {len(runs_in)} run(s) in {len(chunk)} task(s)"
                        + (f", after {dependency}" if dependency else ""))
        except Exception as exc:
            done = f"{len(report.submitted)} run(s) were submitted and will run; " if report.submitted else ""
            raise StudyError(f"SLURM refused a submission: {exc}\n{done}fix the profile ({p.path or p.name}) and "
                             "run the same command again: queued runs are not submitted twice") from None
        log(f"  logs {folder.parent}")
        return report
