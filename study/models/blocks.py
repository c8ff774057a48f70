"""Building blocks of UltraLBM-UNet: DwConv, the four-branch LMBP/GLMBP block,
and the plain conv block.

The four-branch block covers both of the paper's modules: GLMBP and LMBP
differ only in how their four channel chunks are routed (``routing``), so every
Table 3/4 variant is a routing, not a new class.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from study.models.mamba import Mamba

# Branch kinds a chunk can be routed to.
MAMBA_BI = "mamba_bi"  # M(x) + flip(M(flip(x))), one Mamba for both directions
MAMBA_FWD = "mamba_fwd"  # M(x): causal, forward only
MAMBA_BI_UNSHARED = "mamba_bi_unshared"  # M_f(x) + flip(M_b(flip(x))), two Mambas
ATTENTION = "attention"  # single-head non-causal self-attention over all pixels
DWCONV = "dwconv"  # depthwise-separable conv on the chunk reshaped to 2-D
IDENTITY = "identity"
BRANCH_KINDS = (MAMBA_BI, MAMBA_FWD, MAMBA_BI_UNSHARED, ATTENTION, DWCONV, IDENTITY)
# Which axis of a (batch, tokens, channels) chunk the backward direction flips.
FLIP_AXES = {"sequence": 1, "channel": 2}
# How a Mamba's depthwise Conv1d starts: "harness" treats it like every conv (std from the
# fan-out per group, zero bias); "release" as the authors' _init_weights does (std from
# kernel x out_channels without the groups divisor, PyTorch's default bias).
CONV1D_INITS = ("harness", "release")
GLOBAL_KINDS = (MAMBA_BI, MAMBA_FWD, MAMBA_BI_UNSHARED, ATTENTION)


class DwConv(nn.Sequential):
    """Depthwise k x k (no bias) -> BN -> GELU -> pointwise 1x1 (no bias) -> BN -> GELU."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__(
            nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False),
            nn.BatchNorm2d(channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.GELU(),
        )


class SelfAttention(nn.Module):
    """Single-head, non-causal self-attention over a (batch, length, dim) sequence."""

    def __init__(self, dim: int):
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x))
        return self.out(y)


class MultiBranchBlock(nn.Module):
    """LN -> four channel chunks through their routed branches -> concat -> same LN -> Linear.

    Each branch adds ``s * x_chunk`` (one learnable scalar ``s`` per block,
    shared by the four branches; the identity branch is ``x + s * x``).
    Each kind of global module is one instance per block, shared by every
    chunk routed to it (the paper's model shares one Mamba between its two
    global chunks and both directions); every DwConv chunk has its own weights.
    """

    # True: each shared global module runs once on all its chunks and both directions
    # (the fast path); False: once per chunk and direction, chunk by chunk (the plain
    # path, the oracle the batched one is tested against).
    batch_branches = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, routing: tuple[str, ...],
                 flip: str = "sequence"):
        super().__init__()
        chunk = in_channels // 4
        self.routing = tuple(routing)
        # The backward direction of a bidirectional Mamba: the paper flips the sequence of
        # tokens (Sec. 3.2.1, Eq. 3); the authors' release flips a chunk's channels instead
        # (paper/differences.toml, "bidirectional-flip-axis").
        if flip not in FLIP_AXES:
            raise ValueError(f"flip {flip!r}; expected one of {', '.join(FLIP_AXES)}")
        self.flip_dim = FLIP_AXES[flip]
        self.norm = nn.LayerNorm(in_channels)
        self.proj = nn.Linear(in_channels, out_channels)
        self.scale = nn.Parameter(torch.ones(1))
        kinds = set(self.routing)
        if kinds & {MAMBA_BI, MAMBA_FWD, MAMBA_BI_UNSHARED}:
            self.mamba = Mamba(chunk)
        if MAMBA_BI_UNSHARED in kinds:
            self.mamba_backward = Mamba(chunk)
        if ATTENTION in kinds:
            self.attention = SelfAttention(chunk)
        self.dwconvs = nn.ModuleDict(
            {str(i): DwConv(chunk, kernel_size) for i, kind in enumerate(self.routing) if kind == DWCONV}
        )

    def _global_each(self, chunks: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """One call per chunk and direction, chunk by chunk (the release calls its Mamba in this order)."""
        out: dict[int, torch.Tensor] = {}
        f = self.flip_dim
        for i, kind in enumerate(self.routing):
            x = chunks[i]
            if kind == MAMBA_BI:
                out[i] = self.mamba(x) + self.mamba(x.flip(f)).flip(f)
            elif kind == MAMBA_FWD:
                out[i] = self.mamba(x)
            elif kind == MAMBA_BI_UNSHARED:
                out[i] = self.mamba(x) + self.mamba_backward(x.flip(f)).flip(f)
            elif kind == ATTENTION:
                out[i] = self.attention(x)
        return out

    def _global(self, chunks: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Run each shared global module once on all chunks routed to it, both directions batched."""
        if not self.batch_branches:
            return self._global_each(chunks)
        out: dict[int, torch.Tensor] = {}
        f = self.flip_dim
        by_kind: dict[str, list[int]] = {}
        for i, kind in enumerate(self.routing):
            if kind in GLOBAL_KINDS:
                by_kind.setdefault(kind, []).append(i)
        for kind, slots in by_kind.items():
            xs = [chunks[i] for i in slots]
            n = len(xs)
            if kind == MAMBA_BI:
                ys = self.mamba(torch.cat(xs + [x.flip(f) for x in xs])).split(xs[0].shape[0])
                ys = [ys[j] + ys[n + j].flip(f) for j in range(n)]
            elif kind == MAMBA_FWD:
                ys = self.mamba(torch.cat(xs)).split(xs[0].shape[0])
            elif kind == MAMBA_BI_UNSHARED:
                fwd = self.mamba(torch.cat(xs)).split(xs[0].shape[0])
                bwd = self.mamba_backward(torch.cat([x.flip(f) for x in xs])).split(xs[0].shape[0])
                ys = [a + b.flip(f) for a, b in zip(fwd, bwd)]
            else:  # ATTENTION
                ys = self.attention(torch.cat(xs)).split(xs[0].shape[0])
            out.update(zip(slots, ys))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        seq = self.norm(x.flatten(2).transpose(1, 2))  # (B, N, C)
        chunks = dict(enumerate(seq.chunk(4, dim=-1)))
        mixed = self._global(chunks)
        outs = []
        for i, kind in enumerate(self.routing):
            xi = chunks[i]
            if kind == DWCONV:
                grid = xi.transpose(1, 2).reshape(b, -1, h, w)
                mixed[i] = self.dwconvs[str(i)](grid).flatten(2).transpose(1, 2)
            elif kind == IDENTITY:
                mixed[i] = xi
            outs.append(mixed[i] + self.scale * xi)
        y = self.proj(self.norm(torch.cat(outs, dim=-1)))
        return y.transpose(1, 2).reshape(b, -1, h, w)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """The plain stage block of encoder I-III and decoder IV-V (and Table 2/4's conv stages)."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


def init_weights(module: nn.Module, conv1d: str = "harness") -> None:
    """The release's init: truncated normal for Linear, fan-out normal for 2-D convs.

    Applied model-wide, so it also overrides the Mamba's default linear init,
    as the release does. The Mamba's depthwise Conv1d follows ``conv1d`` (see
    ``CONV1D_INITS``): the release computes its fan-out without the groups
    divisor and keeps PyTorch's default bias.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv1d) and conv1d == "release":
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / (module.kernel_size[0] * module.out_channels)))
    elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
        fan_out = math.prod(module.kernel_size) * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
