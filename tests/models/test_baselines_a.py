"""Baselines of Table 1, first part: U-Net, UNet++, Attention U-Net, UNeXt,
MALUNet, U-Lite and EGE-UNet.

Each must reproduce the public implementation's parameter count exactly and
its thop MACs (1x3x256x256, one class) within 1%, and train through
``forward_logits`` like every other model.
"""

import pytest
import torch
from baseline_checks import BaselineContract

from study.models import build_model, make_config

# name: (params, GMACs) measured on the public implementations (Table 1's configurations).
TABLE = {
    "unet": (7_765_985, 13.746),
    "unetpp": (9_163_329, 34.903),
    "attention_unet": (34_878_573, 66.632),
    "unext": (1_471_921, 0.573),
    "malunet": (177_943, 0.083),
    "u_lite": (878_417, 0.757),
    "ege_unet": (53_374, 0.072),
}
# Smallest side used in the quick tests: the three wide conv U-Nets (4 poolings) are
# slow on CPU, so they run at 32; the others reduce by 32 and are cheap at 64.
SIDE = {"unet": 32, "unetpp": 32, "attention_unet": 32}


class TestContract(BaselineContract):
    TABLE = TABLE

    def side(self, name):
        return SIDE.get(name, 64)


@pytest.mark.parametrize("name", ["unet", "unext", "malunet", "ege_unet"])
def test_non_square_multiple_of_32(name):
    model = build_model(name).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 96)).shape == (1, 1, 32, 96)


def test_ege_unet_deep_supervision_heads():
    model = build_model("ege_unet").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        logits, sides = model.forward_deep_supervision(x)
        assert torch.allclose(logits, model.forward_logits(x))
    assert len(sides) == 5 and all(s.shape == (1, 1, 64, 64) for s in sides)
    heads = sum(p.numel() for p in model.side_heads.parameters())
    assert heads == 49 + 33 + 25 + 17 + 9  # 1x1 convs from widths 48, 32, 24, 16, 8 (with bias)


def test_malunet_memories_start_tied():
    model = build_model("malunet")
    ea = model.encoder[3][0]
    assert torch.equal(ea.memory_key.weight, ea.memory_value.weight.transpose(0, 1))


def test_configs_are_validated():
    from study.errors import ConfigError

    with pytest.raises(ConfigError):
        make_config("unet", {"up_mode": "nearest"})
    with pytest.raises(ConfigError):
        make_config("unext", {"widths": [16, 32]})
    with pytest.raises(ConfigError):
        make_config("malunet", {"colour": 1})
    with pytest.raises(ConfigError, match="at least 2 levels"):
        make_config("attention_unet", {"widths": [64]})
    with pytest.raises(ConfigError, match="expected 6 entries"):
        make_config("ege_unet", {"widths": [8, 16, 24, 32, 48]})
    with pytest.raises(ConfigError, match="divisible by 4"):
        make_config("malunet", {"widths": [8, 16, 24, 32, 48, 66]})
