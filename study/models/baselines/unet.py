"""U-Net (Ronneberger et al., 2015), as in jvanvugt/pytorch-unet.

Configuration of Table 1: depth 5, first width 2**5 = 32 (channels 32-512),
same padding, batch norm, transposed-conv upsampling ('upconv'). Each stage is
conv3x3 -> ReLU -> BN twice; downsampling is 2x2 average pooling. Reproduces
7,765,985 parameters and 13.746 GMACs (thop, 1x3x256x256, one class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import ConfigError
from study.models.baselines._blocks import double_conv
from study.models.registry import register_model

UP_MODES = ("upconv", "upsample")


@dataclass(frozen=True)
class UNetConfig:
    depth: int = 5
    base_channels: int = 32  # stage i has base_channels * 2**i channels
    batch_norm: bool = True
    up_mode: str = "upconv"  # transposed conv, or bilinear x2 + 1x1 conv
    in_channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        if self.up_mode not in UP_MODES:
            raise ConfigError(f"up_mode: {self.up_mode!r} is not allowed; allowed values: {', '.join(UP_MODES)}")
        if self.depth < 2:
            raise ConfigError(f"depth: expected at least 2, got {self.depth}")


class UpStage(nn.Module):
    """Upsample x2 to half the channels, concatenate the skip, two convs."""

    def __init__(self, in_channels: int, out_channels: int, up_mode: str, batch_norm: bool):
        super().__init__()
        if up_mode == "upconv":
            self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear"),
                nn.Conv2d(in_channels, out_channels, 1),
            )
        self.convs = double_conv(in_channels, out_channels, norm_after_act=True, batch_norm=batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([self.up(x), skip], 1))


class UNet(nn.Module):
    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        widths = [config.base_channels * 2**i for i in range(config.depth)]
        ins = [config.in_channels] + widths[:-1]
        self.down = nn.ModuleList([
            double_conv(cin, cout, norm_after_act=True, batch_norm=config.batch_norm)
            for cin, cout in zip(ins, widths)
        ])
        self.up = nn.ModuleList([
            UpStage(widths[i + 1], widths[i], config.up_mode, config.batch_norm)
            for i in reversed(range(config.depth - 1))
        ])
        self.head = nn.Conv2d(widths[0], config.num_classes, 1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, stage in enumerate(self.down):
            if i > 0:
                skips.append(x)
                x = F.avg_pool2d(x, 2)
            x = stage(x)
        for stage, skip in zip(self.up, reversed(skips)):
            x = stage(x, skip)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


@register_model("unet", config=UNetConfig)
def unet(config: UNetConfig) -> nn.Module:
    return UNet(config)
