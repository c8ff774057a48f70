"""What every doctor step shares: findings, options, the overall time limit, and a broken CUDA context."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import torch

PASS, WARN, FAIL, INFO = "PASS", "WARN", "FAIL", "INFO"
# The whole check's default limit: one GPU does every step in a few minutes, a CPU in under one.
TIME_LIMIT_S = {"cuda": 1800, "cpu": 900}


@dataclass
class Finding:
    step: str
    verdict: str  # PASS, WARN, FAIL or INFO (a figure, no verdict)
    summary: str
    details: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)  # the step's figures in full, for --json (per row, per case)


@dataclass(frozen=True)
class DoctorOptions:
    device: str = "cuda"
    size: int = 256  # input side of the row and bench steps
    batch: int = 8  # of the bench's training step
    repeats: int = 5
    train: bool = True  # the two 2-epoch runs through `study run`
    train_row: str = "ultralbm"
    time_limit_s: float = TIME_LIMIT_S["cuda"]

    @classmethod
    def for_device(cls, device: str, **changes) -> "DoctorOptions":
        base = (cls(device=device) if device == "cuda" else
                cls(device=device, size=64, batch=4, repeats=3, time_limit_s=TIME_LIMIT_S["cpu"]))
        return cls(**{**base.__dict__, **{k: v for k, v in changes.items() if v is not None}})


class OutOfTime(Exception):
    """The overall limit was reached: the check stops where it is."""


class ContextBroken(Exception):
    """A kernel failed and left the CUDA context unusable: every later GPU call would fail for that
    reason, with messages that name something else, so the check ends here."""


class Deadline:
    """One limit for the whole check, asked between steps and between a step's cases."""

    def __init__(self, limit_s: float):
        self.limit_s = float(limit_s)
        self.started = time.monotonic()

    def left(self) -> float:
        return self.limit_s - (time.monotonic() - self.started)

    def check(self, where: str) -> None:
        if self.left() <= 0:
            raise OutOfTime(f"the check's overall limit of {self.limit_s:.0f} s was reached {where} "
                            "(raise it with --time-limit)")


def context_error(device: str) -> str | None:
    """Why the CUDA context cannot be used any more, or None. A failed kernel launch is sticky:
    the next synchronize raises the same error."""
    if device != "cuda":
        return None
    try:
        torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001  any failure here means the context is gone
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def after_failure(device: str, what: str, exc: BaseException) -> str:
    """A case failed: its one-line description, or ContextBroken when the GPU cannot go on."""
    line = f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    broken = context_error(device)
    if broken is not None:
        raise ContextBroken(f"{line}; the CUDA context is unusable after it ({broken})") from exc
    return line


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


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
