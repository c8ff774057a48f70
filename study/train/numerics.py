"""The numerical settings training and benchmarks run under, set in one place and recorded.

* Deterministic algorithms where PyTorch has them (``warn_only``: an op
  without one warns rather than stops a run), cuDNN's autotuner off.
* ``CUBLAS_WORKSPACE_CONFIG``: cuBLAS is deterministic only with a fixed
  workspace; it must be in the environment before the first cuBLAS call, so it
  is set here, before any model reaches the GPU, unless the user set it.
* ``torch.utils.deterministic.fill_uninitialized_memory`` off: with deterministic
  algorithms on, PyTorch fills every new tensor with NaN, a debugging aid (its
  documentation's word) that adds a fill to every allocation (measured on the
  CPU profile's training step: 12,521 profiled operations with it, 10,891
  without, 3,019 fills and allocations against 1,452) and changes no result of
  these models (their fingerprints are the same either way).
* TF32 off for matmuls and convolutions. PyTorch leaves it on for cuDNN
  convolutions on Ampere and newer GPUs, so the same run would round
  differently on an A100 than on the paper's Tesla T4, which has no TF32;
  float32 everywhere matches the paper's arithmetic. These models are small
  enough that the speed lost is little (``study doctor`` times a step).

What this cannot make deterministic on a GPU: mamba-ssm's selective-scan
backward accumulates some gradients with atomic adds, in an order that varies
from call to call (causal-conv1d 1.6 and newer follow
``use_deterministic_algorithms`` and avoid theirs; 1.4-1.5 do not). A CUDA run
therefore repeats to within float rounding, not bit for bit; ``study doctor
--device cuda`` measures how far apart two runs of the same seed end. PyTorch's own
nondeterministic CUDA ops (bilinear and bicubic interpolation backward, adaptive
max-pool backward in these models) only warn under ``warn_only``; each run records
the ones it hit (``study.train.determinism``), and ``docs/running.md`` lists them per row.
"""

from __future__ import annotations

import os

import torch

CUBLAS_WORKSPACE = ":4096:8"


def apply(device: str | torch.device, deterministic: bool = True) -> dict:
    """Set the settings for this process; return them as recorded (``settings``). ``deterministic``
    False (``train.deterministic``) lets PyTorch and cuDNN pick their fastest algorithms instead."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return settings(device)


def settings(device: str | torch.device) -> dict:
    """What is in force now, and on CUDA which GPU and libraries: a run's provenance."""
    out = {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
           "fill_uninitialized_memory": bool(torch.utils.deterministic.fill_uninitialized_memory)}
    device = torch.device(device)
    if device.type != "cuda":
        return out
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    out.update(
        gpu=props.name, capability=f"{props.major}.{props.minor}", gpu_memory_gib=round(props.total_memory / 2**30, 1),
        cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
        tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32,
        cudnn_deterministic=torch.backends.cudnn.deterministic, cudnn_benchmark=torch.backends.cudnn.benchmark,
        cublas_workspace_config=os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    return out
