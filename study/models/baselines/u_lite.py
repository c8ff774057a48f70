"""U-Lite (Dinh et al., 2023), as ULite in duong-db/U-Lite.

Configuration of Table 1: a 7x7 stem to 16 channels, five encoder blocks
(axial depthwise 7x1 + 1x7 mixer with identity, BN -> kept as skip ->
pointwise -> maxpool -> GELU) to widths 32-512, an axial dilated bottleneck
(dilations 1, 2, 3 on a quarter of the width) and five decoder blocks (nearest
x2, concat skip, pointwise -> BN -> axial mixer -> pointwise -> GELU).
Reproduces 878,417 parameters and 0.757 GMACs (thop, 1x3x256x256, one class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from study.errors import ConfigError
from study.models.baselines._blocks import as_tuples
from study.models.registry import register_model


@dataclass(frozen=True)
class ULiteConfig:
    # Stem width, then the output width of each of the five encoder blocks.
    widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    mixer_kernel: int = 7  # axial kernel of encoder and decoder blocks
    in_channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        as_tuples(self, "widths")
        if len(self.widths) != 6:
            raise ConfigError(f"widths: expected 6 integers (stem + 5 encoder blocks), got {self.widths!r}")
        if self.widths[-1] % 4:
            raise ConfigError(f"widths: the bottleneck width {self.widths[-1]} must be divisible by 4")


class AxialDW(nn.Module):
    """x + depthwise (k x 1)(x) + depthwise (1 x k)(x), same padding."""

    def __init__(self, dim: int, kernel: int, dilation: int = 1):
        super().__init__()
        self.dw_h = nn.Conv2d(dim, dim, (kernel, 1), padding="same", groups=dim, dilation=dilation)
        self.dw_w = nn.Conv2d(dim, dim, (1, kernel), padding="same", groups=dim, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dw_h(x) + self.dw_w(x)


class EncoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: int):
        super().__init__()
        self.mixer = AxialDW(in_channels, kernel)
        self.norm = nn.BatchNorm2d(in_channels)
        self.pw = nn.Conv2d(in_channels, out_channels, 1)
        self.down = nn.MaxPool2d(2)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.norm(self.mixer(x))
        return self.act(self.down(self.pw(skip))), skip


class DecoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2)  # nearest, as a module: thop counts it
        self.pw = nn.Conv2d(in_channels + out_channels, out_channels, 1)
        self.norm = nn.BatchNorm2d(out_channels)
        self.mixer = AxialDW(out_channels, kernel)
        self.pw2 = nn.Conv2d(out_channels, out_channels, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.up(x), skip], 1)
        return self.act(self.pw2(self.mixer(self.norm(self.pw(x)))))


class Bottleneck(nn.Module):
    """Pointwise to a quarter width, concat it with three dilated axial mixers of it, BN, pointwise back."""

    def __init__(self, dim: int):
        super().__init__()
        quarter = dim // 4
        self.pw1 = nn.Conv2d(dim, quarter, 1)
        self.mixers = nn.ModuleList([AxialDW(quarter, 3, dilation=d) for d in (1, 2, 3)])
        self.norm = nn.BatchNorm2d(4 * quarter)
        self.pw2 = nn.Conv2d(4 * quarter, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw1(x)
        x = torch.cat([x] + [mixer(x) for mixer in self.mixers], 1)
        return self.act(self.pw2(self.norm(x)))


class ULite(nn.Module):
    def __init__(self, config: ULiteConfig = ULiteConfig()):
        super().__init__()
        self.config = config
        w, k = config.widths, config.mixer_kernel
        self.stem = nn.Conv2d(config.in_channels, w[0], 7, padding="same")
        self.encoder = nn.ModuleList([EncoderBlock(w[i], w[i + 1], k) for i in range(5)])
        self.bottleneck = Bottleneck(w[5])
        self.decoder = nn.ModuleList([DecoderBlock(w[i + 1], w[i], k) for i in reversed(range(5))])
        self.head = nn.Conv2d(w[0], config.num_classes, 1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = []
        for block in self.encoder:
            x, skip = block(x)
            skips.append(skip)
        x = self.bottleneck(x)
        for block, skip in zip(self.decoder, reversed(skips)):
            x = block(x, skip)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


@register_model("u_lite", config=ULiteConfig)
def u_lite(config: ULiteConfig) -> nn.Module:
    return ULite(config)
