"""UNet++ (Zhou et al., 2018), as NestedUNet in 4uiiurz1/pytorch-nested-unet.

Configuration of Table 1: VGG blocks (conv3x3 -> BN -> ReLU twice) of widths
32-512, max-pool down, bilinear x2 up (corners aligned), dense nested skips,
no deep supervision. Reproduces 9,163,329 parameters and 34.903 GMACs (thop,
1x3x256x256, one class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from study.models.baselines._blocks import as_tuples, check_unet_levels, double_conv
from study.models.registry import register_model


@dataclass(frozen=True)
class UNetPPConfig:
    widths: tuple[int, ...] = (32, 64, 128, 256, 512)
    in_channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        as_tuples(self, "widths")
        check_unet_levels(self.widths)


class UNetPlusPlus(nn.Module):
    """Node (i, j) is level i (resolution H/2**i), j-th along the nested path.

    Node (i, 0) is the encoder; node (i, j > 0) sees every earlier node of its
    level and the upsampled node (i + 1, j - 1).
    """

    def __init__(self, config: UNetPPConfig = UNetPPConfig()):
        super().__init__()
        self.config = config
        w = config.widths
        levels = len(w)
        self.pool = nn.MaxPool2d(2, 2)
        # A module, not F.interpolate: thop counts nn.Upsample, as it did for the release.
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.nodes = nn.ModuleDict()
        for i in range(levels):
            self.nodes[f"{i}_0"] = double_conv(config.in_channels if i == 0 else w[i - 1], w[i])
        for j in range(1, levels):
            for i in range(levels - j):
                self.nodes[f"{i}_{j}"] = double_conv(w[i] * j + w[i + 1], w[i])
        self.head = nn.Conv2d(w[0], config.num_classes, 1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        levels = len(self.config.widths)
        grid: list[list[torch.Tensor]] = [[] for _ in range(levels)]
        for i in range(levels):
            # The encoder goes one level deeper, then that new column fills up diagonally.
            grid[i].append(self.nodes[f"{i}_0"](x if i == 0 else self.pool(grid[i - 1][0])))
            for j in range(1, i + 1):
                level = i - j
                inputs = grid[level] + [self.up(grid[level + 1][j - 1])]
                grid[level].append(self.nodes[f"{level}_{j}"](torch.cat(inputs, 1)))
        return self.head(grid[0][-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


@register_model("unetpp", config=UNetPPConfig)
def unetpp(config: UNetPPConfig) -> nn.Module:
    return UNetPlusPlus(config)
