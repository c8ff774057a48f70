"""The preprocessing cache: every pair resized once, stored as uint8 arrays.

Layout under the cache root (``$STUDY_CACHE``, default
``~/.cache/ultralbm-study``)::

    <dataset>/<dataset>-<size>px-<resize>-<fingerprint>/
        images.npy   (N, size, size, 3) uint8 RGB
        masks.npy    (N, size, size)    uint8 {0, 1}
        meta.json    ids, source files, original sizes, resize method, skipped pairs

The fingerprint hashes the file list (id, relative path, byte size and
modification time of every image and mask), so an added, removed or replaced
file gives a new cache instead of a stale one. A build writes into a hidden
``.partial`` folder and renames it into place only once ``meta.json`` is
written: an interrupted build never leaves a folder that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from study.data.check import map_pairs
from study.data.imageio import (
    RESIZE_METHOD,
    RESIZE_TAG,
    read_image,
    read_mask,
    read_pair,
    resize_mask_soft,
    resize_pair,
    stretch_and_resize,
)
from study.data.layouts import BadPair, DataSource, SamplePair, get_dataset_source, problems_message
from study.data.synthetic import SyntheticSpec, make_synthetic, synthetic_ids
from study.datasets import SYNTHETIC_GENERATOR_VERSION as GENERATOR_VERSION
from study.datasets import dataset_info
from study.errors import DataError
from study.store.atomic import probe_writable

CACHE_FORMAT = 1
DEFAULT_SIZE = 256
META_FILE = "meta.json"
IMAGES_FILE = "images.npy"
MASKS_FILE = "masks.npy"
SOFT_MASKS_FILE = "soft_masks.npy"
STRETCHED_FILE = "images_stretched.npy"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where caches and split manifests live: the argument, ``$STUDY_CACHE``, or ``~/.cache/ultralbm-study``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from study.settings import current

    return current().cache


def require_cache_for(datasets, cache_dir: str | os.PathLike | None = None) -> None:
    """Refuse at once (DataError, one line) when a dataset never cached here would have to be built in a
    cache folder this process cannot write; a read-only cache that already holds a dataset is read as it is."""
    root = cache_root(cache_dir)
    if all((root / name).is_dir() for name in datasets):
        return
    try:
        probe_writable(root)
    except OSError as exc:
        raise DataError(f"{root}: the dataset cache is not writable ({exc.strerror or exc}) and "
                        f"{', '.join(n for n in datasets if not (root / n).is_dir())} has no cache there yet; point "
                        "STUDY_CACHE (or --cache-dir) at a folder you can write") from None


@dataclass(frozen=True)
class DatasetCache:
    """A finished cache folder. Arrays are memory-mapped read-only on request."""

    directory: Path
    meta: dict = field(repr=False, compare=False)

    @property
    def dataset(self) -> str:
        return self.meta["dataset"]

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self.meta["ids"])

    def __len__(self) -> int:
        return len(self.meta["ids"])

    def images(self) -> np.ndarray:
        """(N, size, size, 3) uint8, memory-mapped."""
        return np.load(self.directory / IMAGES_FILE, mmap_mode="r")

    def masks(self) -> np.ndarray:
        """(N, size, size) uint8 in {0, 1}, memory-mapped."""
        return np.load(self.directory / MASKS_FILE, mmap_mode="r")

    def soft_masks(self) -> np.ndarray:
        """(N, size, size) uint8 in [0, 255]: the masks resized bilinearly, not thresholded
        (``data.mask_targets = "soft"``). Made from the original masks on first use and
        kept beside the hard ones; ``masks()`` is these thresholded at 128."""
        path = self.directory / SOFT_MASKS_FILE
        if not path.is_file():
            _write_soft_masks(self, path)
        return np.load(path, mmap_mode="r")

    def stretched_images(self) -> np.ndarray:
        """(N, size, size, 3) uint8: each image stretched to [0, 255] by its own min and max at its
        stored resolution, then resized (``data.normalize_frame = "original"``: the release's order,
        normalise then resize). The resize is bilinear in floating point (it agrees with the
        release's antialiased tensor resize within 0.01 grey levels), then rounded. Made from the
        original files on first use and kept beside the arrays; a synthetic image is generated at
        its size, so it is stretched as it is."""
        path = self.directory / STRETCHED_FILE
        if not path.is_file():
            _write_array(path, _stretched_images(self))
        return np.load(path, mmap_mode="r")

    def indices(self, ids: Sequence[str]) -> np.ndarray:
        """Row of each id; DataError naming the ids this cache does not hold."""
        row_of = {sample_id: row for row, sample_id in enumerate(self.meta["ids"])}
        missing = [sample_id for sample_id in ids if sample_id not in row_of]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise DataError(
                f"{self.directory}: {len(missing)} id(s) not in the {self.dataset} cache ({shown}); "
                "expected ids of this dataset (is the split manifest for another dataset or root?)"
            )
        return np.array([row_of[sample_id] for sample_id in ids], dtype=np.int64)


def open_cache(directory: str | os.PathLike) -> DatasetCache:
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise DataError(
            f"{directory}: not a finished cache; expected {META_FILE} (rebuild with `python -m study data cache`)"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != CACHE_FORMAT:
        raise DataError(
            f"{meta_path}: cache format {meta.get('format')!r}; expected {CACHE_FORMAT} (delete the folder to rebuild)"
        )
    for name in (IMAGES_FILE, MASKS_FILE):
        if not (directory / name).is_file():
            raise DataError(f"{directory / name}: missing from a finished cache; delete {directory} to rebuild")
    return DatasetCache(directory, meta)


def _has_originals(cache: DatasetCache) -> bool:
    return bool(cache.meta.get("files")) and bool(cache.meta.get("root"))


def _write_soft_masks(cache: DatasetCache, path: Path) -> None:
    if _has_originals(cache):
        root = Path(cache.meta["root"])
        soft = np.stack([resize_mask_soft(read_mask(root / mask_file), cache.size)
                         for _, mask_file in cache.meta["files"]])
    else:  # synthetic masks are drawn at their size, never resized: soft and hard are the same
        soft = np.asarray(cache.masks(), dtype=np.uint8) * 255
    _write_array(path, soft)


def _stretched_images(cache: DatasetCache) -> np.ndarray:
    if not _has_originals(cache):
        return np.stack([stretch_and_resize(image, cache.size) for image in cache.images()])
    root = Path(cache.meta["root"])
    return np.stack([stretch_and_resize(read_image(root / image_file), cache.size)
                     for image_file, _ in cache.meta["files"]])


def _write_array(path: Path, array: np.ndarray) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.npy")
    try:
        np.save(partial, array)
        os.replace(partial, path)  # two processes writing it at once write the same bytes
    finally:
        partial.unlink(missing_ok=True)


# --- keys ---------------------------------------------------------------------------


def file_list_fingerprint(source: DataSource, *, skip_bad: bool = False) -> str:
    """sha256 of every pair's id, relative paths, byte sizes and modification times."""
    digest = hashlib.sha256()
    digest.update(f"skip_bad={skip_bad}\n".encode())
    for pair in source.pairs:
        fields = [pair.id, pair.part]
        for path in (pair.image, pair.mask):
            stat = path.stat()
            fields += [path.relative_to(source.root).as_posix(), str(stat.st_size), str(stat.st_mtime_ns)]
        digest.update(("\t".join(fields) + "\n").encode())
    for problem in source.problems:  # skipped pairs change what the cache holds
        digest.update(f"skipped\t{problem.id}\t{problem.path}\n".encode())
    return digest.hexdigest()


def cache_key(source: DataSource, size: int, *, skip_bad: bool = False) -> str:
    return f"{source.dataset}-{size}px-{RESIZE_TAG}-{file_list_fingerprint(source, skip_bad=skip_bad)[:16]}"


def synthetic_cache_key(spec: SyntheticSpec, size: int) -> str:
    return f"synthetic-{size}px-n{spec.count}-seed{spec.seed}-v{GENERATOR_VERSION}"


# --- building -------------------------------------------------------------------------


def default_progress(total: int, description: str) -> Callable[[Iterable], Iterable]:
    """A tqdm bar on stderr when it is a terminal, silence otherwise (logs, CI)."""

    def wrap(iterable: Iterable) -> Iterable:
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=description, unit="img", disable=not sys.stderr.isatty())

    return wrap


