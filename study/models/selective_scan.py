"""The selective scan of Mamba (S6) in plain PyTorch.

The recurrence, per batch b, channel d and state n:

    h[t] = exp(delta[t] * A) * h[t-1] + delta[t] * B[t] * u[t]
    y[t] = <C[t], h[t]> + D * u[t]

The states are laid out time-major, (L, batch, d, n), so each time step is
one contiguous slab and the linear recurrence h[t] = a[t] h[t-1] + b[t] is
one in-place ``addcmul_`` per step over that slab. That does O(L) work, each
element read once, where a log-depth doubling scan does O(L log L) passes
over the whole tensor; for this model's sequences (64 to a few thousand
tokens) a step costs a few microseconds, and a forward plus backward scan at
L = 256 takes about a millisecond of Python. Longer sequences are cut into
chunks of ``block`` steps: the same loop runs inside all chunks at once,
the chunk totals are scanned the same way, and one multiply-add carries each
chunk's entering state in, so the number of Python steps grows as 2 sqrt(L).

The backward is analytic (a custom autograd Function): the gradient of a
linear recurrence is the same recurrence run in reverse, so it is one more
scan, and only the states h are kept from the forward. Only products of
decays in (0, 1] are formed, never their inverses, so it is as stable as the
sequential recurrence.

``selective_scan_reference`` is the plain sequential loop over the
mathematical definition, kept as the oracle for the parity tests.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

# Up to this many steps the recurrence runs as one loop over time; beyond it,
# in chunks (fewer Python steps, two more passes over the states).
DIRECT_MAX = 1024
# ...and when a step's slab has at least this many elements: below it (single-image
# inference) each step costs its Python overhead, and chunks need fewer steps.
DIRECT_MIN_SLAB = 8192
# Decays kept from the forward for the backward up to this many elements (64 MiB of float32).
KEEP_DECAY_MAX = 1 << 24


def _recurrence_(a: torch.Tensor, b: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """In place along dim 0: b[t] += a[t] * b[t-1] (``reverse``: b[t] += a[t] * b[t+1])."""
    steps = range(b.shape[0] - 2, -1, -1) if reverse else range(1, b.shape[0])
    before = 1 if reverse else -1
    for t in steps:
        b[t].addcmul_(a[t], b[t + before])
    return b


def _scan_(a: torch.Tensor, b: torch.Tensor, block: int | None = None, reverse: bool = False) -> torch.Tensor:
    """b becomes the scan of h[t] = a[t] h[t-1] + b[t] along dim 0 from a zero state
    (``reverse``: h[t] = a[t] h[t+1] + b[t], where ``a`` may stop one step short
    since a[L-1] multiplies nothing). ``a`` is left untouched."""
    length = b.shape[0]
    if block is None:
        if length <= DIRECT_MAX and b[0].numel() >= DIRECT_MIN_SLAB:
            return _recurrence_(a, b, reverse)
        block = max(4, math.isqrt(length - 1) + 1)
    if length <= block:
        return _recurrence_(a, b, reverse)
    if reverse:  # the reverse recurrence is the forward one on flipped time
        if a.shape[0] < length:
            a = torch.cat([a, a.new_zeros(length - a.shape[0], *a.shape[1:])])
        return b.copy_(_scan_(a.flip(0), b.flip(0), block).flip(0))
    n_chunks = -(-length // block)
    pad = n_chunks * block - length
    rest = b.shape[1:]
    if pad:  # a = 1, b = 0 after the end leaves the recurrence unchanged
        a = torch.cat([a, a.new_ones(pad, *rest)])
        chunks_b = torch.cat([b, b.new_zeros(pad, *rest)])
    else:
        chunks_b = b
    ca = a.reshape(n_chunks, block, *rest)
    cb = chunks_b.view(n_chunks, block, *rest)
    for t in range(1, block):  # inside every chunk at once
        cb[:, t].addcmul_(ca[:, t], cb[:, t - 1])
    # decay from each chunk's start to t, and the state entering each chunk
    running = torch.cumprod(ca, dim=1)
    carry = _scan_(running[:, -1], cb[:, -1].clone(), block)
    cb[1:].addcmul_(running[1:], carry[:-1].unsqueeze(1))
    if pad:
        b.copy_(chunks_b[:length])
    return b


def linear_scan(a: torch.Tensor, b: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """h[t] = a[t] * h[t-1] + b[t] along the last dim, from zero (no autograd)."""
    h = b.movedim(-1, 0).clone()
    return _scan_(a.movedim(-1, 0), h, block).movedim(0, -1)


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


def _decay(delta: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    return (delta.unsqueeze(-1) * A).exp_()  # (L, b, d, n)


class _SelectiveScanCore(torch.autograd.Function):
    """Time-major core: u, delta (L, b, d); A (d, n); B, C (L, b, n) -> y (L, b, d),
    y[t] = sum_n C[t, n] h[t, n], with the analytic backward."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, block):
        with _flush_denormals():
            decay = _decay(delta, A)
            h = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # the drive, scanned in place into h
            _scan_(decay, h, block)
            y = torch.matmul(h, C.unsqueeze(-1)).squeeze(-1)
        # Keeping the decays saves an exp over the states in the backward; past
        # KEEP_DECAY_MAX elements they are recomputed instead, to bound the memory.
        keep = decay.numel() <= KEEP_DECAY_MAX
        ctx.save_for_backward(u, delta, A, B, C, h, decay if keep else None)
        ctx.block = block
        return y

    @staticmethod
    def backward(ctx, grad_y):
        # Contractions over the state as batched matmuls and (mul, sum) pairs: measured
        # several times faster here than einsum's plans for these small inner dims.
        u, delta, A, B, C, h, decay = ctx.saved_tensors
        grad_y = grad_y.contiguous()  # an expanded gradient sends matmul to a per-batch loop
        with _flush_denormals():
            if decay is None:
                decay = _decay(delta, A)
            grad_C = torch.matmul(grad_y.unsqueeze(-2), h).squeeze(-2)
            # g[t] = dy/dh[t] direct + decay[t+1] g[t+1]: the reverse recurrence
            grad_drive = grad_y.unsqueeze(-1) * C.unsqueeze(2)
            _scan_(decay[1:], grad_drive, ctx.block, reverse=True)
            # d/d(delta * A) at t = g[t] * h[t-1] * decay[t]; zero at t = 0
            grad_log_decay = grad_drive[1:] * h[:-1]
            grad_log_decay *= decay[1:]
            del decay
            grad_A = (grad_log_decay * delta[1:].unsqueeze(-1)).sum((0, 1))
            grad_drive_B = torch.matmul(grad_drive, B.unsqueeze(-1)).squeeze(-1)
            grad_delta = grad_drive_B * u
            grad_delta[1:] += (grad_log_decay * A).sum(-1)
            grad_u = grad_drive_B * delta
            grad_B = torch.matmul((delta * u).unsqueeze(-2), grad_drive).squeeze(-2)
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


