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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path

import submitit
import submitit.helpers

from study.errors import ConfigError, StudyError
from study.launch.core import BUSY, LaunchReport
from study.plan import PlannedRun
from study.record import RunKey, Status
from study.store import Store, atomic_write_bytes, atomic_write_json

SOURCE_ROOT = Path(__file__).resolve().parent.parent.parent  # holds study/, variants/, paper/, slurm/
PROFILES_DIR = Path(os.environ.get("STUDY_SLURM_PROFILES", SOURCE_ROOT / "slurm"))
SNAPSHOT_PARTS = ("study", "variants", "paper")  # what a job needs of the source tree
DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's own default MaxArraySize
GPU_FLAGS = ("gpus-per-task", "gpus-per-node", "gres")


# --------------------------------------------------------------------------- cluster profiles


@dataclass(frozen=True)
class ClusterProfile:
    """Resources and policy for one cluster: ``slurm/<name>.toml``, every field optional."""

    name: str = "default"
    path: str | None = None
    description: str = ""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_task: int = 0
    gpu_flag: str = "gpus-per-task"  # how GPUs are asked for: --gpus-per-task=N, --gpus-per-node=N, --gres=gpu:N
    cpus_per_task: int = 1  # the task's CPUs, shared by its runs' torch threads
    # Runs one task trains at once, in as many processes sharing its CPUs and GPU: a
    # 34k-parameter model leaves a GPU mostly idle with one run.
    runs_per_task: int = 1
    mem_gb: float | None = None  # --mem; None: the cluster's default (DefMemPerCPU)
    time_min: int = 60  # --time, minutes
    array_parallelism: int = 16  # most tasks of one array running at once (--array=0-N%K)
    max_array_size: int | str = "auto"  # tasks per array; "auto": the cluster's MaxArraySize
    max_requeues: int = 3  # requeues after hitting the time limit (submitit's max_num_timeout)
    signal_delay_s: int = 120  # the time-limit warning (USR2) comes this long before the limit
    job_name: str = "study"
    extra_sbatch: tuple[str, ...] = ()  # more sbatch options, long form: "--mail-type=FAIL"
    setup: tuple[str, ...] = ()  # shell lines run before each task: module load, source venv/bin/activate
    snapshot: bool = True  # run from a snapshot of the code (False: from the source tree, live)

    def sbatch_options(self) -> list[tuple[str, str | None]]:
        """(option, value) for every resource, in a fixed order; value None for a bare flag."""
        out: list[tuple[str, str | None]] = []
        if self.partition:
            out.append(("partition", self.partition))
        if self.account:
            out.append(("account", self.account))
        if self.qos:
            out.append(("qos", self.qos))
        if self.constraint:
            out.append(("constraint", self.constraint))
        out += [("nodes", "1"), ("ntasks-per-node", "1"), ("cpus-per-task", str(self.cpus_per_task))]
        if self.gpus_per_task:
            out.append(self.gpu_option())
        if self.mem_gb:
            out.append(("mem", format_mem(self.mem_gb)))
        out.append(("time", str(self.time_min)))
        out += list(parse_extra_sbatch(self.extra_sbatch, self.path or self.name).items())
        return out

    def gpu_option(self) -> tuple[str, str]:
        if self.gpu_flag == "gres":
            return "gres", f"gpu:{self.gpus_per_task}"
        return self.gpu_flag, str(self.gpus_per_task)


def format_mem(mem_gb: float) -> str:
    return f"{int(mem_gb)}G" if float(mem_gb) == int(mem_gb) else f"{int(round(mem_gb * 1024))}M"


def parse_extra_sbatch(lines, where: str) -> dict[str, str | None]:
    """``["--mail-type=FAIL", "#SBATCH --exclusive"]`` -> {"mail-type": "FAIL", "exclusive": None}."""
    out: dict[str, str | None] = {}
    for line in lines:
        text = line.strip()
        if text.startswith("#SBATCH"):
            text = text[len("#SBATCH"):].strip()
        if not text.startswith("--") or " " in text.split("=", 1)[0]:
            raise ConfigError(f"{where}: extra_sbatch {line!r}: expected a long option, e.g. '--mail-type=FAIL'")
        key, _, value = text[2:].partition("=")
        out[key] = value if _ else None
    return out


