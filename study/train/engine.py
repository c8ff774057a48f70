"""How a model is run: the fast path a run trains on, and the plain eager path it must equal.

``fast`` (the default): models that declare ``prefers_channels_last`` (UltraLBM-UNet:
its convolutions, pooling and the block's (B, N, C) sequences are then free views,
not transposes) are stored and fed channels_last; a block's shared Mamba runs once
on all its chunks and both directions; AdamW uses its multi-tensor (foreach)
update on CPU and the fused kernel on CUDA. ``plain``: contiguous NCHW, one Mamba
call per chunk and direction in the official release's order, and the
per-parameter AdamW loop: the straightforward way, kept as the oracle the fast
path is tested against and as what ``study bench`` times the reference on.

Both paths compute the same function; they differ in float rounding only, so the
engine is part of a run's identity (``train.engine``).
"""

from __future__ import annotations

import torch

ENGINES = ("fast", "plain")


def uses_channels_last(model: torch.nn.Module, engine: str) -> bool:
    return engine == "fast" and bool(getattr(model, "prefers_channels_last", False))


def prepare_model(model: torch.nn.Module, engine: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}; expected one of {', '.join(ENGINES)}")
    model = model.to(device)
    for module in model.modules():
        if hasattr(module, "batch_branches"):
            module.batch_branches = engine == "fast"
    if uses_channels_last(model, engine):
        model = model.to(memory_format=torch.channels_last)
    return model


def prepare_batch(images: torch.Tensor, model: torch.nn.Module, engine: str) -> torch.Tensor:
    if images.dim() == 4 and uses_channels_last(model, engine):
        return images.contiguous(memory_format=torch.channels_last)
    return images


def make_optimizer(model: torch.nn.Module, engine: str, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                   weight_decay: float = 1e-2) -> torch.optim.Optimizer:
    options = {}
    if engine == "fast":
        on_cuda = any(p.is_cuda for p in model.parameters())
        options = {"fused": True} if on_cuda else {"foreach": True}
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **options)
