"""What a plan will cost: seconds per run, before anything runs (``run --dry-run``).

From the best evidence the store holds, in this order: a completed run of the
same config (another seed); the epoch times recorded by runs of the same model
and input size on the same kind of device; ``study bench --record`` figures;
else a rough 2-core CPU figure.
"""

from __future__ import annotations

import json
import statistics

from study.plan import RunSpec
from study.store.record import RunRecord
from study.store.runs import Store

# Rough CPU cost of one training image-epoch at 64 x 64 on 2 cores for the
# UltraLBM family, measured with the smoke profile (about 7 ms incl. evaluation).
_SECONDS_PER_IMAGE_EPOCH_64 = 0.007


def measured_wall_times(records: list[RunRecord]) -> dict[str, float]:
    """Config hash -> wall time of one of its completed runs (``records``: the store's, read once)."""
    return {r.config_hash: float(r.wall_time_s or 0.0) for r in records if r.completed}


def _train_images(config) -> int:
    """About how many images one epoch trains on."""
    d = config.data
    from study.datasets import dataset_info

    pairs = d.synthetic_count if d.dataset == "synthetic" else (dataset_info(d.dataset).pairs or 1000)
    holdout = config.train.selection == "holdout" and not config.selects_on_train_loss
    fraction = d.train_fraction * ((1 - d.holdout_fraction) if holdout else 1.0)
    return max(1, round(pairs * fraction))


def epoch_rates(records: list[RunRecord]) -> dict[tuple[str, int, str], float]:
    """(arch, input size, device) -> median seconds per training image-epoch, from the
    epoch times runs recorded (completed or not; data and selection included)."""
    samples: dict[tuple[str, int, str], list[float]] = {}
    for record in records:
        details, config = record.details or {}, record.config or {}
        history = details.get("history") or []
        images = (((details.get("data") or {}).get("train") or {}).get("samples"))
        size = (config.get("data") or {}).get("size")
        arch = (config.get("model") or {}).get("arch")
        if not history or not images or not size or not arch:
            continue
        key = (str(arch), int(size), str(details.get("device") or "cpu").split(":")[0])
        samples.setdefault(key, []).extend(
            float(e["seconds"]) / images for e in history if isinstance(e, dict) and e.get("seconds"))
    return {k: statistics.median(v) for k, v in samples.items() if v}


# Per-epoch data and selection on top of the training steps, measured on the real samples
# under the paper protocol (epochs 2-3: 1.31 s and 1.23 s for 1.05 s and 1.01 s of steps,
# more in epoch 1; rounded up): turns a bench step into an epoch.
_EPOCH_OVER_STEPS = 1.3


def bench_rates(store: Store) -> dict[tuple[str, int, str], float]:
    """(arch, input size, device) -> seconds per training image-epoch from ``study bench --record``."""
    out = {}
    for device in ("cpu", "cuda"):
        path = store.bench_path(device)
        try:
            figures = json.loads(path.read_text())
            step, batch = float(figures["train_step_s"]), int(figures["batch"])
            key = (str(figures["arch"]), int(figures["size"]), device)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # absent or not ours: no bench figure
        if step > 0 and batch > 0:
            out[key] = step / batch * _EPOCH_OVER_STEPS
    return out


def cost_rates(store: Store, records: list[RunRecord]) -> dict[tuple[str, int, str], tuple[float, str]]:
    """(seconds per image-epoch, where from): recorded epoch times where there are any, else bench figures."""
    rates = {k: (v, f"bench figure on {k[2]}") for k, v in bench_rates(store).items()}
    rates.update({k: (v, f"recorded {k[2]} epochs") for k, v in epoch_rates(records).items()})
    return rates


def estimate_seconds(run: RunSpec, measured: dict[str, float],
                     rates: dict[tuple[str, int, str], tuple[float, str]] | None = None,
                     device: str = "cpu") -> tuple[float, str]:
    """(seconds, how): a completed sibling run (same config, other seed); else the recorded epoch
    times of the same model and input size on ``device``; else a rough 2-core CPU figure."""
    if run.config.hash in measured:
        return measured[run.config.hash], "measured"
    d, t = run.config.data, run.config.train
    rate = (rates or {}).get((run.config.arch, d.size, device))
    if rate is not None:
        return rate[0] * _train_images(run.config) * t.epochs, rate[1]
    per_epoch = _train_images(run.config) / d.train_fraction * _SECONDS_PER_IMAGE_EPOCH_64 * (d.size / 64) ** 2
    return per_epoch * t.epochs, "rough CPU figure"
