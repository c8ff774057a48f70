"""`python -m study verify`: which runs of the store are damaged, and what else lies in it."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("verify", help="check every run's files against its record; list damaged runs",
                       description="Hash every file each completed record vouches for (model.pt, the per-image "
                       "CSVs), check the per-image counts against the pooled ones, and parse every record. "
                       "Exits 1 when something is damaged or does not belong in runs/.")
    p.add_argument("--results", default=None, help="results store root (default: $STUDY_RESULTS or ./results)")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from study.store import RESULTS_DIR, Store
    from study.verify import verify_store

    store = Store(args.results or RESULTS_DIR)
    tty = sys.stderr.isatty()

    def progress(i, n):
        if tty:
            print(f"\rverified {i}/{n} runs", end="" if i < n else "\n", file=sys.stderr, flush=True)

    check = verify_store(store, progress)
    print(f"store {store.root}")
    for run_id, why in check.damaged:
        print(f"damaged {run_id}: {why}")
    for path in check.strays:
        print(f"stray {path.name}: not a run folder of this harness (left alone)")
    for path in check.set_aside:
        print(f"set aside: {path.name} (a damaged run's files, kept for you to look at)")
    total = sum(check.counts.values())
    summary = ", ".join(f"{n} {s}" for s, n in sorted(check.counts.items()))
    print(f"{total} run(s): {summary or 'none'}; {len(check.strays)} stray, {len(check.set_aside)} set aside")
    if check.damaged:
        print("damaged runs are left out of every table and trained again by `study run` "
              "(their files are moved aside first, never deleted)")
    return 0 if check.ok else 1
