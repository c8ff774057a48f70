"""Blocks shared by the baselines.

Not auto-imported by the package (leading underscore): the model modules
import what they need. What is shared:

* ``as_tuples``: turns list-valued config fields (as TOML gives them) into
  tuples, so the frozen configs stay hashable (every config with a list field).
* ``check_unet_levels``: the widths check of UNet++ and Attention U-Net.
* ``conv_bn`` / ``conv_bn_relu``: same-padding conv (with bias) -> BN (->
  ReLU), the unit of the CNN stages; ``double_conv`` is two of them, the
  classic U-Net stage (U-Net, UNet++, Attention U-Net, Rolling-UNet, U-KAN),
  in either order of BN and ReLU (the U-Net port puts BN after the ReLU, the
  others before); ``narrowing_double_conv`` keeps the input width in its first
  conv and narrows in the second (Rolling-UNet and U-KAN decoders).
* ``UpConv``: x2 upsampling module -> conv3x3 -> BN -> ReLU, the ``up_conv``
  of Attention U-Net (nearest) and CMUNeXt (bilinear).
* ``upsample2x``: bilinear x2 by ``F.interpolate`` (invisible to thop), with
  corners aligned (MALUNet / EGE-UNet / UltraLight) or not (UNeXt,
  Rolling-UNet, U-KAN, MK-UNet).
* ``to_tokens`` / ``to_map``: (B, C, H, W) <-> (B, H*W, C), row-major, as
  every tokenized stage of these models flattens its maps.
* ``OverlapPatchEmbed``: 3x3 conv -> tokens -> (GELU) -> LayerNorm, the token
  stem of UNeXt and U-KAN (stride 2, without GELU) and Rolling-UNet (stride 1,
  with GELU).
* ``DepthwiseBNReLU``: depthwise 3x3 -> BN -> ReLU on tokens (U-KAN).
* ``ChannelsFirstLayerNorm``: ConvNeXt's LayerNorm over the channel axis of a
  (B, C, H, W) map, used by EGE-UNet.
* ``fan_out_init``: the init of the UNeXt / MALUNet / EGE-UNet releases (also
  used by the releases built on them: Rolling-UNet, UltraLight VM-UNet, U-KAN).
* ``SCAttentionBridge``: MALUNet's SC_Att_Bridge (spatial then channel
  attention over the five skips), which UltraLight VM-UNet reuses unchanged.
* ``LiteUNet``: the six-stage layout of MALUNet, EGE-UNet and UltraLight
  VM-UNet (three plain 3x3 conv stages, three attention stages, GroupNorm
  after every stage but the sixth, additive skips, optionally through the SC
  bridge); each model plugs in its own deep stages. ``check_lite_widths``
  validates its widths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import ConfigError

GROUPS = 4  # GroupNorm groups of the LiteUNet models (MALUNet / EGE-UNet / UltraLight VM-UNet)


# Configs.


def as_tuples(config, *names: str) -> None:
    """In a frozen dataclass's ``__post_init__``: make the named list fields tuples."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, list):
            object.__setattr__(config, name, tuple(value))


def check_unet_levels(widths: tuple[int, ...]) -> None:
    """One width per level, with a pooling between levels: at least two."""
    if len(widths) < 2:
        raise ConfigError(f"widths: expected at least 2 levels, got {widths!r}")


# Conv units.


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, *, groups: int = 1,
            batch_norm: bool = True) -> list[nn.Module]:
    """Same-padding conv (with bias) -> BN, as a list to splice into a Sequential."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups)
    return [conv, nn.BatchNorm2d(out_channels)] if batch_norm else [conv]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, *, norm_after_act: bool = False,
                 batch_norm: bool = True) -> list[nn.Module]:
    """Same-padding conv (with bias) -> BN -> ReLU, as a list to splice into a Sequential.

    ``norm_after_act`` gives conv -> ReLU -> BN, the order of the U-Net port
    whose numbers the table reproduces.
    """
    conv, *norm = conv_bn(in_channels, out_channels, kernel_size, batch_norm=batch_norm)
    act = nn.ReLU(inplace=True)
    return [conv, act, *norm] if norm_after_act else [conv, *norm, act]


def double_conv(in_channels: int, out_channels: int, *, mid_channels: int | None = None,
                norm_after_act: bool = False, batch_norm: bool = True) -> nn.Sequential:
    """Two 3x3 ``conv_bn_relu`` units, to ``mid_channels`` (default: ``out_channels``) then ``out_channels``."""
    mid = out_channels if mid_channels is None else mid_channels
    options = dict(norm_after_act=norm_after_act, batch_norm=batch_norm)
    return nn.Sequential(*conv_bn_relu(in_channels, mid, **options), *conv_bn_relu(mid, out_channels, **options))


def narrowing_double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two conv3x3 -> BN -> ReLU; the first keeps ``in_channels``, the second narrows."""
    return double_conv(in_channels, out_channels, mid_channels=in_channels)


class UpConv(nn.Sequential):
    """Upsample x2 -> conv3x3 -> BN -> ReLU.

    The upsampling is an nn.Upsample module, not F.interpolate: thop counts
    it, as it did for the releases.
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str = "nearest"):
        super().__init__(nn.Upsample(scale_factor=2, mode=mode), *conv_bn_relu(in_channels, out_channels))


def upsample2x(x: torch.Tensor, *, align_corners: bool) -> torch.Tensor:
    """Bilinear x2 as a function call, which thop does not count (as in the releases that use it)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=align_corners)


