"""The datasets one run needs: train, the selection split, test, and external sets."""

from __future__ import annotations

from dataclasses import dataclass, field

from study.config import RunConfig
from study.data import SegmentationDataset, SyntheticSpec, TransformConfig, carve_holdout, ensure_split, prepare_cache
from study.data.split import Holdout, split_from_release
from study.data.transforms import compute_norm_stats
from study.datasets import dataset_info
from study.errors import DataError


@dataclass
class RunData:
    train: SegmentationDataset
    test: SegmentationDataset
    selection: SegmentationDataset | None  # what picks the checkpoint (None: the last epoch)
    selection_split: str | None  # "test" (the paper's code) or "holdout"
    external: dict[str, SegmentationDataset] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)


def _cache(name: str, config: RunConfig, roots: dict[str, str], include_test: bool = False):
    spec = SyntheticSpec(count=config.data.synthetic_count, seed=config.data.synthetic_seed)
    return prepare_cache(name, roots.get(name), size=config.data.size, synthetic=spec, include_test=include_test,
                         skip_bad=config.data.skip_bad)


def _skipped(cache) -> list[dict]:
    return [{"id": b["id"], "problem": b["problem"]} for b in cache.meta.get("skipped") or []]


def _partition(config: RunConfig, seed: int, cache):
    """(split, selection holdout or None, provenance of the split)."""
    d = config.data
    if d.split == "release":
        if dataset_info(d.dataset).layout == "synthetic":
            raise DataError("data.split = \"release\": the synthetic dataset has no release partition; "
                            "expected isic2017 or isic2018")
        release = split_from_release(d.dataset, dict(zip(cache.ids, cache.meta["parts"])))
        split, holdout = release.split, None
        if config.train.selection == "holdout" and not config.selects_on_train_loss:
            if release.validation:  # the release's Validation part selects
                holdout = Holdout(split.train, release.validation, d.split_seed, 0.0,
                                  "the release's Validation part")
            else:  # Validation is the test part: carve the holdout from Training
                holdout = carve_holdout(split.train, fraction=d.holdout_fraction, seed=d.split_seed)
        return split, holdout, {**release.describe(), "manifest": None, "seed": None}
    split, manifest, _ = ensure_split(d.dataset, cache.ids, seed=d.split_seed, train_fraction=d.train_fraction)
    holdout = None
    if config.train.selection == "holdout" and not config.selects_on_train_loss:  # no holdout it would not use
        holdout = carve_holdout(split.train, fraction=d.holdout_fraction, seed=d.split_seed)
    return split, holdout, {"manifest": str(manifest), "train": len(split.train), "test": len(split.test),
                            "seed": split.seed, "method": split.method}


def build_run_data(config: RunConfig, seed: int, roots: dict[str, str] | None = None) -> RunData:
    """Caches, the split (and holdout), and the datasets with their transforms.

    ``roots`` maps dataset names to folders (else each dataset's env/config
    root is used; a missing one fails with where to download it).
    """
    roots = roots or {}
    d = config.data
    cache = _cache(d.dataset, config, roots, include_test=d.split == "release")
    split, holdout, split_info = _partition(config, seed, cache)
    fit_ids = holdout.fit if holdout is not None else split.train
    transforms = TransformConfig(normalization=d.normalization, hflip=d.hflip, vflip=d.vflip, rotation=d.rotation,
                                 rotation_frame=d.rotation_frame, mask_targets=d.mask_targets,
                                 normalize_frame=d.normalize_frame)
    norm = compute_norm_stats(cache.images(), cache.indices(fit_ids)) if d.normalization == "official" else None
    evaluation = transforms.for_evaluation()

    def eval_set(c, ids=None):
        return SegmentationDataset(c, ids, evaluation, seed=seed, norm_stats=norm)

    train = SegmentationDataset(cache, fit_ids, transforms, seed=seed, norm_stats=norm)
    test = eval_set(cache, split.test)
    selection, selection_split = None, None
    if config.selects_on_train_loss:  # the release's student: no split is scored per epoch
        selection_split = "train_loss"
    elif config.train.selection == "paper":
        selection, selection_split = test, "test"
    elif config.train.selection == "holdout":
        selection, selection_split = eval_set(cache, holdout.holdout), "holdout"
    external_caches = [(name, _cache(name, config, roots)) for name in d.external]
    external = {name: eval_set(c) for name, c in external_caches}
    provenance = {
        "train": train.describe(),
        "split": split_info,
        "skipped": {name: _skipped(c) for name, c in [(d.dataset, cache)] + external_caches if _skipped(c)},
        "holdout": None if holdout is None else {"fit": len(holdout.fit), "holdout": len(holdout.holdout),
                                                 "method": holdout.method},
        "external": {name: ds.describe() for name, ds in external.items()},
    }
    return RunData(train, test, selection, selection_split, external, provenance)
