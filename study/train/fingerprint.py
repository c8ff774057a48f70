"""A numerics fingerprint: what one fixed training step gives with this run's model, threads, kernels and code.

Two attempts whose arithmetic rounds differently (another thread count, the C kernels or PyTorch's ops,
another device, another version of the code) store different numbers under one run id. Each attempt
records the digest of one fixed forward/backward step of its run's own model (seeded weights, a seeded
64 x 64 input, the run's loss form and engine) computed as the attempt computes; runs of one cell whose
fingerprints differ were not computed alike, and ``status``, ``verify`` and the report say so. It takes
a fraction of a second and touches neither the run's random streams nor its model.
"""

from __future__ import annotations

import hashlib

import torch

from study.config import RunConfig

SIZE = 64  # the smallest input every registered model takes (five 2x poolings)
SEED = 20_260_101


def numerics_fingerprint(config: RunConfig, device) -> str:
    """16 hex digits: the digest of the logits, loss and every gradient of one fixed step."""
    from study.train.engine import prepare_batch, prepare_model
    from study.train.losses import bce_dice_loss

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = prepare_model(config.build_model(), config.train.engine, device)
        model.train()
        generator = torch.Generator().manual_seed(SEED)
        channels = getattr(config.model, "in_channels", 3)
        images = (torch.rand(2, channels, SIZE, SIZE, generator=generator) * 255).to(device)
        masks = (torch.rand(2, 1, SIZE, SIZE, generator=generator) > 0.7).float().to(device)
        logits = model.forward_logits(prepare_batch(images, model))
        loss = bce_dice_loss(logits, masks, config.train.bce_input)
        loss.backward()
    digest = hashlib.sha256()
    for tensor in (logits.detach(), loss.detach(), *(p.grad for _, p in model.named_parameters() if p.grad is not None)):
        digest.update(tensor.float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
