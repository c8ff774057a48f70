"""What a finished run writes for each evaluated split: counts, predictions, the challenge's scores.

For every split: the per-image confusion counts at the working size (the
paper's pooled metrics come from them). For the test split also the predicted
masks (``pred_test.npz``, for Fig. 4). For a real dataset also the ISIC
challenge's scoring: each prediction resized to its image's original size and
scored against the original mask file, per image (``per_image_challenge_<split>.csv``)
and averaged over images (the record's ``challenge``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from study.data.cache import open_cache
from study.metrics import PooledMetrics
from study.store.atomic import atomic_write_bytes
from study.store.per_image import counts_csv
from study.store.predictions import predictions_npz
from study.store.record import Counts, RunKey
from study.store.runs import Store, challenge_name, predictions_name
from study.train.loop import evaluate

THRESHOLD = 0.5


@dataclass
class SplitResult:
    pooled: Counts
    scores: dict  # loss and the pooled metrics
    challenge: dict | None = None  # the challenge's per-image averages (real datasets)
    extra_files: list[str] = field(default_factory=list)  # written besides the per-image counts


class _Originals:
    """The original mask file and size of each id of a real dataset's cache (None for synthetic data)."""

    def __init__(self, dataset):
        meta = open_cache(dataset.cache_dir).meta
        self.available = bool(meta.get("files")) and bool(meta.get("root"))
        if self.available:
            root = Path(meta["root"])
            self.by_id = {i: (root / files[1], tuple(size))
                          for i, files, size in zip(meta["ids"], meta["files"], meta["original_sizes"])}


def evaluate_split(model, dataset, device: str, store: Store, key: RunKey, split: str,
                   keep_predictions: bool, served=None, bce_input: str = "logits") -> SplitResult:
    """Score ``dataset`` (served as ``served``, e.g. its resident split, when given) and write its files."""
    from study import challenge as ch

    originals = _Originals(dataset)
    masks: list[np.ndarray] = []
    challenge_counts: list[tuple[int, int, int, int]] = []

    def on_batch(first: int, probs: np.ndarray) -> None:
        if keep_predictions:
            masks.extend(probs >= THRESHOLD)
        if originals.available:
            for offset, prob in enumerate(probs):
                mask_path, size = originals.by_id[dataset.ids[first + offset]]
                truth = ch.read_truth_mask(mask_path)
                challenge_counts.append(ch.image_counts(ch.upsample_prediction(prob, size), truth))

    loss, counts = evaluate(model, dataset if served is None else served, device, on_batch, bce_input)
    atomic_write_bytes(store.per_image_path(key, split), counts_csv(dataset.ids, counts))
    metrics = PooledMetrics.from_counts(counts)
    result = SplitResult(Counts(metrics.tp, metrics.fp, metrics.fn, metrics.tn, len(counts)),
                         {"loss": loss, **metrics.as_dict()})
    if keep_predictions:
        atomic_write_bytes(store.predictions_path(key, split), predictions_npz(dataset.ids, np.stack(masks)))
        result.extra_files.append(predictions_name(split))
    if originals.available:
        per_image = np.asarray(challenge_counts, dtype=np.int64).reshape(-1, 4)
        atomic_write_bytes(store.challenge_path(key, split), counts_csv(dataset.ids, per_image))
        result.extra_files.append(challenge_name(split))
        result.challenge = {k: float(v) for k, v in ch.challenge_scores(per_image).items()}
    return result
