"""Autograd functions over the C kernels; callers check ``applies`` first.

Nothing reaches C unchecked: every pointer is a float32 (or int32) CPU tensor,
contiguous in the layout the kernel reads (``_p``), and every shape the kernel
derives its loops from agrees with the others (``_check_*``), so a wrong call is a
ValueError here, never a read past a buffer. Buffers are allocated as
float32 CPU whatever torch's default dtype is. The backwards are
``once_differentiable``: asking for a second derivative raises.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from study.kernels import call, library

F32 = {"dtype": torch.float32, "device": "cpu"}


def _p(t: torch.Tensor | None, channels_last: bool = False, dtype=torch.float32) -> int | None:
    if t is None:
        return None
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous(memory_format=layout):
        raise ValueError(f"C kernel argument: expected a contiguous {dtype} CPU tensor"
                         f"{' (channels_last)' if channels_last else ''}, got {t.dtype} {t.device} {tuple(t.shape)}")
    return t.data_ptr()


def _check_grad(grad: torch.Tensor, like: torch.Tensor, where: str) -> None:
    if grad.shape != like.shape:
        raise ValueError(f"{where}: gradient of shape {tuple(grad.shape)} for an output of shape {tuple(like.shape)}")


def _check_norm(x: torch.Tensor, groups, weight, bias, where: str) -> None:
    """A (batch, C, H, W) input, C split into whole groups, weight and bias (C,) or None."""
    if x.dim() != 4:
        raise ValueError(f"{where}: expected a (batch, C, H, W) tensor, got shape {tuple(x.shape)}")
    channels = x.shape[1]
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or channels % groups:
        raise ValueError(f"{where}: {channels} channels do not split into {groups!r} groups")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (channels,):
            raise ValueError(f"{where}: {name} of shape {tuple(t.shape)} for {channels} channels")


def scan_applies(*tensors: torch.Tensor) -> bool:
    """The native scan runs non-empty float32 CPU tensors when the kernels are available."""
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 and t.numel() > 0 for t in tensors)
            and library() is not None)


class NativeScan(torch.autograd.Function):
    """u, delta: (batch, D, L); A: (D, N); B, C: (batch, L, N) -> y: (batch, D, L).
    delta must already be positive (softplus and bias applied by the caller)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        u, delta, A, B, C = (t.contiguous() for t in (u, delta, A, B, C))
        batch, d, length = u.shape
        n = A.shape[1]
        if delta.shape != u.shape or A.shape != (d, n) or B.shape != (batch, length, n) or C.shape != B.shape:
            raise ValueError(f"native scan: shapes u {tuple(u.shape)}, delta {tuple(delta.shape)}, A {tuple(A.shape)}, "
                             f"B {tuple(B.shape)}, C {tuple(C.shape)} do not fit (batch, D, L), (D, N), (batch, L, N)")
        y = torch.empty_like(u)
        call(library().scan_forward, _p(u), _p(delta), _p(A), _p(B), _p(C), _p(y), batch, d, length, n)
        ctx.save_for_backward(u, delta, A, B, C)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        u, delta, A, B, C = ctx.saved_tensors
        _check_grad(grad_y, u, "native scan")
        grad_y = grad_y.contiguous()
        batch, d, length = u.shape
        n = A.shape[1]
        grad_u, grad_delta = torch.empty_like(u), torch.empty_like(delta)
        grad_A_rows = torch.zeros(batch, d, n, **F32)
        grad_B, grad_C = torch.zeros_like(B), torch.zeros_like(C)
        call(library().scan_backward, _p(u), _p(delta), _p(A), _p(B), _p(C), _p(grad_y), _p(grad_u),
             _p(grad_delta), _p(grad_A_rows), _p(grad_B), _p(grad_C), batch, d, length, n)
        return grad_u, grad_delta, grad_A_rows.sum(0), grad_B, grad_C


def _param_grad_rows(ctx, batch: int, channels: int):
    """Per-row parts of the weight's and the bias's gradients (None where there is none)."""
    return tuple(torch.empty(batch, channels, **F32) if has else None for has in (ctx.has_weight, ctx.has_bias))


def _summed(rows: torch.Tensor | None) -> torch.Tensor | None:
    return None if rows is None else rows.sum(0)


def _norm_buffers(ctx, x: torch.Tensor, groups: int, weight, bias):
    """What both GroupNorm forwards hand the C code besides their outputs: buffers for
    the statistics and contiguous parameters; notes on ``ctx`` what the backward needs."""
    batch = x.shape[0]
    ctx.groups = int(groups)
    ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
    w = None if weight is None else weight.contiguous()
    b = None if bias is None else bias.contiguous()
    return torch.empty(batch, groups, **F32), torch.empty(batch, groups, **F32), w, b


