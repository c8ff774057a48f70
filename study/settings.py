"""Every ``STUDY_*`` environment variable, read here and nowhere else.

``Settings.read()`` reads them afresh; a few are taken once when their module is
imported (the default results, variants, paper and cluster-profile folders, the
kernels and Mamba-backend switches), as they always were. ``VARIABLES`` says what each one does, its default, and what
overrides it, and is the table the README and ``python -m study env`` print.
A command-line flag always wins over its variable.

Three settings decide how a model computes, and they do not overlap:
``train.engine`` (a config field, part of a run's identity) picks the fast or the
plain eager path; on the fast path on a CPU, ``STUDY_NATIVE_KERNELS`` picks the
C kernels or PyTorch's ops for channels-last GroupNorm (the same function, a
different rounding, recorded per attempt); ``STUDY_MAMBA_BACKEND`` picks the
selective scan's implementation (the PyTorch scan, the C kernel, or the CUDA
kernels), also recorded per attempt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

SOURCE_ROOT = Path(__file__).resolve().parent.parent
# The paper's study files (variants/, paper/, slurm/): beside the code in a checkout or an editable
# install; inside the package (study/paper_study/, copied there by setup.py) in a wheel.
PACKAGED_STUDY = Path(__file__).resolve().parent / "paper_study"
IN_CHECKOUT = (SOURCE_ROOT / "variants" / "base.toml").is_file()
STUDY_FILES = SOURCE_ROOT if IN_CHECKOUT else PACKAGED_STUDY
OFF_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Variable:
    name: str
    what: str
    default: str
    overridden_by: str = ""


VARIABLES = (
    Variable("STUDY_RESULTS", "the results store's root",
             "results/ beside the code in a checkout; ./results installed from a wheel", "--results"),
    Variable("STUDY_VARIANTS", "the folder of variant files (Tables 1-7, R)",
             "variants/ beside the code (in a wheel: the package's copy)"),
    Variable("STUDY_PAPER", "the folder of paper/ (differences, paper numbers)",
             "paper/ beside the code (in a wheel: the package's copy)"),
    Variable("STUDY_DATA_<NAME>", "a real dataset's root, e.g. STUDY_DATA_ISIC2017",
             "./study.toml, else ~/.config/ultralbm-study/config.toml", "--root NAME=PATH"),
    Variable("STUDY_CACHE", "resized dataset caches, split manifests, the report's complexity cache",
             "~/.cache/ultralbm-study", "--cache-dir (data cache)"),
    Variable("STUDY_THREADS", "torch threads per run, local and SLURM (jobs get it written into their environment)",
             "the allocation's CPUs (SLURM: a task's CPUs) shared by the runs at once, never the load", "--threads"),
    Variable("STUDY_NATIVE_KERNELS", "0 turns the C CPU kernels off (PyTorch ops instead)", "1 (on)"),
    Variable("STUDY_KERNEL_CACHE", "where the C kernels are compiled to",
             "$XDG_CACHE_HOME (else ~/.cache)/ultralbm-study/kernels"),
    Variable("STUDY_MAMBA_BACKEND", "the selective scan: auto, torch, native or cuda (bench times each)", "auto",
             "set_backend() in code"),
    Variable("STUDY_LOCK_LEASE_S", "seconds without renewal after which a run's lease counts as dead", "300"),
    Variable("STUDY_SLURM_PROFILES", "the folder of cluster profiles",
             "slurm/ beside the code (in a wheel: the package's copy)"),
    Variable("STUDY_SLURM_CLUSTER", "the cluster profile used when --cluster is not given", "slurm/default.toml",
             "--cluster"),
    Variable("STUDY_DIR", "a lab's own study folder (`study init DIR`): its tables and cluster profiles are added to "
             "the paper's, and its results/ is the default store", "none (the paper's study alone)", "--study"),
    Variable("STUDY_GIT_COMMIT", "the commit a job's code snapshot was taken at (written by the SLURM launcher)",
             "git rev-parse in the source tree"),
)


def _path(environ: Mapping[str, str], name: str, default: Path) -> Path:
    value = environ.get(name)
    return Path(value).expanduser() if value else default


@dataclass(frozen=True)
class Settings:
    """The effective settings of this process's environment (flags are applied where they are parsed)."""

    results: Path
    variants: Path
    paper: Path
    cache: Path
    threads_text: str | None  # STUDY_THREADS as set; ``threads`` checks it where it is used
    native_kernels: bool
    kernel_cache: Path | None  # None: the default under the user's cache folder (study.kernels.build)
    mamba_backend: str
    lock_lease_s: str | None  # parsed and checked by study.store.lease (a bad value is an error there)
    slurm_profiles: Path
    slurm_cluster: str | None
    git_commit: str | None
    data_roots: dict[str, str]  # STUDY_DATA_<NAME> -> path, as set
    own_study: Path | None = None  # STUDY_DIR: a lab's own study folder, or None

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        return cls(
            # Installed from a wheel, results land in the folder the command runs in, never in the package.
            results=_path(env, "STUDY_RESULTS", SOURCE_ROOT / "results" if IN_CHECKOUT else Path("results")),
            variants=_path(env, "STUDY_VARIANTS", STUDY_FILES / "variants"),
            paper=_path(env, "STUDY_PAPER", STUDY_FILES / "paper"),
            cache=_path(env, "STUDY_CACHE", Path.home() / ".cache" / "ultralbm-study"),
            threads_text=env.get("STUDY_THREADS") or None,
            native_kernels=env.get("STUDY_NATIVE_KERNELS", "1").lower() not in OFF_WORDS,
            kernel_cache=Path(env["STUDY_KERNEL_CACHE"]) if env.get("STUDY_KERNEL_CACHE") else None,
            mamba_backend=env.get("STUDY_MAMBA_BACKEND") or "auto",
            lock_lease_s=env.get("STUDY_LOCK_LEASE_S"),
            slurm_profiles=_path(env, "STUDY_SLURM_PROFILES", STUDY_FILES / "slurm"),
            slurm_cluster=env.get("STUDY_SLURM_CLUSTER") or None,
            git_commit=env.get("STUDY_GIT_COMMIT") or None,
            data_roots={k: v for k, v in sorted(env.items()) if k.startswith("STUDY_DATA_") and v},
            own_study=own_study_folder(env),
        )

    @property
    def threads(self) -> int | None:
        """STUDY_THREADS, or None when it is not set; anything but a positive whole number is an error."""
        from study.errors import ConfigError

        if self.threads_text is None:
            return None
        if not self.threads_text.isdigit() or int(self.threads_text) < 1:
            raise ConfigError(f"STUDY_THREADS={self.threads_text!r}: expected a positive whole number of threads")
        return int(self.threads_text)

    def data_root(self, variable: str) -> str | None:
        return self.data_roots.get(variable)


def own_study_folder(environ: Mapping[str, str] | None = None) -> Path | None:
    """STUDY_DIR alone (asked for on every config a process builds: reading only this one is cheap)."""
    env = os.environ if environ is None else environ
    return _path(env, "STUDY_DIR", None) if env.get("STUDY_DIR") else None


def use_own_study(folder: str) -> Path:
    """Point this process, and every process it starts, at a lab's own study folder (``--study``):
    STUDY_DIR, and STUDY_RESULTS to its results/ unless already set."""
    from study.errors import ConfigError

    path = Path(folder).expanduser().resolve()
    if not (path / "tables").is_dir():
        raise ConfigError(f"--study {folder}: not a study folder (expected {path / 'tables'}); "
                          f"make one with `python -m study init {folder}`")
    os.environ.update(STUDY_DIR=str(path))  # written, for the processes this one starts
    os.environ.setdefault("STUDY_RESULTS", str(path / "results"))
    return path


def current() -> Settings:
    """The settings of this process's environment now."""
    return Settings.read()


def set_variables(environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(name, value) of every STUDY_* variable set in the environment, in name order."""
    env = os.environ if environ is None else environ
    return [(k, v) for k, v in sorted(env.items()) if k.startswith("STUDY_")]
