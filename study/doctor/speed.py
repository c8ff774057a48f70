"""The bench step: a training step per backend, and per layout (NCHW against channels_last)."""

from __future__ import annotations

from study.doctor.core import INFO, WARN, Deadline, DoctorOptions, Finding
from study.doctor.kernels import kernel_backend
from study.models import mamba as mamba_mod

LAYOUT_MARGIN = 0.10  # the other layout must be this much faster before the doctor suggests it


def bench_step(opts: DoctorOptions, deadline: Deadline) -> Finding:
    """Training step and inference per backend, and per layout (NCHW / channels_last) with the kernels."""
    from study.bench import bench_backend, bench_layouts
    from study.train.engine import CHANNELS_LAST_ON
    from study.variants import find_row

    row = find_row("ultralbm")
    backends = ["torch"] + [b for b in [kernel_backend(opts.device)] if b in mamba_mod.available_backends()]
    results = []
    for b in backends:
        deadline.check(f"in the bench step, before the {b} backend")
        results.append(bench_backend(row.build_model, b, opts.batch, opts.size, opts.repeats, opts.device))
    words = {"torch": "PyTorch scan", "native": "C kernels", "cuda": "mamba-ssm"}
    parts = [f"{words[r.backend]} {r.train.median_s * 1e3:.1f} ms" for r in results]
    lines = ["train step (batch %d, %d^2): %s" % (opts.batch, opts.size, ", ".join(parts))]
    deadline.check("in the bench step, before the layouts")
    layouts = bench_layouts(row.build_model, opts.batch, opts.size, opts.repeats, opts.device)
    configured = "channels_last" if CHANNELS_LAST_ON.get(opts.device) else "NCHW"
    other = "NCHW" if configured == "channels_last" else "channels_last"
    gain = 1.0 - layouts[other].median_s / layouts[configured].median_s
    lines.append("layout: " + ", ".join(f"{k} {t.median_s * 1e3:.1f} ms" for k, t in layouts.items())
                 + f"; configured {configured}")
    details = [] if gain < LAYOUT_MARGIN else [
        f"{other} was {gain:.0%} faster on this {opts.device} at batch {opts.batch}, {opts.size}^2: consider "
        f"engine.CHANNELS_LAST_ON['{opts.device}'] = {other == 'channels_last'} (float rounding only, not a "
        "run's identity)"]
    return Finding("bench", WARN if details else INFO, "; ".join(lines), details)
