"""`study doctor`: one call that says whether this machine trains the study correctly, and how fast.

Made for the first GPU a user (or this project) gets: in a few minutes on one
GPU it checks the environment and the kernels' probes, builds every row of
every table and runs one forward and backward of each on the device, compares
the kernels with the PyTorch scan on every Mamba width the variants use (and
SS2D), times a training step per backend and per layout (NCHW against
channels_last, which decides ``engine.CHANNELS_LAST_ON``), trains a 2-epoch
smoke run through ``study run`` twice with the same seed and says whether the
two match, and prints a summary of one screen.

On a CPU (``--device cpu``) the same steps run at smaller sizes, and the
kernel step also runs the CUDA branch of the layers through the contract
stand-ins (``study.models.kernel_contract``): the doctor's self-test, which CI runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from study.models import cuda_kernels
from study.models import mamba as mamba_mod

PASS, WARN, FAIL, INFO = "PASS", "WARN", "FAIL", "INFO"
AGREE = 1e-3  # kernels against the PyTorch scan: largest difference relative to the output's size
LAYOUT_MARGIN = 0.10  # the other layout must be this much faster before the doctor suggests it


@dataclass
class Finding:
    step: str
    verdict: str  # PASS, WARN, FAIL or INFO (a figure, no verdict)
    summary: str
    details: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DoctorOptions:
    device: str = "cuda"
    size: int = 256  # input side of the row and bench steps
    batch: int = 8  # of the bench's training step
    repeats: int = 5
    train: bool = True  # the two 2-epoch runs through `study run`
    train_row: str = "ultralbm"

    @classmethod
    def for_device(cls, device: str, **changes) -> "DoctorOptions":
        base = cls(device=device) if device == "cuda" else cls(device=device, size=64, batch=4, repeats=3)
        return base.__class__(**{**base.__dict__, **{k: v for k, v in changes.items() if v is not None}})


def kernel_backend(device: str) -> str:
    return "cuda" if device == "cuda" else "native"


def environment(opts: DoctorOptions) -> Finding:
    from study import kernels
    from study.train import numerics

    settings = numerics.apply(opts.device)
    lines = [f"torch {torch.__version__}"]
    if opts.device == "cuda":
        found = cuda_kernels.kernels_for(opts.device)
        lines.append(f"{settings['gpu']} (sm {settings['capability']}), CUDA {settings['cuda']}, "
                     f"cuDNN {settings['cudnn']}, TF32 {'on' if settings['tf32_cudnn'] else 'off'}")
        lines.append(f"scan: {found.scan_name}; conv: {found.conv_name}")
        details = [found.problem] if found.problem else []
        details += list(found.notes)
        verdict = PASS if found.usable and not found.notes else (WARN if found.usable else FAIL)
        return Finding("environment", verdict, "; ".join(lines), details)
    lines.append(kernels.status())
    return Finding("environment", PASS if kernels.library() is not None else WARN, "; ".join(lines))


def every_row():
    from study.variants import load_tables

    rows = {}
    for table in load_tables().values():
        for row in table.rows:
            if not row.unavailable:
                rows.setdefault(row.id, row)
    return list(rows.values())


def rows_step(opts: DoctorOptions) -> Finding:
    """Every row built and run forward and backward once on the device (the trained path)."""
    from study.train.engine import prepare_batch, prepare_model
    from study.train.losses import bce_dice_loss

    failures, slowest, rows = [], (0.0, ""), every_row()
    for row in rows:
        try:
            torch.manual_seed(0)
            model = prepare_model(row.build_model(), "fast", opts.device)
            model.train()
            images = torch.randn(2, 3, opts.size, opts.size, device=opts.device)
            masks = (torch.rand(2, 1, opts.size, opts.size, device=opts.device) > 0.5).float()
            started = time.perf_counter()
            loss = bce_dice_loss(model.forward_logits(prepare_batch(images, model)), masks)
            loss.backward()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss {float(loss)}")
            _sync(opts.device)
            slowest = max(slowest, (time.perf_counter() - started, row.id))
        except Exception as exc:  # noqa: BLE001  each row's failure is a finding, not the end of the check
            failures.append(f"{row.id}: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")
    verdict = FAIL if failures else PASS
    summary = (f"{len(rows) - len(failures)}/{len(rows)} rows: forward+backward at 2x3x{opts.size}x{opts.size} on "
               f"{opts.device} (slowest {slowest[1]} {slowest[0]:.2f} s)")
    return Finding("rows", verdict, summary, failures[:8] + ([f"... {len(failures) - 8} more"] if len(failures) > 8 else []))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _relative_difference(module, x, backend: str) -> float:
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


def mamba_widths() -> list[int]:
    widths = set()
    for row in every_row():
        widths |= {m.d_model for m in row.build_model().modules() if isinstance(m, mamba_mod.Mamba)}
    return sorted(widths)


def kernels_step(opts: DoctorOptions) -> Finding:
    """The kernels against the PyTorch scan on every Mamba width of the variants and on SS2D."""
    from study.models.kernel_contract import contract_kernels

    backend = kernel_backend(opts.device)
    if backend not in mamba_mod.available_backends():
        return Finding("kernels", FAIL if opts.device == "cuda" else WARN,
                       f"no '{backend}' kernels to compare on {opts.device}: the PyTorch scan runs")
    # On a CPU the CUDA branch of the layers runs too, into the contract stand-ins.
    passes = [(backend, contextlib.nullcontext)] + ([("cuda", contract_kernels)] if opts.device == "cpu" else [])
    widths = mamba_widths()
    worst, details = 0.0, []
    for name, context in passes:
        for what, module, x in _kernel_cases(widths, opts.device):
            with context():
                diff = _relative_difference(module, x, name)
            worst = max(worst, diff)
            if diff > AGREE:
                details.append(f"{what} ({name}): differs by {diff:.1e}")
    label = " and the CUDA branch through the contract stand-ins" if opts.device == "cpu" else ""
    summary = (f"{backend} kernels{label} vs PyTorch scan on Mamba widths {','.join(map(str, widths))} and SS2D: "
               f"largest relative difference {worst:.1e}")
    return Finding("kernels", FAIL if details else PASS, summary, details)


def _kernel_cases(widths, device):
    from study.models.baselines._ss2d import SS2D

    for d in widths:
        torch.manual_seed(d)
        yield f"Mamba({d})", mamba_mod.Mamba(d).to(device), torch.randn(4, 256, d, device=device)
    torch.manual_seed(0)
    yield "SS2D(8)", SS2D(8).to(device), torch.randn(2, 16, 16, 8, device=device)


def bench_step(opts: DoctorOptions) -> Finding:
    """Training step and inference per backend, and per layout (NCHW / channels_last) with the kernels."""
    from study.bench import bench_backend, bench_layouts
    from study.train.engine import CHANNELS_LAST_ON
    from study.variants import find_row

    row = find_row("ultralbm")
    backends = ["torch"] + [b for b in [kernel_backend(opts.device)] if b in mamba_mod.available_backends()]
    results = [bench_backend(row.build_model, b, opts.batch, opts.size, opts.repeats, opts.device) for b in backends]
    words = {"torch": "PyTorch scan", "native": "C kernels", "cuda": "mamba-ssm"}
    parts = [f"{words[r.backend]} {r.train.median_s * 1e3:.1f} ms" for r in results]
    lines = ["train step (batch %d, %d^2): %s" % (opts.batch, opts.size, ", ".join(parts))]
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


def _train_twice(opts: DoctorOptions, where: Path) -> list[Path]:
    env = dict(os.environ)
    if opts.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # `study run` takes a visible GPU; this check is the CPU's
    stores = []
    for attempt in ("a", "b"):
        store = where / attempt
        command = [sys.executable, "-m", "study", "run", opts.train_row, "--seeds", "1", "--profile", "smoke",
                   "--set", "train.epochs=2", "--results", str(store)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"`study {' '.join(command[3:])}` exited {done.returncode}: {last[0]}")
        stores.append(store)
    return stores


def repeat_step(opts: DoctorOptions) -> Finding:
    """A 2-epoch smoke run through `study run`, twice with seed 0: identical, or how far apart."""
    from study.store.runs import Store

    if not opts.train:
        return Finding("repeat", INFO, "skipped (--no-train)")
    with tempfile.TemporaryDirectory(prefix="study-doctor-") as tmp:
        try:
            stores = _train_twice(opts, Path(tmp))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return Finding("repeat", FAIL, f"the smoke run failed: {exc}")
        records = [next(iter(Store(s).records())) for s in stores]
        weights = [torch.load(Store(s).model_path(r.key), map_location="cpu", weights_only=True)
                   for s, r in zip(stores, records)]
    device = records[0].details.get("device")
    counts = [r.pooled["test"].as_tuple() for r in records]
    losses = [[h["train_loss"] for h in r.details.get("history", [])] for r in records]
    weight_diff = max(float((weights[0][k].float() - weights[1][k].float()).abs().max()) for k in weights[0])
    dsc = [r.test["dsc"] * 100 for r in records]
    if counts[0] == counts[1] and losses[0] == losses[1] and weight_diff == 0.0:
        return Finding("repeat", PASS, f"{opts.train_row}, 2 epochs on {device}, seed 0, twice: bit-identical "
                                       f"(test DSC {dsc[0]:.2f})")
    verdict = FAIL if opts.device == "cpu" else WARN  # the CPU promises bit-identical; CUDA within rounding
    return Finding("repeat", verdict,
                   f"{opts.train_row}, 2 epochs on {device}, seed 0, twice: differ (test DSC {dsc[0]:.3f} vs "
                   f"{dsc[1]:.3f}; largest weight difference {weight_diff:.1e})",
                   [f"train losses {losses[0]} vs {losses[1]}"])


STEPS = (environment, rows_step, kernels_step, bench_step, repeat_step)


QUIET_CPU_SECONDS = 30  # `study doctor --device cpu` alone on this project's 2-core machine: 28.5 s (measured)


def run_doctor(opts: DoctorOptions, log=print) -> list[Finding]:
    """Every step in order; each step's finding is printed as soon as it is known. On a CPU it says first
    how long the check takes on a quiet machine, and when other work keeps CPUs busy (as ``bench`` does)."""
    if opts.device != "cuda":
        from study.launch.cpus import busy_cpus

        busy = busy_cpus()
        log(f"  the CPU check takes about {QUIET_CPU_SECONDS} s on a quiet 2-core machine"
            + (f"; {busy} CPU(s) are busy with other work now: expect it to take several times longer, and its "
               "timings (the bench step's advice included) to be unreliable" if busy else ""))
    findings = []
    for step in STEPS:
        started = time.perf_counter()
        try:
            finding = step(opts)
        except Exception as exc:  # noqa: BLE001  a crashing step is a finding; the others still run
            finding = Finding(step.__name__.replace("_step", ""), FAIL, f"{type(exc).__name__}: {exc}")
        finding.summary += f" [{time.perf_counter() - started:.0f} s]"
        findings.append(finding)
        log(format_finding(finding))
    return findings


def format_finding(f: Finding) -> str:
    lines = [f"  {f.step:<12s}{f.verdict:<6s}{f.summary}"] + [f"{'':18s}- {d}" for d in f.details]
    return "\n".join(lines)


def verdict_line(findings: list[Finding]) -> str:
    failed = [f.step for f in findings if f.verdict == FAIL]
    warned = [f.step for f in findings if f.verdict == WARN]
    if failed:
        return f"verdict: NOT READY ({', '.join(failed)} failed" + (f"; warnings: {', '.join(warned)})" if warned else ")")
    return "verdict: ready" + (f", with warnings ({', '.join(warned)})" if warned else "")


def findings_json(findings: list[Finding]) -> str:
    return json.dumps([f.__dict__ for f in findings], indent=2)
