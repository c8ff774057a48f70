"""Blocks shared by CMUNeXt-S, Rolling-UNet-S, TinyU-Net, UltraLight VM-UNet,
U-KAN and MK-UNet.

Not auto-imported by the package (leading underscore): the model modules
import what they need. What is shared:

* ``conv_bn_relu`` / ``narrowing_double_conv``: the 3x3 conv -> BN -> ReLU
  units of the CNN stages (Rolling-UNet and U-KAN decoders keep the input
  width in their first conv and narrow in the second).
* ``to_tokens`` / ``to_map``: (B, C, H, W) <-> (B, H*W, C), row-major, as
  every tokenized stage of these models flattens its maps.
* ``OverlapPatchEmbed``: 3x3 conv -> tokens -> (GELU) -> LayerNorm, the token
  stem of Rolling-UNet (stride 1, with GELU) and U-KAN (stride 2, without).
* ``DepthwiseBNReLU``: depthwise 3x3 -> BN -> ReLU on tokens (U-KAN).
* ``as_tuples``: turns list-valued config fields (as TOML gives them) into
  tuples, so the frozen configs stay hashable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def as_tuples(config, *names: str) -> None:
    """In a frozen dataclass's ``__post_init__``: make the named list fields tuples."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, list):
            object.__setattr__(config, name, tuple(value))


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> list[nn.Module]:
    """Same-padding conv (with bias) -> BN -> ReLU, as a list to splice into a Sequential."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def narrowing_double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two conv3x3 -> BN -> ReLU; the first keeps ``in_channels``, the second narrows."""
    return nn.Sequential(*conv_bn_relu(in_channels, in_channels), *conv_bn_relu(in_channels, out_channels))


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


def to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)


class OverlapPatchEmbed(nn.Module):
    """3x3 conv (padding 1) to ``out_channels``, flattened to tokens, then LayerNorm.

    ``gelu`` puts a GELU between the flattening and the norm (Rolling-UNet's
    Feature Incentive Block). Returns the tokens and the output grid size.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, gelu: bool):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.act = nn.GELU() if gelu else nn.Identity()
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[2:]
        return self.norm(self.act(to_tokens(x))), h, w


class DepthwiseBNReLU(nn.Module):
    """Depthwise 3x3 (with bias) -> BN -> ReLU applied to (B, H*W, C) tokens."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(to_map(tokens, height, width))))
        return to_tokens(x)

