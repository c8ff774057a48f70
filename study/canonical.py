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


def reject_unknown(where: str, keys, allowed) -> None:
    """One ConfigError naming the unknown field(s) and the allowed ones."""
    from study.errors import ConfigError

    extra = sorted(set(keys) - set(allowed))
    if extra:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}")


def check_fields(cls, where: str, options: dict) -> None:
    """Reject keys that are not fields of the dataclass ``cls``."""
    reject_unknown(where, options, [f.name for f in fields(cls)])
