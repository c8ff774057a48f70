"""The selective scan of Mamba (S6) in plain PyTorch.

The recurrence, per batch b, channel d and state n:

    h[t] = exp(delta[t] * A) * h[t-1] + delta[t] * B[t] * u[t]
    y[t] = <C[t], h[t]> + D * u[t]

``selective_scan`` evaluates the linear recurrence h[t] = a[t] h[t-1] + b[t]
as a blocked parallel (Kogge-Stone) scan: inside blocks of ``block`` steps a
log-depth doubling scan, across blocks the same function recursively. Every
operation is a whole-tensor torch op. The backward is analytic (a custom
autograd Function): the gradient of a linear recurrence is the same recurrence
run in reverse, so it is one more blocked scan, with no Python iteration per
time step (a per-step reference took minutes for one backward at L = 4096 on
2 cores) and only the states h kept from the forward. Only products of decays in (0, 1] are formed, never their inverses, so it is
as stable as the sequential recurrence.

``selective_scan_reference`` is the plain sequential loop, kept as the oracle
for the parity tests.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def _doubling_scan_(a: torch.Tensor, b: torch.Tensor, reverse: bool) -> None:
    """In place along the last dim: b becomes the scan of h[t] = a[t] h[t-1] + b[t]
    (``reverse``: h[t] = a[t] h[t+1] + b[t]) from a zero state, and a the running
    product of the coefficients. Log-depth: step k folds in the element k away.
    """
    length = a.shape[-1]
    k = 1
    while k < length:
        if reverse:
            b[..., :-k] += a[..., :-k] * b[..., k:]
            a[..., :-k] *= a[..., k:].clone()
        else:
            b[..., k:] += a[..., k:] * b[..., :-k]
            a[..., k:] *= a[..., :-k].clone()
        k *= 2


def _scan(a: torch.Tensor, b: torch.Tensor, block: int, reverse: bool = False) -> torch.Tensor:
    """Blocked scan: doubling inside blocks, the same function across block totals."""
    a, b = a.clone(), b.clone()
    length = a.shape[-1]
    if length <= block:
        _doubling_scan_(a, b, reverse)
        return b
    n_blocks = -(-length // block)
    pad = n_blocks * block - length
    if pad:  # padding with a = 1, b = 0 leaves the recurrence unchanged
        where = (pad, 0) if reverse else (0, pad)
        a = F.pad(a, where, value=1.0)
        b = F.pad(b, where, value=0.0)
    a = a.reshape(*a.shape[:-1], n_blocks, block)
    b = b.reshape(*b.shape[:-1], n_blocks, block)
    _doubling_scan_(a, b, reverse)
    # The state entering each block is the scan of the block totals before it.
    edge = 0 if reverse else -1
    carry = _scan(a[..., edge], b[..., edge], block, reverse)
    if reverse:
        carry_in = F.pad(carry[..., 1:], (0, 1), value=0.0)
    else:
        carry_in = F.pad(carry[..., :-1], (1, 0), value=0.0)
    b += a * carry_in.unsqueeze(-1)
    h = b.reshape(*b.shape[:-2], n_blocks * block)
    if pad:
        h = h[..., pad:] if reverse else h[..., :length]
    return h


def linear_scan(a: torch.Tensor, b: torch.Tensor, block: int = 16) -> torch.Tensor:
    """h[t] = a[t] * h[t-1] + b[t] along the last dim, from zero (no autograd)."""
    return _scan(a, b, block)


@contextlib.contextmanager
def _flush_denormals():
    """Products of many decays underflow into subnormal floats, which x86 CPUs
    process up to ~100x slower (a trained model's inference went from 25 ms to
    1.9 s). Values below ~1e-38 are zero for this purpose: flush them, here only."""
    # torch has no getter for this mode: restore the default (off) afterwards.
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


class _SelectiveScanCore(torch.autograd.Function):
    """y[b,d,t] = sum_n C[b,n,t] h[b,d,n,t] with the analytic backward.

    The backward of a linear recurrence is the same recurrence run in reverse,
    so both directions are one blocked scan: no graph over the scan's levels,
    and only h is kept for the backward.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, block):
        with _flush_denormals():
            decay = torch.exp(delta.unsqueeze(2) * A[None, :, :, None])  # (b, d, n, L)
            drive = (delta * u).unsqueeze(2) * B.unsqueeze(1)
            h = _scan(decay, drive, block)
            y = torch.einsum("bdnl,bnl->bdl", h, C)
        ctx.save_for_backward(u, delta, A, B, C, h)
        ctx.block = block
        return y

    @staticmethod
    def backward(ctx, grad_y):
        u, delta, A, B, C, h = ctx.saved_tensors
        with _flush_denormals():
            decay = torch.exp(delta.unsqueeze(2) * A[None, :, :, None])
            grad_C = torch.einsum("bdnl,bdl->bnl", h, grad_y)
            grad_h_direct = grad_y.unsqueeze(2) * C.unsqueeze(1)
            # g[t] = dy/dh[t] direct + decay[t+1] g[t+1]
            next_decay = F.pad(decay[..., 1:], (0, 1), value=0.0)
            grad_drive = _scan(next_decay, grad_h_direct, ctx.block, reverse=True)
            h_prev = F.pad(h[..., :-1], (1, 0), value=0.0)
            grad_log_decay = grad_drive * h_prev * decay  # d/d(delta*A)
            grad_A = torch.einsum("bdnl,bdl->dn", grad_log_decay, delta)
            grad_drive_B = torch.einsum("bdnl,bnl->bdl", grad_drive, B)
            grad_delta = torch.einsum("bdnl,dn->bdl", grad_log_decay, A) + grad_drive_B * u
            grad_u = grad_drive_B * delta
            grad_B = torch.einsum("bdnl,bdl->bnl", grad_drive, delta * u)
        return grad_u, grad_delta, grad_A, grad_B, grad_C, None


def _prepare_delta(delta, delta_bias, delta_softplus):
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    return F.softplus(delta) if delta_softplus else delta


def _finish(y, u, D, z):
    if D is not None:
        y = y + u * D[..., None]
    if z is not None:
        y = y * F.silu(z)
    return y


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    block: int = 16,
) -> torch.Tensor:
    """Same signature and layout as ``mamba_ssm``'s ``selective_scan_fn``.

    u, delta, z: (batch, d, L); A: (d, state); B, C: (batch, state, L);
    D, delta_bias: (d,). Returns y: (batch, d, L).
    """
    delta = _prepare_delta(delta, delta_bias, delta_softplus)
    y = _SelectiveScanCore.apply(u, delta, A, B, C, block)
    return _finish(y, u, D, z)


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """One Python step per time step: slow, obviously right; the test oracle."""
    delta = _prepare_delta(delta, delta_bias, delta_softplus)
    decay = torch.exp(delta.unsqueeze(2) * A[None, :, :, None])
    drive = (delta * u).unsqueeze(2) * B.unsqueeze(1)
    h = torch.zeros_like(drive[..., 0])
    ys = []
    for t in range(u.shape[-1]):
        h = decay[..., t] * h + drive[..., t]
        ys.append((h * C[:, None, :, t]).sum(dim=2))
    y = torch.stack(ys, dim=-1)
    return _finish(y, u, D, z)
