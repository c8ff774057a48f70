"""`python -m study init DIR`: a lab's own study folder to edit (tables, cluster profiles, results)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("init", help="write a study folder of your own: a table to edit, a cluster profile, results/",
                       description="Writes DIR/tables/my-ablation.toml (a commented table of two rows on the "
                       "paper's protocol), DIR/profiles/my-cluster.toml, DIR/README.md and DIR/results/. Use it with "
                       "`python -m study --study DIR COMMAND`: its tables and profiles join the paper's, its "
                       "results/ is the store. Never overwrites a file.")
    p.add_argument("folder", metavar="DIR", help="the new study folder (created where missing)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from study.own_study import init_study
    from study.variants import load_tables

    written = init_study(args.folder)
    for path in written:
        print(f"  wrote {path}")
    load_tables.cache_clear()
    tables = load_tables(own=args.folder)  # the new folder must load with the paper's tables
    own = [t for t in tables.values() if t.source.parent.parent.resolve() == Path(args.folder).resolve()]
    print(f"study folder {args.folder}: {len(own)} table(s) of your own ({', '.join(t.id for t in own)}) beside the "
          f"paper's {len(tables) - len(own)}; next: python -m study --study {args.folder} list")
    return 0
