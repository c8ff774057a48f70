"""MambaU-Lite (Nguyen et al., ICISN 2025), as ULite in nqnguyen812/MambaU-Lite (models/mamba_ulite.py).

Configuration of Table 1: the release's only one. Widths 16-32-64-128-256:

* stem: pointwise conv to 16, then a selective-kernel unit (two grouped 7x7
  branches, dilations 1 and 2, 16 groups, each BN -> ReLU; a squeeze to 32
  and one 1x1 per branch, softmax across the branches);
* encoder 1-2: Mamba blocks 16 -> 32 -> 64. A Mamba block adds two views of
  its input: (a) depthwise 3x3, the two channel halves each through one shared
  VSS block (VMamba's four-direction SS2D, ``_ss2d.py``) plus a learnable
  scalar times the half, concatenated, InstanceNorm (affine) -> LeakyReLU;
  (b) [global avg, global max] -> 3x3 conv (on the 1x1 map) -> sigmoid,
  reweighting the input channels. The sum goes through an axial depthwise
  3x1 + 1x3 mixer (with identity), BN -> ReLU (kept as the skip), pointwise
  to the output width, 2x2 max-pool;
* encoder 3-4: the channels split in two halves, one through a Mamba block,
  the other through an axial block (7x1 + 1x7 mixer, BN -> ReLU as skip,
  pointwise, max-pool), 32 -> 64 then 64 -> 128 each; skips and outputs are
  the two halves concatenated;
* skips: CBAM on each (shared two-layer MLP (reduction 16) on the avg- and
  max-pooled channels, then a 7x7 conv (no bias) -> BN on [channel max,
  channel mean], sigmoids);
* bottleneck (256): depthwise 9x9 reweighted per channel (sigmoid(c' (1 +
  softmax_c(c' - c))) of the channel means c before and c' after the conv),
  then a pointwise conv reweighted per pixel the same way from the channel
  means. The release takes the pixel softmax with ``nn.Softmax2d`` on a
  (B, H, W) tensor, which normalises over the *batch*: in training each
  image's weights depend on the rest of its batch (kept so); it evaluates one
  image at a time, where that softmax is 1, and eval mode here does exactly
  that for any batch, so predictions do not depend on how images are batched;
* decoder (256 -> 128 -> 64 -> 32 -> 16): nearest x2, an additive attention
  gate (1x1 -> BN projections of both to the skip width, ReLU, 1x1 -> BN ->
  sigmoid) on the skip; the gated skip concatenated with the skip itself (the
  upsampled features enter only through the gate, as in the release),
  pointwise -> BN -> ReLU, axial 7x7 mixer, pointwise;
* head: a 1x1 conv on each decoder output, bilinearly resized to the input,
  the four concatenated (deepest first) and fused by a 1x1 conv.

A training batch of one image cannot work (the stem's squeeze BN sees a 1x1
map): it is refused with that reason; training drops the last incomplete batch,
as the release's loader does (``train_drop_last``). PyTorch's default init, except the SS2D's dt / A / D (VMamba's). Reproduces
the release's 416,488 parameters and 0.934 GMACs (thop, 1x3x256x256; thop
sees the SS2D's Linear / conv / LayerNorm modules, not its scan).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import ConfigError
from study.models.baselines._blocks import as_tuples, conv_bn
from study.models.baselines._ss2d import VSSBlock
from study.models.baselines.attention_unet import AttentionGate
from study.models.baselines.u_lite import AxialDW
from study.models.registry import register_model


@dataclass(frozen=True)
class MambaULiteConfig:
    # Stem, encoder 1, encoder 2, encoder 3 (both halves), bottleneck.
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    sk_groups: int = 16  # groups of the stem's selective-kernel convs
    d_state: int = 16
    in_channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        as_tuples(self, "widths")
        w = self.widths
        if len(w) != 5:
            raise ConfigError(f"widths: expected 5 integers (stem, 3 encoders, bottleneck), got {w!r}")
        if w[3] != 2 * w[2] or w[4] != 2 * w[3]:
            raise ConfigError(f"widths: the last three must double (split encoders, bottleneck), got {w!r}")
        if w[0] % 2 or w[1] % 2 or w[2] % 4:
            raise ConfigError(f"widths: the Mamba blocks halve their input; need w0, w1 even and w2 % 4 == 0, "
                              f"got {w!r}")
        if w[0] % self.sk_groups:
            raise ConfigError(f"sk_groups: {self.sk_groups} does not divide the stem width {w[0]}")
        if w[0] < 16:
            raise ConfigError(f"widths: CBAM reduces by 16, the stem width must be >= 16, got {w[0]}")


class SelectiveKernel(nn.Module):
    """Grouped k x k branches of growing dilation, mixed by a per-channel softmax over branches."""

    def __init__(self, channels: int, branches: int = 2, groups: int = 16, reduction: int = 4,
                 min_dim: int = 32, kernel: int = 7):
        super().__init__()
        squeezed = max(channels // reduction, min_dim)
        self.branches = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(channels, channels, kernel, padding="same", dilation=i + 1, groups=groups, bias=False),
                nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            )
            for i in range(branches)
        ])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.squeeze = nn.Sequential(nn.Conv2d(channels, squeezed, 1, bias=False), nn.BatchNorm2d(squeezed),
                                     nn.ReLU(inplace=True))
        self.expand = nn.ModuleList([nn.Conv2d(squeezed, channels, 1) for _ in range(branches)])
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = torch.stack([branch(x) for branch in self.branches], dim=1)  # (B, M, C, H, W)
        z = self.squeeze(self.pool(feats.sum(1)))
        weights = self.softmax(torch.stack([e(z) for e in self.expand], dim=1))  # (B, M, C, 1, 1)
        return (feats * weights).sum(1)


class PoolGate(nn.Module):
    """x * sigmoid(conv3x3([avgpool(x), maxpool(x)])), the conv on the pooled 1x1 map."""

    def __init__(self, channels: int):
        super().__init__()
        self.avg, self.max = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)
        self.conv = nn.Conv2d(2 * channels, channels, 3, padding="same")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(torch.cat([self.avg(x), self.max(x)], 1)))


class SplitMamba(nn.Module):
    """Depthwise 3x3, each channel half through one shared VSS block (+ scale * half), IN -> LeakyReLU."""

    def __init__(self, channels: int, d_state: int):
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.vss = VSSBlock(channels // 2, d_state)
        self.scale = nn.Parameter(torch.ones(1))
        self.norm = nn.InstanceNorm2d(channels, affine=True)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        halves = self.dw(x).chunk(2, dim=1)
        out = [self.vss(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) + self.scale * h for h in halves]
        return self.act(self.norm(torch.cat(out, 1)))


class DownBlock(nn.Module):
    """mixer(x) -> axial depthwise (with identity) -> BN -> ReLU = skip -> pointwise -> max-pool."""

    def __init__(self, in_channels: int, out_channels: int, mixer: nn.Module | None, axial_kernel: int):
        super().__init__()
        self.mixer = mixer
        self.axial = AxialDW(in_channels, axial_kernel)
        self.norm = nn.BatchNorm2d(in_channels)
        self.act = nn.ReLU()
        self.pw = nn.Conv2d(in_channels, out_channels, 1)
        self.down = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mixer is not None:
            x = self.mixer(x)
        skip = self.act(self.norm(self.axial(x)))
        return self.down(self.pw(skip)), skip


class MambaMix(nn.Module):
    """The two views of an encoder Mamba block, summed: split Mamba and pooled channel gate."""

    def __init__(self, channels: int, d_state: int):
        super().__init__()
        self.mamba = SplitMamba(channels, d_state)
        self.gate = PoolGate(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mamba(x) + self.gate(x)


def mamba_block(in_channels: int, out_channels: int, d_state: int) -> DownBlock:
    return DownBlock(in_channels, out_channels, MambaMix(in_channels, d_state), axial_kernel=3)


def axial_block(in_channels: int, out_channels: int) -> DownBlock:
    return DownBlock(in_channels, out_channels, None, axial_kernel=7)


class CBAM(nn.Module):
    """Channel gate (shared MLP on avg and max pools), then spatial gate (7x7 conv -> BN on [max, mean])."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = channels // reduction
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.spatial = nn.Sequential(nn.Conv2d(2, 1, 7, padding=3, bias=False), nn.BatchNorm2d(1, momentum=0.01))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True))
        x = x * torch.sigmoid(pooled)[..., None, None]
        summary = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial(summary))


