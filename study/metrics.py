"""Segmentation scores from confusion counts, as the paper's code computes them (torch-free).

Training, the store's integrity check, the report and the audit all score
through this module, so IoU and DSC have one formula. The counts themselves
come from ``study.train.confusion.confusion_counts`` (threshold 0.5 on the
prediction and on the resized mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def pooled_scores(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """IoU, DSC, accuracy, sensitivity, specificity of one pooled confusion matrix (NaN where undefined)."""
    return {
        "iou": _ratio(tp, tp + fp + fn),
        "dsc": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }


@dataclass(frozen=True)
class PooledMetrics:
    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> "PooledMetrics":
        tp, fp, fn, tn = (int(v) for v in np.asarray(counts, dtype=np.int64).reshape(-1, 4).sum(0))
        return cls(tp, fp, fn, tn)

    def as_dict(self) -> dict[str, float]:
        return {**pooled_scores(self.tp, self.fp, self.fn, self.tn),
                "tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}


def per_image_dice(counts: np.ndarray) -> np.ndarray:
    """Dice of each image from its counts; an image with no foreground anywhere scores 1."""
    counts = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 1.0)
