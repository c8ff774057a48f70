"""One config, one hash: canonical values for frozen config dataclasses."""

from __future__ import annotations

from dataclasses import fields


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
