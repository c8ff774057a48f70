"""MALUNet (Ruan et al., 2022), as in JCruan519/MALUNet.

Configuration of Table 1 (the release's config): widths 8, 16, 24, 32, 48, 64,
split_att 'fc', bridge on. Encoder stages 4-6 are external attention (EA)
then dilated gated attention (DGA); decoder stages 1-3 are DGA then EA; the
skips pass through the spatial-then-channel attention bridge (SAB + CAB;
``SCAttentionBridge`` in ``_blocks``, which UltraLight VM-UNet reuses).
Reproduces 177,943 parameters and 0.083 GMACs (thop, 1x3x256x256, one
class). The release's forward ends in a sigmoid: here only ``forward`` does.

The release ties EA's two memory units by pointing the second's weight at a
permuted view of the first's storage; they stay two parameters (both counted).
Here both start from the same weights (transposed) and then train as
separate tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from study.models.baselines._blocks import GROUPS, LiteUNet, as_tuples, check_lite_widths, fan_out_init
from study.models.registry import register_model


@dataclass(frozen=True)
class MALUNetConfig:
    widths: tuple[int, ...] = (8, 16, 24, 32, 48, 64)
    bridge: bool = True  # the spatial + channel attention bridge on the skips
    in_channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        as_tuples(self, "widths")
        check_lite_widths(self.widths)


class SeparableConvGN(nn.Sequential):
    """Depthwise k x k -> GroupNorm -> pointwise (all with bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels),
            nn.GroupNorm(GROUPS, in_channels),
            nn.Conv2d(in_channels, out_channels, 1),
        )


class GatedAttentionUnit(nn.Module):
    """out(sigmoid(a(x)) * gelu(b(x))) + 1x1(x), with a 3x3 gate and a 5x5 value."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.gate = SeparableConvGN(in_channels, in_channels, kernel_size)
        self.value = SeparableConvGN(in_channels, in_channels, kernel_size + 2)
        self.out = SeparableConvGN(in_channels, out_channels, kernel_size)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.sigmoid(self.gate(x)) * F.gelu(self.value(x))
        return F.gelu(self.out(mixed)) + self.shortcut(x)


class DilatedGatedAttention(nn.Module):
    """Four channel quarters through depthwise 3x3 convs of dilation 7, 5, 2, 1,
    then GN -> 1x1 -> GELU, then a gated attention unit to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, dilations=(7, 5, 2, 1)):
        super().__init__()
        quarter = in_channels // 4
        self.dilated = nn.ModuleList([
            nn.Conv2d(quarter, quarter, 3, padding=d, dilation=d, groups=quarter) for d in dilations
        ])
        self.norm = nn.GroupNorm(GROUPS, in_channels)
        self.proj = nn.Conv2d(in_channels, in_channels, 1)
        self.gau = GatedAttentionUnit(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [conv(part) for conv, part in zip(self.dilated, torch.chunk(x, 4, dim=1))]
        x = F.gelu(self.proj(self.norm(torch.cat(parts, 1))))
        return self.gau(x)


class ExternalAttention(nn.Module):
    """Attention of every pixel over 4C learned memory slots (double-normalised),
    read back through a second memory, then 1x1 -> GN, residual, GELU."""

    def __init__(self, channels: int):
        super().__init__()
        slots = 4 * channels
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.memory_key = nn.Conv1d(channels, slots, 1, bias=False)
        self.memory_value = nn.Conv1d(slots, channels, 1, bias=False)
        self.proj_out = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.GroupNorm(GROUPS, channels)

    def tie_memories(self) -> None:
        """Start both memories from the same weights, transposed, as the release does.

        The release's init writes the value memory last into the shared
        storage, so both start from the value memory's init.
        """
        with torch.no_grad():
            self.memory_key.weight.copy_(self.memory_value.weight.transpose(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        attn = self.memory_key(self.proj_in(x).reshape(b, c, h * w))  # (B, slots, N)
        attn = F.softmax(attn, dim=-1)
        attn = attn / (1e-9 + attn.sum(dim=1, keepdim=True))
        y = self.memory_value(attn).reshape(b, c, h, w)
        return F.gelu(self.norm(self.proj_out(y)) + x)


class MALUNet(LiteUNet):
    def __init__(self, config: MALUNetConfig = MALUNetConfig()):
        c1, c2, c3, c4, c5, c6 = config.widths
        super().__init__(
            config.in_channels, config.num_classes, config.widths,
            deep_encoder=[
                nn.Sequential(ExternalAttention(cin), DilatedGatedAttention(cin, cout))
                for cin, cout in ((c3, c4), (c4, c5), (c5, c6))
            ],
            deep_decoder=[
                nn.Sequential(DilatedGatedAttention(cin, cout), ExternalAttention(cout))
                for cin, cout in ((c6, c5), (c5, c4), (c4, c3))
            ],
            sc_bridge=config.bridge,
        )
        self.config = config
        self.apply(fan_out_init)
        for module in self.modules():
            if isinstance(module, ExternalAttention):
                module.tie_memories()


@register_model("malunet", config=MALUNetConfig)
def malunet(config: MALUNetConfig) -> nn.Module:
    return MALUNet(config)
