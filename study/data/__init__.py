"""Datasets: readers for the original releases, the split, the cache, transforms, synthetic data.

One concept per module (the datasets' names and downloads are ``study.datasets``, below
both this package and the config):

- ``roots``         where a dataset lives: --root > STUDY_DATA_<NAME> > config file
- ``layouts``       listing image/mask pairs by id from each release layout
- ``imageio``       decoding and validating one pair, resizing it
- ``check``         decoding a whole root and summarising it (``data check``)
- ``cache``         the resized uint8 arrays on disk, memory-mapped
- ``split``         the deterministic 7:3 split and its manifest, the holdout
- ``transforms``    normalisation and augmentation, as a recorded config
- ``torch_dataset`` the torch Dataset over a cache
- ``synthetic``     the procedural default dataset

The names below are importable from ``study.data`` directly; they are loaded
on first use, so importing the package does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DATASETS": "study.datasets",
    "REAL_DATASETS": "study.datasets",
    "DatasetInfo": "study.datasets",
    "dataset_info": "study.datasets",
    "ResolvedRoot": "roots",
    "resolve_root": "roots",
    "BadPair": "layouts",
    "DataSource": "layouts",
    "SamplePair": "layouts",
    "get_dataset_source": "layouts",
    "scan_dataset": "layouts",
    "read_image": "imageio",
    "read_mask": "imageio",
    "read_pair": "imageio",
    "CheckReport": "check",
    "check_source": "check",
    "DEFAULT_SIZE": "cache",
    "DatasetCache": "cache",
    "build_cache": "cache",
    "build_synthetic_cache": "cache",
    "cache_root": "cache",
    "open_cache": "cache",
    "prepare_cache": "cache",
    "Holdout": "split",
    "Split": "split",
    "carve_holdout": "split",
    "ensure_split": "split",
    "make_split": "split",
    "read_manifest": "split",
    "split_from_parts": "split",
    "write_manifest": "split",
    "NormStats": "transforms",
    "TransformConfig": "transforms",
    "compute_norm_stats": "transforms",
    "SegmentationDataset": "torch_dataset",
    "seed_worker": "torch_dataset",
    "SyntheticSpec": "synthetic",
    "make_synthetic": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'study.data' has no attribute {name!r}")
    module = _EXPORTS[name]
    value = getattr(importlib.import_module(module if "." in module else f"study.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
