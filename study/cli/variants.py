"""`python -m study list` and `python -m study show`: the variant registry."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("list", help="tables and their rows, and which are runnable")
    p.add_argument("tables", nargs="*", metavar="TABLE", help="only these tables")
    p.set_defaults(func=run_list)
    s = sub.add_parser("show", help="a row's config (what differs from the paper's model), its hash; --diff, --full",
                       description="Compact by default: each row's config hash and the fields where it differs "
                       "from the paper's model under the same profile. --full prints the whole resolved config "
                       "as JSON; --diff OTHER prints only the fields where two rows (or two stored runs) differ.")
    s.add_argument("name", metavar="TABLE|ROW|RUN_ID")
    s.add_argument("--dataset", default=None)
    s.add_argument("--profile", default="paper")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    s.add_argument("--full", action="store_true", help="the whole resolved config as JSON")
    s.add_argument("--diff", metavar="ROW|RUN_ID", default=None,
                   help="only the fields where NAME and this other row or stored run differ")
    s.add_argument("--results", default=None, help="results store (for run ids)")
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
    print("(* the row each table is compared with: in the paper's tables, the paper's chosen row)")
    return 0


def run_show(args) -> int:
    from dataclasses import asdict

    from study.config import DistillConfig, merge, parse_overrides
    from study.variants import find_row, select_rows

    overrides = parse_overrides(args.overrides)
    if args.diff:
        return _show_diff(args, overrides)
    from study.store.record import RunKey

    if RunKey.is_id(args.name):
        return _show_run(args)
    rows = select_rows([args.name])
    base = find_row("ultralbm")
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
            if args.full:
                print(json.dumps(config.to_dict(), indent=2, sort_keys=True))
                continue
            # against the paper's model with the same evaluation sets; a distill section against its defaults
            reference = base.run_config(dataset, args.profile, merge(
                overrides, {"data": {"external": list(config.data.external)}})).to_dict()
            if config.distill.enabled:
                reference["distill"] = json.loads(json.dumps(asdict(DistillConfig())))
            changes = {k: v for k, v in differences(reference, config.to_dict()).items()
                       if not (k.startswith("model.") and v[1] is None)}  # another arch's fields are not its own
            if not changes:
                print("  the paper's model and protocol under this profile (--full for every field)")
            for key, (_, value) in changes.items():
                print(f"  {key} = {json.dumps(value)}")
        print()
    return 0


def flatten(tree, prefix: str = "") -> dict:
    """{"model": {"arch": "x"}} -> {"model.arch": "x"} (a whole missing section is one None entry)."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) and value else
                   {f"{prefix}{key}": value})
    return out


def differences(a: dict, b: dict) -> dict:
    """field -> (value in a, value in b), for every field where the two configs differ."""
    fa, fb = flatten(a), flatten(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


def _config_of(name: str, args, overrides):
    """A row's resolved config, or a stored run's (by run id): (label, config dict)."""
    from study.errors import ConfigError
    from study.store.record import RunKey
    from study.store.runs import RESULTS_DIR, Store
    from study.variants import find_row

    if RunKey.is_id(name):
        store = Store(args.results or RESULTS_DIR)
        record = store.load(RunKey.from_id(name), verify=False)
        if record is None or record.config is None:
            raise ConfigError(f"run {name}: no readable record in {store.root}")
        return f"run {name}", record.config
    row = find_row(name)
    return f"{row.id}", row.run_config(args.dataset, args.profile, overrides).to_dict()


def _show_run(args) -> int:
    """A stored run: its rows, state, config (what differs from the paper's model), scores computed
    from the counts the record vouches for, time, code and where it trained."""
    from study.errors import ConfigError
    from study.store.record import RunKey
    from study.store.runs import RESULTS_DIR, Store
    from study.variants import find_row

    store = Store(args.results or RESULTS_DIR)
    record = store.load(RunKey.from_id(args.name))
    if record is None:
        raise ConfigError(f"run {args.name}: no record in {store.root} (is --results the store it trained in?)")
    print(f"# run {record.run_id}: {', '.join(record.rows) or 'no row'}; seed {record.key.seed}; "
          f"{record.status.value}" + (f" ({record.reason})" if record.reason else ""))
    config = record.config or {}
    data = config.get("data") or {}
    print(f"dataset {data.get('dataset')}, {data.get('size')}x{data.get('size')}, "
          f"{(config.get('train') or {}).get('epochs')} epochs; config hash {record.config_hash}")
    if config:
        reference = find_row("ultralbm").run_config(data.get("dataset"), "paper").to_dict()
        for key, (_, value) in differences(reference, config).items():
            if not (key.startswith("model.") and value is None):
                print(f"  {key} = {json.dumps(value)}")
    for split in record.pooled:
        scores = record.scores(split)
        print(f"{split}: DSC {scores['dsc'] * 100:.2f}, IoU {scores['iou'] * 100:.2f} "
              f"(from the pooled counts of {record.pooled[split].images} images)")
    details = record.details or {}
    wall = f"{record.wall_time_s:.1f} s" if record.wall_time_s is not None else "not finished"
    dirty = {True: ", uncommitted changes", False: ", clean", None: ""}.get(details.get("git_dirty"), "")
    print(f"wall time {wall}; commit {(details.get('git_commit') or 'unknown')[:12]}{dirty}")
    for i, attempt in enumerate(details.get("attempts") or [], 1):
        print(f"attempt {i}: {attempt.get('host', '?')}, {attempt.get('device', '?')}, "
              f"{attempt.get('threads', '?')} thread(s), scan {(attempt.get('kernels') or {}).get('scan', '?')}")
    print(f"files: {store.run_dir(record.key)}")
    return 0


def _show_diff(args, overrides) -> int:
    left, a = _config_of(args.name, args, overrides)
    right, b = _config_of(args.diff, args, overrides)
    changes = differences(a, b)
    print(f"{left} vs {right}: " + (f"{len(changes)} field(s) differ" if changes else "the same config"))
    for key, (x, y) in changes.items():
        print(f"  {key}: {json.dumps(x)} -> {json.dumps(y)}")
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
