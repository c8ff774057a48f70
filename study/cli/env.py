"""`python -m study env`: this installation in one screen (versions, kernels, CPUs, settings)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("env", help="print versions, the kernels in use, the CPU share and every STUDY_* setting",
                       description="One screen to paste into a bug report: the code and its commit, Python, "
                       "torch/CUDA/cuDNN/mamba-ssm/causal-conv1d versions, the kernels a run here would use, "
                       "the CPUs it would get, and every STUDY_* setting with where its value came from.")
    p.set_defaults(func=run)


def run(args) -> int:
    from study.about import environment_report

    print(environment_report())
    return 0
