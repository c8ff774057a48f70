"""TinyU-Net (Chen et al., MICCAI 2024), as ``TinyUNet`` in ChenJunren-Lab/TinyU-Net.

Configuration of Table 1: encoder widths 64, 128, 256, 512 and decoder
widths 512, 256, 128, 64, every stage one CMRF block (Cascade Multi-Receptive
Fields: a 1x1 conv to 1/8 of the output width, split into its even and odd
channels, a cascade of seven depthwise 3x3 convs on the odd half, then a 1x1
conv of the concatenation to the output width). Encoders max-pool, decoders
upsample bicubically and concatenate the skip. Reproduces 481,105 parameters
and 1.659 GMACs (thop, 1x3x256x256, one class); the TinyU-Net paper prints
twice that (3.3 G), as its own script doubles thop's MACs into FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import ConfigError
from study.models.baselines._blocks import as_tuples
from study.models.registry import register_model


@dataclass(frozen=True)
class TinyUNetConfig:
    widths: tuple[int, ...] = (64, 128, 256, 512)
    cascade_depth: int = 7  # depthwise convs in each CMRF cascade
    in_channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        as_tuples(self, "widths")
        groups = self.cascade_depth + 1
        for c in self.widths:
            if c % (2 * groups):
                raise ConfigError(
                    f"widths: {c} is not divisible by {2 * groups} (2 x (cascade_depth + 1)), "
                    "needed by the CMRF channel split"
                )


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BN (the release's YOLO-style eps and momentum) -> GELU or nothing."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, groups: int = 1, act: bool = True):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.03),
            nn.GELU() if act else nn.Identity(),
        )


class CMRF(nn.Module):
    """Cascade Multi-Receptive Fields block, ``in_channels`` -> ``out_channels``.

    After the 1x1 squeeze to out/(n+1) channels the map is split into its
    even and odd channels; the odd half feeds a cascade of n depthwise 3x3
    convs (each on the previous one's output, so receptive fields 3, 5, ...).
    The even and odd halves are summed and concatenated with the n cascade
    outputs (out/2 channels in all) for the 1x1 expansion. Residual only when
    the widths agree (never in TinyU-Net's stages).
    """

    def __init__(self, in_channels: int, out_channels: int, cascade_depth: int = 7):
        super().__init__()
        squeezed = out_channels // (cascade_depth + 1)
        half = squeezed // 2
        self.residual = in_channels == out_channels
        self.squeeze = ConvBNAct(in_channels, squeezed)
        self.cascade = nn.ModuleList([ConvBNAct(half, half, 3, groups=half, act=False) for _ in range(cascade_depth)])
        self.expand = ConvBNAct(out_channels // 2, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.squeeze(x)
        even, odd = y[:, 0::2], y[:, 1::2]
        parts = [even + odd]
        feature = odd
        for conv in self.cascade:
            feature = conv(feature)
            parts.append(feature)
        y = self.expand(torch.cat(parts, dim=1))
        return x + y if self.residual else y


class TinyUNet(nn.Module):
    def __init__(self, config: TinyUNetConfig = TinyUNetConfig()):
        super().__init__()
        self.config = config
        w = config.widths
        n = config.cascade_depth
        ins = (config.in_channels,) + w[:-1]
        self.encoder = nn.ModuleList([CMRF(cin, cout, n) for cin, cout in zip(ins, w)])
        # Deepest first: the upsampled map (w[i+1], or w[-1] at the bottom) plus skip i.
        ups = w[1:] + (w[-1],)
        self.decoder = nn.ModuleList([CMRF(ups[i] + w[i], w[i], n) for i in reversed(range(len(w)))])
        self.head = nn.Conv2d(w[0], config.num_classes, 1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        for stage in self.decoder:
            x = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
            x = stage(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


@register_model("tinyu_net", config=TinyUNetConfig)
def tinyu_net(config: TinyUNetConfig) -> nn.Module:
    return TinyUNet(config)
