"""Configs for the tests that train: the smallest smoke run of a row (shared by several packages' tests)."""

from __future__ import annotations

from study.variants import find_row

TINY = {"data": {"synthetic_count": 40}, "train": {"epochs": 3}}


def tiny(row="ultralbm", **sections):
    """``row`` on 40 synthetic images for 3 epochs, with ``sections`` overriding (e.g. train={...})."""
    overrides = {k: dict(v) for k, v in TINY.items()}
    for k, v in sections.items():
        overrides.setdefault(k, {}).update(v)
    return find_row(row).run_config("synthetic", "smoke", overrides)
