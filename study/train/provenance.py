"""What a run records about the code and libraries that made it."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import study
from study.settings import current


def git_commit() -> str | None:
    override = current().git_commit  # set by the SLURM snapshot
    if override:
        return override
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(study.__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


CODE_PARTS = ("study", "variants", "paper")  # what makes a run: the code and the paper's study files


def git_state(root: Path) -> tuple[str | None, bool]:
    """(commit, dirty): HEAD of the source tree at ``root`` and whether its CODE_PARTS differ from it."""
    def git(*args) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = (git("rev-parse", "HEAD") or "").strip() or None
    status = git("status", "--porcelain", "--", *CODE_PARTS)
    return commit, bool(status and status.strip())


@functools.lru_cache(maxsize=1)
def _checkout_dirty() -> bool | None:
    from study.settings import IN_CHECKOUT, SOURCE_ROOT

    if not IN_CHECKOUT:
        return None
    commit, dirty = git_state(SOURCE_ROOT)
    return dirty if commit else None


def git_dirty() -> bool | None:
    """Whether the code and paper files (study/, variants/, paper/) differ from the recorded commit:
    a local run's own check, once per process; None where unknown (an installed package, no git, or a
    SLURM job, whose snapshot recorded it in the job's details)."""
    if current().git_commit:
        return None
    return _checkout_dirty()


def versions() -> dict:
    import numpy
    import thop
    import torch

    from study.models.cuda_kernels import package_version

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
           "study": study.__version__, "thop": getattr(thop, "__version__", "unknown")}
    for name in ("mamba-ssm", "causal-conv1d"):
        version = package_version(name)
        if version is not None:
            out[name] = version
    return out


def kernels_used(device, model=None) -> dict:
    """What computed the run: the Mamba backend switch, the scan and conv it runs on ``device``, the
    layout the model is fed in, and on a CPU the C kernels' state, on CUDA the kernel packages."""
    from study import kernels
    from study.models import cuda_kernels
    from study.models.mamba import describe_paths, get_backend
    from study.train.engine import memory_format_name

    used = {"mamba_backend": get_backend(), **describe_paths(device)}
    if model is not None:
        used["memory_format"] = memory_format_name(model)
    if str(device).startswith("cpu"):
        used["cpu"] = kernels.status()
    elif str(device).startswith("cuda"):
        used["cuda"] = cuda_kernels.describe(device, probe=used["mamba_backend"] != "torch")
    return used
