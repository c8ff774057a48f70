"""Cluster profiles, ``slurm/<name>.toml``: resources and policy, and their sbatch options.

``ClusterProfile.sbatch_options`` is the one place a profile becomes sbatch
options; the submitit launcher and the plain scripts both start from it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from study.errors import ConfigError
from study.settings import current

PROFILES_DIR = current().slurm_profiles
GPU_FLAGS = ("gpus-per-task", "gpus-per-node", "gres")


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
    # Torch threads of every run, from --threads or STUDY_THREADS (not a profile field: with_threads
    # sets it); None: a task's CPUs shared by the runs it trains.
    threads: int | None = None

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

    def threads_for(self, runs_in_task: int) -> int:
        """Torch threads of each run of a task of ``runs_in_task`` runs, decided here once (at
        submission): --threads N, else the task's CPUs shared by its runs (a last, smaller task
        gives each of its runs more)."""
        if self.threads is not None:
            return self.threads
        return max(1, self.cpus_per_task // max(1, runs_in_task))

    @property
    def threads_per_run(self) -> int:
        return self.threads_for(self.runs_per_task)

    def with_threads(self, threads: int | None) -> "ClusterProfile":
        """``--threads N`` (None: ``STUDY_THREADS`` where set): every run of a task gets N threads, so a
        task asks for runs_per_task x N CPUs."""
        if threads is None:
            threads = current().threads
            if threads is None:
                return self
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"--threads {threads!r}: expected at least 1")
        return replace(self, cpus_per_task=threads * self.runs_per_task, threads=threads)

    def describe_share(self) -> str:
        runs = f"{self.runs_per_task} runs per task" if self.runs_per_task > 1 else "1 run per task"
        smaller = ("; a last, smaller task shares its CPUs among fewer runs"
                   if self.threads is None and self.runs_per_task > 1 else "")
        return f"{runs}, {self.threads_per_run} thread(s) each (--cpus-per-task={self.cpus_per_task}){smaller}"

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


def profile_folders() -> list[Path]:
    """Where profiles are looked up by name: a lab's own study's profiles/ first, then the paper's."""
    own = current().own_study
    return ([own / "profiles"] if own is not None else []) + [PROFILES_DIR]


def available_profiles() -> list[str]:
    return sorted({p.stem for folder in profile_folders() if folder.is_dir() for p in folder.glob("*.toml")})


def _named(cluster: str) -> Path:
    found = [folder / f"{cluster}.toml" for folder in profile_folders() if (folder / f"{cluster}.toml").is_file()]
    return found[0] if found else PROFILES_DIR / f"{cluster}.toml"


def load_profile(cluster: str | None = None) -> ClusterProfile:
    """A profile by name (``slurm/<name>.toml``) or path; None: $STUDY_SLURM_CLUSTER, else slurm/default.toml."""
    cluster = cluster or current().slurm_cluster
    names = ", ".join(available_profiles()) or "none"
    if not cluster:
        if not _named("default").is_file():
            raise ConfigError(f"--launcher slurm needs --cluster PROFILE (profiles in {PROFILES_DIR}: {names}); "
                              "or copy one to slurm/default.toml, or set STUDY_SLURM_CLUSTER")
        cluster = "default"
    path = Path(cluster) if cluster.endswith(".toml") or os.sep in cluster else _named(cluster)
    if not path.is_file():
        raise ConfigError(f"--cluster {cluster}: no profile {path}; profiles in {PROFILES_DIR}: {names}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return profile_from_dict(data, name=path.stem, path=str(path))


def profile_from_dict(data: dict, *, name: str = "default", path: str | None = None) -> ClusterProfile:
    where = path or name
    known = {f.name for f in fields(ClusterProfile)} - {"name", "path", "threads"}
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
    if profile.gpus_per_task > profile.runs_per_task:
        # A run trains on one GPU (no data parallelism); the task's runs take its GPUs round robin.
        raise ConfigError(f"{where}: gpus_per_task = {profile.gpus_per_task} but runs_per_task = "
                          f"{profile.runs_per_task}: each run uses one GPU, so {profile.gpus_per_task - profile.runs_per_task} "
                          "would sit idle and be charged; set gpus_per_task at most runs_per_task")
    if profile.gpu_flag not in GPU_FLAGS:
        raise ConfigError(f"{where}: gpu_flag = {profile.gpu_flag!r}; allowed: {', '.join(GPU_FLAGS)}")
    mas = profile.max_array_size
    if not (mas == "auto" or isinstance(mas, int) and mas >= 1):
        raise ConfigError(f"{where}: max_array_size = {mas!r}: expected \"auto\" or a positive integer")
    if profile.mem_gb is not None and profile.mem_gb <= 0:
        raise ConfigError(f"{where}: mem_gb = {profile.mem_gb}: expected a positive number")
    parse_extra_sbatch(profile.extra_sbatch, where)
    return profile
