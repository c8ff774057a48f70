"""Params and FLOPs of every row, counted from the row's model: they need no training.

A run records its model's params and thop MACs (``params``, ``gmacs_thop``),
but a record is a file anyone with write access can edit: the tables never
print those. Every row's two numbers are counted here from its model config
(``study.complexity``: plain sum of numel, classic thop at 1×3×256×256 with
the Mamba internals invisible, the paper's convention), and ``study verify``
holds each record's own values to the same count. A row without a completed
run gets a ``CountedCell``, so every table can say which rows have runs.

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
    return config_key(row.arch, row.model_config())


def config_key(arch: str, config) -> str:
    """A stable key of a model: its architecture and resolved options (a model config dataclass)."""
    options = asdict(config) if is_dataclass(config) else dict(vars(config))
    text = json.dumps({"arch": arch, **options}, sort_keys=True, default=str)
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
    return _count(row.build_model(), row.model_config())


def _count(model, config) -> tuple[int, float]:
    import torch

    from study.complexity import count_params, macs_thop

    model.eval()
    in_channels = getattr(config, "in_channels", 3)
    with torch.no_grad():
        return count_params(model), macs_thop(model, COUNT_SIZE, in_channels) / 1e9


def counted_config(run_config) -> tuple[int, float]:
    """(params, GMACs) of a run config's model, from the cache or counted once and cached."""
    path = cache_path()
    models = _read_cache(path)
    key = config_key(run_config.arch, run_config.model)
    if key not in models:
        models[key] = list(_count(run_config.build_model(), run_config.model))
        _write_cache(path, models)
    params, gmacs = models[key]
    return int(params), float(gmacs)


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
    """The rows of ``tables`` lacking a Params or FLOPs cell whose model can be built (every row, as
    collected: the tables take no complexity figure from a record)."""
    return [(td, r) for td in tables for r in td.rows
            if not r.unavailable and not ("params_m" in r.cells and "flops_g" in r.cells)]


def fill_counted(
    tables: list[TableData],
    counter: Callable[[object], tuple[int, float]] | None = None,
    progress: Callable[[str], None] | None = None,
    cache: bool = True,
) -> int:
    """Give every row its Params and FLOPs counted from its model; returns how many models were counted anew.

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
        progress(f"counting Params and FLOPs of {len(new)} model(s)"
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
    for td, r in todo:
        value = models.get(keys[id(r)])
        if value is None:
            continue
        ran = any(c.kind != "complexity" and c.key in r.cells for c in td.columns)
        kind = Cell if ran else CountedCell  # the same count either way; the mark says which rows have runs
        r.cells.setdefault("params_m", kind((value[0] / 1e6,)))
        r.cells.setdefault("flops_g", kind((float(value[1]),)))
    return counted


def is_counted(cell) -> bool:
    return isinstance(cell, CountedCell)
