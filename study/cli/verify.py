"""`python -m study verify`: which runs of the store are damaged, and what else lies in it."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("verify", help="check every run's files against its record; list damaged runs",
                       description="Hash every file each completed record vouches for (model.pt, the per-image "
                       "CSVs), check the per-image counts against the pooled ones, and parse every record. "
                       "Exits 1 when something is damaged or does not belong in runs/.")
    p.add_argument("--results", default=None, help="results store root (default: $STUDY_RESULTS or ./results)")
    p.add_argument("--manifest", metavar="OUT", default=None,
                   help="also write every completed run's identity and file digests, and one root digest, to OUT")
    p.add_argument("--against", metavar="FILE", default=None,
                   help="name every run added, removed or changed since the manifest FILE (exit 1 if any)")
    p.set_defaults(func=run)


def record_check():
    """What a record must agree with beyond its files: its config hashes to its run id, and the Params and
    MACs it records are its model's (counted once per model, cached with the report's counts)."""
    import math

    from study.config import RunConfig
    from study.errors import StudyError
    from study.report.counting import counted_config

    def check(record) -> str | None:
        try:
            config = RunConfig.from_dict(record.config)
        except (StudyError, TypeError, ValueError) as exc:
            return f"field 'config': does not resolve with this code ({exc})"
        if config.hash != record.config_hash:
            return f"field 'config': hashes to {config.hash}, not to its run id's {record.config_hash}"
        if not record.completed or (record.params is None and record.gmacs_thop is None):
            return None
        params, gmacs = counted_config(config)
        if record.params is not None and record.params != params:
            return f"field 'params': {record.params}, but its model counts {params}"
        if record.gmacs_thop is not None and not math.isclose(record.gmacs_thop, gmacs, rel_tol=1e-9):
            return f"field 'gmacs_thop': {record.gmacs_thop!r}, but its model counts {gmacs!r}"
        return None

    return check


def run(args) -> int:
    import sys

    from study.store.runs import RESULTS_DIR, Store
    from study.store.verify import verify_store

    store = Store(args.results or RESULTS_DIR)
    tty = sys.stderr.isatty()

    def progress(i, n):
        if tty:
            print(f"\rverified {i}/{n} runs", end="" if i < n else "\n", file=sys.stderr, flush=True)

    check = verify_store(store, progress, record_check())
    print(f"store {store.root}")
    for run_id, why in check.damaged:
        print(f"damaged {run_id}: {why}")
    for path in check.strays:
        print(f"stray {path.name}: not a run folder of this harness (left alone)")
    for path in check.set_aside:
        print(f"set aside: {path.name} (a damaged run's files, kept for you to look at)")
    from study.store.status import mixed_numerics_notes

    mixed = mixed_numerics_notes(store.records())
    for note in mixed:
        print(f"mixed numerics: {note}")
    total = sum(check.counts.values())
    summary = ", ".join(f"{n} {s}" for s, n in sorted(check.counts.items()))
    print(f"{total} run(s): {summary or 'none'}; {len(check.strays)} stray, {len(check.set_aside)} set aside")
    if check.damaged:
        print("damaged runs are left out of every table and trained again by `study run` "
              "(their files are moved aside first, never deleted)")
    same = True
    if args.manifest and not check.ok:
        print(f"manifest not written: {len(check.damaged)} damaged and {len(check.strays)} stray entries would "
              "be left out of it silently; repair or remove them first")
    elif args.manifest:
        from study.store.manifest import write_manifest

        manifest = write_manifest(store, args.manifest)
        print(f"manifest {args.manifest}: {len(manifest['runs'])} completed run(s), root sha256 "
              f"{manifest['root_sha256']}")
    if args.against:
        from study.store.manifest import compare_manifest, read_manifest

        diff = compare_manifest(store, read_manifest(args.against))
        for run_id in diff.added:
            print(f"added   {run_id}")
        for run_id in diff.removed:
            print(f"removed {run_id}")
        for run_id, what in diff.changed.items():
            print(f"changed {run_id}: {what}")
        same = diff.same
        print(f"against {args.against}: " + ("the same completed runs, byte for byte" if same else
              f"{len(diff.added)} added, {len(diff.removed)} removed, {len(diff.changed)} changed"))
    return 0 if check.ok and same else 1
