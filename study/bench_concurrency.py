"""How many runs to train at once on one device: ``study bench --concurrent 1,2,4,8``.

The paper's model leaves a GPU mostly idle (about a millisecond of kernels per step, issued by a
host doing most of the work), so several runs on one GPU can finish more epochs per hour than
one. This trains K smoke runs at once through ``study run`` for each K asked, each in its own
temporary store, and measures the epochs per minute they finish together: the figure a cluster
profile's ``runs_per_task`` should follow. Timings are the host's wall clock around the K
processes; a figure, never a test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# The smallest K whose throughput is within this fraction of the best K's is recommended:
# more runs at once than that add memory and wait without adding epochs.
NEAR_BEST = 0.90


@dataclass(frozen=True)
class ConcurrencyResult:
    runs: int
    wall_s: float
    epochs: int  # finished by all K runs together

    @property
    def epochs_per_minute(self) -> float:
        return 60.0 * self.epochs / self.wall_s


def recommend(results: list[ConcurrencyResult]) -> int:
    """The runs per device to use: the fewest whose throughput is near the best measured."""
    best = max(r.epochs_per_minute for r in results)
    return min(r.runs for r in results if r.epochs_per_minute >= NEAR_BEST * best)


def _command(row: str, epochs: int, seed: int, store: Path, threads: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "study", "run", row, "--seeds", str(seed + 1), "--profile", "smoke",
            "--set", f"train.epochs={epochs}", "--threads", str(threads), "--results", str(store), *extra]


def measure(row: str, counts: list[int], epochs: int, device: str, extra: list[str] | None = None,
            log=print) -> list[ConcurrencyResult]:
    """Train K smoke runs of ``row`` at once for each K in ``counts``; the K runs differ by seed."""
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    results = []
    with tempfile.TemporaryDirectory(prefix="study-concurrency-") as tmp:
        for k in counts:
            threads = max(1, cpus // k)
            # Each run in its own store: K different seeds, so no run waits on another's lease.
            commands = [_command(row, epochs, seed, Path(tmp) / f"k{k}-{seed}", threads, extra or [])
                        for seed in range(k)]
            started = time.monotonic()
            processes = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                         for c in commands]
            errors = [(p.wait(), p.stderr.read()) for p in processes]
            wall = time.monotonic() - started
            failed = [e for rc, e in errors if rc != 0]
            if failed:
                raise RuntimeError(f"{len(failed)} of {k} concurrent runs failed: "
                                   f"{(failed[0].strip().splitlines() or [''])[-1]}")
            result = ConcurrencyResult(k, wall, k * epochs)
            results.append(result)
            log(f"  {k} run(s) at once ({threads} CPU thread(s) each): {wall:.1f} s, "
                f"{result.epochs_per_minute:.1f} epochs/min in all "
                f"({result.epochs_per_minute / results[0].epochs_per_minute:.2f}x the first)")
    return results
