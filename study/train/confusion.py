"""A batch's confusion counts, as the paper's code computes them.

Threshold 0.5 on the prediction and on the (resized) mask, one (TP, FP, FN, TN)
row per image. The scores pooled from these counts are ``study.metrics``'s
(torch-free, shared with the store and the report).
"""

from __future__ import annotations

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

