"""U-KAN (Li et al., AAAI 2025), as ``UKAN`` in CUHK-AIM-Group/U-KAN (Seg_UKAN/archs.py).

Configuration of Table 1: embed_dims 256, 320, 512 (the release's default).
Three conv stages (two conv3x3 -> BN -> ReLU each; widths 32, 64, 256;
max-pool and ReLU after each), then two tokenized KAN stages (a strided 3x3
patch embedding + LayerNorm, one KAN block, LayerNorm) at H/16 (320) and H/32
(512); the decoder mirrors it with KAN blocks at H/16 and H/8, then three conv
stages; every decoder stage upsamples bilinearly x2 and adds its skip.

A KAN block is x + KANLayer(LayerNorm(x)); the KAN layer is three KANLinear
layers (grid 5, cubic B-splines on [-1, 1], SiLU base branch, as
efficient-kan's ``KANLinear`` that the release imports), each followed by a
depthwise 3x3 -> BN -> ReLU. KANLinear is written here in plain PyTorch:
base branch ``silu(x) @ W_base.T`` plus the spline branch, the B-spline bases
of every input feature (Cox-de Boor recursion on the knot grid) times the
scaled spline coefficients.

Reproduces 25,359,265 parameters and 6.889 GMACs (thop, 1x3x256x256, one
class). thop does not see the KAN compute: KANLinear runs on ``F.linear``
and tensor arithmetic, not on modules thop counts, so the 6.889 G (and the
table's figure) leave out the KAN layers' matrix products.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import ConfigError
from study.models.baselines._blocks import (
    DepthwiseBNReLU,
    OverlapPatchEmbed,
    as_tuples,
    double_conv,
    fan_out_init,
    narrowing_double_conv,
    to_map,
    to_tokens,
    upsample2x,
)
from study.models.registry import register_model


@dataclass(frozen=True)
class UKANConfig:
    embed_dims: tuple[int, ...] = (256, 320, 512)
    no_kan: bool = False  # plain Linear layers instead of KANLinear (the release's ablation switch)
    grid_size: int = 5
    spline_order: int = 3
    in_channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        as_tuples(self, "embed_dims")
        if len(self.embed_dims) != 3:
            raise ConfigError(f"embed_dims: expected 3 entries, got {self.embed_dims!r}")
        if self.embed_dims[0] % 8:
            raise ConfigError(
                f"embed_dims: the first must be divisible by 8 (conv widths d/8, d/4), got {self.embed_dims!r}"
            )
        if self.grid_size < 1 or self.spline_order < 0:
            raise ConfigError(
                f"grid_size / spline_order: expected >= 1 / >= 0, got {self.grid_size} / {self.spline_order}"
            )


class KANLinear(nn.Module):
    """A Kolmogorov-Arnold layer: out_j = sum_i [w_ji silu(x_i) + s_ji spline_ji(x_i)].

    Each spline_ji is a B-spline of order ``spline_order`` on a uniform knot
    grid over ``grid_range`` (``grid_size`` intervals, extended by
    ``spline_order`` knots each side), with its own coefficients
    (``spline_weight``) and scale (``spline_scaler``). Parameters: base_weight
    (out, in), spline_weight (out, in, grid_size + spline_order),
    spline_scaler (out, in); no bias.
    """

    def __init__(self, in_features: int, out_features: int, grid_size: int = 5, spline_order: int = 3,
                 scale_noise: float = 0.1, scale_base: float = 1.0, scale_spline: float = 1.0,
                 grid_range: tuple[float, float] = (-1.0, 1.0)):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.spline_order = spline_order
        step = (grid_range[1] - grid_range[0]) / grid_size
        knots = grid_range[0] + step * torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float32)
        # One knot row per input feature, as a buffer, so that a grid update could move them per feature.
        self.register_buffer("grid", knots.expand(in_features, -1).contiguous())
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, grid_size + spline_order))
        self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features))
        self._reset_parameters(grid_size, scale_noise, scale_base, scale_spline)

    def _reset_parameters(self, grid_size: int, scale_noise: float, scale_base: float, scale_spline: float) -> None:
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5) * scale_base)
        nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5) * scale_spline)
        with torch.no_grad():
            # Splines start as the minimum-norm least-squares fit of small noise at
            # the grid's inner knots. Every feature has the same grid at this point,
            # so one pseudo-inverse of the bases serves them all.
            k = self.spline_order
            points = self.grid[:1, k:-k].T  # (grid_size + 1, 1)
            noise = (torch.rand(grid_size + 1, self.in_features, self.out_features) - 0.5) * scale_noise / grid_size
            bases = self.b_splines(points)[:, 0]  # (grid_size + 1, coeffs)
            coeffs = torch.einsum("cp,pio->oic", torch.linalg.pinv(bases), noise)
            self.spline_weight.copy_(coeffs)

    def b_splines(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in) -> (N, in, grid_size + spline_order): every basis function at every input."""
        t = self.grid  # (in, n_knots)
        x = x.unsqueeze(-1)
        bases = ((x >= t[:, :-1]) & (x < t[:, 1:])).to(x.dtype)  # order 0: the knot interval x lies in
        for order in range(1, self.spline_order + 1):
            # Cox-de Boor: B_{j,p} = (x - t_j) / (t_{j+p} - t_j) * B_{j,p-1}
            #                      + (t_{j+p+1} - x) / (t_{j+p+1} - t_{j+1}) * B_{j+1,p-1}
            rising = (x - t[:, :-(order + 1)]) / (t[:, order:-1] - t[:, :-(order + 1)])
            falling = (t[:, order + 1:] - x) / (t[:, order + 1:] - t[:, 1:-order])
            bases = rising * bases[..., :-1] + falling * bases[..., 1:]
        return bases

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, self.in_features)
        base = F.linear(F.silu(x), self.base_weight)
        scaled = self.spline_weight * self.spline_scaler.unsqueeze(-1)
        spline = F.linear(self.b_splines(x).flatten(1), scaled.flatten(1))
        return (base + spline).reshape(*shape[:-1], self.out_features)


