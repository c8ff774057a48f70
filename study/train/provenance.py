"""What a run records about the code and libraries that made it."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import study


def git_commit() -> str | None:
    override = os.environ.get("STUDY_GIT_COMMIT")  # set by the SLURM snapshot
    if override:
        return override
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(study.__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def versions() -> dict:
    import numpy
    import thop
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "study": study.__version__, "thop": getattr(thop, "__version__", "unknown")}


def kernels_used(device: str) -> dict:
    """The Mamba backend switch, and on a CPU which kernels run (the C ones, or why not)."""
    from study import kernels
    from study.models.mamba import get_backend

    used = {"mamba_backend": get_backend()}
    if str(device).startswith("cpu"):
        used["cpu"] = kernels.status()
    return used
