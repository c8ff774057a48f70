"""Watching a run while it trains: ``--track tensorboard`` writes TensorBoard event files.

Off by default (``none``); ``tensorboard`` needs the optional extra
(``pip install 'ultralbm-study[track]'``). Event files go to the run's own
folder, ``<run>/tensorboard/``, one set per attempt (a resumed run adds the
epochs it trains), with every epoch's numbers of the history as scalars and
the resolved config as hyperparameters and as text. `tensorboard --logdir
<results>/runs` then shows every run of a store side by side.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from study.errors import ConfigError

TRACKERS = ("none", "tensorboard")


class NoTracker:
    def on_epoch(self, entry: dict) -> None:
        pass

    def close(self, scores: dict | None = None) -> None:
        pass


class TensorBoardTracker(NoTracker):
    def __init__(self, folder: Path, config: dict, run_id: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--track tensorboard needs the tensorboard package: pip install "
                              "'ultralbm-study[track]'") from None
        self.writer = SummaryWriter(log_dir=str(folder))
        self.config = config
        self.writer.add_text("config", f"run {run_id}\n\n    " + json.dumps(config, indent=1, sort_keys=True)
                             .replace("\n", "\n    "))

    def on_epoch(self, entry: dict) -> None:
        step = int(entry["epoch"])
        for key, value in entry.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self, scores: dict | None = None) -> None:
        if scores is not None:  # the config as hyperparameters beside the run's test scores
            flat = {}
            for section, fields in self.config.items():
                for key, value in (fields or {}).items():
                    if isinstance(value, (int, float, str, bool)):
                        flat[f"{section}.{key}"] = value
            self.writer.add_hparams(flat, {f"test/{k}": v for k, v in scores.items()
                                           if isinstance(v, float) and math.isfinite(v)}, run_name="hparams")
        self.writer.close()


def make_tracker(kind: str | None, folder: Path, config: dict, run_id: str):
    if kind in (None, "none"):
        return NoTracker()
    if kind == "tensorboard":
        return TensorBoardTracker(folder, config, run_id)
    raise ConfigError(f"--track {kind!r}: expected one of {', '.join(TRACKERS)}")