class KANBlock(nn.Module):
    """x + (KANLinear -> depthwise 3x3 -> BN -> ReLU) x 3 applied to LayerNorm(x)."""

    def __init__(self, dim: int, config: UKANConfig):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        if config.no_kan:
            self.fcs = nn.ModuleList([nn.Linear(dim, dim) for _ in range(3)])
        else:
            self.fcs = nn.ModuleList([
                KANLinear(dim, dim, grid_size=config.grid_size, spline_order=config.spline_order) for _ in range(3)
            ])
        self.dwconvs = nn.ModuleList([DepthwiseBNReLU(dim) for _ in range(3)])
        # The release's init touches the norm, the depthwise convs and (no_kan) the Linears, not KANLinear.
        self.apply(fan_out_init)

    def forward(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        y = self.norm(tokens)
        for fc, dwconv in zip(self.fcs, self.dwconvs):
            y = dwconv(fc(y), h, w)
        return tokens + y


class UKAN(nn.Module):
    def __init__(self, config: UKANConfig = UKANConfig()):
        super().__init__()
        self.config = config
        d0, d1, d2 = config.embed_dims
        self.encoder = nn.ModuleList([
            double_conv(config.in_channels, d0 // 8),
            double_conv(d0 // 8, d0 // 4),
            double_conv(d0 // 4, d0),
        ])
        self.patch_embed = nn.ModuleList([
            OverlapPatchEmbed(d0, d1, stride=2, gelu=False),
            OverlapPatchEmbed(d1, d2, stride=2, gelu=False),
        ])
        self.patch_embed.apply(fan_out_init)
        self.enc_blocks = nn.ModuleList([KANBlock(d1, config), KANBlock(d2, config)])
        self.enc_norms = nn.ModuleList([nn.LayerNorm(d1), nn.LayerNorm(d2)])
        self.dec_blocks = nn.ModuleList([KANBlock(d1, config), KANBlock(d0, config)])
        self.dec_norms = nn.ModuleList([nn.LayerNorm(d1), nn.LayerNorm(d0)])
        self.decoder = nn.ModuleList([
            narrowing_double_conv(d2, d1),
            narrowing_double_conv(d1, d0),
            narrowing_double_conv(d0, d0 // 4),
            narrowing_double_conv(d0 // 4, d0 // 8),
            narrowing_double_conv(d0 // 8, d0 // 8),
        ])
        self.head = nn.Conv2d(d0 // 8, config.num_classes, 1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.encoder:
            x = F.relu(F.max_pool2d(stage(x), 2))
            skips.append(x)  # H/2, H/4, H/8
        for embed, block, norm in zip(self.patch_embed, self.enc_blocks, self.enc_norms):
            tokens, h, w = embed(x)
            x = to_map(norm(block(tokens, h, w)), h, w)
            skips.append(x)  # H/16, then the H/32 bottleneck
        x = skips.pop()
        # Two tokenized decoder stages (H/16, H/8), then three conv stages (H/4, H/2, H).
        for i, stage in enumerate(self.decoder):
            x = F.relu(upsample2x(stage(x), align_corners=False))
            if skips:
                x = x + skips.pop()
            if i < 2:
                h, w = x.shape[2:]
                x = to_map(self.dec_norms[i](self.dec_blocks[i](to_tokens(x), h, w)), h, w)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


@register_model("u_kan", config=UKANConfig)
def u_kan(config: UKANConfig) -> nn.Module:
    return UKAN(config)
