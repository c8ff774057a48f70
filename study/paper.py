"""The paper's own numbers (``paper/tableN.csv``), transcribed as printed.

Values stay strings as printed ("0.06" is not "0.060"); ``number`` parses one.
Known inconsistencies of the paper, and why a row cannot be matched, live in
``paper/mismatches.toml``.
"""

from __future__ import annotations

import csv
import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from study.errors import ConfigError

PAPER_DIR = Path(os.environ.get("STUDY_PAPER", Path(__file__).resolve().parent.parent / "paper"))
QUANTITIES = ("params", "flops")


@dataclass(frozen=True)
class Mismatch:
    row_id: str
    quantity: str  # "params" or "flops"
    note: str


@lru_cache(maxsize=4)
def paper_table(table_id: str, root: Path = PAPER_DIR) -> dict[str, dict[str, str]]:
    """row_id -> {column: value as printed}."""
    path = Path(root) / f"{table_id}.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {row["row_id"]: row for row in csv.DictReader(fh)}


def paper_row(table_id: str, row_id: str, root: Path = PAPER_DIR) -> dict[str, str] | None:
    return paper_table(table_id, root).get(row_id)


def number(value: str | None) -> float | None:
    if value in (None, "", "-", "–"):
        return None
    return float(value)


@lru_cache(maxsize=4)
def mismatches(root: Path = PAPER_DIR) -> dict[tuple[str, str], Mismatch]:
    """(row_id, quantity) -> the documented reason the paper's value cannot be matched."""
    path = Path(root) / "mismatches.toml"
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    out = {}
    for i, entry in enumerate(data.get("mismatch", [])):
        for key in ("row", "quantity", "note"):
            if key not in entry:
                raise ConfigError(f"{path} [[mismatch]] #{i + 1}: field '{key}' is required")
        if entry["quantity"] not in QUANTITIES:
            raise ConfigError(
                f"{path} [[mismatch]] #{i + 1}: quantity {entry['quantity']!r}; allowed: {', '.join(QUANTITIES)}"
            )
        out[(entry["row"], entry["quantity"])] = Mismatch(entry["row"], entry["quantity"], entry["note"])
    return out
