"""The declarative variant registry: ``variants/*.toml`` -> tables of rows.

``base.toml`` holds the protocol every row starts from; each other file is one
table whose rows state only what differs from the base. A user adds a table by
adding a file. Errors name the file, the row and the field.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from study.errors import ConfigError
from study.models.registry import get_entry, make_config

VARIANTS_DIR = Path(os.environ.get("STUDY_VARIANTS", Path(__file__).resolve().parent.parent / "variants"))

TABLE_KEYS = {"title", "datasets", "external", "reference"}
ROW_KEYS = {"id", "name", "model", "distill"}


@dataclass(frozen=True)
class Row:
    id: str
    name: str
    table: str
    source: Path
    model: dict  # resolved model options: base merged with the row's own
    distill: dict = field(default_factory=dict)
    unavailable: str | None = None  # why the row cannot be built yet

    @property
    def arch(self) -> str:
        return self.model["arch"]

    @property
    def model_options(self) -> dict:
        return {k: v for k, v in self.model.items() if k != "arch"}

    def model_config(self):
        return make_config(self.arch, self.model_options)

    def build_model(self):
        return get_entry(self.arch).builder(self.model_config())


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    source: Path
    datasets: tuple[str, ...]
    external: tuple[str, ...]
    reference: str
    rows: tuple[Row, ...]

    def row(self, row_id: str) -> Row:
        for r in self.rows:
            if r.id == row_id:
                return r
        raise KeyError(row_id)


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _unknown(where: str, keys, allowed) -> None:
    extra = sorted(set(keys) - set(allowed))
    if extra:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}")


def _load_row(path: Path, table_id: str, index: int, raw, base_model: dict) -> Row:
    where = f"{path} [[rows]] #{index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table of fields")
    for key in ("id", "name"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{where}: field '{key}' is required (a non-empty string)")
    where = f"{path} row '{raw['id']}'"
    _unknown(where, raw, ROW_KEYS)
    own_model = raw.get("model", {})
    if not isinstance(own_model, dict):
        raise ConfigError(f"{where}: field 'model' must be a table")
    model = {**base_model, **own_model}
    unavailable = None
    try:
        get_entry(model["arch"])
    except ConfigError:
        unavailable = f"model {model['arch']!r} is not registered yet"
    else:
        try:
            make_config(model["arch"], {k: v for k, v in model.items() if k != "arch"})
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    distill = raw.get("distill", {})
    if not isinstance(distill, dict):
        raise ConfigError(f"{where}: field 'distill' must be a table of loss weights")
    return Row(raw["id"], raw["name"], table_id, path, model, dict(distill), unavailable)


def _load_table(path: Path, base_model: dict) -> Table:
    data = _read_toml(path)
    table_id = path.stem
    _unknown(str(path), data, {"table", "rows"})
    meta = data.get("table", {})
    _unknown(f"{path} [table]", meta, TABLE_KEYS)
    rows_raw = data.get("rows")
    if not isinstance(rows_raw, list) or not rows_raw:
        raise ConfigError(f"{path}: expected at least one [[rows]] entry")
    rows = tuple(_load_row(path, table_id, i, raw, base_model) for i, raw in enumerate(rows_raw))
    seen: set[str] = set()
    for r in rows:
        if r.id in seen:
            raise ConfigError(f"{path} row '{r.id}': duplicate row id")
        seen.add(r.id)
    reference = meta.get("reference", rows[-1].id)
    if reference not in seen:
        raise ConfigError(f"{path} [table]: reference {reference!r} is not a row of this table")
    return Table(
        id=table_id,
        title=meta.get("title", table_id),
        source=path,
        datasets=tuple(meta.get("datasets", ["isic2017"])),
        external=tuple(meta.get("external", [])),
        reference=reference,
        rows=rows,
    )


@lru_cache(maxsize=4)
def load_tables(root: Path = VARIANTS_DIR) -> dict[str, Table]:
    root = Path(root)
    base_path = root / "base.toml"
    if not base_path.is_file():
        raise ConfigError(f"{base_path}: the base protocol file is missing")
    base = _read_toml(base_path)
    base_model = base.get("model", {})
    if "arch" not in base_model:
        raise ConfigError(f"{base_path} [model]: field 'arch' is required")
    tables = {}
    row_owner: dict[str, Path] = {}
    for path in sorted(root.glob("*.toml")):
        if path.name == "base.toml":
            continue
        table = _load_table(path, base_model)
        for r in table.rows:
            if r.id in row_owner:
                raise ConfigError(f"{path} row '{r.id}': id already used in {row_owner[r.id]}")
            row_owner[r.id] = path
        tables[table.id] = table
    return tables


def find_row(row_id: str, root: Path = VARIANTS_DIR) -> Row:
    for table in load_tables(root).values():
        for r in table.rows:
            if r.id == row_id:
                return r
    raise ConfigError(f"unknown table or row {row_id!r}; see `python -m study list`")


def select_rows(names: list[str], root: Path = VARIANTS_DIR) -> list[Row]:
    """Rows named by table ids (``table3``) or row ids (``t3-ours``), in order, without repeats."""
    tables = load_tables(root)
    rows: list[Row] = []
    for name in names:
        picked = list(tables[name].rows) if name in tables else [find_row(name, root)]
        rows.extend(r for r in picked if r not in rows)
    return rows
