"""``python -m study data {check,cache,split}``: validate a dataset root, build its cache, write its split."""

from __future__ import annotations

import argparse

DATASET_HELP = "isic2017, isic2018, ph2 or synthetic"


def _add_source_options(parser: argparse.ArgumentParser, *, size_default: int | None = 256) -> None:
    parser.add_argument("dataset", metavar="DATASET", help=DATASET_HELP)
    parser.add_argument("--root", metavar="[DATASET=]PATH",
                        help="dataset root, as DATASET=PATH or a bare PATH (else STUDY_DATA_<NAME>, else the "
                             "[data] config)")
    parser.add_argument(
        "--include-test", action="store_true", help="also read the ISIC Test folders (not in the paper's pool)"
    )
    parser.add_argument("--skip-bad", action="store_true", help="list bad pairs and leave them out instead of failing")
    parser.add_argument("--workers", type=int, metavar="N", help="decoding threads (default: CPU count, at most 8)")
    synthetic = parser.add_argument_group("synthetic dataset")
    synthetic.add_argument("--count", type=int, default=200, help="number of synthetic pairs (default 200)")
    synthetic.add_argument("--synthetic-seed", type=int, default=0, help="generator seed (default 0)")
    if size_default is not None:
        parser.add_argument(
            "--size", type=int, default=size_default, help=f"working size in pixels (default {size_default})"
        )


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="check, cache and split the datasets", description=__doc__)
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND")
    data.set_defaults(func=lambda args: data.print_help() or 0)

    check = commands.add_parser("check", help="validate a root: pair count, sizes, mask statistics, problems")
    _add_source_options(check, size_default=None)
    check.set_defaults(func=run_check)

    cache = commands.add_parser("cache", help="resize every pair once and store it under the cache root")
    _add_source_options(cache)
    cache.add_argument("--cache-dir", metavar="PATH", help="cache root (default $STUDY_CACHE or ~/.cache/ultralbm-study)")
    cache.set_defaults(func=run_cache)

    split = commands.add_parser("split", help="write (or reuse) the train/test manifest of image ids")
    _add_source_options(split, size_default=None)
    split.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    split.add_argument("--train-fraction", type=float, default=0.7, help="share of ids in train (default 0.7)")
    split.add_argument("--out", metavar="PATH", help="manifest path, .json or .csv (default: next to the cache)")
    split.add_argument("--from-folders", action="store_true",
                       help="the release's own partition: Training / Validation / Test folders (or a pre-split "
                       "root's train / val / test); Validation is the test part where Test is absent")
    split.add_argument("--cache-dir", metavar="PATH", help="cache root for the default manifest path")
    split.set_defaults(func=run_split)


def _progress(total: int, description: str):
    from study.data.cache import default_progress

    return default_progress(total, description)


def _root(args) -> str | None:
    """The --root of a data command: DATASET=PATH or a bare PATH (the dataset is named already)."""
    from study.cli.train import parse_roots

    return parse_roots([args.root], args.dataset).get(args.dataset) if args.root else None


def _source(args):
    from study.data.layouts import get_dataset_source

    return get_dataset_source(args.dataset, _root(args), include_test=args.include_test, skip_bad=args.skip_bad)


def run_check(args) -> int:
    from study.data.check import check_source
    from study.data.layouts import scan_dataset
    from study.datasets import dataset_info

    if not dataset_info(args.dataset).needs_root:
        return _check_synthetic(args)
    source = scan_dataset(args.dataset, _root(args), include_test=args.include_test)
    report = check_source(
        source,
        skip_bad=args.skip_bad,
        workers=args.workers,
        progress=_progress(len(source.pairs), f"checking {args.dataset}"),
    )
    print(report.format())
    report.raise_if_bad()
    return 0


def _check_synthetic(args) -> int:
    from study.data.synthetic import make_synthetic

    size = 128  # the statistics barely depend on the size, the time does
    _, masks = make_synthetic(args.count, size, args.synthetic_seed)
    fractions = masks.reshape(len(masks), -1).mean(axis=1)
    print(f"dataset:      synthetic (seed {args.synthetic_seed}, generated, no root)")
    print(f"pairs:        {len(masks)}")
    print(f"image size:   {size}x{size} px (any size can be generated)")
    print(f"lesion area:  min {fractions.min():.1%}, mean {fractions.mean():.1%}, max {fractions.max():.1%} of the image")
    print("problems:     none")
    return 0


def run_cache(args) -> int:
    from study.data.cache import build_cache, build_synthetic_cache
    from study.data.synthetic import SyntheticSpec
    from study.datasets import dataset_info

    if not dataset_info(args.dataset).needs_root:
        cache = build_synthetic_cache(
            SyntheticSpec(args.count, args.synthetic_seed), args.size, cache_dir=args.cache_dir
        )
    else:
        source = _source(args)
        cache = build_cache(
            source,
            args.size,
            cache_dir=args.cache_dir,
            skip_bad=args.skip_bad,
            workers=args.workers,
            progress=_progress(len(source.pairs), f"caching {args.dataset} at {args.size}px"),
        )
    skipped = cache.meta.get("skipped", [])
    print(f"cache:   {cache.directory}")
    print(f"pairs:   {len(cache)} at {cache.size}x{cache.size} px")
    if skipped:
        print(f"skipped: {len(skipped)} bad pair(s)")
        for bad in skipped:
            print(f"  - [{bad['kind']}] {bad['problem']}")
    return 0


def run_split(args) -> int:
    from study.data.split import default_manifest_path, ensure_split, ids_digest, write_manifest
    from study.data.synthetic import synthetic_ids
    from study.datasets import dataset_info
    from study.errors import DataError

    if not dataset_info(args.dataset).needs_root:
        if args.from_folders:
            raise DataError("--from-folders needs a release layout; the synthetic dataset has none")
        ids, source = synthetic_ids(args.count), None
    else:
        if args.from_folders:
            args.include_test = True  # the release's Test part belongs to its partition
        source = _source(args)
        ids = source.ids
        if args.skip_bad:  # a pair that does not decode is left out of the split, as out of the cache
            from study.data.check import check_source

            report = check_source(source, skip_bad=True, workers=args.workers,
                                  progress=_progress(len(source.pairs), f"checking {args.dataset}"))
            report.raise_if_bad()
            ids = report.good_ids
            if report.problems:
                print(f"skipped:  {len(report.problems)} bad pair(s)")
                for bad in report.problems:
                    print(f"  - [{bad.kind}] {bad.problem}")
    if args.from_folders:
        from study.data.split import split_from_release

        kept = set(ids)
        release = split_from_release(args.dataset, {p.id: p.part for p in source.pairs if p.id in kept})
        split = release.split
        print(f"release:  {len(split.train)} Training / {len(release.validation)} Validation / {len(split.test)} "
              f"test ({release.test_part})")
        path = args.out or default_manifest_path(args.dataset, ids, args.seed, args.cache_dir, label="folders")
        write_manifest(split, path)
        written = True
    else:
        split, path, written = ensure_split(
            args.dataset, ids, seed=args.seed, train_fraction=args.train_fraction, manifest=args.out,
            cache_dir=args.cache_dir,
        )
    print(f"manifest: {path} ({'written' if written else 'existing, reused'})")
    print(f"split:    {len(split.train)} train / {len(split.test)} test of {len(split.ids)} ids"
          + (f", seed {split.seed}" if split.seed is not None else ""))
    print(f"ids:      sha256 {ids_digest(split.ids)}")
    return 0
