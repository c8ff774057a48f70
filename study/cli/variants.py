"""`python -m study list` and `python -m study show`: the variant registry."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("list", help="tables and their rows, and which are runnable")
    p.add_argument("tables", nargs="*", metavar="TABLE", help="only these tables")
    p.set_defaults(func=run_list)
    s = sub.add_parser("show", help="the resolved config of a table's rows or of one row, and its hash")
    s.add_argument("name", metavar="TABLE|ROW")
    s.add_argument("--dataset", default=None)
    s.add_argument("--profile", default="paper")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    s.set_defaults(func=run_show)


def run_list(args) -> int:
    from study.errors import ConfigError
    from study.variants import load_tables

    tables = load_tables()
    for name in args.tables:
        if name not in tables:
            raise ConfigError(f"unknown table {name!r}; tables: {', '.join(tables)}")
    for table in tables.values():
        if args.tables and table.id not in args.tables:
            continue
        runnable = sum(1 for r in table.rows if not r.unavailable)
        datasets = ", ".join(table.datasets) + (f" (+ external {', '.join(table.external)})" if table.external else "")
        print(f"{table.id}: {table.title} — {runnable}/{len(table.rows)} rows runnable; {datasets}")
        for r in table.rows:
            mark = "*" if r.id == table.reference else " "
            state = "runnable" if not r.unavailable else f"unavailable: {r.unavailable}"
            print(f"  {mark} {r.id:22s} {r.name:40s} {state}")
    print("(* the paper's chosen row)")
    return 0


def run_show(args) -> int:
    from study.config import parse_overrides
    from study.variants import select_rows

    rows = select_rows([args.name])
    overrides = parse_overrides(args.overrides)
    for row in rows:
        print(f"# {row.id}: {row.name} ({row.source.name})")
        if row.unavailable:
            print(f"unavailable: {row.unavailable}\n")
            continue
        for dataset in ([args.dataset] if args.dataset else row.default_datasets(args.profile)):
            config = row.run_config(dataset, args.profile, overrides)
            print(f"dataset {dataset}, profile {args.profile}: config hash {config.hash}")
            if config.distill.enabled:
                teacher = config.teacher_config()
                rows_of = _rows_with(teacher.hash, dataset, args.profile, overrides)
                print(f"distillation student: its teacher is config {teacher.hash} (the full model "
                      f"{teacher.arch}{_model_changes(teacher)}, same dataset and seed"
                      + (f"; the runs of {', '.join(rows_of)}" if rows_of else "") + "), trained before it")
            print(json.dumps(config.to_dict(), indent=2, sort_keys=True))
        print()
    return 0


def _model_changes(config) -> str:
    """The teacher's model options that differ from the default model, if any."""
    from dataclasses import asdict

    default = type(config.model)()
    changed = {k: v for k, v in asdict(config.model).items() if asdict(default).get(k) != v}
    return "" if not changed else " with " + ", ".join(f"{k}={v}" for k, v in sorted(changed.items()))


def _rows_with(config_hash: str, dataset: str, profile: str, overrides: dict) -> list[str]:
    """Rows whose config on ``dataset`` is ``config_hash`` (they share its runs)."""
    from study.errors import ConfigError
    from study.variants import load_tables

    found = []
    for table in load_tables().values():
        for row in table.rows:
            try:
                if not row.unavailable and row.run_config(dataset, profile, overrides).hash == config_hash:
                    found.append(row.id)
            except ConfigError:
                continue
    return found
