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

One overall time limit bounds the whole check (``--time-limit``); a kernel failure that leaves
the CUDA context unusable ends it at once with that error, since every later step would fail
with messages about something else. Steps: ``environment`` here, ``rows``, ``kernels``,
``speed`` (the bench) and ``repeat`` in their modules.
"""

from __future__ import annotations

import time

import torch

from study.doctor.core import (
    FAIL,
    INFO,
    PASS,
    WARN,
    ContextBroken,
    Deadline,
    DoctorOptions,
    Finding,
    OutOfTime,
    findings_json,
    format_finding,
    verdict_line,
)
from study.doctor.kernels import AGREE, kernel_backend, kernels_step, survey_shapes
from study.doctor.repeat import repeat_step
from study.doctor.rows import every_row, rows_step
from study.doctor.speed import bench_step
from study.models import cuda_kernels


def environment(opts: DoctorOptions, deadline: Deadline) -> Finding:
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


STEPS = (environment, rows_step, kernels_step, bench_step, repeat_step)


QUIET_CPU_SECONDS = 30  # `study doctor --device cpu` alone on this project's 2-core machine: 28.5 s (measured)


def _name(step) -> str:
    return step.__name__.replace("_step", "")


def run_doctor(opts: DoctorOptions, log=print) -> list[Finding]:
    """Every step in order; each step's finding is printed as soon as it is known. On a CPU it says first
    how long the check takes on a quiet machine, and when other work keeps CPUs busy (as ``bench`` does).
    The overall limit, or a broken CUDA context, ends the check with a finding that says so."""
    if opts.device != "cuda":
        from study.launch.cpus import busy_cpus

        busy = busy_cpus()
        log(f"  the CPU check takes about {QUIET_CPU_SECONDS} s on a quiet 2-core machine"
            + (f"; {busy} CPU(s) are busy with other work now: expect it to take several times longer, and its "
               "timings (the bench step's advice included) to be unreliable" if busy else ""))
    findings, deadline = [], Deadline(opts.time_limit_s)
    for i, step in enumerate(STEPS):
        started = time.perf_counter()
        stop = None
        try:
            deadline.check(f"before the {_name(step)} step")
            finding = step(opts, deadline)
        except (OutOfTime, ContextBroken) as exc:
            finding, stop = Finding(_name(step), FAIL, str(exc)), exc
        except Exception as exc:  # noqa: BLE001  a crashing step is a finding; the others still run
            finding = Finding(_name(step), FAIL, f"{type(exc).__name__}: {exc}")
        finding.summary += f" [{time.perf_counter() - started:.0f} s]"
        findings.append(finding)
        log(format_finding(finding))
        if stop is not None:
            left = [_name(s) for s in STEPS[i + 1:]]
            why = "out of time" if isinstance(stop, OutOfTime) else "the CUDA context is broken"
            findings.append(Finding("stopped", FAIL, f"{why}: the check ends here"
                                    + (f"; not run: {', '.join(left)}" if left else "")))
            log(format_finding(findings[-1]))
            break
    return findings


__all__ = ["AGREE", "FAIL", "INFO", "PASS", "WARN", "ContextBroken", "Deadline", "DoctorOptions", "Finding",
           "OutOfTime", "STEPS", "every_row", "findings_json", "format_finding", "kernel_backend", "run_doctor",
           "survey_shapes", "verdict_line"]
