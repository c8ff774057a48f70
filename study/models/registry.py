"""Models created by name, timm-style: ``build_model("ultralbm", {...})``.

Each entry pairs a builder with the frozen dataclass of its options; unknown
names and fields fail with the allowed values. This module imports no model:
the model modules register themselves when imported, and ``study.models``
imports them all (so any import of ``study.models.registry`` sees them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from study.canonical import check_fields, coerce_floats
from study.errors import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    config: type


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, config: type):
    def wrap(builder):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, builder, config)
        return builder

    return wrap


def registered_models() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(arch: str) -> ModelEntry:
    if arch not in _REGISTRY:
        raise ConfigError(f"model.arch: unknown model {arch!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[arch]


def make_config(arch: str, options: dict | None = None):
    """The frozen config of ``arch`` with ``options`` applied (validated)."""
    entry = get_entry(arch)
    options = dict(options or {})
    if hasattr(entry.config, "from_dict"):
        config = entry.config.from_dict(options)
        coerce_floats(config)
        return config
    check_fields(entry.config, f"model ({arch})", options)
    config = entry.config(**options)
    coerce_floats(config)
    return config


def build_model(arch: str, options: dict | None = None) -> nn.Module:
    return get_entry(arch).builder(make_config(arch, options))
