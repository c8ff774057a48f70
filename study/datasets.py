"""The datasets the harness knows by name: declared as data, read here.

The paper's datasets are ``variants/datasets.toml`` (the package's copy when installed); a lab's
own study folder may add its own in ``DIR/datasets.toml``. A dataset is a name, a layout kind
from the few the readers know (``LAYOUTS``), where it is published and how many pairs the paper
used; the reader is chosen by the layout kind, never by the dataset's name. Download addresses
and folder names live in that file once, so error messages, ``data check`` and the README say
the same thing. Torch-free and below both the config (which names the datasets) and the data
package (which reads them).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from study.errors import ConfigError, DataError

# The synthetic set's generator (study.data.synthetic), part of every synthetic run's config and
# of its cache key: bump it whenever the pictures change.
SYNTHETIC_GENERATOR_VERSION = 2


LAYOUTS = ("isic-release", "ph2", "folders", "synthetic")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # also an environment variable's suffix: STUDY_DATA_<NAME>


@dataclass(frozen=True)
class ReleasePart:
    name: str  # Training / Validation / Test
    images: str  # folder of the part's images
    masks: str  # folder of its masks
    default: bool  # part of the paper's image pool


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # what the user types: ``isic2017``
    title: str  # what a report prints: ``ISIC 2017 Task 1``
    download: str  # where the original release is published
    files: str  # which archives of that release to unpack into one root
    paper_count: str  # how many pairs the paper used, for the user to compare
    needs_root: bool = True
    pairs: int | None = None  # image/mask pairs of the release the paper used (cost estimates)
    label: str = ""  # a table's column header: ``ISIC 2017``
    layout: str = "isic-release"  # LAYOUTS: which reader lists its pairs
    parts: tuple[ReleasePart, ...] = ()  # "isic-release": the release's folders
    images: str = "images"  # "folders": the images folder under the root
    masks: str = "masks"  # "folders": the masks folder under the root
    mask_name: str = "{id}_segmentation.png"  # "folders": a mask's file name for image id {id}
    source: str = ""  # the file that declared it

    @property
    def env_var(self) -> str:
        return f"STUDY_DATA_{self.name.upper()}"


_FIELDS = {"title", "label", "layout", "download", "files", "paper_count", "pairs", "parts", "images", "masks",
           "mask_name"}
_TEXT = ("title", "label", "download", "files", "paper_count", "images", "masks", "mask_name")


def _declared(name: str, body, where: str) -> DatasetInfo:
    """One [datasets.NAME] entry, validated: one clear error per mistake, naming the file and field."""
    where = f"{where} [datasets.{name}]"
    if not _NAME.match(name):
        raise ConfigError(f"{where}: the name must be lower-case letters, digits and '_', starting with a letter")
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: expected a table of fields")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(_FIELDS))}")
    layout = body.get("layout")
    if layout not in LAYOUTS:
        raise ConfigError(f"{where} field 'layout': {layout!r} is not a layout the readers know; expected one of "
                          f"{', '.join(LAYOUTS)}")
    for key in _TEXT:
        if key in body and (not isinstance(body[key], str) or not body[key]):
            raise ConfigError(f"{where} field '{key}': expected a non-empty string")
    pairs = body.get("pairs")
    if pairs is not None and (isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1):
        raise ConfigError(f"{where} field 'pairs': expected a positive whole number, got {pairs!r}")
    parts = tuple(_part(p, f"{where} field 'parts' #{i + 1}") for i, p in enumerate(body.get("parts", [])))
    if layout == "isic-release" and not parts:
        raise ConfigError(f"{where}: layout \"isic-release\" needs its `parts` (name, images, masks, pool)")
    mask_name = body.get("mask_name", "{id}_segmentation.png")
    if layout == "folders" and (mask_name.count("{id}") != 1 or "/" in mask_name):
        raise ConfigError(f"{where} field 'mask_name': expected a file name with {{id}} once, e.g. "
                          f"\"{{id}}_mask.png\", got {mask_name!r}")
    return DatasetInfo(
        name=name, title=body.get("title", name), download=body.get("download", "(not given)"),
        files=body.get("files", ""), paper_count=body.get("paper_count", "(not in the paper)"),
        needs_root=layout != "synthetic", pairs=pairs, label=body.get("label", body.get("title", name)),
        layout=layout, parts=parts, images=body.get("images", "images"), masks=body.get("masks", "masks"),
        mask_name=mask_name, source=where)


def _part(raw, where: str) -> ReleasePart:
    if not isinstance(raw, dict) or set(raw) - {"name", "images", "masks", "pool"} or \
            not all(isinstance(raw.get(k), str) and raw.get(k) for k in ("name", "images", "masks")):
        raise ConfigError(f"{where}: expected {{ name = \"...\", images = \"FOLDER\", masks = \"FOLDER\", "
                          f"pool = true|false }}, got {raw!r}")
    return ReleasePart(raw["name"], raw["images"], raw["masks"], bool(raw.get("pool", True)))


def read_datasets(path: Path) -> dict[str, DatasetInfo]:
    """The datasets one file declares (``[datasets.NAME]`` tables); read again when the file changes."""
    try:
        stat = Path(path).stat()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return _read_datasets(Path(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _read_datasets(path: Path, mtime_ns: int, size: int) -> dict[str, DatasetInfo]:
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if set(raw) - {"datasets"}:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(set(raw) - {'datasets'}))}; "
                          "expected only [datasets.NAME] tables")
    return {name: _declared(name, body, str(path)) for name, body in raw.get("datasets", {}).items()}


def paper_datasets_file() -> Path:
    from study.settings import STUDY_FILES

    return STUDY_FILES / "variants" / "datasets.toml"


def known_datasets(own: Path | None = None) -> dict[str, DatasetInfo]:
    """The paper's datasets, and those of the own study folder this process is pointed at."""
    from study.settings import own_study_folder

    found = dict(read_datasets(paper_datasets_file()))
    own = own if own is not None else own_study_folder()
    extra = Path(own) / "datasets.toml" if own is not None else None
    if extra is not None and extra.is_file():
        for name, info in read_datasets(extra.resolve()).items():
            if name in found:
                raise ConfigError(f"{extra} [datasets.{name}]: the paper's study already declares {name!r} "
                                  f"({found[name].source}); choose another name")
            found[name] = info
    return found


class _Registry(Mapping):
    """``DATASETS``: the known datasets, read when asked (a study folder may add some)."""

    def __getitem__(self, name):
        return known_datasets()[name]

    def __iter__(self):
        return iter(known_datasets())

    def __len__(self):
        return len(known_datasets())


class _RealNames:
    """``REAL_DATASETS``: the names of datasets read from a root (not generated)."""

    def __contains__(self, name) -> bool:
        info = known_datasets().get(name)
        return info is not None and info.needs_root

    def __iter__(self):
        return iter([n for n, info in known_datasets().items() if info.needs_root])


DATASETS: Mapping[str, DatasetInfo] = _Registry()
REAL_DATASETS = _RealNames()


def dataset_info(name: str) -> DatasetInfo:
    try:
        return known_datasets()[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; expected one of: {', '.join(known_datasets())}") from None
