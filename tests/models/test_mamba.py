"""The Mamba layer: mamba-ssm's parameter layout, backends, and the shared Bi-Mamba branch."""

import pytest
import torch

from study.errors import ConfigError
from study.models import mamba as mamba_mod
from study.models.blocks import MultiBranchBlock
from study.models.mamba import Mamba
from study.models.selective_scan import selective_scan_reference

# mamba_ssm.Mamba(d_model=8) (d_state 16, d_conv 4, expand 2): names and shapes
# as in its source, so state dicts load both ways.
MAMBA_SSM_LAYOUT_D8 = {
    "A_log": (16, 16),
    "D": (16,),
    "in_proj.weight": (32, 8),
    "conv1d.weight": (16, 1, 4),
    "conv1d.bias": (16,),
    "x_proj.weight": (33, 16),
    "dt_proj.weight": (16, 1),
    "dt_proj.bias": (16,),
    "out_proj.weight": (8, 16),
}


def test_state_dict_layout_is_mamba_ssm():
    layout = {k: tuple(v.shape) for k, v in Mamba(8).state_dict().items()}
    assert layout == MAMBA_SSM_LAYOUT_D8


@pytest.mark.parametrize("d_model,params", [(8, 1296), (12, 2232), (16, 3360)])
def test_parameter_count(d_model, params):
    # 4d^2 + 10d + 2d(ceil(d/16)+32) + (ceil(d/16)*2d + 2d) + 32d + 2d + 2d^2
    assert sum(p.numel() for p in Mamba(d_model).parameters()) == params


def test_layer_uses_the_scan_it_claims(monkeypatch):
    torch.manual_seed(0)
    layer = Mamba(8)
    x = torch.randn(2, 40, 8)
    fast = layer(x)
    monkeypatch.setattr(mamba_mod, "selective_scan", selective_scan_reference)
    assert torch.allclose(fast, layer(x), atol=1e-5)


def test_causal_forward_only_mamba():
    # Changing a later token must not change earlier outputs.
    torch.manual_seed(0)
    layer = Mamba(8)
    x = torch.randn(1, 30, 8)
    y = x.clone()
    y[:, 20:] += 1.0
    assert torch.allclose(layer(x)[:, :20], layer(y)[:, :20], atol=1e-6)
    assert not torch.allclose(layer(x)[:, 20:], layer(y)[:, 20:])


def test_backend_choice():
    with pytest.raises(ConfigError, match="allowed: auto, torch, native, cuda"):
        mamba_mod.set_backend("triton")
    previous = mamba_mod.get_backend()
    try:
        mamba_mod.set_backend("cuda")
        with pytest.raises(RuntimeError, match="mamba-ssm"):
            Mamba(8)(torch.randn(1, 4, 8))  # a CPU tensor cannot use the kernels
    finally:
        mamba_mod.set_backend(previous)
    assert "torch" in mamba_mod.available_backends()


def test_shared_bimamba_is_one_module_on_sequence_and_flip():
    torch.manual_seed(0)
    block = MultiBranchBlock(32, 48, 5, ("mamba_bi", "mamba_bi", "dwconv", "identity")).eval()
    calls = []
    block.mamba.register_forward_hook(lambda m, inp, out: calls.append((inp[0].detach(), out.detach())))
    x = torch.randn(2, 32, 4, 4)
    block(x)
    assert len(calls) == 1, "one Mamba call serves both chunks and both directions"
    assert not hasattr(block, "mamba_backward")
    seq, out = calls[0]
    b = x.shape[0]
    chunks = block.norm(x.flatten(2).transpose(1, 2)).chunk(4, dim=-1)
    # Batch layout: chunk 1, chunk 2, flip(chunk 1), flip(chunk 2).
    for j in range(2):
        assert torch.allclose(seq[j * b:(j + 1) * b], chunks[j], atol=1e-6)
        assert torch.allclose(seq[(2 + j) * b:(3 + j) * b], chunks[j].flip(1), atol=1e-6)
    # Eq. 4: M(x) + flip(M(flip(x))) + s * x, with the same module.
    with torch.no_grad():
        expected = block.mamba(chunks[0]) + block.mamba(chunks[0].flip(1)).flip(1) + block.scale * chunks[0]
        got = block._global(dict(enumerate(chunks)))[0] + block.scale * chunks[0]
    assert torch.allclose(got, expected, atol=1e-5)


def test_unshared_bimamba_has_two_modules():
    block = MultiBranchBlock(32, 48, 5, ("mamba_bi_unshared", "mamba_bi_unshared", "dwconv", "identity"))
    assert isinstance(block.mamba, Mamba) and isinstance(block.mamba_backward, Mamba)
    assert block.mamba is not block.mamba_backward
