"""The paper's own numbers (``paper/tableN.csv``), transcribed as printed, and the registry of
where the paper, the authors' release and this harness differ (``paper/differences.toml``).

Values stay strings as printed ("0.06" is not "0.060"); ``number`` parses one.
The registry's ``complexity`` entries are the rows whose printed Params or FLOPs
no reading reproduces (``mismatches``).
"""

from __future__ import annotations

import csv
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from study.errors import ConfigError
from study.settings import current

PAPER_DIR = current().paper
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


KINDS = ("release", "protocol", "paper-internal", "complexity")
# The fields each kind must fill (besides id, kind and, but for complexity, area).
_REQUIRED = {"release": ("paper", "release", "release_ref", "harness"), "protocol": ("paper", "harness"),
             "paper-internal": ("paper", "harness", "no_knob"), "complexity": ("row", "quantity", "note")}
_OPTIONAL = ("area", "knob", "no_knob", "table_r", "no_row", "release", "release_ref")


@dataclass(frozen=True)
class Difference:
    """One entry of ``paper/differences.toml``."""

    id: str
    kind: str
    area: str = ""
    paper: str = ""
    release: str = ""
    release_ref: str = ""
    harness: str = ""
    knob: str = ""  # 'section.field = <TOML value>' that turns the harness to the release's behaviour
    no_knob: str = ""  # why no knob can
    table_r: str = ""  # the Table R row that measures it
    no_row: str = ""  # why no Table R row does
    row: str = ""  # complexity: the row and quantity whose printed value no reading reproduces
    quantity: str = ""
    note: str = ""

    @property
    def override(self) -> dict:
        """The knob as a nested override, e.g. {"model": {"bidirectional_flip": "channel"}}."""
        from study.config import parse_overrides

        return parse_overrides([self.knob.replace(" = ", "=", 1)]) if self.knob else {}


@dataclass(frozen=True)
class Registry:
    release_commit: str
    differences: tuple[Difference, ...]

    def of_kind(self, *kinds: str) -> list[Difference]:
        return [d for d in self.differences if d.kind in kinds]


def _difference(entry, where: str) -> Difference:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table of fields")
    known = {f for f in Difference.__dataclass_fields__}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; fields: {', '.join(sorted(known))}")
    for key, value in entry.items():
        if not isinstance(value, str):
            raise ConfigError(f"{where}: field '{key}' must be a string, got {value!r}")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind {kind!r}; allowed: {', '.join(KINDS)}")
    required = ("id", "kind") + _REQUIRED[kind] + (() if kind == "complexity" else ("area",))
    for key in required:
        if not entry.get(key):
            raise ConfigError(f"{where}: field '{key}' is required for kind {kind!r}")
    if kind in ("release", "protocol") and bool(entry.get("knob")) == bool(entry.get("no_knob")):
        raise ConfigError(f"{where}: give either 'knob' (the override reproducing the release) or 'no_knob' (why none)")
    if kind == "release" and bool(entry.get("table_r")) == bool(entry.get("no_row")):
        raise ConfigError(f"{where}: give either 'table_r' (the row measuring it) or 'no_row' (why none)")
    if kind == "complexity" and entry["quantity"] not in QUANTITIES:
        raise ConfigError(f"{where}: quantity {entry['quantity']!r}; allowed: {', '.join(QUANTITIES)}")
    return Difference(**entry)


@lru_cache(maxsize=4)
def differences(root: Path = PAPER_DIR) -> Registry:
    """``paper/differences.toml``, validated; ConfigError naming the entry and field otherwise."""
    path = Path(root) / "differences.toml"
    if not path.is_file():
        return Registry("", ())
    with path.open("rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    entries = []
    for i, entry in enumerate(data.get("difference", [])):
        entries.append(_difference(entry, f"{path} [[difference]] #{i + 1} ({entry.get('id', '?')})"))
    ids = [d.id for d in entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"{path}: duplicate id(s) {', '.join(duplicates)}")
    return Registry(str(data.get("release_commit", "")), tuple(entries))


def mismatches(root: Path = PAPER_DIR) -> dict[tuple[str, str], Mismatch]:
    """(row_id, quantity) -> the documented reason the paper's value cannot be matched."""
    return {(d.row, d.quantity): Mismatch(d.row, d.quantity, d.note)
            for d in differences(root).of_kind("complexity")}
