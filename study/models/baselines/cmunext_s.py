"""CMUNeXt-S (Tang et al., ISBI 2024), as ``cmunext_s`` in FengheTan9/CMUNeXt.

Configuration of Table 1: widths 8, 16, 32, 64, 128, one CMUNeXt block per
stage, depthwise kernels 3, 3, 7, 7, 9. A 3x3 stem, five encoder stages (each
a CMUNeXt block that ends in a 3x3 conv to the stage width, max-pool between
stages), four decoder stages (bilinear x2 -> 3x3 conv, concatenate the skip,
fusion block) and a 1x1 head. Reproduces 417,505 parameters and 1.090 GMACs
(thop, 1x3x256x256, one class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import ConfigError
from study.models.baselines._blocks import UpConv, as_tuples, conv_bn_relu
from study.models.registry import register_model


@dataclass(frozen=True)
class CMUNeXtConfig:
    widths: tuple[int, ...] = (8, 16, 32, 64, 128)
    depths: tuple[int, ...] = (1, 1, 1, 1, 1)  # CMUNeXt blocks per encoder stage
    kernels: tuple[int, ...] = (3, 3, 7, 7, 9)  # depthwise kernel per encoder stage
    in_channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        as_tuples(self, "widths", "depths", "kernels")
        for name in ("widths", "depths", "kernels"):
            if len(getattr(self, name)) != 5:
                raise ConfigError(f"{name}: expected 5 entries (one per encoder stage), got {getattr(self, name)!r}")
        if any(k % 2 == 0 for k in self.kernels):
            raise ConfigError(f"kernels: expected odd kernel sizes, got {self.kernels!r}")


def gelu_bn(conv: nn.Conv2d) -> list[nn.Module]:
    """CMUNeXt's unit order: conv -> GELU -> BN."""
    return [conv, nn.GELU(), nn.BatchNorm2d(conv.out_channels)]


class DepthwiseResidual(nn.Module):
    """x + BN(GELU(depthwise kxk conv(x))): the large-kernel spatial mixing."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.mix = nn.Sequential(*gelu_bn(
            nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


class CMUNeXtBlock(nn.Sequential):
    """``depth`` x (depthwise residual -> 1x1 expand x4 -> 1x1 back), then conv3x3 to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, depth: int, kernel_size: int):
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [
                DepthwiseResidual(in_channels, kernel_size),
                *gelu_bn(nn.Conv2d(in_channels, 4 * in_channels, 1)),
                *gelu_bn(nn.Conv2d(4 * in_channels, in_channels, 1)),
            ]
        super().__init__(*layers, *conv_bn_relu(in_channels, out_channels))


class FusionConv(nn.Sequential):
    """Grouped (2 groups: skip, upsampled) conv3x3 -> 1x1 expand to 4x out -> 1x1 to out."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            *gelu_bn(nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=2)),
            *gelu_bn(nn.Conv2d(in_channels, 4 * out_channels, 1)),
            *gelu_bn(nn.Conv2d(4 * out_channels, out_channels, 1)),
        )


class CMUNeXt(nn.Module):
    def __init__(self, config: CMUNeXtConfig = CMUNeXtConfig()):
        super().__init__()
        self.config = config
        w = config.widths
        self.stem = nn.Sequential(*conv_bn_relu(config.in_channels, w[0]))
        ins = (w[0],) + w[:-1]
        self.encoder = nn.ModuleList([
            CMUNeXtBlock(cin, cout, depth, k) for cin, cout, depth, k in zip(ins, w, config.depths, config.kernels)
        ])
        # Deepest first: up from w[i+1] to w[i], then fuse with skip i.
        self.up = nn.ModuleList([UpConv(w[i + 1], w[i], mode="bilinear") for i in reversed(range(4))])
        self.fuse = nn.ModuleList([FusionConv(2 * w[i], w[i]) for i in reversed(range(4))])
        self.head = nn.Conv2d(w[0], config.num_classes, 1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = []
        for i, stage in enumerate(self.encoder):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up, fuse in zip(self.up, self.fuse):
            x = fuse(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


@register_model("cmunext_s", config=CMUNeXtConfig)
def cmunext_s(config: CMUNeXtConfig) -> nn.Module:
    return CMUNeXt(config)
