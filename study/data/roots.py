"""Where a dataset lives on this machine: a CLI flag, an environment variable
or a config file, in that order of precedence.

The config file is TOML with a ``[data]`` table holding one key per dataset::

    [data]
    isic2017 = "/datasets/ISIC2017"
    ph2 = "~/data/PH2"

It is looked up as ``study.toml`` in the current directory, then as
``$XDG_CONFIG_HOME/ultralbm-study/config.toml`` (``~/.config/...`` when that
variable is unset). Relative paths in a config file are relative to the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from study.datasets import dataset_info
from study.errors import DataError
from study.settings import current

PROJECT_CONFIG_NAME = "study.toml"


@dataclass(frozen=True)
class ResolvedRoot:
    path: Path
    origin: str  # "--root", "STUDY_DATA_ISIC2017" or "config <file>": said in every error


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ultralbm-study" / "config.toml"


def config_files() -> list[Path]:
    """The config files consulted, first match wins."""
    return [Path.cwd() / PROJECT_CONFIG_NAME, user_config_path()]


CONFIG_KEYS = {"data"}  # the tables a config file may hold
MAX_PATH = 4096  # PATH_MAX on Linux: a longer root is a mistake, said in one line


def _read_toml(path: Path) -> dict:
    import tomllib

    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read config file ({type(exc).__name__}: {exc}); expected UTF-8 TOML "
                        "with a [data] table") from None
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise DataError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; expected only a [data] table of "
                        "dataset = \"path\" entries")
    return data


def checked_path(value: str, origin: str) -> str:
    """A root as given: printable, and no longer than a path can be."""
    from study.store.files import printable

    if len(value) > MAX_PATH:
        raise DataError(f"{origin}: a path of {len(value)} characters; expected at most {MAX_PATH}")
    if printable(value) != value or "\n" in value or "\t" in value:
        raise DataError(f"{origin}: {printable(value)!r} holds control characters; expected a folder path")
    return value


def _root_from_config(name: str) -> ResolvedRoot | None:
    for path in config_files():
        if not path.is_file():
            continue
        data = _read_toml(path).get("data", {})
        if not isinstance(data, dict):
            raise DataError(f"{path}: [data] must be a table of dataset = \"path\" entries")
        if name not in data:
            continue
        value = data[name]
        if not isinstance(value, str) or not value:
            raise DataError(f"{path}: data.{name} must be a path string, found {value!r}")
        root = Path(checked_path(value, f"{path} data.{name}")).expanduser()
        if not root.is_absolute():
            root = path.parent / root
        return ResolvedRoot(root, f"config {path}")
    return None


def how_to_get(name: str) -> str:
    """One sentence: where to download the dataset and the three ways to point at it."""
    info = dataset_info(name)
    return (
        f"download {info.title} from {info.download} ({info.files}), unpack into one folder, then pass "
        f"--root {name}=PATH, or set {info.env_var}=PATH, or add '{name} = \"PATH\"' under [data] in "
        f"./{PROJECT_CONFIG_NAME} or {user_config_path()}"
    )


def resolve_root(name: str, root: str | os.PathLike | None = None) -> ResolvedRoot:
    """The root folder of dataset ``name``; DataError when none is configured or it is absent."""
    info = dataset_info(name)
    if not info.needs_root:
        raise DataError(f"dataset {name!r} is generated and has no root folder")
    if root is not None and str(root) != "":
        resolved = ResolvedRoot(Path(checked_path(str(root), "--root")).expanduser(), "--root")
    elif current().data_root(info.env_var):
        resolved = ResolvedRoot(Path(checked_path(current().data_root(info.env_var), info.env_var)).expanduser(),
                                info.env_var)
    else:
        resolved = _root_from_config(name)
        if resolved is None:
            raise DataError(f"no root folder set for {name}: {how_to_get(name)}")
    path = Path(os.path.abspath(resolved.path))  # absolute, ".." removed, symlinks kept
    if not path.is_dir():
        raise DataError(f"{path} (from {resolved.origin}): no such folder; expected the {info.title} root")
    return ResolvedRoot(path, resolved.origin)
