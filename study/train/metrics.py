"""Segmentation metrics as the paper's code computes them.

Threshold 0.5 on the prediction and on the (resized) mask, then ONE confusion
matrix pooled over every pixel of the evaluation split. Per-image counts are
kept too, so per-image statistics (and the claims audit's paired tests) can be
computed later without rerunning.
"""

from __future__ import annotations

import torch

# Scores from counts are torch-free, shared with the report and the store: re-exported here.
from study.metrics import PooledMetrics, per_image_dice, pooled_scores  # noqa: F401

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

