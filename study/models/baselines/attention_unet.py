"""Attention U-Net (Oktay et al., 2018), as AttU_Net in LeeJunHyun/Image_Segmentation.

Configuration of Table 1: widths 64-1024, conv3x3 -> BN -> ReLU twice per
stage, max-pool down; up = nearest x2 -> conv3x3 -> BN -> ReLU; each skip goes
through an additive attention gate (1x1 projections of gate and skip to half
the width, ReLU, 1x1 to one channel, BN, sigmoid) before concatenation.
Reproduces 34,878,573 parameters and 66.632 GMACs (thop, 1x3x256x256, one
class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from study.models.baselines._blocks import UpConv, as_tuples, check_unet_levels, conv_bn, double_conv
from study.models.registry import register_model


@dataclass(frozen=True)
class AttentionUNetConfig:
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    in_channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        as_tuples(self, "widths")
        check_unet_levels(self.widths)


class AttentionGate(nn.Module):
    """Weights the skip ``x`` by a [0, 1] map computed from it and the gate ``g``."""

    def __init__(self, gate_channels: int, skip_channels: int, inner_channels: int):
        super().__init__()
        self.gate_proj = nn.Sequential(*conv_bn(gate_channels, inner_channels, 1))
        self.skip_proj = nn.Sequential(*conv_bn(skip_channels, inner_channels, 1))
        self.relu = nn.ReLU(inplace=True)
        self.psi = nn.Sequential(*conv_bn(inner_channels, 1, 1), nn.Sigmoid())

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * self.psi(self.relu(self.gate_proj(g) + self.skip_proj(x)))


class AttentionUNet(nn.Module):
    def __init__(self, config: AttentionUNetConfig = AttentionUNetConfig()):
        super().__init__()
        self.config = config
        w = config.widths
        self.pool = nn.MaxPool2d(2, 2)
        self.encoder = nn.ModuleList([
            double_conv(config.in_channels if i == 0 else w[i - 1], w[i]) for i in range(len(w))
        ])
        # Decoder stages, deepest first: up from level i + 1 to level i.
        levels = list(reversed(range(len(w) - 1)))
        self.ups = nn.ModuleList([UpConv(w[i + 1], w[i], mode="nearest") for i in levels])
        self.gates = nn.ModuleList([AttentionGate(w[i], w[i], w[i] // 2) for i in levels])
        self.decoder = nn.ModuleList([double_conv(2 * w[i], w[i]) for i in levels])
        self.head = nn.Conv2d(w[0], config.num_classes, 1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, stage in enumerate(self.encoder):
            if i > 0:
                skips.append(x)
                x = self.pool(x)
            x = stage(x)
        for up, gate, stage, skip in zip(self.ups, self.gates, self.decoder, reversed(skips)):
            d = up(x)
            x = stage(torch.cat([gate(d, skip), d], 1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


@register_model("attention_unet", config=AttentionUNetConfig)
def attention_unet(config: AttentionUNetConfig) -> nn.Module:
    return AttentionUNet(config)
