"""VMamba's 2-D selective scan (SS2D) and its residual VSS block, for MambaU-Lite.

SS2D, on a (B, H, W, C) map: a bias-free Linear to twice ``expand * C``
channels, split into x and a gate z; x through a depthwise 3x3 conv (with
bias) and SiLU; then x is read as four sequences of H*W tokens -- row-major,
column-major, and both reversed -- and each runs through its own S6 scan
(per direction: its own x projection to dt (rank ceil(C/16)) / B / C (d_state
each), dt projection, A and D); the four outputs are put back in row-major
order and summed, layer-normed, multiplied by SiLU(z) and projected back to C
by a bias-free Linear.

On a CPU the scan is the project's own (its C kernel, or ``selective_scan``),
one call per direction (each direction has its own A, which those take per
channel, not per batch entry). On a CUDA tensor with mamba-ssm installed it is one call of
mamba-ssm's ``selective_scan_fn`` over all four directions, B and C grouped by
direction, as VMamba calls it. The choice follows ``study.models.mamba``'s
backend switch (``STUDY_MAMBA_BACKEND`` / ``set_backend``).

The per-direction projections and the scan are tensor arithmetic, not
modules: thop sees the Linear / conv / LayerNorm modules only, as it does in
the release.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from study.models import mamba as mamba_layer
from study.models.selective_scan import native_selective_scan, selective_scan

DIRECTIONS = 4


def kernel_scan(x: torch.Tensor):
    """mamba-ssm's ``selective_scan_fn`` when the backend switch allows it for ``x``, else None."""
    fn = mamba_layer.scan_function(x)
    return None if fn in (selective_scan, native_selective_scan) else fn


def to_sequences(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, 4, D, H*W): row-major, column-major, then the two reversed."""
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    forward = torch.stack([rows, cols], dim=1)
    return torch.cat([forward, forward.flip(-1)], dim=1)


def from_sequences(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of ``to_sequences``, summing the four: (B, 4, D, H*W) -> (B, D, H*W) row-major."""
    backward = y[:, 2:].flip(-1)
    rows = y[:, 0] + backward[:, 0]
    cols = y[:, 1] + backward[:, 1]  # indexed (w, h)
    b, d, _ = cols.shape
    return rows + cols.view(b, d, width, height).transpose(2, 3).reshape(b, d, height * width)


class SS2D(nn.Module):
    """Four-direction selective scan over a (B, H, W, C) map -> same shape."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 3, expand: int = 2,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        d_inner = expand * d_model
        self.d_inner, self.d_state = d_inner, d_state
        self.dt_rank = math.ceil(d_model / 16)
        k, rank = DIRECTIONS, self.dt_rank

        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner)
        self.x_proj_weight = nn.Parameter(torch.empty(k, rank + 2 * d_state, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
        # S4D-real A = -(1..d_state) for every channel of every direction; D = 1.
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(a))
        self.Ds = nn.Parameter(torch.ones(k * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

        with torch.no_grad():
            # x projections as nn.Linear would start them; dt as Mamba does (log-uniform step sizes).
            bound = d_inner**-0.5
            self.x_proj_weight.uniform_(-bound, bound)
            self.dt_projs_weight.uniform_(-(rank**-0.5), rank**-0.5)
            dt = torch.exp(
                torch.rand(k, d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            ).clamp(min=dt_init_floor)
            self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def scan(self, xs: torch.Tensor, dts: torch.Tensor, bs: torch.Tensor, cs: torch.Tensor) -> torch.Tensor:
        """xs, dts: (B, 4, D, L); bs, cs: (B, 4, N, L) -> (B, 4, D, L), in float32."""
        b, k, d, length = xs.shape
        A = -torch.exp(self.A_logs.float())  # (4 * D, N)
        D, bias = self.Ds.float(), self.dt_projs_bias.float()
        kernel = kernel_scan(xs)
        if kernel is not None:
            # One call, B and C grouped by direction (channel group i of u uses bs[:, i]).
            u = xs.float().reshape(b, k * d, length).contiguous()
            delta = dts.float().reshape(b, k * d, length).contiguous()
            y = kernel(u, delta, A, bs.float().contiguous(), cs.float().contiguous(), D, z=None,
                       delta_bias=bias.reshape(-1), delta_softplus=True)
            return y.view(b, k, d, length)
        A, D = A.view(k, d, -1), D.view(k, d)
        scan = mamba_layer.scan_function(xs.float())  # the C scan or the PyTorch one, on the float32 inputs
        return torch.stack([
            scan(xs[:, i].float(), dts[:, i].float(), A[i], bs[:, i].float(), cs[:, i].float(), D[i],
                           delta_bias=bias[i], delta_softplus=True)
            for i in range(k)
        ], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, height, width, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))
        xs = to_sequences(x)  # (B, 4, D, L)
        projected = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, bs, cs = projected.split([self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        y = from_sequences(self.scan(xs, dts, bs, cs), height, width)  # (B, D, L)
        y = y.transpose(1, 2).reshape(x.shape[0], height, width, -1)
        y = self.out_norm(y) * F.silu(z)
        return self.out_proj(y)


class VSSBlock(nn.Module):
    """x + SS2D(LayerNorm(x)) on a (B, H, W, C) map (VMamba's block, no drop path)."""

    def __init__(self, dim: int, d_state: int = 16):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.ss2d = SS2D(dim, d_state=d_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ss2d(self.norm(x))
