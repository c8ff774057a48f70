"""The fast paths compute what the plain paths compute: model engine, batched data, thread shares."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from study.config import RunConfig
from study.data.batched import BatchAugmentation, augment, draw_batch, normalize_batch
from study.data.transforms import Augmentation, NormStats, TransformConfig, apply_augmentation, normalize
from study.launch.cpus import available_cpus, local_share
from study.models import build_model
from study.train.engine import make_optimizer, prepare_batch, prepare_model
from study.train.losses import bce_dice_loss
from study.variants import find_row

ROUTINGS = [
    {},  # the paper's model: shared bidirectional Mamba, batched chunks and directions
    {"glmbp_routing": ["mamba_bi_unshared", "mamba_fwd", "dwconv", "identity"]},
    {"glmbp_routing": ["attention", "attention", "dwconv", "identity"], "skip_scale": "per_skip"},
]


def _pair(options):
    torch.manual_seed(0)
    model = build_model("ultralbm", options)
    return prepare_model(model, "fast"), prepare_model(copy.deepcopy(model), "plain")


@pytest.mark.parametrize("options", ROUTINGS)
def test_fast_path_equals_plain_path(options):
    fast, plain = _pair(options)
    x = torch.randn(2, 3, 64, 64)
    y = (torch.rand(2, 1, 64, 64) > 0.5).float()
    assert fast.encoder[3].batch_branches and not plain.encoder[3].batch_branches
    for mode in ("eval", "train"):
        getattr(fast, mode)(), getattr(plain, mode)()
        with torch.no_grad():
            a, b = fast.forward_logits(prepare_batch(x, fast)), plain.forward_logits(x)
        assert (a - b).abs().max() <= 1e-4 * (1 + b.abs().max()), mode
    # One training step each: gradients, then the updated weights (foreach AdamW against the loop).
    opts = [make_optimizer(m, engine, lr=1e-3) for m, engine in ((fast, "fast"), (plain, "plain"))]
    for model, engine, opt in ((fast, "fast", opts[0]), (plain, "plain", opts[1])):
        bce_dice_loss(model.forward_logits(prepare_batch(x, model)), y).backward()
    for (name, p), q in zip(fast.named_parameters(), plain.parameters()):
        assert (p.grad - q.grad).abs().max() <= 1e-3 * (1 + q.grad.abs().max()), name
    for opt in opts:
        opt.step()
    for (name, p), q in zip(fast.named_parameters(), plain.parameters()):
        assert (p - q).abs().max() <= 1e-5 * (1 + q.abs().max()), name


def test_baselines_are_left_in_their_layout():
    model = prepare_model(find_row("unet").build_model(), "fast")
    assert all(p.is_contiguous() for p in model.parameters())  # no channels_last for models that do not ask


def _images(n=6, size=32, seed=0):
    g = np.random.default_rng(seed)
    images = g.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    images[1] = 77  # a constant image: the official normalisation gives zeros
    masks = (g.random((n, size, size)) > 0.6).astype(np.uint8)
    return images, masks


def test_batched_normalisation_equals_the_official_one():
    images, _ = _images()
    stats = NormStats(mean=120.0, std=55.0, images=6)
    batched = normalize_batch(torch.from_numpy(images), "official")
    for i, image in enumerate(images):
        one = torch.from_numpy(normalize(image, "official", stats).transpose(2, 0, 1).copy())
        assert torch.allclose(batched[i], one, atol=1e-3), i
    unit = normalize_batch(torch.from_numpy(images), "unit")
    assert torch.allclose(unit[0], torch.from_numpy(normalize(images[0], "unit", None).transpose(2, 0, 1).copy()))


def test_batched_augmentation_equals_the_per_sample_one():
    images, masks = _images(n=8, size=48)
    x = normalize_batch(torch.from_numpy(images), "unit")
    m = torch.from_numpy(masks).unsqueeze(1).float()
    hflip = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1], dtype=torch.bool)
    vflip = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1], dtype=torch.bool)
    nan = float("nan")
    angle = torch.tensor([nan, nan, 30.0, 90.0, 200.0, nan, 359.0, 12.5])
    xb, mb = augment(x, m, BatchAugmentation(hflip, vflip, angle))
    for i in range(8):
        a = Augmentation(bool(hflip[i]), bool(vflip[i]), None if torch.isnan(angle[i]) else float(angle[i]))
        xi, mi = apply_augmentation(x[i], m[i], a)
        assert (xb[i] - xi).abs().max() < 1e-4, i
        # nearest sampling may round a pixel exactly on a boundary the other way
        assert (mb[i] != mi).float().mean() < 1e-3, i


def test_batch_draws_follow_the_config_and_the_seed():
    config = TransformConfig(rotation="per_sample", rotation_p=0.5, flip_p=0.5)
    a = draw_batch(config, 400, torch.Generator().manual_seed(3))
    b = draw_batch(config, 400, torch.Generator().manual_seed(3))
    assert torch.equal(a.hflip, b.hflip) and torch.equal(torch.isnan(a.angle), torch.isnan(b.angle))
    assert 0.4 < a.hflip.float().mean() < 0.6 and 0.4 < torch.isnan(a.angle).float().mean() < 0.6
    off = draw_batch(TransformConfig(hflip=False, rotation="none"), 400, torch.Generator().manual_seed(3))
    assert not off.hflip.any() and torch.isnan(off.angle).all()
    assert torch.equal(off.vflip, a.vflip)  # switching one off does not reshuffle the others
    run = draw_batch(TransformConfig(rotation="per_run"), 50, torch.Generator().manual_seed(0), run_angle=33.0)
    assert set(run.angle[~torch.isnan(run.angle)].tolist()) == {33.0}


def test_pipeline_and_engine_are_part_of_a_runs_identity():
    row = find_row("ultralbm")
    base = row.run_config("synthetic", "smoke")
    per_sample = row.run_config("synthetic", "smoke", {"data": {"pipeline": "per_sample"}})
    plain = row.run_config("synthetic", "smoke", {"train": {"engine": "plain"}})
    both = row.run_config("synthetic", "smoke", {"data": {"pipeline": "per_sample"}, "train": {"engine": "plain"}})
    assert len({base.hash, per_sample.hash, plain.hash, both.hash}) == 4
    # Runs stored before these fields existed were per-sample and plain: they keep their hash.
    legacy = both.identity()
    assert "pipeline" not in legacy["data"] and "engine" not in legacy["train"]
    assert RunConfig.from_dict(both.to_dict()).hash == both.hash


def test_cpus_come_from_affinity_cgroup_and_slurm(tmp_path: Path):
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 CPUs
    assert available_cpus({}, quota) == min(2, available_cpus({}, tmp_path / "none"))
    assert available_cpus({"SLURM_CPUS_PER_TASK": "1"}, tmp_path / "none") == 1
    quota.write_text("max 100000\n")
    assert available_cpus({}, quota) == available_cpus({}, tmp_path / "none")


def test_local_share_uses_one_thread_per_small_run():
    small = local_share([64] * 24, cpus=2, busy=0)
    assert (small.jobs, small.threads) == (2, 1)
    assert (local_share([64] * 24, cpus=2, busy=2).jobs, local_share([64], cpus=8, busy=0).jobs) == (1, 1)
    big = local_share([256] * 3, cpus=8, busy=3)
    assert (big.jobs, big.threads) == (1, 8)  # the allocation's CPUs, never the load: a run's numbers never depend on it
    assert local_share([256] * 3, cpus=8, busy=0).threads == big.threads and "busy with other work" in big.describe()
    assert (local_share([256], jobs=2, cpus=8, busy=0).threads, local_share([64] * 9, threads=2, cpus=8, busy=0).jobs) == (4, 4)
