"""How a model is run: the fast path a run trains on, and the plain eager path it must equal.

``fast`` (the default): models that declare ``prefers_channels_last`` (UltraLBM-UNet:
its convolutions, pooling and the block's (B, N, C) sequences are then free views,
not transposes) are stored and fed channels_last on a CPU (``CHANNELS_LAST_ON``); a block's shared Mamba runs once
on all its chunks and both directions; AdamW uses its fused kernel (the
multi-tensor foreach update where this torch has no fused CPU AdamW); on a CPU, channels_last GroupNorms
run the C kernel of ``study.kernels`` (PyTorch's own is several times slower
in that layout than in NCHW). ``plain``: contiguous NCHW, one Mamba
call per chunk and direction, chunk by chunk, and the
per-parameter AdamW loop: the straightforward way, kept as the oracle the fast
path is tested against and as what ``study bench`` times the reference on.

Both paths compute the same function; they differ in float rounding only, so the
engine is part of a run's identity (``train.engine``).
"""

from __future__ import annotations

import torch

from study.config import ENGINES
from study.kernels import ops as native_ops


class ChannelsLastGroupNorm(torch.nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and state dict) that runs the C kernel on
    channels_last float32 CPU tensors, and PyTorch's GroupNorm on anything else."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if native_ops.group_norm_applies(x):
            return native_ops.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x)

    def pool_gelu(self, x: torch.Tensor) -> torch.Tensor | None:
        """gelu(max_pool2d(self(x), 2)) as one C kernel, or None where it does not apply."""
        if not native_ops.pool_gelu_applies(x):
            return None
        return native_ops.group_norm_pool_gelu(x, self.num_groups, self.weight, self.bias, self.eps)


# Where the fast engine stores and feeds channels_last. Measured on a CPU: faster there, with the C
# GroupNorm. Not on CUDA: PyTorch's CUDA group_norm computes on ``input.contiguous()`` (aten
# group_norm.cpp), so a channels_last map is converted to NCHW and back around each of the model's
# ten GroupNorms, forward and backward. `python -m study doctor --device cuda` times both layouts on
# the GPU it runs on; change this entry only on what it measures.
CHANNELS_LAST_ON = {"cpu": True, "cuda": False}


def uses_channels_last(model: torch.nn.Module, engine: str, device: str | torch.device = "cpu") -> bool:
    device_type = torch.device(device).type
    return (engine == "fast" and bool(getattr(model, "prefers_channels_last", False))
            and CHANNELS_LAST_ON.get(device_type, False))


def prepare_model(model: torch.nn.Module, engine: str, device: str | torch.device = "cpu",
                  channels_last: bool | None = None) -> torch.nn.Module:
    """The model on ``device`` as ``engine`` runs it; ``channels_last`` overrides the layout choice
    (the doctor's layout comparison). The model then says which layout it is fed in
    (``input_memory_format``, read by ``prepare_batch``)."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}; expected one of {', '.join(ENGINES)}")
    model = model.to(device)
    for module in model.modules():
        if hasattr(module, "batch_branches"):
            module.batch_branches = engine == "fast"
    if channels_last is None:
        channels_last = uses_channels_last(model, engine, device)
    model.input_memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        for module in model.modules():
            if type(module) is torch.nn.GroupNorm:  # same tensors, so optimizer and checkpoints are unaffected
                module.__class__ = ChannelsLastGroupNorm
    return model


def memory_format_name(model: torch.nn.Module) -> str:
    return "channels_last" if getattr(model, "input_memory_format", None) is torch.channels_last else "NCHW"


def prepare_batch(images: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """``images`` in the layout the prepared ``model`` is fed in."""
    if images.dim() == 4 and getattr(model, "input_memory_format", None) is torch.channels_last:
        return images.contiguous(memory_format=torch.channels_last)
    return images


def make_optimizer(model: torch.nn.Module, engine: str, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                   weight_decay: float = 1e-2) -> torch.optim.Optimizer:
    options = {}
    if engine == "fast":
        try:  # measured 0.96 ms against foreach's 3.6 ms per step for UltraLBM-UNet on 2 CPU threads
            return torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                     fused=True)
        except RuntimeError:  # torch < 2.4 has no fused AdamW on CPU
            options = {"foreach": True}
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **options)