def _time_major(x: torch.Tensor) -> torch.Tensor:
    return x.permute(2, 0, 1).contiguous()  # (batch, channels, L) -> (L, batch, channels)


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
    block: int | None = None,
) -> torch.Tensor:
    """Same signature and layout as ``mamba_ssm``'s ``selective_scan_fn``.

    u, delta, z: (batch, d, L); A: (d, state); B, C: (batch, state, L);
    D, delta_bias: (d,). Returns y: (batch, d, L). ``block``: chunk length
    (default: one loop up to ``DIRECT_MAX`` steps, about sqrt(L) beyond).
    """
    delta = _prepare_delta(delta, delta_bias, delta_softplus)
    y = _SelectiveScanCore.apply(_time_major(u), _time_major(delta), A, _time_major(B), _time_major(C), block)
    return _finish(y.permute(1, 2, 0), u, D, z)


def native_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """``selective_scan`` on the C kernel (``study.kernels``); inputs that are not all
    float32 CPU tensors (under autocast, say) take the PyTorch scan instead."""
    from study.kernels.ops import NativeScan, scan_applies

    if not scan_applies(u, delta, A, B, C):
        return selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    delta = _prepare_delta(delta, delta_bias, delta_softplus)
    y = NativeScan.apply(u, delta, A, B.transpose(1, 2), C.transpose(1, 2))
    return _finish(y, u, D, z)


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """One Python step per time step on the definition: slow, obviously right; the test oracle."""
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
