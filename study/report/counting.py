"""Params and FLOPs of rows without runs, counted from the row's model: they need no training.

A run records its model's params and thop MACs (``params``, ``gmacs_thop``);
a row without a completed run gets the same two numbers counted here, the same
way (``study.complexity``: plain sum of numel, classic thop at 1×3×256×256
with the Mamba internals invisible, the paper's convention). Such a cell is a
``CountedCell``, so every table can say which numbers come from runs and which
from counting.

Counting a model at 256×256 takes a fraction of a second to a few seconds on
a CPU, so the results are cached per model config in
``$STUDY_CACHE/report-complexity.json`` (``~/.cache/ultralbm-study``), keyed
by a digest of the code that builds and counts the models: any change of
``study/models`` or ``study/complexity.py`` counts afresh.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

from study.report.collect import Cell, TableData

COUNT_SIZE = 256  # the paper's input, whatever size a profile trains at
CACHE_NAME = "report-complexity.json"
_CODE = Path(__file__).resolve().parent.parent  # study/


@dataclass(frozen=True)
class CountedCell(Cell):
    """A Params or FLOPs cell counted from the row's model, not read from a run."""


def model_key(row) -> str:
    """A stable key of the row's model: its architecture and resolved options."""
    config = row.model_config()
    options = asdict(config) if is_dataclass(config) else dict(vars(config))
    text = json.dumps({"arch": row.arch, **options}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@lru_cache(maxsize=1)
def code_digest() -> str:
    """A digest of the code behind the counts: the models and the counters."""
    digest = hashlib.sha256()
    for path in sorted([*(_CODE / "models").rglob("*.py"), _CODE / "complexity.py"]):
        digest.update(path.relative_to(_CODE).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def count_row(row) -> tuple[int, float]:
    """(params, GMACs) of ``row``'s model, counted as a run counts its own."""
    import torch

    from study.complexity import count_params, macs_thop

    model = row.build_model()
    model.eval()
    in_channels = getattr(row.model_config(), "in_channels", 3)
    with torch.no_grad():
        return count_params(model), macs_thop(model, COUNT_SIZE, in_channels) / 1e9


def cache_path() -> Path:
    from study.data.cache import cache_root

    return cache_root() / CACHE_NAME


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("code") != code_digest() or not isinstance(data.get("models"), dict):
        return {}
    return data["models"]


def _write_cache(path: Path, models: dict) -> None:
    from study.store.atomic import atomic_write_bytes

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps({"code": code_digest(), "size": COUNT_SIZE, "models": models},
                                            indent=1, sort_keys=True).encode())
    except OSError:
        pass  # a read-only cache only costs the next report the counting again


def missing_rows(tables: list[TableData]):
    """The rows of ``tables`` lacking a Params or FLOPs cell whose model can be built."""
    return [(td, r) for td in tables for r in td.rows
            if not r.unavailable and not ("params_m" in r.cells and "flops_g" in r.cells)]


def fill_counted(
    tables: list[TableData],
    counter: Callable[[object], tuple[int, float]] | None = None,
    progress: Callable[[str], None] | None = None,
    cache: bool = True,
) -> int:
    """Give every row without a run's Params and FLOPs counted ones; returns how many models were counted anew.

    A model already counted (this report or an earlier one, same code) is
    taken from the cache; a model that fails to build or count keeps "–".
    """
    todo = missing_rows(tables)
    if not todo:
        return 0
    counter = counter or count_row
    path = cache_path() if cache else None
    models = _read_cache(path) if path else {}
    keys = {id(r): model_key(r.row) for _, r in todo}
    new = {keys[id(r)]: r.row for _, r in todo if keys[id(r)] not in models}
    if new and progress:
        progress(f"counting Params and FLOPs of {len(new)} model(s) without runs"
                 + (f" (once: cached in {path})" if path else ""))
    counted = 0
    for key, row in new.items():
        try:
            params, gmacs = counter(row)
        except Exception as exc:  # noqa: BLE001  (one model that fails leaves its cells empty, nothing else)
            if progress:
                progress(f"could not count {row.id}: {type(exc).__name__}: {exc}")
            continue
        models[key] = [int(params), float(gmacs)]
        counted += 1
    if counted and path:
        _write_cache(path, models)
    for _, r in todo:
        value = models.get(keys[id(r)])
        if value is None:
            continue
        r.cells.setdefault("params_m", CountedCell((value[0] / 1e6,)))
        r.cells.setdefault("flops_g", CountedCell((float(value[1]),)))
    return counted


def is_counted(cell) -> bool:
    return isinstance(cell, CountedCell)