def _partial_folder(final: Path) -> Path:
    # Hidden and unmistakably unfinished; unique so two builders never share one.
    name = f".{final.name}.partial-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return final.parent / name


def _publish(partial: Path, final: Path, meta: dict) -> DatasetCache:
    """Write meta.json last, then rename the folder into place (atomic on one filesystem)."""
    meta_path = partial / META_FILE
    meta_path.write_text(json.dumps(meta, indent=1))
    try:
        os.rename(partial, final)
    except OSError:
        if not (final / META_FILE).is_file():
            raise
        # Another process finished the same cache first: its copy is identical.
        shutil.rmtree(partial, ignore_errors=True)
    return open_cache(final)


def _build(final: Path, fill: Callable[[Path], dict]) -> DatasetCache:
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = _partial_folder(final)
        partial.mkdir()
    except OSError as exc:
        raise DataError(f"{final.parent}: the dataset cache cannot be written ({exc.strerror or exc}); point "
                        "STUDY_CACHE (or --cache-dir) at a folder you can write") from None
    try:
        meta = fill(partial)
        return _publish(partial, final, meta)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _base_meta(dataset: str, size: int, ids: Sequence[str]) -> dict:
    return {
        "format": CACHE_FORMAT,
        "dataset": dataset,
        "title": dataset_info(dataset).title,
        "size": size,
        "count": len(ids),
        "ids": list(ids),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _resized(pair: SamplePair, size: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    decoded = read_pair(pair.image, pair.mask)
    image, mask = resize_pair(decoded, size)
    return image, mask, (decoded.width, decoded.height)


def build_cache(
    source: DataSource,
    size: int = DEFAULT_SIZE,
    *,
    cache_dir: str | os.PathLike | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> DatasetCache:
    """The cache of ``source`` at ``size``: reused when it exists, built otherwise.

    ``cache_dir`` overrides the cache root (see ``cache_root``). A bad pair aborts the build
    with a DataError naming the file and nothing is left behind, unless
    ``skip_bad``: then the bad pairs are left out and listed in the metadata.
    """
    if size < 8:
        raise DataError(f"cache size must be at least 8 pixels, got {size}")
    if source.problems and not skip_bad:
        source.require_clean()
    final = cache_root(cache_dir) / source.dataset / cache_key(source, size, skip_bad=skip_bad)
    if (final / META_FILE).is_file():
        return open_cache(final)

    def fill(partial: Path) -> dict:
        count = len(source.pairs)
        images = np.lib.format.open_memmap(partial / IMAGES_FILE, "w+", np.uint8, (count, size, size, 3))
        masks = np.lib.format.open_memmap(partial / MASKS_FILE, "w+", np.uint8, (count, size, size))
        kept: list[SamplePair] = []
        original_sizes: list[tuple[int, int]] = []
        skipped: list[BadPair] = list(source.problems)
        wrap = progress or default_progress(count, f"caching {source.dataset} at {size}px")
        results = map_pairs(source.pairs, lambda p: _resized(p, size), workers)
        try:
            for pair, result, bad in wrap(results):
                if bad is not None:
                    if not skip_bad:
                        raise DataError(bad.problem)
                    skipped.append(bad)
                    continue
                images[len(kept)], masks[len(kept)], original = result
                kept.append(pair)
                original_sizes.append(original)
        finally:
            results.close()  # stop the decoding threads before the partial folder is removed
        if not kept:
            raise DataError(f"{source.root}: no usable pairs: {problems_message(source.dataset, skipped)}")
        images.flush()
        masks.flush()
        del images, masks
        if len(kept) < count:  # drop the rows the skipped pairs left unused
            for name in (IMAGES_FILE, MASKS_FILE):
                full = np.load(partial / name, mmap_mode="r")
                np.save(partial / f"{name}.tmp.npy", full[: len(kept)])
                del full
                os.replace(partial / f"{name}.tmp.npy", partial / name)
        meta = _base_meta(source.dataset, size, [pair.id for pair in kept])
        meta.update(
            root=str(source.root),
            layout=source.layout,
            parts=[pair.part for pair in kept],
            files=[
                [pair.image.relative_to(source.root).as_posix(), pair.mask.relative_to(source.root).as_posix()]
                for pair in kept
            ],
            original_sizes=[list(wh) for wh in original_sizes],
            file_list_sha256=file_list_fingerprint(source, skip_bad=skip_bad),
            resize=RESIZE_METHOD,
            skipped=[{"id": b.id, "path": str(b.path), "kind": b.kind, "problem": b.problem} for b in skipped],
        )
        return meta

    return _build(final, fill)


def build_synthetic_cache(
    spec: SyntheticSpec = SyntheticSpec(), size: int = DEFAULT_SIZE, *, cache_dir: str | os.PathLike | None = None
) -> DatasetCache:
    """The synthetic dataset generated straight at ``size`` (no resizing), cached like a real one."""
    final = cache_root(cache_dir) / "synthetic" / synthetic_cache_key(spec, size)
    if (final / META_FILE).is_file():
        return open_cache(final)

    def fill(partial: Path) -> dict:
        images, masks = make_synthetic(spec.count, size, spec.seed)
        np.save(partial / IMAGES_FILE, images)
        np.save(partial / MASKS_FILE, masks)
        meta = _base_meta("synthetic", size, synthetic_ids(spec.count))
        meta.update(
            synthetic={"count": spec.count, "seed": spec.seed, "generator_version": GENERATOR_VERSION},
            resize={"image": "generated at size", "mask": "exact lesion shape at pixel centres"},
            skipped=[],
        )
        return meta

    return _build(final, fill)


def prepare_cache(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    size: int = DEFAULT_SIZE,
    synthetic: SyntheticSpec = SyntheticSpec(),
    include_test: bool = False,
    skip_bad: bool = False,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> DatasetCache:
    """One call from a dataset name to a finished cache; ``synthetic`` is used only for ``synthetic``."""
    if dataset_info(name).layout == "synthetic":
        return build_synthetic_cache(synthetic, size, cache_dir=cache_dir)
    source = get_dataset_source(name, root, include_test=include_test, skip_bad=skip_bad)
    return build_cache(source, size, cache_dir=cache_dir, skip_bad=skip_bad, workers=workers, progress=progress)
