"""The repeat step: a 2-epoch smoke run through `study run`, twice with seed 0, and how far apart.

On a CPU the two must be bit-identical. On CUDA some operations add in a varying order
(PyTorch's alerts, recorded in each run's attempt, and mamba-ssm's scan backward), so two
runs may differ by rounding that training carries on; the step says which of the two it is:
small differences with such operations present, or differences that nothing known explains.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from study.doctor.core import FAIL, INFO, PASS, WARN, Deadline, DoctorOptions, Finding

# Two runs that differ only by the order of floating-point additions end 2 epochs with weights
# this close, relative to each tensor's largest magnitude; a race or an unseeded draw does not.
ROUNDING_LEVEL = 1e-2
SMOKE_RUN_LIMIT_S = 900


def _train_twice(opts: DoctorOptions, where: Path, deadline: Deadline) -> list[Path]:
    env = dict(os.environ)
    if opts.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # `study run` takes a visible GPU; this check is the CPU's
    stores = []
    for attempt in ("a", "b"):
        deadline.check("before a smoke run")
        store = where / attempt
        command = [sys.executable, "-m", "study", "run", opts.train_row, "--seeds", "1", "--profile", "smoke",
                   "--set", "train.epochs=2", "--results", str(store)]
        limit = max(1.0, min(SMOKE_RUN_LIMIT_S, deadline.left()))
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=limit)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"`study {' '.join(command[3:])}` did not finish in {limit:.0f} s "
                               "(the smoke run's limit, or what was left of the check's)") from None
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"`study {' '.join(command[3:])}` exited {done.returncode}: {last[0]}")
        stores.append(store)
    return stores


def known_nondeterminism(record) -> list[str]:
    """What in this run may add in a varying order: PyTorch's alerts and mamba-ssm's scan backward."""
    attempt = (record.details.get("attempts") or [{}])[-1]
    ops = [str(op) for op in attempt.get("nondeterministic_ops") or []]
    # "mamba-ssm 2.3.1" when its kernels ran; a fallback reads "PyTorch scan (mamba-ssm unusable: ...)"
    scan = str((record.details.get("kernels") or {}).get("scan", ""))
    if scan.startswith("mamba-ssm "):
        ops.append("mamba-ssm selective-scan backward (atomic adds)")
    return ops


def weight_difference(first: dict, second: dict) -> float:
    """Largest difference of any weight, relative to (1 + that tensor's largest magnitude)."""
    return max(float((first[k].float() - second[k].float()).abs().max()) / (1.0 + float(first[k].float().abs().max()))
               for k in first)


def judge_repeat(device: str, identical: bool, weight_diff: float, ops: list[str]) -> tuple[str, str]:
    """(verdict, words) for two runs of the same seed."""
    if identical:
        return PASS, "bit-identical"
    if device == "cuda" and ops and weight_diff <= ROUNDING_LEVEL:
        return WARN, (f"differ by rounding-level amounts (largest weight difference {weight_diff:.1e}, under "
                      f"{ROUNDING_LEVEL:.0e}) on known nondeterministic ops: {', '.join(sorted(set(ops)))}")
    why = ("no known nondeterministic op ran" if not ops else
           f"more than rounding explains (largest weight difference {weight_diff:.1e}, over {ROUNDING_LEVEL:.0e})")
    return FAIL, f"differ: {why}; a race or an unseeded draw (largest weight difference {weight_diff:.1e})"


def repeat_step(opts: DoctorOptions, deadline: Deadline) -> Finding:
    """A 2-epoch smoke run through `study run`, twice with seed 0: identical, or how far apart and why."""
    from study.store.runs import Store

    if not opts.train:
        return Finding("repeat", INFO, "skipped (--no-train)")
    with tempfile.TemporaryDirectory(prefix="study-doctor-") as tmp:
        try:
            stores = _train_twice(opts, Path(tmp), deadline)
        except RuntimeError as exc:
            return Finding("repeat", FAIL, f"the smoke run failed: {exc}")
        records = [next(iter(Store(s).records())) for s in stores]
        weights = [torch.load(Store(s).model_path(r.key), map_location="cpu", weights_only=True)
                   for s, r in zip(stores, records)]
    device = records[0].details.get("device")
    counts = [r.pooled["test"].as_tuple() for r in records]
    losses = [[h["train_loss"] for h in r.details.get("history", [])] for r in records]
    weight_diff = weight_difference(*weights)
    identical = counts[0] == counts[1] and losses[0] == losses[1] and weight_diff == 0.0
    ops = sorted(set(known_nondeterminism(records[0]) + known_nondeterminism(records[1])))
    verdict, words = judge_repeat(opts.device, identical, weight_diff, ops)
    dsc = [r.test["dsc"] * 100 for r in records]
    scores = f"test DSC {dsc[0]:.2f}" if identical else f"test DSC {dsc[0]:.3f} vs {dsc[1]:.3f}"
    return Finding("repeat", verdict, f"{opts.train_row}, 2 epochs on {device}, seed 0, twice: {words} ({scores})",
                   [] if identical else [f"train losses {losses[0]} vs {losses[1]}"],
                   data={"weight_difference": weight_diff, "nondeterministic_ops": ops})
