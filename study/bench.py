"""Timings of a variant against the straightforward implementation: figures, never tests.

The reference is the same network run the straightforward way: each Mamba layer
replaced by mambapy's pure-PyTorch ``MambaBlock`` (its parallel scan) holding the
same weights, contiguous NCHW tensors and the per-parameter AdamW loop. Ours is
what a run trains on (``study.train.engine``'s fast path: the C kernels of
``study.kernels`` where they build, else the project's PyTorch scan).
Both are built from one set of weights, checked to compute the same logits, and
timed interleaved (ours, reference, ours, ...) so that a change in the machine's
load hits both. Speed targets live here as printed ratios, never in timed tests.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch

from study import kernels
from study.errors import StudyError
from study.kernels import ops as native_ops
from study.models import mamba as mamba_mod
from study.models.selective_scan import native_selective_scan, selective_scan, selective_scan_reference
from study.train.engine import make_optimizer, prepare_batch, prepare_model
from study.train.losses import bce_dice_loss
from study.train.numerics import apply as apply_numerics


class ReferenceUnavailable(StudyError):
    """mambapy (the reference's Mamba) is not installed."""


@dataclass(frozen=True)
class Timing:
    """Median seconds of ``repeats`` calls, and the spread (min, max) for judging noise."""

    median_s: float
    low_s: float
    high_s: float


@dataclass(frozen=True)
class Comparison:
    ours_train: Timing
    reference_train: Timing
    ours_infer: Timing
    reference_infer: Timing
    logits_max_diff: float

    @property
    def train_ratio(self) -> float:
        return self.ours_train.median_s / self.reference_train.median_s

    @property
    def infer_ratio(self) -> float:
        return self.ours_infer.median_s / self.reference_infer.median_s


def _timing(times: list[float]) -> Timing:
    return Timing(statistics.median(times), min(times), max(times))


def _interleaved(fns: list, repeats: int, warmup: int, sync) -> list[Timing]:
    """Each fn timed ``repeats`` times, alternating fn 0, fn 1, ... every round."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - start)
    return [_timing(t) for t in times]


def reference_model(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with each project Mamba layer swapped for mambapy's, same weights."""
    try:
        from mambapy.mamba import MambaBlock, MambaConfig
    except ImportError:
        raise ReferenceUnavailable("the reference needs mambapy: pip install 'ultralbm-study[bench]' "
                                   "(or pass --no-reference)") from None
    reference = copy.deepcopy(model)
    swapped = 0
    for parent in list(reference.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, mamba_mod.Mamba):
                config = MambaConfig(d_model=child.d_model, n_layers=1, d_state=child.d_state,
                                     d_conv=child.d_conv, expand_factor=child.d_inner // child.d_model)
                block = MambaBlock(config)
                block.load_state_dict(child.state_dict())
                setattr(parent, name, block)
                swapped += 1
    if not swapped:
        raise ReferenceUnavailable("this variant has no Mamba layer to swap; the reference would be itself")
    return reference


def _setup(batch: int, size: int, device: str):
    """(sync, images, masks): what both timings start from, the same for the same seed."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    x = torch.randn(batch, 3, size, size, device=device)
    y = (torch.rand(batch, 1, size, size, device=device) > 0.5).float()
    return sync, x, y


def _train_step(model, optimizer, x, y):
    def step():
        optimizer.zero_grad(set_to_none=True)
        bce_dice_loss(model.forward_logits(x), y).backward()
        optimizer.step()

    return step


def compare_with_reference(build, batch: int = 8, size: int = 256, repeats: int = 7,
                           device: str = "cpu") -> Comparison:
    """Ours (fast path) against the mambapy reference (plain path), same weights, interleaved."""
    apply_numerics(device)
    torch.manual_seed(0)
    model = build()
    reference = prepare_model(reference_model(model), "plain", device)
    ours = prepare_model(model, "fast", device)
    sync, x, y = _setup(batch, size, device)
    with torch.no_grad():
        ours.eval(), reference.eval()
        diff = float((ours.forward_logits(prepare_batch(x[:2], ours))
                      - reference.forward_logits(x[:2])).abs().max())
    ours.train(), reference.train()
    steps = [_train_step(ours, make_optimizer(ours, "fast", 1e-3), prepare_batch(x, ours), y),
             _train_step(reference, make_optimizer(reference, "plain", 1e-3), x, y)]
    ours_train, reference_train = _interleaved(steps, repeats, warmup=2, sync=sync)
    ours.eval(), reference.eval()
    one_ours, one = prepare_batch(x[:1], ours), x[:1].contiguous()
    with torch.inference_mode():
        ours_infer, reference_infer = _interleaved([lambda: ours(one_ours), lambda: reference(one)],
                                                   repeats * 4, warmup=3, sync=sync)
    return Comparison(ours_train, reference_train, ours_infer, reference_infer, diff)


def bench_layouts(build, batch: int = 8, size: int = 256, repeats: int = 5,
                  device: str = "cpu") -> dict[str, Timing]:
    """Our training step with the model stored and fed NCHW and channels_last, interleaved: what
    ``engine.CHANNELS_LAST_ON`` is decided by, per device (on a CPU the C GroupNorm takes
    channels_last; on CUDA PyTorch's GroupNorm converts it to NCHW and back)."""
    apply_numerics(device)  # training's settings (deterministic algorithms, no TF32): its figures
    torch.manual_seed(0)
    base = build()
    models = {"NCHW": prepare_model(copy.deepcopy(base), "fast", device, channels_last=False),
              "channels_last": prepare_model(copy.deepcopy(base), "fast", device, channels_last=True)}
    sync, x, y = _setup(batch, size, device)
    for model in models.values():
        model.train()
    steps = [_train_step(m, make_optimizer(m, "fast", 1e-3), prepare_batch(x, m), y) for m in models.values()]
    return dict(zip(models, _interleaved(steps, repeats, warmup=2, sync=sync)))


@dataclass(frozen=True)
class BackendResult:
    backend: str
    device: str
    train: Timing
    infer: Timing
    logits: torch.Tensor


def bench_backend(build, backend: str, batch: int = 8, size: int = 256, repeats: int = 5,
                  device: str = "cpu") -> BackendResult:
    """Ours (fast path) with one Mamba backend: ``torch`` (PyTorch ops only: the project's
    PyTorch scan and PyTorch's GroupNorm), ``native`` (the C kernels) or ``cuda`` (mamba-ssm's)."""
    previous, previously_enabled = mamba_mod.get_backend(), kernels.enabled()
    mamba_mod.set_backend(backend)
    kernels.set_enabled(previously_enabled and backend != "torch")
    try:
        apply_numerics(device)
        torch.manual_seed(0)
        model = prepare_model(build(), "fast", device)
        sync, x, y = _setup(batch, size, device)
        model.eval()
        with torch.no_grad():
            logits = model.forward_logits(prepare_batch(x[:2], model)).float().cpu()
        model.train()
        step = _train_step(model, make_optimizer(model, "fast", 1e-3), prepare_batch(x, model), y)
        (train,) = _interleaved([step], repeats, warmup=2, sync=sync)
        model.eval()
        one = prepare_batch(x[:1], model)
        with torch.inference_mode():
            (infer,) = _interleaved([lambda: model(one)], repeats * 4, warmup=3, sync=sync)
    finally:
        mamba_mod.set_backend(previous)
        kernels.set_enabled(previously_enabled)
    return BackendResult(backend, device, train, infer, logits)


def bench_scan(batch: int = 4, channels: int = 16, length: int = 1024, state: int = 16,
               with_reference: bool = True) -> dict[str, float]:
    """Forward + backward seconds of the project's PyTorch scan, its C kernel (where built)
    and the sequential reference."""
    torch.manual_seed(0)
    args = [
        torch.randn(batch, channels, length),
        torch.randn(batch, channels, length) * 0.5,
        -torch.rand(channels, state) * 4 - 0.1,
        torch.randn(batch, state, length),
        torch.randn(batch, state, length),
    ]
    out = {}
    fns = {"scan": selective_scan}
    if native_ops.scan_applies(args[0]):
        fns["native"] = native_selective_scan
    if with_reference:
        fns["reference"] = selective_scan_reference
    for name, fn in fns.items():
        leaves = [a.clone().requires_grad_() for a in args]

        def step():
            fn(*leaves, delta_softplus=True).sum().backward()

        (timing,) = _interleaved([step], repeats=1 if name == "reference" else 3,
                                 warmup=0 if name == "reference" else 1,
                                 sync=lambda: None)
        out[name] = timing.median_s
    return out
