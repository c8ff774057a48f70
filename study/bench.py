"""CPU/GPU timings of a variant: a training step and single-image inference.

Figures only, medians of repeated runs: speed targets live here, never in
timed tests.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from study.models import mamba as mamba_mod
from study.models.selective_scan import selective_scan, selective_scan_reference


@dataclass(frozen=True)
class BenchResult:
    backend: str
    device: str
    train_step_s: float
    infer_ms: float


def _median_time(fn, repeats: int, warmup: int, sync) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_model(build, backend: str, batch: int = 8, size: int = 256, repeats: int = 5) -> BenchResult:
    """Median train step (forward, BCE, backward, AdamW step) and single-image inference."""
    device = "cuda" if backend == "cuda" else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    previous = mamba_mod.get_backend()
    mamba_mod.set_backend(backend)
    try:
        torch.manual_seed(0)
        model = build().to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randn(batch, 3, size, size, device=device)
        y = (torch.rand(batch, 1, size, size, device=device) > 0.5).float()

        def train_step():
            opt.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(model.forward_logits(x), y)
            loss.backward()
            opt.step()

        model.train()
        train_s = _median_time(train_step, repeats, warmup=2, sync=sync)
        model.eval()
        one = torch.randn(1, 3, size, size, device=device)
        with torch.no_grad():
            infer_s = _median_time(lambda: model(one), repeats * 4, warmup=3, sync=sync)
    finally:
        mamba_mod.set_backend(previous)
    return BenchResult(backend, device, train_s, infer_s * 1e3)


def bench_scan(batch: int = 4, channels: int = 16, length: int = 1024, state: int = 16,
               with_reference: bool = True) -> dict[str, float]:
    """Forward + backward seconds of the blocked scan and of the sequential reference."""
    torch.manual_seed(0)
    args = [
        torch.randn(batch, channels, length),
        torch.randn(batch, channels, length) * 0.5,
        -torch.rand(channels, state) * 4 - 0.1,
        torch.randn(batch, state, length),
        torch.randn(batch, state, length),
    ]
    out = {}
    fns = {"blocked": selective_scan}
    if with_reference:
        fns["reference"] = selective_scan_reference
    for name, fn in fns.items():
        leaves = [a.clone().requires_grad_() for a in args]

        def step():
            fn(*leaves, delta_softplus=True).sum().backward()

        out[name] = _median_time(step, repeats=3 if name == "blocked" else 1, warmup=1 if name == "blocked" else 0,
                                 sync=lambda: None)
    return out
