"""Params and MACs of every variant, under two named conventions, beside the paper.

* ``thop`` -- the paper's convention: classic thop 0.1.1 at 1x3x256x256, with
  the Mamba internals invisible, as thop sees a model running mamba-ssm's fused
  CUDA path (no nn.Module inside the Mamba is called there).
* ``ptflops`` -- ptflops with an explicit backend (``pytorch``), plus hooks
  that count every call of a Mamba (projections, depthwise conv and the scan)
  and of a self-attention branch (projections and both matmuls).

Params are the plain sum of numel, shared weights counted once. No counter is
tuned to hit the paper: where the paper cannot be matched the row says so,
with the reason from ``paper/differences.toml``.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass

import torch
from torch import nn

from study.models.blocks import SelfAttention
from study.models.mamba import Mamba, using_backend
from study.paper import mismatches, number, paper_row

CONVENTIONS = {
    "thop": "classic thop 0.1.1, Mamba internals invisible (the paper's convention)",
    "ptflops": "ptflops backend=pytorch + hooks counting each Mamba and attention call",
}
FLOPS_TOLERANCE = 0.05  # relative, for the paper's FLOPs column under the thop convention


def count_params(model: nn.Module) -> int:
    # parameters() yields a shared parameter once.
    return sum(p.numel() for p in model.parameters())


def _thop_zero(module, inputs, output):
    module.total_ops += torch.zeros(1, dtype=torch.float64)


def macs_thop(model: nn.Module, size: int = 256, in_channels: int = 3) -> int:
    from thop import profile

    probe = copy.deepcopy(model)  # thop adds buffers to every module it profiles
    x = torch.randn(1, in_channels, size, size)
    # Counting runs a CPU forward whatever backend the process trains with ('cuda' would refuse it).
    with contextlib.redirect_stdout(io.StringIO()), using_backend("torch"):
        macs, _ = profile(probe, inputs=(x,), custom_ops={Mamba: _thop_zero}, verbose=False)
    return int(macs)


def _mamba_hook(module: Mamba, inputs, output):
    batch, length = inputs[0].shape[:2]
    module.__flops__ += module.macs_per_call(batch, length)


def _attention_hook(module: SelfAttention, inputs, output):
    batch, length, dim = inputs[0].shape
    projections = 4 * length * (dim * dim + dim)
    matmuls = 2 * length * length * dim  # q k^T and attn v
    module.__flops__ += batch * (projections + matmuls)


def macs_ptflops(model: nn.Module, size: int = 256, in_channels: int = 3) -> int:
    from ptflops import get_model_complexity_info

    probe = copy.deepcopy(model)
    log = io.StringIO()
    with contextlib.redirect_stdout(log), using_backend("torch"):
        macs, _ = get_model_complexity_info(
            probe,
            (in_channels, size, size),
            as_strings=False,
            print_per_layer_stat=False,
            backend="pytorch",
            custom_modules_hooks={Mamba: _mamba_hook, SelfAttention: _attention_hook},
            ost=log,
        )
    if macs is None:  # ptflops prints its internal error and returns (None, None)
        raise RuntimeError(f"ptflops failed to count {type(model).__name__}:\n{log.getvalue()}")
    return int(macs)


def _matches_printed(value: float, printed: str) -> bool:
    """Equal at the precision the paper printed (3 decimals for 0.034, 2 for 0.06)."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return round(value, decimals) == round(float(printed), decimals)


@dataclass(frozen=True)
class Verdict:
    """How one quantity compares with the paper."""

    status: str  # match | MISMATCH | documented | stale-note | no-paper-value
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("match", "documented", "no-paper-value")


def _verdict(row_id: str, quantity: str, ours_ok: bool | None) -> Verdict:
    documented = mismatches().get((row_id, quantity))
    if ours_ok is None:
        return Verdict("no-paper-value")
    if documented and ours_ok:
        return Verdict("stale-note", f"documented as a mismatch but now matches: {documented.note}")
    if documented:
        return Verdict("documented", documented.note)
    return Verdict("match" if ours_ok else "MISMATCH")


def paper_verdicts(row_id: str, params: int | None, gmacs: float | None, paper_params: str | None,
                   paper_flops: str | None) -> tuple[Verdict, Verdict]:
    """(params, FLOPs) verdicts of counted values against the paper's printed ones."""
    params_ok = None
    if params is not None and number(paper_params) is not None:
        params_ok = _matches_printed(params / 1e6, paper_params)
    flops_ok = None
    if gmacs is not None and number(paper_flops) is not None:
        flops_ok = abs(gmacs - number(paper_flops)) <= FLOPS_TOLERANCE * number(paper_flops)
    return _verdict(row_id, "params", params_ok), _verdict(row_id, "flops", flops_ok)


@dataclass(frozen=True)
class ComplexityRow:
    table: str
    row_id: str
    name: str
    params: int | None
    gmacs_thop: float | None
    gmacs_ptflops: float | None
    paper_params: str | None
    paper_flops: str | None
    params_verdict: Verdict
    flops_verdict: Verdict
    unavailable: str | None = None

    @property
    def ok(self) -> bool:
        return self.unavailable is None and self.params_verdict.ok and self.flops_verdict.ok


def measure_row(row, size: int = 256, with_ptflops: bool = True) -> ComplexityRow:
    """Count one variant row (``study.variants.Row``) and compare it with the paper."""
    paper = paper_row(row.table, row.id) or {}
    paper_params, paper_flops = paper.get("params_m"), paper.get("flops_g")
    if row.unavailable:
        na = Verdict("no-paper-value")
        return ComplexityRow(row.table, row.id, row.name, None, None, None, paper_params, paper_flops, na, na,
                             row.unavailable)
    model = row.build_model()
    model.eval()
    params = count_params(model)
    in_channels = getattr(row.model_config(), "in_channels", 3)
    gmacs_thop = macs_thop(model, size, in_channels) / 1e9
    gmacs_ptflops = macs_ptflops(model, size, in_channels) / 1e9 if with_ptflops else None
    params_verdict, flops_verdict = paper_verdicts(row.id, params, gmacs_thop, paper_params, paper_flops)
    return ComplexityRow(row.table, row.id, row.name, params, gmacs_thop, gmacs_ptflops, paper_params, paper_flops,
                         params_verdict, flops_verdict)


def format_rows(rows: list[ComplexityRow]) -> str:
    """A plain-text table for the terminal, with the notes below it."""
    header = ("table", "row", "params", "paper", "params?", "GMACs thop", "GMACs ptflops", "paper", "FLOPs?")
    lines = [header]
    notes: list[str] = []
    for r in rows:
        if r.unavailable:
            lines.append((r.table, r.row_id, "-", r.paper_params or "-", "unavailable", "-", "-",
                          r.paper_flops or "-", "unavailable"))
            notes.append(f"{r.row_id}: {r.unavailable}")
            continue
        lines.append((
            r.table, r.row_id, f"{r.params:,}", r.paper_params or "-", r.params_verdict.status,
            f"{r.gmacs_thop:.4f}", "-" if r.gmacs_ptflops is None else f"{r.gmacs_ptflops:.4f}",
            r.paper_flops or "-", r.flops_verdict.status,
        ))
        for q, v in (("params", r.params_verdict), ("FLOPs", r.flops_verdict)):
            if v.note:
                notes.append(f"{r.row_id} {q} ({v.status}): {v.note}")
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    if notes:
        text += ["", "Notes:"] + [f"  {n}" for n in notes]
    return "\n".join(text)
