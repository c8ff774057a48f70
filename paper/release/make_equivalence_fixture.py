"""Write paper/release/equivalence_fixture.pt from the authors' release: weights, an input, its output.

    python paper/release/make_equivalence_fixture.py RELEASE_CHECKOUT [OUT]

RELEASE_CHECKOUT is a checkout of LinLinLin-X/UltraLBM-UNet at the commit named
in RELEASE_COMMIT (its models/UltraLBM_UNet.py is imported from there; nothing
of it is copied here). The release imports ``mamba_ssm.Mamba`` (CUDA only) and
timm's ``trunc_normal_``; this script stands in for them with mambapy's
pure-PyTorch Mamba block (an implementation independent of this project's,
with mamba-ssm's parameter names) and PyTorch's ``trunc_normal_``.

For each width (multiplier 1.0 and 0.5) the release's model is built, every
parameter and BatchNorm statistic is drawn at random (so none is at a neutral
value), and one (2, 3, 64, 64) input is run through it in eval mode. The
fixture holds the release's state dict, the input and the output, as plain
tensors that ``torch.load(..., weights_only=True)`` reads.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import torch

RELEASE_COMMIT = "0a99c437bbc2d5a3a1b90a6ca040592f7f023411"
MULTIPLIERS = (1.0, 0.5)
INPUT_SHAPE = (2, 3, 64, 64)


def _install_stand_ins() -> None:
    from mambapy.mamba import MambaBlock, MambaConfig

    class Mamba(MambaBlock):
        """mamba_ssm.Mamba's constructor on mambapy's block (sequential scan: no padding to powers of 2)."""

        def __init__(self, d_model, d_state=16, d_conv=4, expand=2):
            super().__init__(MambaConfig(d_model=d_model, n_layers=1, d_state=d_state, d_conv=d_conv,
                                         expand_factor=expand, pscan=False))

    mamba_ssm = types.ModuleType("mamba_ssm")
    mamba_ssm.Mamba = Mamba
    timm, models, layers = (types.ModuleType(n) for n in ("timm", "timm.models", "timm.models.layers"))
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    sys.modules.update({"mamba_ssm": mamba_ssm, "timm": timm, "timm.models": models, "timm.models.layers": layers})


def _randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith("A_log"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 2.0)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    checkout = Path(argv[0]).resolve()
    out = Path(argv[1]) if len(argv) == 2 else Path(__file__).with_name("equivalence_fixture.pt")
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    if commit != RELEASE_COMMIT:
        print(f"{checkout} is at {commit or 'no git commit'}, expected {RELEASE_COMMIT}", file=sys.stderr)
        return 2
    _install_stand_ins()
    sys.path.insert(0, str(checkout))
    from models.UltraLBM_UNet import UltraLBM_UNet

    fixture = {"commit": RELEASE_COMMIT}
    generator = torch.Generator().manual_seed(2026)
    for multiplier in MULTIPLIERS:
        model = UltraLBM_UNet(channel_multiplier=multiplier).eval()
        _randomise(model, generator)
        x = torch.randn(INPUT_SHAPE, generator=generator)
        with torch.no_grad():
            y = model(x)
        key = f"x{multiplier}"
        fixture[key] = {"state_dict": {k: v.clone() for k, v in model.state_dict().items()}, "input": x,
                        "output": y}
    torch.save(fixture, out)
    print(f"wrote {out} from the release at {RELEASE_COMMIT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
