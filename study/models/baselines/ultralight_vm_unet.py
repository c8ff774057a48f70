"""UltraLight VM-UNet (Wu et al., Patterns 2024), as ``UltraLight_VM_UNet`` in wurenkai/UltraLight-VM-UNet.

Configuration of Table 1: the release's default (configs/config_setting.py):
widths 8, 16, 24, 32, 48, 64, split_att 'fc' (the only one built here), with
its SC_Att_Bridge (MALUNet's spatial-then-channel skip attention). The
trunk is the six-stage lite U-Net (three 3x3 conv stages, GroupNorm, additive
skips); stages IV-VI and decoder I-III are PVM layers: LayerNorm, four channel
chunks each through one shared Mamba (d_model = C/4) plus a learnable scalar
times the chunk, the same LayerNorm again, and a Linear. The bridge reweights
the five skips with a shared dilated spatial attention, then a channel
attention computed from all five.

Reproduces the release's 49,457 parameters (32,843 without the bridge) and
0.060 GMACs (thop, 1x3x256x256, one class, Mamba internals invisible). The
table prints 0.045 M / 0.069 G, which no configuration of the release gives
(see paper/differences.toml).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from study.models.baselines._blocks import LiteUNet, as_tuples, check_lite_widths, fan_out_init
from study.models.blocks import MAMBA_FWD, MultiBranchBlock
from study.models.registry import register_model


@dataclass(frozen=True)
class UltraLightVMUNetConfig:
    widths: tuple[int, ...] = (8, 16, 24, 32, 48, 64)
    bridge: bool = True  # SC_Att_Bridge on the skips
    in_channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        as_tuples(self, "widths")
        check_lite_widths(self.widths)


def pvm_layer(in_channels: int, out_channels: int) -> MultiBranchBlock:
    """The PVM layer: all four chunks through one forward Mamba, plus the learnable skip scalar."""
    return MultiBranchBlock(in_channels, out_channels, kernel_size=3, routing=(MAMBA_FWD,) * 4)


class UltraLightVMUNet(LiteUNet):
    def __init__(self, config: UltraLightVMUNetConfig = UltraLightVMUNetConfig()):
        c = config.widths
        super().__init__(
            config.in_channels, config.num_classes, c,
            deep_encoder=[pvm_layer(c[2], c[3]), pvm_layer(c[3], c[4]), pvm_layer(c[4], c[5])],
            deep_decoder=[pvm_layer(c[5], c[4]), pvm_layer(c[4], c[3]), pvm_layer(c[3], c[2])],
            # The release's SC_Att_Bridge is MALUNet's, unchanged.
            sc_bridge=config.bridge,
        )
        self.config = config
        self.apply(fan_out_init)


@register_model("ultralight_vm_unet", config=UltraLightVMUNetConfig)
def ultralight_vm_unet(config: UltraLightVMUNetConfig) -> nn.Module:
    return UltraLightVMUNet(config)
