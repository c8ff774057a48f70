"""Validating a dataset root: decode every pair and summarise what was found.

This is what ``python -m study data check`` prints. It reads every file in
full, so a truncated JPEG or a grey-level mask is found here rather than
half-way through a cache build.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from study.data.imageio import DecodedPair, MaskNotBinary, SizeMismatch, read_pair
from study.data.layouts import BadPair, DataSource, SamplePair, problems_message
from study.errors import DataError

T = TypeVar("T")


def default_workers() -> int:
    # Pillow releases the GIL while decoding and resizing, so threads help;
    # beyond 8 the disk, not the CPU, is the limit.
    return max(1, min(8, os.cpu_count() or 1))


def bad_pair_from_error(pair: SamplePair, exc: DataError) -> BadPair:
    if isinstance(exc, MaskNotBinary):
        kind, path = "non-binary", pair.mask
    elif isinstance(exc, SizeMismatch):
        kind, path = "size-mismatch", pair.mask
    else:
        kind = "unreadable"
        path = pair.mask if str(pair.mask) in str(exc) else pair.image
    return BadPair(pair.id, path, str(exc), kind)


def map_pairs(
    pairs: Iterable[SamplePair],
    work: Callable[[SamplePair], T],
    workers: int | None = None,
) -> Iterator[tuple[SamplePair, T | None, BadPair | None]]:
    """``work`` on every pair, in order, on a thread pool; a DataError becomes a BadPair.

    Stopping the iteration early cancels the pairs not yet started.
    """

    def guarded(pair: SamplePair):
        try:
            return pair, work(pair), None
        except DataError as exc:
            return pair, None, bad_pair_from_error(pair, exc)

    pool = ThreadPoolExecutor(max_workers=workers or default_workers())
    try:
        yield from pool.map(guarded, pairs)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class PairStats:
    width: int
    height: int
    foreground_fraction: float


def _stats(pair: SamplePair) -> PairStats:
    decoded: DecodedPair = read_pair(pair.image, pair.mask)
    return PairStats(decoded.width, decoded.height, decoded.foreground_fraction)


@dataclass(frozen=True)
class CheckReport:
    dataset: str
    root: Path
    root_origin: str
    layout: str
    pairs_listed: int
    pairs_good: int
    good_ids: tuple[str, ...]  # sorted: the pairs that decoded and validated
    part_counts: dict[str, int]
    width_range: tuple[int, int] | None
    height_range: tuple[int, int] | None
    foreground: tuple[float, float, float] | None  # min, mean, max of the lesion fraction per mask
    problems: tuple[BadPair, ...]
    skip_bad: bool

    @property
    def non_binary_masks(self) -> int:
        return sum(1 for p in self.problems if p.kind == "non-binary")

    @property
    def ok(self) -> bool:
        return self.pairs_good > 0 and (self.skip_bad or not self.problems)

    def raise_if_bad(self) -> None:
        if self.pairs_good == 0:
            detail = f": {problems_message(self.dataset, self.problems)}" if self.problems else ""
            raise DataError(f"{self.root}: no usable image/mask pairs{detail}")
        if self.problems and not self.skip_bad:
            raise DataError(problems_message(self.dataset, self.problems))

    def format(self) -> str:
        parts = ", ".join(f"{name} {count}" for name, count in self.part_counts.items())
        lines = [
            f"dataset:      {self.dataset}",
            f"root:         {self.root} (from {self.root_origin})",
            f"layout:       {self.layout}",
            f"pairs:        {self.pairs_good} ({parts})" if parts else f"pairs:        {self.pairs_good}",
        ]
        if self.width_range and self.height_range:
            lines.append(
                f"image size:   width {self.width_range[0]}-{self.width_range[1]} px, "
                f"height {self.height_range[0]}-{self.height_range[1]} px"
            )
        if self.foreground:
            low, mean, high = self.foreground
            lines.append(f"lesion area:  min {low:.1%}, mean {mean:.1%}, max {high:.1%} of the image")
        lines.append(f"non-binary:   {self.non_binary_masks} mask(s)")
        if not self.problems:
            lines.append("problems:     none")
        else:
            verdict = f"skipped {len(self.problems)} bad pair(s)" if self.skip_bad else f"{len(self.problems)} problem(s)"
            lines.append(f"problems:     {verdict}")
            lines.extend(f"  - [{p.kind}] {p.problem}" for p in self.problems)
        return "\n".join(lines)


def check_source(
    source: DataSource,
    *,
    skip_bad: bool = False,
    workers: int | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> CheckReport:
    """Decode every pair of ``source``; collect sizes, lesion fractions and all problems.

    Never raises for a bad pair: the report lists them, and ``raise_if_bad``
    turns them into one DataError unless ``skip_bad``.
    """
    problems = list(source.problems)
    stats: list[PairStats] = []
    good_ids: list[str] = []
    part_counts: dict[str, int] = {}
    results = map_pairs(source.pairs, _stats, workers)
    for pair, result, bad in progress(results) if progress else results:
        if bad is not None:
            problems.append(bad)
            continue
        stats.append(result)
        good_ids.append(pair.id)
        part_counts[pair.part] = part_counts.get(pair.part, 0) + 1
    widths = [s.width for s in stats]
    heights = [s.height for s in stats]
    fractions = [s.foreground_fraction for s in stats]
    return CheckReport(
        dataset=source.dataset,
        root=source.root,
        root_origin=source.root_origin,
        layout=source.layout,
        pairs_listed=len(source.pairs) + len(source.problems),
        pairs_good=len(stats),
        good_ids=tuple(good_ids),
        part_counts=part_counts,
        width_range=(min(widths), max(widths)) if stats else None,
        height_range=(min(heights), max(heights)) if stats else None,
        foreground=(min(fractions), sum(fractions) / len(fractions), max(fractions)) if stats else None,
        problems=tuple(problems),
        skip_bad=skip_bad,
    )
