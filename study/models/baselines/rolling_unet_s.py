"""Rolling-UNet-S (Liu et al., AAAI 2024), as ``Rolling_Unet_S`` in Jiaoyang45/Rolling-Unet.

Configuration of Table 1: widths 16, 32, 64, 128, 256 and an 8-channel last
decoder. Three conv stages (two conv3x3 -> BN -> ReLU each, max-pool), then a
tokenized stage at H/8 and a bottleneck at H/16, each a Feature Incentive
Block (conv3x3 embedding, GELU, LayerNorm) followed by one Lo2 block, and a
tokenized decoder stage at H/8; additive skips, bilinear x2 upsampling. The
Lo2 block mixes long-range context with two orthogonal "rolling" MLPs (every
channel c shifted by c pixels along rows, then columns, and the reverse pair)
beside a depthwise-separable conv. Reproduces 1,783,185 parameters and 2.102
GMACs (thop, 1x3x256x256, one class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import ConfigError
from study.models.baselines._blocks import (
    OverlapPatchEmbed,
    as_tuples,
    conv_bn_relu,
    double_conv,
    fan_out_init,
    narrowing_double_conv,
    to_map,
    to_tokens,
    upsample2x,
)
from study.models.registry import register_model


@dataclass(frozen=True)
class RollingUNetConfig:
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    head_width: int = 8  # width of the last decoder stage
    dropout: float = 0.0  # inside the Lo2 blocks at H/8
    bottleneck_dropout: float = 0.1  # inside the bottleneck Lo2 block (the release adds 0.1 there)
    in_channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        as_tuples(self, "widths")
        if len(self.widths) != 5:
            raise ConfigError(f"widths: expected 5 entries, got {self.widths!r}")


def roll_each_channel(x: torch.Tensor, dim: int, sign: int) -> torch.Tensor:
    """Roll channel c of a (B, C, H, W) map by ``sign * c`` along ``dim`` (2: rows, 3: columns).

    The same result as ``torch.roll`` per channel, done as one gather.
    """
    b, c, h, w = x.shape
    n = x.shape[dim]
    shifts = sign * torch.arange(c, device=x.device)
    source = (torch.arange(n, device=x.device)[None, :] - shifts[:, None]) % n  # (C, n)
    if dim == 2:
        index = source[None, :, :, None].expand(b, c, h, w)
    else:
        index = source[None, :, None, :].expand(b, c, h, w)
    return x.gather(dim, index)


class RollingMLP(nn.Module):
    """Roll, Linear (+ GELU), roll along the other axis, Linear: one orthogonal rolling MLP."""

    def __init__(self, dim: int, axes: tuple[tuple[int, int], tuple[int, int]], drop: float):
        super().__init__()
        self.axes = axes  # ((dim, sign) of the first roll, (dim, sign) of the second)
        self.fc_first = nn.Linear(dim, dim)
        self.fc_second = nn.Linear(dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        (dim1, sign1), (dim2, sign2) = self.axes
        x = to_tokens(roll_each_channel(to_map(tokens, h, w), dim1, sign1))
        x = self.drop(F.gelu(self.fc_first(x)))
        x = to_tokens(roll_each_channel(to_map(x, h, w), dim2, sign2))
        return self.drop(self.fc_second(x))


class Lo2Block(nn.Module):
    """Lo2: the DOR-MLP (two orthogonal rolling MLPs, fused) beside a depthwise-separable conv.

    Not residual as a whole: its output replaces its input, as in the release.
    """

    def __init__(self, dim: int, drop: float):
        super().__init__()
        # Rows forward then columns forward; columns backward then rows forward.
        self.rolling_a = RollingMLP(dim, ((2, 1), (3, 1)), drop)
        self.rolling_b = RollingMLP(dim, ((3, -1), (2, 1)), drop)
        self.fuse_norm = nn.LayerNorm(2 * dim)
        self.fuse = nn.Linear(2 * dim, dim)
        self.dwconv = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
            nn.Conv2d(dim, dim, 1),
        )
        self.dwconv_norm = nn.BatchNorm2d(dim)
        self.out = nn.Linear(2 * dim, dim)
        self.drop = nn.Dropout(drop)
        # The release's block holds a LayerNorm it never calls; it counts in the
        # parameters the table reports, so it is kept.
        self.unused_norm = nn.LayerNorm(dim)
        self.apply(fan_out_init)

    def forward(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        a = self.rolling_a(tokens, h, w) + tokens
        b = self.rolling_b(tokens, h, w) + tokens
        mlp = self.drop(self.fuse(self.fuse_norm(torch.cat([a, b], dim=2)))) + tokens
        conv = self.dwconv_norm(F.relu(self.dwconv(to_map(tokens, h, w))))
        return self.drop(self.out(torch.cat([mlp, to_tokens(conv)], dim=2)))


class RollingUNet(nn.Module):
    # Parameters (name fragments) that ``forward_logits`` never reaches, as in the release.
    unused_parameters = (".unused_norm.",)

    def __init__(self, config: RollingUNetConfig = RollingUNetConfig()):
        super().__init__()
        self.config = config
        c1, c2, c3, c4, c5 = config.widths
        self.encoder = nn.ModuleList([
            double_conv(config.in_channels, c1),
            double_conv(c1, c2),
            double_conv(c2, c3),
        ])
        # Feature Incentive Blocks: into the H/8 stage, into the bottleneck, out of it.
        self.embed = nn.ModuleList([
            OverlapPatchEmbed(c3, c4, stride=1, gelu=True),
            OverlapPatchEmbed(c4, c5, stride=1, gelu=True),
            OverlapPatchEmbed(c5, c4, stride=1, gelu=True),
        ])
        self.embed.apply(fan_out_init)
        self.block_enc = Lo2Block(c4, config.dropout)
        self.block_mid = Lo2Block(c5, config.bottleneck_dropout)
        self.block_dec = Lo2Block(c4, config.dropout)
        self.norm_enc = nn.LayerNorm(c4)
        self.norm_mid = nn.LayerNorm(c5)
        self.norm_dec = nn.LayerNorm(c4)
        self.to_conv = nn.Sequential(*conv_bn_relu(c4, c3))
        self.decoder = nn.ModuleList([
            narrowing_double_conv(c3, c2),
            narrowing_double_conv(c2, c1),
            narrowing_double_conv(c1, config.head_width),
        ])
        self.head = nn.Conv2d(config.head_width, config.num_classes, 1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        tokens, h, w = self.embed[0](x)  # H/8
        skip4 = to_map(self.norm_enc(self.block_enc(tokens, h, w)), h, w)
        tokens, h, w = self.embed[1](F.max_pool2d(skip4, 2))  # H/16
        x = to_map(self.norm_mid(self.block_mid(tokens, h, w)), h, w)
        tokens, h, w = self.embed[2](x)
        x = upsample2x(to_map(tokens, h, w), align_corners=False) + skip4  # H/8
        h, w = 2 * h, 2 * w
        x = to_map(self.norm_dec(self.block_dec(to_tokens(x), h, w)), h, w)
        x = upsample2x(self.to_conv(x), align_corners=False) + skips[2]
        x = upsample2x(self.decoder[0](x), align_corners=False) + skips[1]
        x = upsample2x(self.decoder[1](x), align_corners=False) + skips[0]
        return self.head(self.decoder[2](x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


@register_model("rolling_unet_s", config=RollingUNetConfig)
def rolling_unet_s(config: RollingUNetConfig) -> nn.Module:
    return RollingUNet(config)
