"""Blocks shared by U-Net, UNet++, Attention U-Net, UNeXt, MALUNet, U-Lite and EGE-UNet.

Not auto-imported by the package (leading underscore): the model modules
import what they need. What is shared:

* ``double_conv``: the two 3x3 convs of the classic U-Nets, in either order of
  BN and ReLU (the U-Net port puts BN after the ReLU, the others before).
* ``ChannelsFirstLayerNorm``: ConvNeXt's LayerNorm over the channel axis of a
  (B, C, H, W) map, used by EGE-UNet.
* ``fan_out_init``: the init of the UNeXt / MALUNet / EGE-UNet releases.
* ``LiteUNet``: the six-stage layout of MALUNet and EGE-UNet (three plain 3x3
  conv stages, three attention stages, GroupNorm after every stage but the
  sixth, additive skips); each model plugs in its own stages and bridge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 4  # GroupNorm groups of MALUNet / EGE-UNet


def double_conv(in_channels: int, out_channels: int, *, norm_after_act: bool = False,
                batch_norm: bool = True) -> nn.Sequential:
    """Two 3x3 same-padding convs (with bias), each followed by BN and ReLU.

    ``norm_after_act`` gives conv -> ReLU -> BN, the order of the U-Net port
    whose numbers the table reproduces; the default is conv -> BN -> ReLU.
    """
    layers: list[nn.Module] = []
    for cin in (in_channels, out_channels):
        conv = nn.Conv2d(cin, out_channels, 3, padding=1)
        norm = [nn.BatchNorm2d(out_channels)] if batch_norm else []
        act = nn.ReLU(inplace=True)
        layers += [conv, act, *norm] if norm_after_act else [conv, *norm, act]
    return nn.Sequential(*layers)


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


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class LiteUNet(nn.Module):
    """The six-stage trunk of MALUNet and EGE-UNet, without their bridges.

    Encoder stage i (i < 5): block -> GroupNorm -> maxpool -> GELU, kept as
    skip i; stage 6 is block -> GELU at H/32. Decoder stage 1 stays at H/32,
    stages 2-5 upsample x2 (bilinear, corners aligned) after their norm; the
    head runs at H/2 and its logits are upsampled to the input size.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int],
                 deep_encoder: Sequence[nn.Module], deep_decoder: Sequence[nn.Module]):
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
            x = upsample2x(x)
        return F.gelu(x)

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        return upsample2x(self.head(x))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # each model wires its own bridge between encode and decode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))
