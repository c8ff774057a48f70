"""Baselines of Table 1, second part: CMUNeXt-S, Rolling-UNet-S, TinyU-Net,
UltraLight VM-UNet, U-KAN and MK-UNet.

Each must reproduce the public implementation's parameter count exactly and
its thop MACs (1x3x256x256, one class, Mamba internals invisible) within 1%,
and train through ``forward_logits`` like every other model.
"""

import pytest
import torch
from baseline_checks import BaselineContract

from study.complexity import count_params
from study.models import build_model

# name: (params, GMACs) of the public implementations in Table 1's configurations.
TABLE = {
    "cmunext_s": (417_505, 1.090),
    "rolling_unet_s": (1_783_185, 2.102),
    "tinyu_net": (481_105, 1.659),
    # The release's default (with SC_Att_Bridge); the paper prints 0.045 M / 0.069 G,
    # which no configuration of the release gives (documented in paper/mismatches.toml).
    "ultralight_vm_unet": (49_457, 0.060),
    "u_kan": (25_359_265, 6.889),
    "mk_unet": (315_566, 0.328),
}


class TestContract(BaselineContract):
    TABLE = TABLE

    def side(self, name):
        # 32 x 32, the smallest side every one of them takes (U-KAN and MK-UNet reduce by 32).
        return 32

    def configurable_shape(self, name):
        return 32, 64  # non-square


def test_ultralight_without_bridge_matches_the_release():
    assert count_params(build_model("ultralight_vm_unet", {"bridge": False})) == 32_843


def test_ultralight_widths_are_validated():
    from study.errors import ConfigError
    from study.models import make_config

    with pytest.raises(ConfigError, match="divisible by 4"):
        make_config("ultralight_vm_unet", {"widths": [8, 16, 24, 30, 48, 64]})


def test_rolling_shift_equals_per_channel_torch_roll():
    from study.models.baselines.rolling_unet_s import roll_each_channel

    x = torch.randn(2, 5, 7, 6)
    for dim in (2, 3):
        for sign in (1, -1):
            chunks = x.chunk(5, dim=1)
            expected = torch.cat([torch.roll(xc, sign * c, dim) for c, xc in enumerate(chunks)], dim=1)
            assert torch.equal(roll_each_channel(x, dim, sign), expected)


def test_kan_bases_are_cubic_b_splines():
    from scipy.interpolate import BSpline

    from study.models.baselines.u_kan import KANLinear

    layer = KANLinear(3, 2)
    x = torch.linspace(-0.99, 0.99, 13)[:, None].expand(-1, 3)
    bases = layer.b_splines(x)  # (13, 3, 8)
    assert bases.shape == (13, 3, 8)
    assert torch.allclose(bases.sum(-1), torch.ones(13, 3), atol=1e-5)  # partition of unity inside the range
    knots = layer.grid[0].numpy()
    for j in range(bases.shape[-1]):
        coeffs = [1.0 if i == j else 0.0 for i in range(bases.shape[-1])]
        expected = BSpline(knots, coeffs, 3, extrapolate=False)(x[:, 0].numpy())
        assert torch.allclose(bases[:, 0, j], torch.as_tensor(expected, dtype=torch.float32), atol=1e-5)
    # Parameters of efficient-kan's KANLinear: base (out, in), spline (out, in, 5 + 3), scaler (out, in).
    assert count_params(layer) == 2 * 3 * (1 + 8 + 1)


def test_mk_unet_deep_supervision_heads():
    model = build_model("mk_unet").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        outputs = model.forward_deep_supervision(x)
        assert [o.shape for o in outputs] == [(1, 1, 32, 32)] * 4
        assert torch.allclose(outputs[0], model.forward_logits(x))
