"""A run's predicted masks of its test split: ``pred_test.npz`` (bit-packed, compressed).

Stored so that Fig. 4 (and any later look at a case) needs no retraining: the
masks at the working size, thresholded at 0.5 as evaluation does, 1 bit per
pixel (about 8 KB per 256x256 image before compression). Read with
``allow_pickle=False``: a prediction file from a shared store is data, never code.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from study.errors import StudyError


def predictions_npz(ids, masks: np.ndarray) -> bytes:
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or len(masks) != len(ids):
        raise ValueError(f"predictions: {len(ids)} ids but masks of shape {masks.shape}")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, ids=np.asarray(list(ids), dtype=str), shape=np.asarray(masks.shape[1:]),
                        bits=np.packbits(masks.reshape(len(masks), -1), axis=1))
    return buffer.getvalue()


def read_predictions(path: Path) -> tuple[list[str], np.ndarray]:
    """(ids, (n, h, w) bool masks)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            ids = [str(i) for i in data["ids"]]
            h, w = (int(v) for v in data["shape"])
            bits = data["bits"]
    except (OSError, ValueError, KeyError) as exc:
        raise StudyError(f"{path}: not a predictions file of this harness ({exc})") from None
    if bits.shape[0] != len(ids) or bits.shape[1] * 8 < h * w:
        raise StudyError(f"{path}: {len(ids)} ids do not match the stored masks {bits.shape}")
    masks = np.unpackbits(bits, axis=1, count=h * w).reshape(len(ids), h, w).astype(bool)
    return ids, masks