def group_norm_applies(x: torch.Tensor) -> bool:
    """The native GroupNorm runs non-empty float32 CPU tensors stored channels_last."""
    return (x.dim() == 4 and x.device.type == "cpu" and x.dtype == torch.float32 and x.numel() > 0
            and x.is_contiguous(memory_format=torch.channels_last) and library() is not None)


class NativeGroupNorm(torch.autograd.Function):
    """GroupNorm of a channels_last (batch, C, H, W) tensor; weight and bias (C,) or None."""

    @staticmethod
    def forward(ctx, x, groups, weight, bias, eps):
        _check_norm(x, groups, weight, bias, "native GroupNorm")
        batch, channels, height, width = x.shape
        y = torch.empty_like(x)
        mean, rstd, w, b = _norm_buffers(ctx, x, groups, weight, bias)
        call(library().group_norm_forward, _p(x, True), _p(w), _p(b), _p(y, True), _p(mean), _p(rstd), batch,
             height * width, channels, groups, float(eps))
        ctx.save_for_backward(x, mean, rstd, w)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, mean, rstd, w = ctx.saved_tensors
        _check_grad(grad_y, x, "native GroupNorm")
        batch, channels, height, width = x.shape
        grad_y = grad_y.contiguous(memory_format=torch.channels_last)
        grad_x = torch.empty_like(x)
        grad_w_rows, grad_b_rows = _param_grad_rows(ctx, batch, channels)
        call(library().group_norm_backward, _p(grad_y, True), _p(x, True), _p(mean), _p(rstd), _p(w), _p(grad_x, True),
             _p(grad_w_rows), _p(grad_b_rows), batch, height * width, channels, ctx.groups)
        return grad_x, None, _summed(grad_w_rows), _summed(grad_b_rows), None


def group_norm(x: torch.Tensor, groups: int, weight, bias, eps: float) -> torch.Tensor:
    return NativeGroupNorm.apply(x, groups, weight, bias, eps)


def pool_gelu_applies(x: torch.Tensor) -> bool:
    """The fused GroupNorm -> 2x2 max-pool -> GELU needs even height and width."""
    return group_norm_applies(x) and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0


class NativeGroupNormPoolGelu(torch.autograd.Function):
    """gelu(max_pool2d(group_norm(x), 2)) of a channels_last (batch, C, H, W) tensor, H and W even."""

    @staticmethod
    def forward(ctx, x, groups, weight, bias, eps, for_backward):
        _check_norm(x, groups, weight, bias, "native GroupNorm-pool-GELU")
        batch, channels, height, width = x.shape
        if height % 2 or width % 2:
            raise ValueError(f"native GroupNorm-pool-GELU: height and width must be even, got {height} x {width}")
        pooled = (batch, channels, height // 2, width // 2)
        out = torch.empty(pooled, memory_format=torch.channels_last, **F32)
        # GELU's slope at the outputs, for the backward: only when one may run
        slope = torch.empty(pooled, memory_format=torch.channels_last, **F32) if for_backward else None
        which = torch.empty(pooled, dtype=torch.int32, device="cpu", memory_format=torch.channels_last)
        mean, rstd, w, b = _norm_buffers(ctx, x, groups, weight, bias)
        call(library().group_norm_pool_gelu_forward, _p(x, True), _p(w), _p(b), _p(out, True), _p(slope, True),
             _p(which, True, torch.int32), _p(mean), _p(rstd), batch, height, width, channels, groups, float(eps))
        ctx.save_for_backward(x, slope, which, mean, rstd, w)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, slope, which, mean, rstd, w = ctx.saved_tensors
        if slope is None:
            raise RuntimeError("native GroupNorm-pool-GELU: backward of a forward run without grad")
        _check_grad(grad_out, slope, "native GroupNorm-pool-GELU")
        batch, channels, height, width = x.shape
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        grad_x = torch.empty_like(x)
        grad_w_rows, grad_b_rows = _param_grad_rows(ctx, batch, channels)
        call(library().group_norm_pool_gelu_backward, _p(grad_out, True), _p(x, True), _p(slope, True),
             _p(which, True, torch.int32), _p(mean), _p(rstd), _p(w), _p(grad_x, True), _p(grad_w_rows),
             _p(grad_b_rows), batch, height, width, channels, ctx.groups)
        return grad_x, None, _summed(grad_w_rows), _summed(grad_b_rows), None, None


def group_norm_pool_gelu(x: torch.Tensor, groups: int, weight, bias, eps: float) -> torch.Tensor:
    for_backward = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias))
    return NativeGroupNormPoolGelu.apply(x, groups, weight, bias, eps, for_backward)
