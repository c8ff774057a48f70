"""UNeXt (Valanarasu & Patel, 2022), as UNext in jeya-maria-jose/UNeXt-pytorch.

Configuration of Table 1: the full UNext (not UNext_S), embed dims
(128, 160, 256): three conv stages of widths 16, 32, 128 (conv3x3 -> BN ->
maxpool -> ReLU), two tokenized-MLP stages of widths 160 and 256 (overlapping
3x3 stride-2 patch embedding, one shifted-MLP block, LayerNorm), and a decoder
of conv3x3 -> BN -> bilinear x2 -> ReLU stages with additive skips, two of them
followed by a shifted-MLP block. Reproduces 1,471,921 parameters and 0.573
GMACs (thop, 1x3x256x256, one class).

The release's ``img_size`` only sizes unused attributes: no layer depends on
the input size, so any multiple of 32 works (64x64 included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import ConfigError
from study.models.baselines._blocks import OverlapPatchEmbed, as_tuples, fan_out_init, to_map, to_tokens, upsample2x
from study.models.registry import register_model


@dataclass(frozen=True)
class UNeXtConfig:
    # Conv stages 1-3, then the tokenized-MLP stage and the bottleneck.
    widths: tuple[int, ...] = (16, 32, 128, 160, 256)
    shift_size: int = 5  # channel groups of the shifted MLP, shifted by -2..2 pixels
    in_channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        as_tuples(self, "widths")
        if len(self.widths) != 5:
            raise ConfigError(f"widths: expected 5 integers (3 conv, 2 token stages), got {self.widths!r}")
        if self.shift_size < 1 or self.shift_size % 2 == 0:
            raise ConfigError(f"shift_size: expected a positive odd integer, got {self.shift_size}")


def shift_channel_groups(x: torch.Tensor, dim: int, groups: int) -> torch.Tensor:
    """Shift channel chunk k of ``groups`` by k - groups // 2 pixels along ``dim``, zero-filled.

    Rolling inside a zero border and cropping it off turns the wrap-around of
    ``torch.roll`` into zero fill.
    """
    pad = groups // 2
    h, w = x.shape[2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    chunks = torch.chunk(padded, groups, dim=1)
    shifted = torch.cat([torch.roll(c, s, dim) for c, s in zip(chunks, range(-pad, pad + 1))], 1)
    return shifted[:, :, pad:pad + h, pad:pad + w]


class ShiftedMLPBlock(nn.Module):
    """tokens + MLP(LN(tokens)), the MLP being: shift along H -> Linear ->
    depthwise 3x3 -> GELU -> shift along W -> Linear (hidden width = width)."""

    def __init__(self, dim: int, shift_size: int):
        super().__init__()
        self.shift_size = shift_size
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim)
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        y = to_map(self.norm(tokens), h, w)
        y = self.fc1(to_tokens(shift_channel_groups(y, 2, self.shift_size)))
        y = self.act(self.dwconv(to_map(y, h, w)))
        y = self.fc2(to_tokens(shift_channel_groups(y, 3, self.shift_size)))
        return tokens + y


class TokenStage(nn.Module):
    """One shifted-MLP block then a LayerNorm, on a map (B, C, H, W) -> same shape."""

    def __init__(self, dim: int, shift_size: int):
        super().__init__()
        self.block = ShiftedMLPBlock(dim, shift_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return to_map(self.norm(self.block(tokens, h, w)), h, w)


class UNeXt(nn.Module):
    def __init__(self, config: UNeXtConfig = UNeXtConfig()):
        super().__init__()
        self.config = config
        c1, c2, c3, t1, t2 = config.widths
        self.encoder = nn.ModuleList([
            nn.Conv2d(cin, cout, 3, padding=1) for cin, cout in ((config.in_channels, c1), (c1, c2), (c2, c3))
        ])
        self.encoder_norms = nn.ModuleList([nn.BatchNorm2d(c) for c in (c1, c2, c3)])
        self.embeds = nn.ModuleList([
            OverlapPatchEmbed(c3, t1, stride=2, gelu=False),
            OverlapPatchEmbed(t1, t2, stride=2, gelu=False),
        ])
        self.token_encoder = nn.ModuleList([TokenStage(t1, config.shift_size), TokenStage(t2, config.shift_size)])
        # Decoder stage k maps to the width of the skip it meets; the last one (at H/2 -> H) keeps c1.
        pairs = ((t2, t1), (t1, c3), (c3, c2), (c2, c1), (c1, c1))
        self.decoder = nn.ModuleList([nn.Conv2d(cin, cout, 3, padding=1) for cin, cout in pairs])
        self.decoder_norms = nn.ModuleList([nn.BatchNorm2d(cout) for _, cout in pairs[:4]])
        self.token_decoder = nn.ModuleList([TokenStage(t1, config.shift_size), TokenStage(c3, config.shift_size)])
        self.head = nn.Conv2d(c1, config.num_classes, 1)
        # The release initialises only its patch embeddings and shifted-MLP blocks.
        token_blocks = [stage.block for stage in (*self.token_encoder, *self.token_decoder)]
        for module in (*self.embeds, *token_blocks):
            module.apply(fan_out_init)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for conv, norm in zip(self.encoder, self.encoder_norms):
            x = F.relu(F.max_pool2d(norm(conv(x)), 2))
            skips.append(x)
        for embed, stage in zip(self.embeds, self.token_encoder):
            tokens, h, w = embed(x)
            x = stage(tokens, h, w)
            skips.append(x)
        skips.pop()  # the bottleneck is no skip
        for i, conv in enumerate(self.decoder):
            x = conv(x)
            if i < len(self.decoder_norms):
                x = self.decoder_norms[i](x)
            x = F.relu(upsample2x(x, align_corners=False))
            if i < len(skips):
                x = x + skips[-1 - i]
            if i < len(self.token_decoder):
                x = self.token_decoder[i](to_tokens(x), x.shape[2], x.shape[3])
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


@register_model("unext", config=UNeXtConfig)
def unext(config: UNeXtConfig) -> nn.Module:
    return UNeXt(config)
