"""The kernels step: the kernels against the PyTorch scan at every shape the registered rows run.

The cases come from a survey, not a list: every row is built on the ``meta`` device (shapes,
no arithmetic) and run forward once at its paper input size (on a CPU, at the doctor's smaller
size), with a hook on each Mamba layer and each SS2D that notes its input's shape. Each distinct
shape is then run forward and backward twice at batch 1-2 on the device, once through the
kernels and once through the PyTorch scan, and compared. mamba-ssm changes its launch
configuration at sequence lengths 128 / 256 / 512 / 1024 / >1024 and chunks above 2048, so
the lengths the rows use (64 up to 65,536 for MambaU-Lite) are each checked as run.
"""

from __future__ import annotations

import contextlib

import torch

from study.doctor.core import FAIL, PASS, WARN, Deadline, DoctorOptions, Finding, after_failure
from study.doctor.rows import every_row
from study.models import mamba as mamba_mod

# Largest difference of the output and of every gradient, relative to (1 + that tensor's largest
# magnitude), between the kernels and the PyTorch scan. Float32 rounding in a scan of 65,536
# steps stays orders of magnitude below this; a wrong launch or an indexing bug does not.
AGREE = 1e-3


def kernel_backend(device: str) -> str:
    return "cuda" if device == "cuda" else "native"


def survey_shapes(size: int | None = None) -> dict[tuple, list[str]]:
    """Every (layer kind, input shape) the rows run, with the rows that run it. ``size``: the input
    side (None: each row's paper size)."""
    from study.models.baselines._ss2d import SS2D

    shapes: dict[tuple, list[str]] = {}
    for row in every_row():
        side = size or row.run_config(profile="paper").data.size
        with torch.device("meta"):
            model = row.build_model()
        seen = set()
        hooks = [m.register_forward_pre_hook(lambda mod, args: seen.add((type(mod).__name__, tuple(args[0].shape))))
                 for m in model.modules() if isinstance(m, (mamba_mod.Mamba, SS2D))]
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, 3, side, side, device="meta"))
        finally:
            for hook in hooks:
                hook.remove()
        for case in seen:
            shapes.setdefault(case, []).append(row.id)
    return dict(sorted(shapes.items()))


def describe(case: tuple) -> str:
    kind, shape = case
    if kind == "Mamba":
        return f"Mamba(d={shape[2]}) L={shape[1]}"
    return f"SS2D(d={shape[3]}) {shape[1]}x{shape[2]} (L={shape[1] * shape[2]})"


def build_case(case: tuple, device: str):
    from study.models.baselines._ss2d import SS2D

    kind, shape = case
    width = shape[-1]
    torch.manual_seed(width)
    module = (mamba_mod.Mamba(width) if kind == "Mamba" else SS2D(width)).to(device)
    batch = min(shape[0], 2)
    return module, torch.randn(batch, *shape[1:], device=device)


def relative_difference(module, x, backend: str) -> float:
    """Largest difference of output and gradients between ``backend`` and the PyTorch scan."""
    results = []
    for name in ("torch", backend):
        with mamba_mod.using_backend(name):
            leaf = x.clone().requires_grad_()
            y = module(leaf)
            y.square().mean().backward()
            grads = [leaf.grad] + [p.grad.clone() for p in module.parameters()]
            module.zero_grad()
            results.append([y.detach()] + grads)
    return max(float((a - b).abs().max()) / (1.0 + float(b.abs().max())) for a, b in zip(results[1], results[0]))


def kernels_step(opts: DoctorOptions, deadline: Deadline) -> Finding:
    """The kernels against the PyTorch scan at every (layer, length, width) of the rows."""
    from study.models.kernel_contract import contract_kernels

    backend = kernel_backend(opts.device)
    if backend not in mamba_mod.available_backends():
        return Finding("kernels", FAIL if opts.device == "cuda" else WARN,
                       f"no '{backend}' kernels to compare on {opts.device}: the PyTorch scan runs")
    # On a CPU the CUDA branch of the layers runs too, into the contract stand-ins.
    passes = [(backend, contextlib.nullcontext)] + ([("cuda", contract_kernels)] if opts.device == "cpu" else [])
    cases = survey_shapes(None if opts.device == "cuda" else opts.size)
    worst, details, results = 0.0, [], []
    for name, context in passes:
        for case, row_ids in cases.items():
            deadline.check(f"in the kernels step, before {describe(case)} ({name})")
            try:
                module, x = build_case(case, opts.device)
                with context():
                    diff = relative_difference(module, x, name)
            except Exception as exc:  # noqa: BLE001  a failing case is a finding; a broken GPU ends the check
                details.append(after_failure(opts.device, f"{describe(case)} ({name})", exc))
                continue
            worst = max(worst, diff)
            results.append({"case": describe(case), "backend": name, "difference": diff, "rows": row_ids})
            if diff > AGREE:
                details.append(f"{describe(case)} ({name}): differs by {diff:.1e} (rows: {', '.join(row_ids[:3])})")
    lengths = sorted({_length(case) for case in cases})
    label = " and the CUDA branch through the contract stand-ins" if opts.device == "cpu" else ""
    where = "each row's paper input size" if opts.device == "cuda" else f"input {opts.size}x{opts.size}"
    summary = (f"{backend} kernels{label} vs PyTorch scan, forward+backward, at the {len(cases)} shapes the rows "
               f"run ({where}: L {', '.join(map(str, lengths))}; widths "
               f"{','.join(map(str, sorted({c[1][-1] for c in cases})))}): largest relative difference {worst:.1e} "
               f"(tolerance {AGREE:.0e})")
    return Finding("kernels", FAIL if details else PASS, summary, details[:8], data={"cases": results})


def _length(case: tuple) -> int:
    kind, shape = case
    return shape[1] if kind == "Mamba" else shape[1] * shape[2]
