"""The rows step: every row built and run forward and backward once on the device, and the
operations of each that PyTorch says cannot repeat bit for bit on CUDA."""

from __future__ import annotations

import time

import torch

from study.doctor.core import FAIL, PASS, Deadline, DoctorOptions, Finding, after_failure, sync
from study.train import determinism


def every_row():
    from study.variants import load_tables

    rows = {}
    for table in load_tables().values():
        for row in table.rows:
            if not row.unavailable:
                rows.setdefault(row.id, row)
    return list(rows.values())


def _one_row(row, opts: DoctorOptions) -> tuple[float, list[str]]:
    """Forward and backward of ``row`` at 2 x 3 x size^2: seconds, and its nondeterministic ops:
    observed (PyTorch's alerts) on CUDA, predicted from the dispatched ops elsewhere."""
    from study.train.engine import prepare_batch, prepare_model
    from study.train.losses import bce_dice_loss

    torch.manual_seed(0)
    model = prepare_model(row.build_model(), "fast", opts.device)
    model.train()
    images = torch.randn(2, 3, opts.size, opts.size, device=opts.device)
    masks = (torch.rand(2, 1, opts.size, opts.size, device=opts.device) > 0.5).float()
    alerts = determinism.AlertLog()
    started = time.perf_counter()
    with determinism.collect_alerts(alerts), determinism.dispatched_ops() as dispatched:
        loss = bce_dice_loss(model.forward_logits(prepare_batch(images, model)), masks)
        loss.backward()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss {float(loss)}")
    sync(opts.device)
    seconds = time.perf_counter() - started
    ops = alerts.as_list() if opts.device == "cuda" else determinism.predicted_cuda_ops(dispatched)
    return seconds, ops


def rows_step(opts: DoctorOptions, deadline: Deadline) -> Finding:
    """Every row built and run forward and backward once on the device (the trained path)."""
    failures, slowest, rows, per_row = [], (0.0, ""), every_row(), {}
    for row in rows:
        deadline.check(f"in the rows step, before {row.id}")
        try:
            seconds, per_row[row.id] = _one_row(row, opts)
            slowest = max(slowest, (seconds, row.id))
        except Exception as exc:  # noqa: BLE001  each row's failure is a finding, not the end of the check
            failures.append(after_failure(opts.device, row.id, exc))
    verdict = FAIL if failures else PASS
    summary = (f"{len(rows) - len(failures)}/{len(rows)} rows: forward+backward at 2x3x{opts.size}x{opts.size} on "
               f"{opts.device} (slowest {slowest[1]} {slowest[0]:.2f} s)")
    details = failures[:8] + ([f"... {len(failures) - 8} more"] if len(failures) > 8 else [])
    details += nondeterminism_lines(per_row, observed=opts.device == "cuda")
    return Finding("rows", verdict, summary, details, data={"nondeterministic_ops": per_row})


def nondeterminism_lines(per_row: dict[str, list[str]], observed: bool) -> list[str]:
    """One line per op: how many rows hit it, a few of them by name."""
    by_op: dict[str, list[str]] = {}
    for row_id, ops in per_row.items():
        for op in ops:
            by_op.setdefault(determinism.aten_name(op), []).append(row_id)
    how = ("ops that warned under deterministic mode on this GPU" if observed else
           "ops nondeterministic on CUDA by PyTorch's list, predicted from those each row dispatches here")
    if not by_op:
        return [f"no {how}"]
    lines = [f"{op}: {len(ids)} row{'s' if len(ids) > 1 else ''} (e.g. {', '.join(ids[:3])})"
             for op, ids in sorted(by_op.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    more = [f"... {len(lines) - 4} more ops (--json has every row's)"] if len(lines) > 4 else []
    return [f"{how}:"] + lines[:4] + more
