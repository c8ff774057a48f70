"""`python -m study env`: this installation in one screen, the first thing to paste into a bug report.

The code and its commit, Python and the packages that decide numbers (torch,
CUDA, cuDNN, mamba-ssm, causal-conv1d), the kernels a run on this machine
would use, the CPUs a run would get, and every ``STUDY_*`` setting with where
its value came from.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from study.errors import StudyError
from study.settings import VARIABLES, Settings, set_variables


def _code_lines() -> list[str]:
    import study
    from study.train.provenance import git_commit

    commit = git_commit()
    return [f"ultralbm-study {study.__version__}: code {Path(study.__file__).resolve().parent}"
            + (f", commit {commit[:12]}" if commit else ", commit unknown (not a git checkout)"),
            f"python {platform.python_version()} ({platform.python_implementation()}) on "
            f"{platform.system()} {platform.machine()}"]


def _package_lines() -> list[str]:
    import torch

    from study.models.cuda_kernels import SUPPORTED, package_version

    lines = [f"torch {torch.__version__}; built for CUDA {torch.version.cuda or 'none (a CPU build)'}"]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        lines.append(f"GPUs visible: {torch.cuda.device_count()} ({names}); cuDNN {torch.backends.cudnn.version()}")
    else:
        lines.append("GPUs visible: none")
    for name in ("mamba-ssm", "causal-conv1d"):
        version = package_version(name)
        low, high = (".".join(map(str, v)) for v in SUPPORTED[name])
        lines.append(f"{name}: {version or 'not installed'} (checked range {low} to below {high})")
    return lines


def _kernel_lines() -> list[str]:
    import torch

    from study import kernels
    from study.models.mamba import describe_paths, get_backend

    lines = [f"CPU kernels: {kernels.status()}"]
    for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        paths = describe_paths(device)
        lines.append(f"Mamba on {device} (backend {get_backend()}): scan {paths['scan']}; conv1d {paths['conv1d']}")
    return lines


def _cpu_lines(settings: Settings) -> list[str]:
    from study.launch.cpus import available_cpus, local_share

    cpus = f"CPUs: {available_cpus()} available to this process (os.cpu_count {os.cpu_count()})"
    try:
        share = local_share([], jobs=1)
    except StudyError as exc:  # a malformed setting: said here, the rest of the screen still printed
        return [f"{cpus}; the share a run gets is unknown: {exc}"]
    return [f"{cpus}, {share.busy} busy with other work now; one run here gets {share.threads} thread(s) "
            f"(from {share.chosen})"]


def _setting_lines(settings: Settings) -> list[str]:
    set_now = dict(set_variables())
    effective = {"STUDY_RESULTS": settings.results, "STUDY_VARIANTS": settings.variants, "STUDY_PAPER": settings.paper,
                 "STUDY_CACHE": settings.cache, "STUDY_SLURM_PROFILES": settings.slurm_profiles,
                 "STUDY_MAMBA_BACKEND": settings.mamba_backend,
                 "STUDY_NATIVE_KERNELS": "on" if settings.native_kernels else "off"}
    lines = ["settings (a flag named under 'overridden by' wins over its variable):"]
    for var in VARIABLES:
        if var.name == "STUDY_DATA_<NAME>":
            roots = settings.data_roots
            value = ", ".join(f"{k}={v}" for k, v in roots.items()) if roots else f"not set ({var.default})"
        elif var.name in set_now:
            value = f"{set_now[var.name]} (set)"
        elif var.name in effective:
            value = f"{effective[var.name]} (default)"
        else:
            value = f"not set ({var.default})"
        override = f"; overridden by {var.overridden_by}" if var.overridden_by else ""
        lines.append(f"  {var.name:22s} {value}")
        lines.append(f"  {'':22s}   {var.what}{override}")
    unknown = [k for k in set_now if k not in {v.name for v in VARIABLES} and not k.startswith("STUDY_DATA_")]
    if unknown:
        lines.append(f"  not a setting of this harness (misspelt?): {', '.join(unknown)}")
    return lines


def environment_report() -> str:
    """The whole screen, as text."""
    settings = Settings.read()
    sections = [_code_lines(), _package_lines(), _kernel_lines(), _cpu_lines(settings), _setting_lines(settings)]
    return "\n".join(line for section in sections for line in section)