_TYPES = {
    "description": str, "partition": str, "account": str, "qos": str, "constraint": str, "gpu_flag": str,
    "job_name": str, "gpus_per_task": int, "cpus_per_task": int, "runs_per_task": int, "time_min": int, "array_parallelism": int,
    "max_requeues": int, "signal_delay_s": int, "mem_gb": (int, float), "max_array_size": (int, str),
    "extra_sbatch": list, "setup": list, "snapshot": bool,
}


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml")) if PROFILES_DIR.is_dir() else []


def load_profile(cluster: str | None = None) -> ClusterProfile:
    """A profile by name (``slurm/<name>.toml``) or path; None: $STUDY_SLURM_CLUSTER, else slurm/default.toml."""
    cluster = cluster or os.environ.get("STUDY_SLURM_CLUSTER")
    names = ", ".join(available_profiles()) or "none"
    if not cluster:
        if not (PROFILES_DIR / "default.toml").is_file():
            raise ConfigError(f"--launcher slurm needs --cluster PROFILE (profiles in {PROFILES_DIR}: {names}); "
                              "or copy one to slurm/default.toml, or set STUDY_SLURM_CLUSTER")
        cluster = "default"
    path = Path(cluster) if cluster.endswith(".toml") or os.sep in cluster else PROFILES_DIR / f"{cluster}.toml"
    if not path.is_file():
        raise ConfigError(f"--cluster {cluster}: no profile {path}; profiles in {PROFILES_DIR}: {names}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return profile_from_dict(data, name=path.stem, path=str(path))


def profile_from_dict(data: dict, *, name: str = "default", path: str | None = None) -> ClusterProfile:
    where = path or name
    known = {f.name for f in fields(ClusterProfile)} - {"name", "path"}
    options = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown field {key!r}; fields: {', '.join(sorted(known))}")
        kind = _TYPES[key]
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise ConfigError(f"{where}: {key} = {value!r}: expected {getattr(kind, '__name__', kind)}")
        if isinstance(value, str) and key != "description" and not value.strip():
            continue  # "" = not set: the cluster's default
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {key}: expected a list of strings")
            value = tuple(value)
        options[key] = value
    profile = ClusterProfile(name=name, path=path, **options)
    positive = ("cpus_per_task", "runs_per_task", "time_min", "array_parallelism", "signal_delay_s")
    for key in positive:
        if getattr(profile, key) < 1:
            raise ConfigError(f"{where}: {key} = {getattr(profile, key)}: expected at least 1")
    if profile.gpus_per_task < 0 or profile.max_requeues < 0:
        raise ConfigError(f"{where}: gpus_per_task and max_requeues must not be negative")
    if profile.gpu_flag not in GPU_FLAGS:
        raise ConfigError(f"{where}: gpu_flag = {profile.gpu_flag!r}; allowed: {', '.join(GPU_FLAGS)}")
    mas = profile.max_array_size
    if not (mas == "auto" or isinstance(mas, int) and mas >= 1):
        raise ConfigError(f"{where}: max_array_size = {mas!r}: expected \"auto\" or a positive integer")
    if profile.mem_gb is not None and profile.mem_gb <= 0:
        raise ConfigError(f"{where}: mem_gb = {profile.mem_gb}: expected a positive number")
    parse_extra_sbatch(profile.extra_sbatch, where)
    return profile


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class Snapshot:
    """A frozen copy of the code that jobs import; ``path`` None: the live source tree."""

    path: Path | None
    commit: str | None
    dirty: bool

    @property
    def code_root(self) -> Path:
        return self.path or SOURCE_ROOT

    @property
    def id(self) -> str | None:
        return self.path.name if self.path else None


def _snapshot_files(root: Path) -> list[Path]:
    out = []
    for part in SNAPSHOT_PARTS:
        base = root / part
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix not in (".pyc", ".pyo") \
                    and not any(p.endswith(".egg-info") for p in rel.parts):
                out.append(rel)
    return out


def git_state(root: Path = SOURCE_ROOT) -> tuple[str | None, bool]:
    """(commit, dirty): HEAD of the source tree and whether the snapshotted parts differ from it."""
    def git(*args) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = (git("rev-parse", "HEAD") or "").strip() or None
    status = git("status", "--porcelain", "--", *SNAPSHOT_PARTS)
    return commit, bool(status and status.strip())


def make_snapshot(snapshots_dir: Path, source: Path = SOURCE_ROOT) -> Snapshot:
    """Copy study/, variants/, paper/ to ``snapshots_dir/<hash of their files>/`` (reused when unchanged)."""
    files = _snapshot_files(source)
    if not any(f.parts[0] == "study" for f in files):
        raise StudyError(f"cannot snapshot the code: no study/ package under {source}")
    digest = hashlib.sha256()
    for rel in files:
        digest.update(str(rel).encode() + b"\0" + (source / rel).read_bytes() + b"\0")
    commit, dirty = git_state(source)
    target = Path(snapshots_dir) / digest.hexdigest()[:16]
    if not (target / "SNAPSHOT.json").is_file():
        tmp = Path(snapshots_dir) / f".tmp-{uuid.uuid4().hex}"
        for rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, tmp / rel)
        atomic_write_json(tmp / "SNAPSHOT.json", {
            "source": str(source), "commit": commit, "dirty": dirty, "files": len(files),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        try:
            os.rename(tmp, target)
        except OSError:  # another submission made the same snapshot first
            shutil.rmtree(tmp, ignore_errors=True)
    return Snapshot(target, commit, dirty)


def live_code() -> Snapshot:
    commit, dirty = git_state()
    return Snapshot(None, commit, dirty)


def job_environment(snapshot: Snapshot, threads: int) -> list[str]:
    """Shell lines that make a job import the snapshot's code and record its commit."""
    root = shlex.quote(str(snapshot.code_root))
    lines = [f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}", f"cd {root}"]
    if snapshot.commit:
        lines.insert(0, f"export STUDY_GIT_COMMIT={shlex.quote(snapshot.commit)}")
    lines.append(f"export OMP_NUM_THREADS={threads}")
    return lines


# --------------------------------------------------------------------------- inside a job


def _train_task(spec: dict, store_root: str, roots: dict, threads: int, info: dict) -> dict:
    """Train or resume one run from its spec; the record gets ``info`` as record["launcher"]."""
    import study
    from study.config import RunConfig
    from study.launch.cpus import configure_process
    from study.train.run import RunBusy, train_run

    configure_process(threads)
    config = RunConfig.from_dict(spec["config"])
    if config.hash != spec["config_hash"]:
        raise StudyError(f"run {spec['run_id']}: this code ({study.__file__}) hashes its config to {config.hash}, "
                         f"not {spec['config_hash']}: the job does not run the code it was submitted with")
    info = {**info, "code": str(Path(study.__file__).resolve().parent)}
    print(f"run {spec['run_id']} ({spec.get('label', '')}) job {info.get('job_id')} "
          f"restart {info.get('restart_count')} code {info['code']}", flush=True)
    try:
        record = train_run(config, spec["seed"], Store(store_root), rows=tuple(spec.get("rows", ())), roots=roots,
                           progress=False, launcher_info=info, log=lambda line: print(line, flush=True))
    except RunBusy as exc:
        print(f"skipped: {exc}", flush=True)
        return {"run_id": spec["run_id"], "status": BUSY, "reason": str(exc)}
    dsc = record.test_dsc
    print(f"run {record.run_id}: {record.status}" + (f", test DSC {dsc:.4f}" if dsc is not None else ""),
          flush=True)
    return {"run_id": record.run_id, "status": record.status.value, "test_dsc": dsc}


def _failed(spec: dict, exc: BaseException) -> dict:
    return {"run_id": spec["run_id"], "status": Status.FAILED.value, "reason": f"{type(exc).__name__}: {exc}"}


def _train_group(specs: list[dict], store_root: str, roots: dict, threads: int, info: dict) -> list[dict]:
    """Train a task's runs: one in this process, or several at once in as many worker
    processes, each with its share of the task's CPUs (and the task's GPU, shared)."""
    if len(specs) == 1:
        return [_train_task(specs[0], store_root, roots, threads, info)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from study.launch.workers import init_worker

    per_run = max(1, threads // len(specs))
    print(f"task: {len(specs)} runs at once, {per_run} thread(s) each", flush=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(specs), mp_context=context, initializer=init_worker,
                             initargs=(per_run, os.getpid())) as pool:
        futures = [pool.submit(_train_task, spec, store_root, roots, per_run, info) for spec in specs]
        results = []
        for spec, future in zip(specs, futures):
            try:
                results.append(future.result())
            except Exception as exc:  # the run's own record says more
                results.append(_failed(spec, exc))
    return results


def _slurm_env_info() -> dict:
    env = os.environ
    array_job, array_task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    return {
        "kind": "slurm",
        "job_id": f"{array_job}_{array_task}" if array_job and array_task else env.get("SLURM_JOB_ID"),
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "array_job_id": array_job,
        "array_task_id": int(array_task) if array_task else None,
        "restart_count": int(env.get("SLURM_RESTART_COUNT") or 0),
        "node": env.get("SLURMD_NODENAME"),
        "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"),  # the GPUs SLURM gave the job
        "cluster": env.get("SLURM_CLUSTER_NAME"),
    }


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
        info = {**_slurm_env_info(), **self.submission, "launcher": "submitit",
                "stdout_path": str(paths.stdout), "stderr_path": str(paths.stderr)}
        return _train_group(self.specs, self.store_root, self.roots, self.threads, info)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        runs = ", ".join(s["run_id"] for s in self.specs)
        print(f"run(s) {runs}: checkpoint and requeue; each resumes from its last epoch checkpoint", flush=True)
        return submitit.helpers.DelayedSubmission(self)


# --------------------------------------------------------------------------- the launcher


def run_spec(run: PlannedRun) -> dict:
    """Everything a job needs to train one run, JSON-native."""
    return {"run_id": run.run_id, "config_hash": run.key.config_hash, "config": run.config.to_dict(),
            "seed": run.seed, "rows": list(run.rows), "label": run.label, "student": run.is_student}


def teacher_run_id(run: PlannedRun) -> str | None:
    return RunKey(run.config.teacher_config().hash, run.seed).id if run.is_student else None


def chunked(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _require(tool: str) -> str:
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


def _markers_dir(store: Store) -> Path:
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
    markers = _markers_dir(store)
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


def _completed(store: Store, key: RunKey) -> bool:
    record = store.load(key)
    return record is not None and record.completed


class SlurmLauncher:
    """Submits planned runs as submitit job arrays and returns at once (``report.submitted``)."""

    def __init__(self, cluster: str | None = None, profile: ClusterProfile | None = None):
        self.profile = profile or load_profile(cluster)

    def executor_parameters(self, snapshot: Snapshot, *, dependency: str | None = None,
                            job_name: str | None = None) -> dict:
        """submitit.SlurmExecutor parameters for one array."""
        p = self.profile
        params: dict = {"job_name": job_name or p.job_name, "time": p.time_min, "nodes": 1, "ntasks_per_node": 1,
                        "cpus_per_task": p.cpus_per_task, "signal_delay_s": p.signal_delay_s,
                        "array_parallelism": p.array_parallelism,
                        "setup": list(p.setup) + job_environment(snapshot, p.cpus_per_task)}
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(p, key):
                params[key] = getattr(p, key)
        if p.gpus_per_task:
            flag, value = p.gpu_option()
            if flag == "gres":
                params["gres"] = value
            else:
                params[flag.replace("-", "_")] = int(value)
        if p.mem_gb:
            params["mem"] = format_mem(p.mem_gb)
        if dependency:
            params["dependency"] = dependency
        extra = {"requeue": True}  # requeue on preemption / `scontrol requeue` even where JobRequeue=0
        extra.update(parse_extra_sbatch(p.extra_sbatch, p.path or p.name))
        params["additional_parameters"] = {k: (True if v is None else v) for k, v in extra.items()}
        return params

    def _submit_array(self, tasks: list[list[dict]], store: Store, roots: dict, snapshot: Snapshot,
                      submission: dict, folder: Path, dependency: str | None, job_name: str) -> list[str]:
        """Submit one array (one task per group of specs); returns the task job ids ("123_0", ...)."""
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.profile.max_requeues)
        executor.update_parameters(**self.executor_parameters(snapshot, dependency=dependency, job_name=job_name))
        jobs = []
        with executor.batch():
            for specs in tasks:
                jobs.append(executor.submit(TrainJob(specs, str(store.root), roots, self.profile.cpus_per_task,
                                                     submission)))
        return [str(j.job_id) for j in jobs]

    def launch(self, runs: list[PlannedRun], store: Store, *, roots: dict[str, str], log=print) -> LaunchReport:
        report = LaunchReport()
        if not runs:
            return report
        _require("sbatch")
        p = self.profile
        teachers_of = {t for t in map(teacher_run_id, runs) if t}  # a teacher may be queued from before
        queued = queued_runs(store, {r.run_id for r in runs} | teachers_of)
        for run in runs:
            if run.run_id in queued:
                report.busy.append(run.run_id)
                log(f"  queued  {run.run_id} {run.label}: still in the queue as job {queued[run.run_id]}")
        # A job that left the queue between the plan and squeue has written its record by now.
        todo = [r for r in runs if r.run_id not in queued and not _completed(store, r.key)]
        if not todo:
            return report

        snapshot = make_snapshot(store.root / "snapshots") if p.snapshot else live_code()
        submission_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        submission = {"submission": submission_id, "cluster_profile": p.name, "snapshot": str(snapshot.code_root),
                      "snapshot_id": snapshot.id, "commit": snapshot.commit, "dirty": snapshot.dirty}
        folder = store.root / "slurm" / "logs" / submission_id / "%j"  # submitit's logs and pickles
        size = array_size(p)
        log(f"SLURM: cluster profile {p.name}; code snapshot {snapshot.code_root} (commit "
            f"{(snapshot.commit or 'unknown')[:12]}{', uncommitted changes' if snapshot.dirty else ''}); "
            f"arrays of at most {size} tasks, {p.array_parallelism} running at once each"
            + (f", {p.runs_per_task} runs per task" if p.runs_per_task > 1 else ""))

        job_of: dict[str, str] = dict(queued)
        teachers = [r for r in todo if not r.is_student]
        students = [r for r in todo if r.is_student]
        try:
            for wave, name in ((teachers, p.job_name), (students, f"{p.job_name}-students")):
                for chunk in chunked(chunked(wave, p.runs_per_task), size):
                    runs_in = [r for task in chunk for r in task]
                    deps = sorted({job_of[t] for t in map(teacher_run_id, runs_in) if t in job_of})
                    dependency = "afterany:" + ":".join(deps) if deps else None
                    ids = self._submit_array([[run_spec(r) for r in task] for task in chunk], store, roots,
                                             snapshot, submission, folder, dependency, name)
                    for task, job_id in zip(chunk, ids):
                        for run in task:
                            job_of[run.run_id] = job_id
                            report.submitted[run.run_id] = job_id
                            atomic_write_json(_markers_dir(store) / f"{run.run_id}.json", {
                                "job_id": job_id, "submission": submission_id, "label": run.label,
                                "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
                    array = ids[0].split("_")[0]
                    log(f"  array {array}: {len(runs_in)} run(s) in {len(chunk)} task(s)"
                        + (f", after {dependency}" if dependency else ""))
        except Exception as exc:
            done = f"{len(report.submitted)} run(s) were submitted and will run; " if report.submitted else ""
            raise StudyError(f"SLURM refused a submission: {exc}\n{done}fix the profile ({p.path or p.name}) and "
                             "run the same command again: queued runs are not submitted twice") from None
        log(f"  logs {folder.parent}")
        return report


# --------------------------------------------------------------------------- plain sbatch scripts


@dataclass
class SbatchFiles:
    out_dir: Path
    runs_file: Path
    scripts: list[Path] = field(default_factory=list)
    submit_script: Path | None = None
    snapshot: Snapshot | None = None
    student_scripts: list[Path] = field(default_factory=list)


def comment(text: str) -> str:
    """Text safe inside a ``#`` comment line: no line breaks or other control characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))


PATH_OPTIONS = ("output", "error", "chdir")  # paths are always quoted
_SBATCH_PLAIN = re.compile(r"[A-Za-z0-9_.,:/%@=+-]*")


def sbatch_value(value: str, option: str, always_quote: bool = False) -> str:
    """A value written into an ``#SBATCH --option=value`` line. sbatch reads these lines itself
    (not the shell): a value with anything but plain characters is double-quoted, with ``"``
    and ``\\`` escaped, as its directive parser expects. Control characters are refused."""
    text = str(value)
    if any(not ch.isprintable() for ch in text):
        raise ConfigError(f"#SBATCH --{option}: value {text!r} holds a line break or control character")
    if _SBATCH_PLAIN.fullmatch(text) and not always_quote:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sbatch_line(option: str, value: str | None) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9-]*", option):
        raise ConfigError(f"#SBATCH option {option!r}: expected a long option name")
    if value is None:
        return f"#SBATCH --{option}"
    return f"#SBATCH --{option}={sbatch_value(value, option, always_quote=option in PATH_OPTIONS)}"


def _script_text(profile: ClusterProfile, *, name: str, command: str, tasks: list[list[dict]], offset: int,
                 runs_file: Path, log_dir: Path, snapshot: Snapshot, python: str, store_root: Path,
                 students: bool) -> str:
    n = len(tasks)
    specs = [spec for task in tasks for spec in task]
    after = " (students: submit after their teachers, see submit.sh)" if students else ""
    per_task = "one per array task" if len(specs) == n else f"{profile.runs_per_task} per array task, at once"
    lines = ["#!/bin/bash",
             comment(f"# Written by `{command}`."),
             f"# {len(specs)} run(s), {per_task}{after}.",
             "# Each task trains one run into the store, or resumes it from its last checkpoint",
             comment(f"# ({store_root}/runs/<config hash>-s<seed>/checkpoints/last.pt); a completed run is not redone."),
             comment(f"# Runs: {runs_file}"),
             "#",
             "# task  run                    row(s), dataset, seed"]
    lines += [comment(f"# {i:4d}  {s['run_id']:22s} {s['label']}") for i, task in enumerate(tasks) for s in task]
    options = [("job-name", name), ("array", f"0-{n - 1}%{min(n, profile.array_parallelism)}")]
    options += profile.sbatch_options()
    options += [("signal", f"B:USR2@{profile.signal_delay_s}"), ("requeue", None), ("open-mode", "append"),
                ("output", f"{log_dir}/%A_%a.out"), ("error", f"{log_dir}/%A_%a.err")]
    lines.append("")
    lines += [sbatch_line(k, v) for k, v in options]
    lines += ["", "set -euo pipefail"]
    if profile.setup:
        lines += ["# setup (cluster profile)", *profile.setup]
    lines += ["# the code snapshot this script was written with" if snapshot.path else "# the source tree (live)",
              *job_environment(snapshot, profile.cpus_per_task)]
    index = '"$SLURM_ARRAY_TASK_ID"' if offset == 0 else f'"$(({int(offset)} + SLURM_ARRAY_TASK_ID))"'
    lines += [f"exec {python} -m study.launch.slurm task {shlex.quote(str(runs_file))} {index}", ""]
    return "\n".join(lines)


def write_sbatch(runs: list[PlannedRun], store: Store, profile: ClusterProfile, out_dir: Path, *,
                 roots: dict[str, str], name: str, command: str, snapshot: bool | None = None,
                 max_array_size: int | None = None, python: str | None = None) -> SbatchFiles:
    """Write ``runs.json``, one array script per chunk of runs (students in their own) and
    ``submit.sh``, which submits them in order with the students' dependency."""
    out_dir = Path(out_dir).resolve()
    if (out_dir / "runs.json").exists():
        raise ConfigError(f"{out_dir} already holds scripts (queued jobs may still read its runs.json): "
                          "choose another --out or delete it")
    use_snapshot = profile.snapshot if snapshot is None else snapshot
    snap = make_snapshot(store.root / "snapshots") if use_snapshot else live_code()
    python = python or shlex.quote(sys.executable)
    size = max_array_size or array_size(profile, cluster_max_array_size() if shutil.which("scontrol") else
                                        DEFAULT_MAX_ARRAY_SIZE)
    teachers = [r for r in runs if not r.is_student]
    students = [r for r in runs if r.is_student]
    ordered = teachers + students
    files = SbatchFiles(out_dir, out_dir / "runs.json", snapshot=snap)
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    specs = [run_spec(r) for r in ordered]
    # Each array task trains the runs of one entry of "tasks" (indices into "runs").
    groups = chunked(list(range(len(teachers))), profile.runs_per_task) + \
        chunked(list(range(len(teachers), len(ordered))), profile.runs_per_task)
    atomic_write_json(files.runs_file, {
        "store": str(store.root), "roots": roots, "threads": profile.cpus_per_task, "tasks": groups,
        "max_requeues": profile.max_requeues, "log_dir": str(log_dir), "cluster_profile": profile.name,
        "snapshot": str(snap.code_root), "snapshot_id": snap.id, "commit": snap.commit, "dirty": snap.dirty,
        "command": command, "runs": specs})
    submit = ["#!/bin/bash", comment(f"# Submits the arrays written by `{command}`, students after their teachers."),
              "set -euo pipefail", 'cd "$(dirname "$0")"']
    offset = 0
    teacher_vars = []
    teacher_tasks = len(chunked(teachers, profile.runs_per_task))
    for wave, suffix, is_students in ((groups[:teacher_tasks], "", False), (groups[teacher_tasks:], "-students", True)):
        parts = chunked(wave, size)
        for k, chunk in enumerate(parts):
            part = f"-part{k + 1}" if len(parts) > 1 else ""
            path = out_dir / f"{name}{suffix}{part}.sbatch"
            job = f"{profile.job_name}-{name}{suffix}"
            text = _script_text(profile, name=job, command=command, tasks=[[specs[i] for i in g] for g in chunk],
                                offset=offset, runs_file=files.runs_file, log_dir=log_dir, snapshot=snap,
                                python=python, store_root=store.root, students=is_students)
            atomic_write_bytes(path, text.encode())
            path.chmod(0o755)
            (files.student_scripts if is_students else files.scripts).append(path)
            offset += len(chunk)
            if is_students:
                dep = ":".join(f"${v}" for v in teacher_vars)
                submit.append(f"sbatch {'--dependency=afterany:' + dep + ' ' if dep else ''}{shlex.quote(path.name)}")
            else:
                var = f"teachers{len(teacher_vars) + 1}"
                teacher_vars.append(var)
                submit.append(f"{var}=$(sbatch --parsable {shlex.quote(path.name)} | cut -d';' -f1)" if students
                              else f"sbatch {shlex.quote(path.name)}")
    files.submit_script = out_dir / "submit.sh"
    atomic_write_bytes(files.submit_script, ("\n".join(submit) + "\n").encode())
    files.submit_script.chmod(0o755)
    return files


# --------------------------------------------------------------------------- a task of a plain sbatch array


def _requeue_on_warning(max_requeues: int):
    """USR2 (sbatch --signal=B:USR2@S, before the time limit): ask SLURM to requeue this job.
    SLURM then sends SIGTERM, which train_run records as an interruption; the job
    restarts later and resumes from its last checkpoint."""
    def handler(signum, frame):
        job = os.environ.get("SLURM_JOB_ID")
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        if job and restarts < max_requeues:
            print(f"time-limit warning: requeueing job {job} (restart {restarts + 1} of at most {max_requeues})",
                  flush=True)
            subprocess.run(["scontrol", "requeue", job], timeout=60, check=False)
        else:
            print(f"time-limit warning: not requeued ({restarts} restarts, at most {max_requeues})", flush=True)

    signal.signal(signal.SIGUSR2, handler)


def run_task(runs_file: str | Path, index: int) -> int:
    plan = json.loads(Path(runs_file).read_text())
    tasks = plan.get("tasks") or [[i] for i in range(len(plan["runs"]))]
    if not 0 <= index < len(tasks):
        print(f"{runs_file} has {len(tasks)} tasks; no task {index}", file=sys.stderr)
        return 2
    specs = [plan["runs"][i] for i in tasks[index]]
    _requeue_on_warning(int(plan.get("max_requeues", 0)))
    info = _slurm_env_info()
    env = os.environ
    stem = (f"{env.get('SLURM_ARRAY_JOB_ID')}_{env.get('SLURM_ARRAY_TASK_ID')}"
            if env.get("SLURM_ARRAY_JOB_ID") else str(env.get("SLURM_JOB_ID")))
    info.update({"launcher": "sbatch", "runs_file": str(runs_file),
                 "stdout_path": f"{plan['log_dir']}/{stem}.out", "stderr_path": f"{plan['log_dir']}/{stem}.err",
                 "snapshot": plan.get("snapshot"), "snapshot_id": plan.get("snapshot_id"),
                 "commit": plan.get("commit"), "dirty": plan.get("dirty"),
                 "cluster_profile": plan.get("cluster_profile")})
    try:
        results = _train_group(specs, plan["store"], plan.get("roots") or {}, int(plan.get("threads") or 1), info)
    except KeyboardInterrupt:
        runs = ", ".join(s["run_id"] for s in specs)
        print(f"run(s) {runs}: interrupted; each resumes from its last checkpoint", file=sys.stderr)
        return 143
    return 0 if all(r["status"] in (Status.COMPLETED.value, BUSY) for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.launch.slurm",
                                     description="Run one task of an array script written by `study sbatch`.")
    sub = parser.add_subparsers(dest="command", required=True)
    task = sub.add_parser("task", help="train (or resume) the runs of task INDEX of RUNS.json")
    task.add_argument("runs_file", metavar="RUNS.json")
    task.add_argument("index", type=int)
    args = parser.parse_args(argv)
    return run_task(args.runs_file, args.index)


if __name__ == "__main__":
    sys.exit(main())


# --------------------------------------------------------------------------- search workers


def _tune_worker(spec, threads: int) -> int:
    """Inside a job: one search worker (it claims trials until the study has them all)."""
    from study.tune import run_worker

    return run_worker(spec, threads, log=lambda m: print(m, flush=True))


def submit_tune_workers(spec, workers: int, cluster: str | None = None, log=print) -> list[str]:
    """Submit ``workers`` search workers as one array sharing the study's storage; returns their job ids.

    Workers claim trials from the storage, so a requeued or extra worker never
    runs a trial twice; the storage must be on a file system the nodes share
    (or an RDB URL they reach).
    """
    _require("sbatch")
    launcher = SlurmLauncher(cluster)
    p = launcher.profile
    store = Store(spec.store_root)
    snapshot = make_snapshot(store.root / "snapshots") if p.snapshot else live_code()
    folder = store.root / "slurm" / "logs" / f"tune-{spec.study_name}-{time.strftime('%Y%m%d-%H%M%S')}" / "%j"
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=p.max_requeues)
    executor.update_parameters(**launcher.executor_parameters(snapshot, job_name=f"study-tune-{spec.study_name}"))
    with executor.batch():
        jobs = [executor.submit(_tune_worker, spec, p.cpus_per_task) for _ in range(workers)]
    ids = [str(j.job_id) for j in jobs]
    log(f"SLURM: {workers} search worker(s) on cluster profile {p.name}, logs {folder.parent}")
    return ids
