"""Segmentation metrics as the paper's code computes them.

Threshold 0.5 on the prediction and on the (resized) mask, then ONE confusion
matrix pooled over every pixel of the evaluation split. Per-image counts are
kept too, so per-image statistics (and the claims audit's paired tests) can be
computed later without rerunning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

THRESHOLD = 0.5


def confusion_counts(prob: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(batch, 4) int64 per image: TP, FP, FN, TN."""
    pred = (prob >= THRESHOLD).flatten(1)
    true = (mask >= THRESHOLD).flatten(1)
    tp = (pred & true).sum(1)
    fp = (pred & ~true).sum(1)
    fn = (~pred & true).sum(1)
    tn = (~pred & ~true).sum(1)
    return torch.stack([tp, fp, fn, tn], dim=1).long()


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

    @staticmethod
    def _ratio(num: int, den: int) -> float:
        return num / den if den else float("nan")

    def as_dict(self) -> dict[str, float]:
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        return {
            "iou": self._ratio(tp, tp + fp + fn),
            "dsc": self._ratio(2 * tp, 2 * tp + fp + fn),
            "accuracy": self._ratio(tp + tn, tp + fp + fn + tn),
            "sensitivity": self._ratio(tp, tp + fn),
            "specificity": self._ratio(tn, tn + fp),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        }


def per_image_dice(counts: np.ndarray) -> np.ndarray:
    """Dice of each image from its counts; an image with no foreground anywhere scores 1."""
    counts = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 1.0)
