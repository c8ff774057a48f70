"""`python -m study status`: what the store holds for each table."""

from __future__ import annotations


def states() -> tuple[str, ...]:
    """Every state status prints, in order (imported late: ``--help`` stays free of torch)."""
    from study.store.record import MISSING, QUEUED, Status

    return (Status.COMPLETED.value, Status.FAILED.value, Status.DAMAGED.value, Status.RUNNING.value, QUEUED,
            Status.INTERRUPTED.value, MISSING)


def register(sub) -> None:
    p = sub.add_parser("status", help="per row and dataset: completed, failed (with reason), running, missing")
    p.add_argument("tables", nargs="*", metavar="TABLE",
                   help="tables to show row by row (default: a one-line summary of each table and profile with runs)")
    p.add_argument("--all", action="store_true", help="every table and profile row by row, runs or not")
    p.add_argument("--seeds", type=int, default=3, help="how many seeds are expected (default 3)")
    p.add_argument("--profile", default=None, help="paper, smoke or release (default: each, where it has runs)")
    p.add_argument("--results", default=None, help="results store root")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="the overrides the runs were made with (they are part of each run's config)")
    p.add_argument("--export", default=None, metavar="FILE",
                   help="also write the index of all runs (.csv or .parquet)")
    p.set_defaults(func=run)


def run(args) -> int:
    from study.config import parse_overrides
    from study.errors import ConfigError
    from study.store.index import export_index, snapshot
    from study.store.runs import RESULTS_DIR, Store
    from study.store.status import table_status
    from study.variants import load_tables

    all_states = states()
    store = Store(args.results or RESULTS_DIR)
    reading = snapshot(store)  # every record read and verified once, for all tables and profiles
    tables = load_tables()
    for name in args.tables:
        if name not in tables:
            raise ConfigError(f"unknown table {name!r}; tables: {', '.join(tables)}")
    profiles = [args.profile] if args.profile else ["paper", "smoke"]
    queued = {}
    if (store.root / "slurm" / "jobs").is_dir():  # something was submitted to SLURM from this store
        from study.launch.slurm import queued_runs

        queued = queued_runs(store)
    seeds = list(range(args.seeds))
    overrides = parse_overrides(args.overrides)
    print(f"store {store.root}")
    if not args.tables and not args.all:
        return _summary(tables, reading, seeds, profiles, overrides, queued, args, reading_export=args.export)
    for table in tables.values():
        if args.tables and table.id not in args.tables:
            continue
        blocks = [(profile, table_status(table, reading, seeds, profile, overrides, queued)) for profile in profiles]
        with_runs = [(p, cells) for p, cells in blocks
                     if any(c.counts.get(s) or c.other_seeds for c in cells for s in all_states[:-1])]
        # A profile with no runs at all is shown only when asked for, or when no profile has any
        # (then the paper's, to say what is missing).
        for profile, cells in (blocks if args.profile else with_runs or blocks[:1]):
            total = {s: sum(c.counts.get(s, 0) for c in cells) for s in all_states}
            summary = ", ".join(f"{total[s]} {s}" for s in all_states if total[s])
            print(f"\n{table.id} ({profile} profile, seeds 0-{args.seeds - 1}): {summary or 'no rows runnable'}")
            for c in cells:
                counts = "  ".join(f"{s} {c.counts[s]}" for s in all_states if c.counts.get(s))
                jobs = f"  jobs {','.join(c.job_ids)}" if c.job_ids else ""
                other = (f"  (+{len(c.other_seeds)} run(s) at seed(s) {','.join(map(str, c.other_seeds))}, not "
                         "counted)") if c.other_seeds else ""
                print(f"  {c.row_id:22s} {c.dataset:10s} {counts}{jobs}{other}")
                for f in c.failures:
                    print(f"      {f}")
    _mixed_kernels(reading)
    if args.export:
        path = export_index(reading, args.export)
        print(f"\nindex of all runs written to {path}")
    return 0


def _mixed_kernels(reading) -> None:
    from study.store.status import mixed_kernel_notes, mixed_numerics_notes

    records = list(reading.records())
    for note in mixed_kernel_notes(records):
        print(f"mixed kernels: {note}")
    for note in mixed_numerics_notes(records):
        print(f"mixed numerics: {note}")


def _summary(tables, reading, seeds, profiles, overrides, queued, args, reading_export=None) -> int:
    """One line per table and profile that has runs; the others named once, with how to see them."""
    from study.store.index import export_index
    from study.store.record import MISSING
    from study.store.status import table_status

    all_states = states()
    empty = []
    shown = 0
    for table in tables.values():
        for profile in profiles:
            cells = table_status(table, reading, seeds, profile, overrides, queued)
            total = {s: sum(c.counts.get(s, 0) for c in cells) for s in all_states}
            if not any(total[s] for s in all_states if s != MISSING):
                empty.append((profile, table.id))
                continue
            shown += 1
            line = ", ".join(f"{total[s]} {s}" for s in all_states if total[s])
            print(f"  {table.id:8s} {profile:6s} {line}")
    if not shown:
        print("  no runs yet: `python -m study run table3 --seeds 3 --profile smoke` trains one table")
    for profile in profiles:
        names = [t for p, t in empty if p == profile]
        if names:
            print(f"no runs under profile {profile}: {', '.join(names)}")
    _mixed_kernels(reading)
    print(f"row by row: `python -m study status TABLE [--profile NAME] [--seeds {len(seeds)}]`, or --all")
    if reading_export:
        print(f"index of all runs written to {export_index(reading, reading_export)}")
    return 0
