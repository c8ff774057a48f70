"""MK-UNet (Rahman and Marculescu, ICCV Workshops 2025), as ``MK_UNet`` in SLDGroup/MK-UNet.

Configuration of Table 1: the release's default MK_UNet: widths 16, 32, 64,
96, 160, one multi-kernel inverted residual (MKIR) block per stage, depthwise
kernels 1, 3, 5, expansion 2, grouped attention gates with 3x3 kernels.
Encoder: five MKIR stages, each followed by max-pooling. Decoder: before every
stage, channel attention then a spatial attention (one 7x7 module shared by
all five stages); the stage's MKIR block, bilinear x2 and ReLU; then the skip,
reweighted by a grouped attention gate driven by the decoder map, is added.

The release also builds (and computes) three deep-supervision heads whose
outputs its forward discards; they are built here too, as they count in the
parameters, and computed only by ``forward_deep_supervision``. Reproduces
315,566 parameters; thop (1x3x256x256, one class) counts 0.327 GMACs, the
table's 0.328 less the 0.0005 G of the three heads the release computes and
discards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import ConfigError
from study.models.baselines._blocks import as_tuples, conv_bn, upsample2x
from study.models.registry import register_model


@dataclass(frozen=True)
class MKUNetConfig:
    widths: tuple[int, ...] = (16, 32, 64, 96, 160)
    kernel_sizes: tuple[int, ...] = (1, 3, 5)  # parallel depthwise kernels of every MKIR block
    expansion: int = 2
    gate_kernel: int = 3  # kernel of the grouped attention gates
    # Channel-attention reduction ratio of decoder stages 1-5 (capped at the width).
    attention_ratios: tuple[int, ...] = (16, 16, 16, 8, 4)
    in_channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        as_tuples(self, "widths", "kernel_sizes", "attention_ratios")
        if len(self.widths) != 5 or len(self.attention_ratios) != 5:
            raise ConfigError(
                "widths and attention_ratios: expected 5 entries each, "
                f"got {self.widths!r} and {self.attention_ratios!r}"
            )
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ConfigError(f"kernel_sizes: expected odd kernel sizes, got {self.kernel_sizes!r}")
        if any(c % 2 for c in self.widths[:4]):
            raise ConfigError(
                f"widths: the four skip widths must be even (gates use width/2 groups), got {self.widths!r}"
            )


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class MKIRBlock(nn.Module):
    """Multi-kernel inverted residual block (stride 1).

    1x1 expansion -> BN -> ReLU6; parallel depthwise convs (one per kernel
    size, each -> BN -> ReLU6) summed; channel shuffle; 1x1 projection -> BN;
    plus the input (through a 1x1 conv when the widths differ).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: tuple[int, ...], expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.expand = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)
        )
        self.depthwise = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(hidden, hidden, k, padding=k // 2, groups=hidden, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU6(inplace=True),
            )
            for k in kernel_sizes
        ])
        self.shuffle_groups = math.gcd(hidden, out_channels)
        self.project = nn.Sequential(nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x)
        y = sum(conv(y) for conv in self.depthwise)
        y = self.project(channel_shuffle(y, self.shuffle_groups))
        return (x if self.shortcut is None else self.shortcut(x)) + y


class ChannelAttention(nn.Module):
    """Sigmoid of a shared 1x1-conv MLP applied to the average- and max-pooled map."""

    def __init__(self, channels: int, ratio: int):
        super().__init__()
        hidden = channels // min(ratio, channels)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc2(F.relu(self.fc1(self.avg_pool(x))))
        peak = self.fc2(F.relu(self.fc1(self.max_pool(x))))
        return torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """Sigmoid of a 7x7 conv (no bias) on the channel mean and max."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class GroupedAttentionGate(nn.Module):
    """skip * sigmoid(BN(1x1(ReLU(BN(gconv(g)) + BN(gconv(skip)))))), grouped kxk convs to width/2."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        inner = channels // 2
        groups = inner if kernel_size > 1 else 1
        self.gate = nn.Sequential(*conv_bn(channels, inner, kernel_size, groups=groups))
        self.skip = nn.Sequential(*conv_bn(channels, inner, kernel_size, groups=groups))
        self.psi = nn.Sequential(*conv_bn(inner, 1, 1))

    def forward(self, g: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return skip * torch.sigmoid(self.psi(F.relu(self.gate(g) + self.skip(skip))))


def init_normal(module: nn.Module) -> None:
    """The release's 'normal' scheme: N(0, 0.02) convs with zero bias, identity BN."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class MKUNet(nn.Module):
    # Parameters (name fragments) that ``forward_logits`` never reaches, as in the release.
    unused_parameters = ("aux_heads.",)

    def __init__(self, config: MKUNetConfig = MKUNetConfig()):
        super().__init__()
        self.config = config
        w, ks, e = config.widths, config.kernel_sizes, config.expansion
        ins = (config.in_channels,) + w[:-1]
        self.encoder = nn.ModuleList([MKIRBlock(cin, cout, ks, e) for cin, cout in zip(ins, w)])
        # Decoder stage i (0-based) goes from w[4-i] to w[3-i]; the last keeps w[0].
        outs = (w[3], w[2], w[1], w[0], w[0])
        self.decoder = nn.ModuleList([MKIRBlock(w[4 - i], outs[i], ks, e) for i in range(5)])
        self.gates = nn.ModuleList([GroupedAttentionGate(outs[i], config.gate_kernel) for i in range(4)])
        self.channel_attention = nn.ModuleList([
            ChannelAttention(w[4 - i], r) for i, r in enumerate(config.attention_ratios)
        ])
        self.spatial_attention = SpatialAttention()
        # Deep-supervision heads after decoder stages 2, 3, 4 (at H/8, H/4, H/2), then the output head.
        self.aux_heads = nn.ModuleList([nn.Conv2d(c, config.num_classes, 1) for c in (w[2], w[1], w[0])])
        self.head = nn.Conv2d(w[0], config.num_classes, 1)
        # The release inits its attention modules and MKIR blocks this way; the
        # heads keep PyTorch's default.
        for module in (*self.encoder, *self.decoder, *self.gates, *self.channel_attention, self.spatial_attention):
            module.apply(init_normal)

    def _decode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The final decoder map (full resolution) and decoder stages 2-4's maps for the aux heads."""
        skips = []
        for stage in self.encoder:
            x = F.max_pool2d(stage(x), 2)
            skips.append(x)
        x = skips.pop()
        aux_inputs = []
        for i, stage in enumerate(self.decoder):
            x = self.channel_attention[i](x) * x
            x = self.spatial_attention(x) * x
            x = F.relu(upsample2x(stage(x), align_corners=False))
            if 1 <= i <= 3:
                aux_inputs.append(x)
            if i < 4:
                x = x + self.gates[i](x, skips.pop())
        return x, aux_inputs

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._decode(x)[0])

    def forward_deep_supervision(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[final, stage-4, stage-3, stage-2] logits, all at the input resolution."""
        size = x.shape[2:]
        x, aux_inputs = self._decode(x)
        aux = [
            F.interpolate(head(a), size=size, mode="bilinear", align_corners=False)
            for head, a in zip(self.aux_heads, aux_inputs)
        ]
        return [self.head(x)] + aux[::-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


@register_model("mk_unet", config=MKUNetConfig)
def mk_unet(config: MKUNetConfig) -> nn.Module:
    return MKUNet(config)