def _priority(before: torch.Tensor, after: torch.Tensor, softmax) -> torch.Tensor:
    """sigmoid(after * (1 + softmax(after - before))): the bottleneck's attention weights."""
    return torch.sigmoid(after * (1 + softmax(after - before)))


def _over_batch(t: torch.Tensor) -> torch.Tensor:
    """The release's pixel softmax: over dim 0, the batch (``nn.Softmax2d`` on a (B, H, W) tensor)."""
    return torch.softmax(t, dim=0)


class Bottleneck(nn.Module):
    """Channel-then-pixel priority attention (the release's IPCA bottleneck)."""

    def __init__(self, channels: int):
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 9, padding="same", groups=channels)
        self.channel_softmax = nn.Softmax(dim=1)
        self.pw = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before = x.mean((2, 3))
        x = self.dw(x)
        x = x * _priority(before, x.mean((2, 3)), self.channel_softmax)[..., None, None]
        before = x.mean(1)
        x = self.pw(x)
        # Evaluated alone, as the release evaluates (batch size 1), each image's softmax is 1.
        softmax = _over_batch if self.training else torch.ones_like
        return x * _priority(before, x.mean(1), softmax)[:, None]


class UpBlock(nn.Module):
    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        if in_channels != 2 * skip_channels:
            raise ConfigError(f"decoder: input width {in_channels} must be twice the skip width {skip_channels}")
        self.up = nn.Upsample(scale_factor=2)  # nearest, a module as in the release (thop counts it)
        self.gate = AttentionGate(in_channels, skip_channels, skip_channels)
        self.fuse = nn.Sequential(*conv_bn(2 * skip_channels, out_channels, 1), nn.ReLU())
        self.mixer = AxialDW(out_channels, 7)
        self.pw = nn.Conv2d(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        gated = self.gate(self.up(x), skip)
        return self.pw(self.mixer(self.fuse(torch.cat([gated, skip], 1))))


class MambaULite(nn.Module):
    # Training drops the last incomplete batch, as the release's loader does (drop_last=True):
    # a trailing batch of one image cannot pass the stem's squeeze BatchNorm.
    train_drop_last = True

    def __init__(self, config: MambaULiteConfig = MambaULiteConfig()):
        super().__init__()
        self.config = config
        c0, c1, c2, c3, c4 = config.widths
        n, k = config.d_state, config.num_classes
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, c0, 1), SelectiveKernel(c0, groups=config.sk_groups))
        self.encoder = nn.ModuleList([mamba_block(c0, c1, n), mamba_block(c1, c2, n)])
        # Encoders 3 and 4: (Mamba half, axial half).
        self.split_encoder = nn.ModuleList([
            nn.ModuleList([mamba_block(c2 // 2, c2, n), axial_block(c2 // 2, c2)]),
            nn.ModuleList([mamba_block(c2, c3, n), axial_block(c2, c3)]),
        ])
        skip_widths = (c0, c1, c2, c3)
        self.skip_attention = nn.ModuleList([CBAM(c) for c in skip_widths])
        self.bottleneck = Bottleneck(c4)
        self.decoder = nn.ModuleList([UpBlock(c4, c3, c3), UpBlock(c3, c2, c2), UpBlock(c2, c1, c1),
                                      UpBlock(c1, c0, c0)])
        self.side_heads = nn.ModuleList([nn.Conv2d(c, k, 1) for c in (c3, c2, c1, c0)])  # deepest first
        self.head = nn.Conv2d(4 * k, k, 1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            raise ValueError("MambaU-Lite cannot train on a batch of one image: the BatchNorm after its stem's "
                             "pooled squeeze sees one value per channel (the release drops incomplete batches)")
        size = x.shape[2:]
        x = self.stem(x)
        skips = []
        for block in self.encoder:
            x, skip = block(x)
            skips.append(skip)
        halves = list(x.chunk(2, dim=1))
        for pair in self.split_encoder:
            outs = [block(h) for block, h in zip(pair, halves)]
            halves = [o[0] for o in outs]
            skips.append(torch.cat([o[1] for o in outs], 1))
        skips = [att(s) for att, s in zip(self.skip_attention, skips)]
        x = self.bottleneck(torch.cat(halves, 1))
        sides = []
        for block, skip, head in zip(self.decoder, reversed(skips), self.side_heads):
            x = block(x, skip)
            sides.append(F.interpolate(head(x), size=size, mode="bilinear", align_corners=False))
        return self.head(torch.cat(sides, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


@register_model("mambau_lite", config=MambaULiteConfig)
def mambau_lite(config: MambaULiteConfig) -> nn.Module:
    return MambaULite(config)
