"""One config, one hash: canonical values for frozen config dataclasses, and the closed alphabets of
the names (row and table ids) that end up in file names and generated scripts."""

from __future__ import annotations

import re
from dataclasses import fields

from study.errors import ConfigError

_ROW_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
_TABLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _as_float(value):
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def coerce_floats(obj) -> None:
    """``lr = 1`` and ``lr = 1.0`` are one config: fields annotated float hold floats,
    so the resolved config, and its hash, agree however the value was written."""
    for f in fields(obj):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        value = getattr(obj, f.name)
        if kind == "float":
            object.__setattr__(obj, f.name, _as_float(value))
        elif kind.startswith("tuple[float") and isinstance(value, (list, tuple)):
            object.__setattr__(obj, f.name, tuple(_as_float(v) for v in value))


def reject_unknown(where: str, keys, allowed) -> None:
    """One ConfigError naming the unknown field(s) and the allowed ones."""
    extra = sorted(set(keys) - set(allowed))
    if extra:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}")


def check_fields(cls, where: str, options: dict) -> None:
    """Reject keys that are not fields of the dataclass ``cls``."""
    reject_unknown(where, options, [f.name for f in fields(cls)])


def check_row_id(row_id: str, where: str) -> str:
    """Row ids end up in file names and generated shell scripts: a closed alphabet."""
    if not isinstance(row_id, str) or not _ROW_ID.fullmatch(row_id) or len(row_id) > 100:
        raise ConfigError(f"{where}: row id {row_id!r} is not allowed; expected lowercase letters, digits, "
                          "'.', '_' or '-', starting with a letter or digit (at most 100 characters)")
    return row_id


def check_study_name(name: str, where: str = "--study-name") -> str:
    """A search's name ends up in a file name under the store (its journal) and in job names: the row ids'
    closed alphabet, so ``../..`` can never lead out of the store."""
    if not isinstance(name, str) or not _ROW_ID.fullmatch(name) or len(name) > 100:
        raise ConfigError(f"{where}: {name!r} is not allowed; expected lowercase letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit (at most 100 characters)")
    return name


def check_table_id(table_id: str, where: str) -> str:
    """A table id is its file's name: letters (either case), digits, '.', '_' or '-'."""
    if not _TABLE_ID.fullmatch(table_id) or len(table_id) > 100:
        raise ConfigError(f"{where}: table id {table_id!r} is not allowed; expected letters, digits, '.', '_' "
                          "or '-', starting with a letter or digit")
    return table_id
