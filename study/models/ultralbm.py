"""UltraLBM-UNet and every knob its ablation tables need.

Defaults are the paper's model (34,166 parameters). Stage names follow the
paper: encoder I-VI, decoder I-V; the six configurable stages are encoder
IV-VI and decoder I-III, in that order in ``stage_blocks`` and
``kernel_schedule``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from study.canonical import check_fields
from study.errors import ConfigError
from study.models.blocks import BRANCH_KINDS, CONV1D_INITS, FLIP_AXES, MultiBranchBlock, conv3x3, init_weights
from study.models.registry import register_model

STAGE_NAMES = ("encoder IV", "encoder V", "encoder VI", "decoder I", "decoder II", "decoder III")
BLOCK_TYPES = ("conv", "lmbp", "glmbp")
SKIP_SCALES = ("none", "shared", "per_skip")
GROUPS = 4  # GroupNorm groups after every stage


def _allowed(field: str, value, allowed) -> ConfigError:
    return ConfigError(f"{field}: {value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}")


@dataclass(frozen=True)
class UltraLBMConfig:
    channels: tuple[int, ...] = (8, 16, 24, 32, 48, 64)
    # 0.5 gives UltraLBM-UNet-T, the distillation student: (4, 8, 12, 16, 24, 32).
    channel_multiplier: float = 1.0
    # Block of encoder IV, V, VI and decoder I, II, III (Table 2, Table 4's conv row).
    stage_blocks: tuple[str, ...] = ("lmbp", "glmbp", "glmbp", "glmbp", "glmbp", "lmbp")
    # Branch of each of the four channel chunks in a GLMBP / LMBP block (Tables 3, 4).
    glmbp_routing: tuple[str, ...] = ("mamba_bi", "mamba_bi", "dwconv", "identity")
    lmbp_routing: tuple[str, ...] = ("dwconv", "dwconv", "dwconv", "identity")
    # DwConv kernel of encoder IV, V, VI and decoder I, II, III (Table 5).
    kernel_schedule: tuple[int, ...] = (3, 5, 7, 7, 5, 3)
    # Learnable scalar k on the additive skips: none, one shared, one per skip (Table 6).
    skip_scale: str = "shared"
    # The backward direction of the bidirectional Mamba: "sequence" (the paper, Sec. 3.2.1,
    # Eq. 3) or "channel" (the authors' release flips a chunk's channels).
    bidirectional_flip: str = "sequence"
    # The Mamba's depthwise Conv1d init: "harness" or "release" (study.models.blocks.CONV1D_INITS).
    mamba_conv_init: str = "harness"
    in_channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        # Lists from TOML become tuples so the config stays hashable and frozen.
        for f in ("channels", "stage_blocks", "glmbp_routing", "lmbp_routing", "kernel_schedule"):
            value = getattr(self, f)
            if isinstance(value, list):
                object.__setattr__(self, f, tuple(value))
        self._validate()

    @classmethod
    def from_dict(cls, options: dict) -> "UltraLBMConfig":
        check_fields(cls, "model", options)
        return cls(**options)

    def _validate(self):
        if len(self.channels) != 6 or not all(isinstance(c, int) and c > 0 for c in self.channels):
            raise ConfigError(f"channels: expected 6 positive integers, got {self.channels!r}")
        if not self.channel_multiplier > 0:
            raise ConfigError(f"channel_multiplier: expected a positive number, got {self.channel_multiplier!r}")
        if len(self.stage_blocks) != 6:
            raise ConfigError(
                f"stage_blocks: expected 6 entries ({', '.join(STAGE_NAMES)}), got {len(self.stage_blocks)}"
            )
        for block in self.stage_blocks:
            if block not in BLOCK_TYPES:
                raise _allowed("stage_blocks", block, BLOCK_TYPES)
        for name in ("glmbp_routing", "lmbp_routing"):
            routing = getattr(self, name)
            if len(routing) != 4:
                raise ConfigError(f"{name}: expected 4 branch slots, got {len(routing)}")
            for kind in routing:
                if kind not in BRANCH_KINDS:
                    raise _allowed(name, kind, BRANCH_KINDS)
        if len(self.kernel_schedule) != 6:
            raise ConfigError(
                f"kernel_schedule: expected 6 kernel sizes ({', '.join(STAGE_NAMES)}), got {len(self.kernel_schedule)}"
            )
        for k in self.kernel_schedule:
            if not (isinstance(k, int) and k >= 1 and k % 2 == 1):
                raise ConfigError(f"kernel_schedule: {k!r} is not allowed; expected odd positive integers")
        if self.skip_scale not in SKIP_SCALES:
            raise _allowed("skip_scale", self.skip_scale, SKIP_SCALES)
        if self.bidirectional_flip not in FLIP_AXES:
            raise _allowed("bidirectional_flip", self.bidirectional_flip, tuple(FLIP_AXES))
        if self.mamba_conv_init not in CONV1D_INITS:
            raise _allowed("mamba_conv_init", self.mamba_conv_init, CONV1D_INITS)
        widths = self.widths
        for c in widths:
            if c % GROUPS:
                raise ConfigError(
                    f"channels: {c} (after channel_multiplier {self.channel_multiplier}) is not divisible by "
                    f"{GROUPS}, needed by GroupNorm({GROUPS}) and the four-chunk blocks; widths {widths}"
                )

    @property
    def widths(self) -> tuple[int, ...]:
        """Channel widths after the multiplier."""
        return tuple(int(round(c * self.channel_multiplier)) for c in self.channels)


class UltraLBMUNet(nn.Module):
    # Measured faster stored and fed channels_last (see study.train.engine).
    prefers_channels_last = True

    def __init__(self, config: UltraLBMConfig = UltraLBMConfig()):
        super().__init__()
        self.config = config
        c1, c2, c3, c4, c5, c6 = config.widths
        kinds = config.stage_blocks
        ks = config.kernel_schedule

        def stage(i: int, cin: int, cout: int) -> nn.Module:
            if kinds[i] == "conv":
                return conv3x3(cin, cout)
            routing = config.glmbp_routing if kinds[i] == "glmbp" else config.lmbp_routing
            return MultiBranchBlock(cin, cout, ks[i], routing, flip=config.bidirectional_flip)

        self.encoder = nn.ModuleList([
            conv3x3(config.in_channels, c1),
            conv3x3(c1, c2),
            conv3x3(c2, c3),
            stage(0, c3, c4),
            stage(1, c4, c5),
            stage(2, c5, c6),
        ])
        # Norms after encoder I-V; encoder VI has none.
        self.encoder_norms = nn.ModuleList([nn.GroupNorm(GROUPS, c) for c in (c1, c2, c3, c4, c5)])
        self.decoder = nn.ModuleList([
            stage(3, c6, c5),
            stage(4, c5, c4),
            stage(5, c4, c3),
            conv3x3(c3, c2),
            conv3x3(c2, c1),
        ])
        self.decoder_norms = nn.ModuleList([nn.GroupNorm(GROUPS, c) for c in (c5, c4, c3, c2, c1)])
        if config.skip_scale == "shared":
            self.skip_scale = nn.Parameter(torch.ones(1))
        elif config.skip_scale == "per_skip":
            self.skip_scale = nn.Parameter(torch.ones(5))
        else:
            self.skip_scale = None
        self.head = nn.Conv2d(c1, config.num_classes, 1)
        self.apply(functools.partial(init_weights, conv1d=config.mamba_conv_init))

    def _skip(self, i: int) -> torch.Tensor | float:
        if self.skip_scale is None:
            return 1.0
        return self.skip_scale[i if self.skip_scale.numel() > 1 else 0]

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i in range(5):  # encoder I-V: block -> GN -> maxpool -> GELU
            x = _norm_pool_gelu(self.encoder_norms[i], self.encoder[i](x))
            skips.append(x)
        x = F.gelu(self.encoder[5](x))  # encoder VI at H/32: no norm, no pool
        # decoder I stays at H/32; decoder II-V upsample x2. Skips pair deepest-first.
        for i in range(5):
            x = self.decoder_norms[i](self.decoder[i](x))
            if i > 0:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            x = F.gelu(x)
            x = x + self._skip(i) * skips[4 - i]
        x = self.head(x)  # at H/2
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Foreground probabilities, (B, num_classes, H, W) in [0, 1]."""
        return torch.sigmoid(self.forward_logits(x))


def _norm_pool_gelu(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """gelu(max_pool2d(norm(x), 2)); in one fused kernel where the norm offers one (the
    fast engine's ``ChannelsLastGroupNorm`` on a CPU), the same function either way."""
    fused = getattr(norm, "pool_gelu", None)
    out = fused(x) if fused is not None else None
    return F.gelu(F.max_pool2d(norm(x), 2)) if out is None else out


@register_model("ultralbm", config=UltraLBMConfig)
def ultralbm(config: UltraLBMConfig) -> UltraLBMUNet:
    return UltraLBMUNet(config)
