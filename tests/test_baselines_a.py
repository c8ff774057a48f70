"""Baselines of Table 1, first part: U-Net, UNet++, Attention U-Net, UNeXt,
MALUNet, U-Lite and EGE-UNet.

Each must reproduce the public implementation's parameter count exactly and
its thop MACs (1x3x256x256, one class) within 1%, and train through
``forward_logits`` like every other model.
"""

import pytest
import torch

from study.complexity import count_params, macs_thop
from study.models import build_model, make_config, registered_models

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
MACS_TOLERANCE = 0.01
# Smallest side used in the quick tests: the three wide conv U-Nets (4 poolings) are
# slow on CPU, so they run at 32; the others reduce by 32 and are cheap at 64.
SIDE = {"unet": 32, "unetpp": 32, "attention_unet": 32}


def side(name):
    return SIDE.get(name, 64)


def test_all_registered():
    assert set(TABLE) <= set(registered_models())


@pytest.mark.parametrize("name", TABLE)
def test_params_equal_the_public_implementation(name):
    assert count_params(build_model(name)) == TABLE[name][0]


@pytest.mark.parametrize("name", TABLE)
def test_thop_macs_within_one_percent(name):
    torch.manual_seed(0)
    gmacs = macs_thop(build_model(name)) / 1e9
    assert gmacs == pytest.approx(TABLE[name][1], rel=MACS_TOLERANCE)


@pytest.mark.parametrize("name", TABLE)
def test_forward_backward_small_input(name):
    torch.manual_seed(0)
    model = build_model(name).train()
    n = side(name)
    x = torch.randn(2, 3, n, n)
    logits = model.forward_logits(x)
    assert logits.shape == (2, 1, n, n)
    target = (torch.rand(2, 1, n, n) > 0.5).float()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    model.eval()
    with torch.no_grad():
        probs, logits = model(x), model.forward_logits(x)
    assert probs.shape == (2, 1, n, n)
    assert probs.min() >= 0 and probs.max() <= 1
    assert torch.allclose(probs, torch.sigmoid(logits))


@pytest.mark.parametrize("name", ["unet", "unext", "malunet", "ege_unet"])
def test_non_square_multiple_of_32(name):
    model = build_model(name).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 96)).shape == (1, 1, 32, 96)


@pytest.mark.parametrize("name", TABLE)
def test_in_channels_and_classes_are_configurable(name):
    model = build_model(name, {"in_channels": 1, "num_classes": 2}).eval()
    n = side(name)
    with torch.no_grad():
        assert model.forward_logits(torch.randn(1, 1, n, n)).shape == (1, 2, n, n)


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
