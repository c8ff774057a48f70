"""EGE-UNet (Ruan et al., 2023), as EGEUNet in JCruan519/EGE-UNet.

Configuration of Table 1: widths 8, 16, 24, 32, 48, 64, bridge on, and the
deep-supervision heads built (gt_ds=True, which the release's forward needs:
each head's output is the mask channel of a group aggregation bridge).
Encoder stages 4-6 and decoder stages 1-3 are grouped multi-axis Hadamard
product attention (GHPA); every skip passes through a group aggregation
bridge (GAB) fed by the deeper bridged skip and the head's mask. Reproduces
53,374 parameters and 0.072 GMACs (thop, 1x3x256x256, one class).

``forward_logits`` returns only the final map's logits (the release ends in a
sigmoid: here only ``forward`` does); ``forward_deep_supervision`` also
returns the five side outputs, upsampled to the input size, as logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from study.models.baselines._blocks import ChannelsFirstLayerNorm, LiteUNet, as_tuples, check_lite_widths, fan_out_init
from study.models.registry import register_model


@dataclass(frozen=True)
class EGEUNetConfig:
    widths: tuple[int, ...] = (8, 16, 24, 32, 48, 64)
    # Spatial size of GHPA's learned xy / zx / zy weights (resized to each input).
    param_size: int = 8
    in_channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        as_tuples(self, "widths")
        check_lite_widths(self.widths)


def resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class GHPA(nn.Module):
    """Grouped multi-axis Hadamard product attention.

    After a channels-first LayerNorm the channels split in four: the first
    three are multiplied by learned weights over the (H, W), (C, H) and (C, W)
    planes (each resized bilinearly to the input, then depthwise 3 -> GELU ->
    pointwise), the fourth goes through pointwise -> GELU -> depthwise 3x3.
    Then LayerNorm -> depthwise 3x3 -> GELU -> pointwise to ``out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, param_size: int = 8):
        super().__init__()
        c = in_channels // 4
        self.params_hw = nn.Parameter(torch.ones(1, c, param_size, param_size))
        self.conv_hw = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.GELU(), nn.Conv2d(c, c, 1))
        self.params_ch = nn.Parameter(torch.ones(1, 1, c, param_size))
        self.conv_ch = nn.Sequential(nn.Conv1d(c, c, 3, padding=1, groups=c), nn.GELU(), nn.Conv1d(c, c, 1))
        self.params_cw = nn.Parameter(torch.ones(1, 1, c, param_size))
        self.conv_cw = nn.Sequential(nn.Conv1d(c, c, 3, padding=1, groups=c), nn.GELU(), nn.Conv1d(c, c, 1))
        self.local = nn.Sequential(nn.Conv2d(c, c, 1), nn.GELU(), nn.Conv2d(c, c, 3, padding=1, groups=c))
        self.norm1 = ChannelsFirstLayerNorm(in_channels)
        self.norm2 = ChannelsFirstLayerNorm(in_channels)
        self.out = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels),
            nn.GELU(),
            nn.Conv2d(in_channels, out_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3, x4 = torch.chunk(self.norm1(x), 4, dim=1)
        c, h, w = x1.shape[1:]
        x1 = x1 * self.conv_hw(resize(self.params_hw, (h, w)))
        # The (C, H) and (C, W) weights run through a Conv1d over C as (1, C, L).
        ch = self.conv_ch(resize(self.params_ch, (c, h))[0])  # (1, C, H)
        x2 = x2 * ch.unsqueeze(-1)
        cw = self.conv_cw(resize(self.params_cw, (c, w))[0])  # (1, C, W)
        x3 = x3 * cw.unsqueeze(-2)
        x4 = self.local(x4)
        return self.out(self.norm2(torch.cat([x1, x2, x3, x4], 1)))


class GroupAggregationBridge(nn.Module):
    """Fuses the deeper feature ``high`` (projected, resized), the skip ``low``
    and a one-channel ``mask``: four groups [high_k, low_k, mask], each LN ->
    depthwise 3x3 with dilation 1, 2, 5, 7; then LN -> 1x1 to the skip width."""

    def __init__(self, high_channels: int, low_channels: int, dilations=(1, 2, 5, 7)):
        super().__init__()
        self.pre_project = nn.Conv2d(high_channels, low_channels, 1)
        group = low_channels // 2 + 1  # a quarter of each input plus the mask
        self.groups = nn.ModuleList([
            nn.Sequential(
                ChannelsFirstLayerNorm(group),
                nn.Conv2d(group, group, 3, padding=d, dilation=d, groups=group),
            )
            for d in dilations
        ])
        self.tail = nn.Sequential(
            ChannelsFirstLayerNorm(4 * group),
            nn.Conv2d(4 * group, low_channels, 1),
        )

    def forward(self, high: torch.Tensor, low: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        high = resize(self.pre_project(high), low.shape[2:])
        parts = [
            block(torch.cat([hi, lo, mask], 1))
            for block, hi, lo in zip(self.groups, torch.chunk(high, 4, dim=1), torch.chunk(low, 4, dim=1))
        ]
        return self.tail(torch.cat(parts, 1))


class EGEUNet(LiteUNet):
    def __init__(self, config: EGEUNetConfig = EGEUNetConfig()):
        c1, c2, c3, c4, c5, c6 = config.widths
        ps = config.param_size
        super().__init__(
            config.in_channels, config.num_classes, config.widths,
            deep_encoder=[GHPA(cin, cout, ps) for cin, cout in ((c3, c4), (c4, c5), (c5, c6))],
            deep_decoder=[GHPA(cin, cout, ps) for cin, cout in ((c6, c5), (c5, c4), (c4, c3))],
        )
        self.config = config
        # Bridge and side head of decoder stage i, deepest first: skip widths c5 .. c1.
        skip_widths = (c5, c4, c3, c2, c1)
        deeper = (c6, c5, c4, c3, c2)
        self.bridges = nn.ModuleList([GroupAggregationBridge(hi, lo) for hi, lo in zip(deeper, skip_widths)])
        self.side_heads = nn.ModuleList([nn.Conv2d(c, 1, 1) for c in skip_widths])
        self.apply(fan_out_init)

    def _decode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, skips = self.encode(x)
        deeper = x
        sides = []
        for i in range(5):
            x = self.decode_stage(i, x)
            side = self.side_heads[i](x)
            deeper = self.bridges[i](deeper, skips[4 - i], side)  # the bridged skip feeds the next bridge
            x = x + deeper
            sides.append(side)
        return self.head_logits(x), sides

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._decode(x)[0]

    def forward_deep_supervision(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final logits and the five side logits (deepest first), all at the input size."""
        logits, sides = self._decode(x)
        return logits, [resize(s, x.shape[2:]) for s in sides]


@register_model("ege_unet", config=EGEUNetConfig)
def ege_unet(config: EGEUNetConfig) -> nn.Module:
    return EGEUNet(config)
