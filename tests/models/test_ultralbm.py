"""UltraLBM-UNet: the official architecture, every knob, and clear errors."""

import pytest
import torch

from study.errors import ConfigError
from study.models import build_model, make_config
from study.models.blocks import DwConv, MultiBranchBlock
from study.models.ultralbm import UltraLBMConfig
from study.variants import load_tables


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_official_model_and_student_sizes():
    # Counted on the official release: 34,166 (full) and 10,956 (multiplier 0.5).
    assert n_params(build_model("ultralbm")) == 34_166
    student = build_model("ultralbm", {"channel_multiplier": 0.5})
    assert n_params(student) == 10_956
    assert student.config.widths == (4, 8, 12, 16, 24, 32)


def test_default_block_placement():
    model = build_model("ultralbm")
    enc4, enc5, enc6 = model.encoder[3:]
    dec1, dec2, dec3 = model.decoder[:3]
    assert enc4.routing == dec3.routing == ("dwconv", "dwconv", "dwconv", "identity")
    for block, k in ((enc5, 5), (enc6, 7), (dec1, 7), (dec2, 5)):
        assert block.routing == ("mamba_bi", "mamba_bi", "dwconv", "identity")
        assert block.dwconvs["2"][0].kernel_size == (k, k)
    assert [m.kernel_size for m in model.encoder[:3]] == [(3, 3)] * 3


@pytest.mark.parametrize("skip_scale,delta", [("none", -1), ("shared", 0), ("per_skip", 4)])
def test_skip_scaling(skip_scale, delta):
    assert n_params(build_model("ultralbm", {"skip_scale": skip_scale})) == 34_166 + delta


def test_output_is_probability_map_and_logits_match():
    torch.manual_seed(0)
    model = build_model("ultralbm").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        p, logits = model(x), model.forward_logits(x)
    assert p.shape == (2, 1, 64, 64)
    assert torch.allclose(p, torch.sigmoid(logits))
    assert p.min() >= 0 and p.max() <= 1


def _all_buildable_rows():
    # The UltraLBM family; the baselines have their own tests (tests/models/test_baselines_*.py).
    return [r for t in load_tables().values() for r in t.rows if not r.unavailable and r.arch == "ultralbm"]


@pytest.mark.parametrize("row", _all_buildable_rows(), ids=lambda r: r.id)
def test_every_variant_runs_forward_and_backward(row):
    torch.manual_seed(0)
    model = row.build_model()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 1, 64, 64)
    out.mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_state_dict_round_trip():
    a = build_model("ultralbm")
    b = build_model("ultralbm")
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_config_is_frozen_and_lists_become_tuples():
    cfg = make_config("ultralbm", {"kernel_schedule": [3, 3, 3, 3, 3, 3]})
    assert cfg.kernel_schedule == (3, 3, 3, 3, 3, 3)
    hash(cfg)
    with pytest.raises(Exception):
        cfg.skip_scale = "none"


@pytest.mark.parametrize(
    "options,message",
    [
        ({"stage_blocks": ["lmbp", "glmbp", "transformer", "glmbp", "glmbp", "lmbp"]},
         r"stage_blocks: 'transformer' is not allowed; allowed values: conv, lmbp, glmbp"),
        ({"glmbp_routing": ["mamba_bi", "mamba_bi", "dwconv", "gru"]},
         r"glmbp_routing: 'gru' is not allowed; allowed values: mamba_bi, mamba_fwd, mamba_bi_unshared, "
         r"attention, dwconv, identity"),
        ({"lmbp_routing": ["dwconv", "identity"]}, r"lmbp_routing: expected 4 branch slots"),
        ({"kernel_schedule": [3, 5, 7]}, r"kernel_schedule: expected 6 kernel sizes"),
        ({"kernel_schedule": [3, 5, 7, 7, 5, 4]}, r"kernel_schedule: 4 is not allowed"),
        ({"channels": [8, 16, 24, 30, 48, 64]}, r"channels: 30 .* not divisible by 4"),
        ({"channel_multiplier": 0.25}, r"channels: 2 \(after channel_multiplier 0.25\) is not divisible by 4"),
        ({"skip_scale": "per_stage"}, r"skip_scale: 'per_stage' is not allowed; allowed values: none, shared, per_skip"),
        ({"kernels": [3]}, r"model: unknown field\(s\) kernels; allowed: .*kernel_schedule"),
    ],
)
def test_bad_config_names_the_field(options, message):
    with pytest.raises(ConfigError, match=message):
        make_config("ultralbm", options)


def test_unknown_model_name():
    with pytest.raises(ConfigError, match="model.arch: unknown model 'vit'; registered: .*ultralbm"):
        build_model("vit")


def test_attention_and_dwconv_blocks():
    block = MultiBranchBlock(16, 24, 3, ("attention", "attention", "dwconv", "dwconv"))
    assert set(block.dwconvs) == {"2", "3"}
    assert all(isinstance(m, DwConv) for m in block.dwconvs.values())
    y = block(torch.randn(2, 16, 4, 4))
    assert y.shape == (2, 24, 4, 4)
    assert UltraLBMConfig().widths == (8, 16, 24, 32, 48, 64)