# Tokens.


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


# Norm and init.


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over dim 1 of a (B, C, H, W) map, with a per-channel affine.

    Written out by hand rather than as an ``nn.LayerNorm`` so that, like the
    release's own class, thop counts no MACs for it.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def fan_out_init(module: nn.Module) -> None:
    """Truncated normal for Linear, fan-out normal for convs, identity LayerNorm.

    The releases compute the Conv1d fan-out without dividing by the groups and
    leave its bias at PyTorch's default; kept so.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv1d):
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / (module.kernel_size[0] * module.out_channels)))
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# MALUNet's skip bridge (SC_Att_Bridge), also UltraLight VM-UNet's.


class SpatialAttentionBridge(nn.Module):
    """One shared 7x7 (dilation 3) conv over [channel mean, channel max] of each skip."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=9, dilation=3)

    def forward(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        maps = []
        for t in skips:
            pooled = torch.cat([t.mean(1, keepdim=True), t.max(1, keepdim=True).values], 1)
            maps.append(torch.sigmoid(self.conv(pooled)))
        return maps


class ChannelAttentionBridge(nn.Module):
    """Global average pools of all skips, concatenated, a shared 1-D conv across
    them, then one Linear per skip to its channel weights."""

    def __init__(self, skip_channels: tuple[int, ...]):
        super().__init__()
        total = sum(skip_channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mix = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.heads = nn.ModuleList([nn.Linear(total, c) for c in skip_channels])

    def forward(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        pooled = torch.cat([self.pool(t) for t in skips], 1).flatten(1)  # (B, total)
        mixed = self.mix(pooled.unsqueeze(1))  # (B, 1, total)
        return [torch.sigmoid(head(mixed)).transpose(1, 2).unsqueeze(-1) for head in self.heads]


class SCAttentionBridge(nn.Module):
    """s = SAB(t) * t; u = s + t; out = CAB(u) * u + s, for every skip t."""

    def __init__(self, skip_channels: tuple[int, ...]):
        super().__init__()
        self.spatial = SpatialAttentionBridge()
        self.channel = ChannelAttentionBridge(skip_channels)

    def forward(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        spatial = [a * t for a, t in zip(self.spatial(skips), skips)]
        mixed = [s + t for s, t in zip(spatial, skips)]
        return [a * u + s for a, u, s in zip(self.channel(mixed), mixed, spatial)]


# The six-stage lite U-Net.


def check_lite_widths(widths: tuple[int, ...]) -> None:
    """Six stage widths, each divisible by 4: GroupNorm(4), and the deep stages
    of all three models split the channels into four chunks."""
    if len(widths) != 6:
        raise ConfigError(f"widths: expected 6 entries, got {widths!r}")
    if any(c % GROUPS for c in widths):
        raise ConfigError(
            f"widths: every width must be divisible by {GROUPS} (GroupNorm({GROUPS}), four chunks), got {widths!r}"
        )


class LiteUNet(nn.Module):
    """The six-stage trunk of MALUNet, EGE-UNet and UltraLight VM-UNet.

    Encoder stage i (i < 5): block -> GroupNorm -> maxpool -> GELU, kept as
    skip i; stage 6 is block -> GELU at H/32. Decoder stage 1 stays at H/32,
    stages 2-5 upsample x2 (bilinear, corners aligned) after their norm; the
    head runs at H/2 and its logits are upsampled to the input size.

    ``forward_logits`` adds each skip to the decoder stage of its resolution,
    after the SC bridge when ``sc_bridge`` (MALUNet, UltraLight); EGE-UNet
    overrides it with its own bridges.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int],
                 deep_encoder: Sequence[nn.Module], deep_decoder: Sequence[nn.Module], sc_bridge: bool = False):
        super().__init__()
        c1, c2, c3, c4, c5, _ = widths
        self.encoder = nn.ModuleList([
            nn.Conv2d(in_channels, c1, 3, padding=1),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.Conv2d(c2, c3, 3, padding=1),
            *deep_encoder,
        ])
        self.encoder_norms = nn.ModuleList([nn.GroupNorm(GROUPS, c) for c in (c1, c2, c3, c4, c5)])
        self.decoder = nn.ModuleList([
            *deep_decoder,
            nn.Conv2d(c3, c2, 3, padding=1),
            nn.Conv2d(c2, c1, 3, padding=1),
        ])
        self.decoder_norms = nn.ModuleList([nn.GroupNorm(GROUPS, c) for c in (c5, c4, c3, c2, c1)])
        self.head = nn.Conv2d(c1, num_classes, 1)
        self.bridge = SCAttentionBridge((c1, c2, c3, c4, c5)) if sc_bridge else None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The stage-6 features (H/32) and the five skips, shallowest first."""
        skips = []
        for block, norm in zip(self.encoder[:5], self.encoder_norms):
            x = F.gelu(F.max_pool2d(norm(block(x)), 2))
            skips.append(x)
        return F.gelu(self.encoder[5](x)), skips

    def decode_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Decoder stage ``i`` (0-based) before its skip is added."""
        x = self.decoder_norms[i](self.decoder[i](x))
        if i > 0:
            x = upsample2x(x, align_corners=True)
        return F.gelu(x)

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        return upsample2x(self.head(x), align_corners=True)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self.encode(x)
        if self.bridge is not None:
            skips = self.bridge(skips)
        for i in range(5):
            x = self.decode_stage(i, x) + skips[4 - i]
        return self.head_logits(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))
