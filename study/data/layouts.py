"""Listing image/mask pairs from the folder layouts the datasets ship in.

Three original release layouts (ISIC 2017, ISIC 2018, PH2) and the pre-split
``train/images`` + ``train/masks`` convention of the MALUNet / EGE-UNet
downloads. Pairs are always matched by image id, never by position in a
listing: MALUNet paired two unsorted ``os.listdir`` results and trained on
mismatched masks.

Listing only looks at names; decoding is ``study.data.check`` and
``study.data.cache``. Problems found while listing (an image without a mask,
a mask without an image, an id seen twice) are collected as ``BadPair``s so
that ``data check`` can show them all; ``get_dataset_source`` refuses them
unless asked to skip.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from study.data.roots import resolve_root
from study.datasets import dataset_info
from study.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# Mask names in the pre-split downloads: ``<id>_segmentation.png`` or ``<id>.png``.
MASK_ID_SUFFIXES = ("_segmentation", "_mask", "_lesion")
PRE_SPLIT_PARTS = ("train", "val", "test")
PRE_SPLIT_LAYOUT = "pre-split folders (train|val|test)/(images|masks), paired by id"


@dataclass(frozen=True)
class SamplePair:
    id: str
    image: Path
    mask: Path
    part: str  # the release folder it came from: Training, Validation, Test, train, val, PH2


@dataclass(frozen=True)
class BadPair:
    id: str
    path: Path  # the offending file (or the missing one's expected path)
    problem: str  # a sentence naming the file and what was expected
    kind: str  # unpaired | duplicate | unreadable | non-binary | size-mismatch


@dataclass(frozen=True)
class DataSource:
    dataset: str
    root: Path
    root_origin: str
    layout: str
    pairs: tuple[SamplePair, ...]
    problems: tuple[BadPair, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(pair.id for pair in self.pairs)

    def part_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pair in self.pairs:
            counts[pair.part] = counts.get(pair.part, 0) + 1
        return counts

    def require_clean(self) -> None:
        """DataError naming the first problem, if there is any."""
        if self.problems:
            raise DataError(problems_message(self.dataset, self.problems))


def problems_message(dataset: str, problems: tuple[BadPair, ...] | list[BadPair]) -> str:
    first = problems[0].problem
    if len(problems) == 1:
        return first
    return (
        f"{first} (and {len(problems) - 1} more problems; `python -m study data check {dataset} "
        "--skip-bad` lists them all and skips the bad pairs)"
    )


# --- ISIC releases -----------------------------------------------------------


# The release folders also hold ISIC_xxxxxxx_superpixels.png, metadata CSVs and
# LICENSE/ATTRIBUTION files: only these two patterns are data.
ISIC_IMAGE_NAME = re.compile(r"^(ISIC_\d+)\.(?:jpe?g|png)$", re.IGNORECASE)
ISIC_MASK_NAME = re.compile(r"^(ISIC_\d+)_segmentation\.png$", re.IGNORECASE)


def _files(folder: Path) -> list[Path]:
    """The folder's visible entries that are files, or that cannot be examined at all (a symlink
    loop, a dangling or unreadable link): those are kept, so that the caller reports each one that
    names a sample as unreadable, with its path, instead of a traceback."""
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder ({exc.strerror or exc}); expected a readable folder") from None
    out = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if not entry.is_file():
                continue
        except OSError:
            pass  # kept: _index_by_id says what is wrong with it
        out.append(Path(entry.path))
    # Sorted so that every listing, and every error, comes out the same on any filesystem.
    return sorted(out)


def _unreadable(path: Path) -> str | None:
    """Why a listed file cannot be opened for reading (symlink loop, dangling link, permissions), or None."""
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _index_by_id(
    files: list[Path], id_of, what: str, problems: list[BadPair]
) -> dict[str, Path]:
    by_id: dict[str, Path] = {}
    for path in files:
        sample_id = id_of(path)
        if sample_id is None:
            continue
        why = _unreadable(path)
        if why is not None:
            problems.append(BadPair(sample_id, path, f"{path}: cannot open the {what} ({why}); expected a readable "
                                    "file", "unreadable"))
            continue
        if sample_id in by_id:
            problems.append(
                BadPair(sample_id, path, f"{path}: second {what} for id {sample_id} (first: {by_id[sample_id].name}); "
                        "expected one per id", "duplicate")
            )
            continue
        by_id[sample_id] = path
    return by_id


def _pair_by_id(
    images: dict[str, Path],
    masks: dict[str, Path],
    part: str,
    image_folder: Path,
    mask_folder: Path,
    expected_mask_name,
    problems: list[BadPair],
) -> list[SamplePair]:
    pairs = []
    for sample_id in sorted(images.keys() | masks.keys()):
        image, mask = images.get(sample_id), masks.get(sample_id)
        if image is None:
            expected = image_folder / f"{sample_id}.jpg"
            problems.append(BadPair(sample_id, mask, f"{mask}: mask without image; expected {expected}", "unpaired"))
        elif mask is None:
            expected = mask_folder / expected_mask_name(sample_id)
            problems.append(BadPair(sample_id, image, f"{image}: image without mask; expected {expected}", "unpaired"))
        else:
            pairs.append(SamplePair(sample_id, image, mask, part))
    return pairs


def _match_id(pattern: re.Pattern):
    def id_of(path: Path) -> str | None:
        match = pattern.match(path.name)
        return match.group(1) if match else None

    return id_of


def _list_isic_release(dataset: str, root: Path, include_test: bool) -> tuple[str, list[SamplePair], list[BadPair]]:
    parts = dataset_info(dataset).parts
    pairs: list[SamplePair] = []
    problems: list[BadPair] = []
    used = []
    for part in parts:
        if not part.default and not include_test:
            continue
        image_folder, mask_folder = root / part.images, root / part.masks
        if not image_folder.is_dir() and not mask_folder.is_dir():
            if part is parts[0]:
                raise DataError(f"{image_folder}: no such folder; expected the {part.name.lower()} images of the release")
            continue  # Validation / Test are optional
        for folder, partner in ((image_folder, mask_folder), (mask_folder, image_folder)):
            if not folder.is_dir():
                raise DataError(f"{folder}: no such folder; expected it beside {partner.name}/")
        images = _index_by_id(_files(image_folder), _match_id(ISIC_IMAGE_NAME), "image", problems)
        masks = _index_by_id(_files(mask_folder), _match_id(ISIC_MASK_NAME), "mask", problems)
        if not images and not masks:
            raise DataError(
                f"{image_folder}: no ISIC_xxxxxxx.jpg images and no masks in {mask_folder.name}/; "
                "expected a non-empty release folder"
            )
        pairs += _pair_by_id(
            images, masks, part.name, image_folder, mask_folder, lambda i: f"{i}_segmentation.png", problems
        )
        used.append(part.name)
    title = dataset_info(dataset).title
    return f"{title} release ({', '.join(used)})", pairs, problems


# --- pre-split folders --------------------------------------------------------


def _pre_split_image_id(path: Path) -> str | None:
    if path.suffix.lower() not in IMAGE_SUFFIXES or path.stem.endswith("_superpixels"):
        return None
    return path.stem


def _pre_split_mask_id(path: Path) -> str | None:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    stem = path.stem
    for suffix in MASK_ID_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def is_pre_split(root: Path) -> bool:
    return (root / "train" / "images").is_dir() or (root / "train" / "masks").is_dir()


def _list_pre_split(root: Path, include_test: bool) -> tuple[str, list[SamplePair], list[BadPair]]:
    pairs: list[SamplePair] = []
    problems: list[BadPair] = []
    for part in PRE_SPLIT_PARTS:
        if part == "test" and not include_test:
            continue
        image_folder, mask_folder = root / part / "images", root / part / "masks"
        if not (root / part).is_dir():
            if part == "train":
                raise DataError(f"{root / part}: no such folder; expected train/images and train/masks")
            continue
        for folder in (image_folder, mask_folder):
            if not folder.is_dir():
                raise DataError(f"{folder}: no such folder; expected {part}/images and {part}/masks")
        images = _index_by_id(_files(image_folder), _pre_split_image_id, "image", problems)
        masks = _index_by_id(_files(mask_folder), _pre_split_mask_id, "mask", problems)
        # A mask file named like its image, with any of the suffixes above, pairs with it.
        example_suffix = next((p.name[len(i):] for i, p in masks.items()), "_segmentation.png")
        pairs += _pair_by_id(images, masks, part, image_folder, mask_folder, lambda i: f"{i}{example_suffix}", problems)
    return PRE_SPLIT_LAYOUT, pairs, problems


# --- PH2 ------------------------------------------------------------------------

PH2_IMAGES_FOLDER = "PH2 Dataset images"
PH2_CASE_NAME = re.compile(r"^IMD\d+$")


def _find_ph2_cases(root: Path) -> Path:
    # Users point at the unpacked archive, at PH2Dataset/ or at the images folder itself.
    for candidate in (root / "PH2Dataset" / PH2_IMAGES_FOLDER, root / PH2_IMAGES_FOLDER, root):
        if candidate.is_dir() and any(PH2_CASE_NAME.match(e.name) and e.is_dir() for e in os.scandir(candidate)):
            return candidate
    raise DataError(
        f"{root}: no PH2 layout found; expected PH2Dataset/{PH2_IMAGES_FOLDER}/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp"
    )


def _list_ph2(root: Path) -> tuple[str, list[SamplePair], list[BadPair]]:
    cases = _find_ph2_cases(root)
    pairs: list[SamplePair] = []
    problems: list[BadPair] = []
    for case in sorted(p for p in cases.iterdir() if p.is_dir() and PH2_CASE_NAME.match(p.name)):
        case_id = case.name
        image = case / f"{case_id}_Dermoscopic_Image" / f"{case_id}.bmp"
        mask = case / f"{case_id}_lesion" / f"{case_id}_lesion.bmp"
        if not image.is_file() and not mask.is_file():
            expected = image.relative_to(case)
            problems.append(BadPair(case_id, case, f"{case}: neither image nor mask; expected {expected}", "unpaired"))
        elif not mask.is_file():
            problems.append(BadPair(case_id, image, f"{image}: image without mask; expected {mask}", "unpaired"))
        elif not image.is_file():
            problems.append(BadPair(case_id, mask, f"{mask}: mask without image; expected {image}", "unpaired"))
        else:
            pairs.append(SamplePair(case_id, image, mask, "PH2"))
    return f"PH2 release ({cases.relative_to(root) if cases != root else '.'})", pairs, problems


# --- "folders": one folder of images, one of masks, paired by a file-name pattern -----


def _list_folders(info, root: Path) -> tuple[str, list[SamplePair], list[BadPair]]:
    image_folder, mask_folder = root / info.images, root / info.masks
    for folder, what in ((image_folder, "images"), (mask_folder, "masks")):
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder; expected the {what} of {info.title} ({info.source})")
    before, after = info.mask_name.split("{id}")
    problems: list[BadPair] = []

    def image_id(path: Path) -> str | None:
        return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else None

    def mask_id(path: Path) -> str | None:
        name = path.name
        if not (name.startswith(before) and name.endswith(after)) or len(name) <= len(before) + len(after):
            return None
        return name[len(before):len(name) - len(after)]

    images = _index_by_id(_files(image_folder), image_id, "image", problems)
    masks = _index_by_id(_files(mask_folder), mask_id, "mask", problems)
    if not images and not masks:
        raise DataError(f"{image_folder}: no images, and no masks named {info.mask_name!r} in {mask_folder}; "
                        "expected a non-empty dataset")
    pairs = _pair_by_id(images, masks, info.images, image_folder, mask_folder,
                        lambda i: info.mask_name.replace("{id}", i), problems)
    return f"{info.images}/ and {info.masks}/ ({info.mask_name})", pairs, problems


# --- entry points ---------------------------------------------------------------


def _read_isic_release(info, resolved, include_test: bool):
    release = info.parts[0]
    if (resolved.path / release.images).is_dir() or (resolved.path / release.masks).is_dir():
        return _list_isic_release(info.name, resolved.path, include_test)
    if is_pre_split(resolved.path):
        return _list_pre_split(resolved.path, include_test)
    raise DataError(
        f"{resolved.path} (from {resolved.origin}): no {info.title} layout found; expected folders "
        f"{release.images}/ and {release.masks}/ (the original release) or train/images/ and "
        "train/masks/ (pre-split)"
    )


# The reader of each layout kind (study.datasets.LAYOUTS but the generated one): chosen by the
# dataset's declared layout, never by its name.
READERS = {
    "isic-release": _read_isic_release,
    "ph2": lambda info, resolved, include_test: _list_ph2(resolved.path),
    "folders": lambda info, resolved, include_test: _list_folders(info, resolved.path),
}


def scan_dataset(name: str, root: str | os.PathLike | None = None, *, include_test: bool = False) -> DataSource:
    """Every pair the root holds, and every problem seen while listing (not raised)."""
    info = dataset_info(name)
    if not info.needs_root:
        raise DataError(f"dataset {name!r} is generated; it has no folder to scan")
    resolved = resolve_root(name, root)
    layout, pairs, problems = READERS[info.layout](info, resolved, include_test)
    seen: dict[str, SamplePair] = {}
    unique_pairs = []
    for pair in pairs:
        if pair.id in seen:
            problems.append(BadPair(pair.id, pair.image, f"{pair.image}: id {pair.id} also in part "
                                    f"{seen[pair.id].part} ({seen[pair.id].image}); expected each id once", "duplicate"))
            continue
        seen[pair.id] = pair
        unique_pairs.append(pair)
    if not unique_pairs and not problems:
        raise DataError(f"{resolved.path} (from {resolved.origin}): empty dataset, no image/mask pairs found in {layout}")
    ordered = tuple(sorted(unique_pairs, key=lambda p: p.id))
    return DataSource(name, resolved.path, resolved.origin, layout, ordered, tuple(problems))


def get_dataset_source(
    name: str, root: str | os.PathLike | None = None, *, include_test: bool = False, skip_bad: bool = False
) -> DataSource:
    """The pairs of a real dataset, matched by id and sorted by id.

    ``root`` (the --root flag) wins over ``STUDY_DATA_<NAME>``, which wins over
    the config file. A listing problem is a DataError naming the file unless
    ``skip_bad``, which keeps the problems in ``source.problems`` and drops
    those pairs. ``include_test`` adds the ISIC Test folders when present; the
    paper's pool is Training + Validation.
    """
    source = scan_dataset(name, root, include_test=include_test)
    if not skip_bad:
        source.require_clean()
    if not source.pairs:
        raise DataError(f"{source.root}: no usable pairs left: {problems_message(name, source.problems)}")
    return source
