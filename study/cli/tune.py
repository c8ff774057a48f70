"""`python -m study tune`: the Optuna search over the distillation weights."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("tune", help="Optuna search over the distillation weights")
    tsub = p.add_subparsers(dest="tune_command", metavar="SUBCOMMAND")
    d = tsub.add_parser("distill", help="search lambda_s, lambda_a, lambda_g and tau_a (continues an existing study)")
    d.add_argument("--dataset", default="isic2017")
    d.add_argument("--trials", type=int, required=True, help="total trials of the study")
    d.add_argument("--workers", type=int, default=1, help="parallel workers sharing the storage")
    d.add_argument("--launcher", default="local", help="local (processes) or slurm (array tasks)")
    d.add_argument("--cluster", default=None, help="slurm: cluster profile in slurm/")
    d.add_argument("--tune-hard", action="store_true", help="also search lambda_h (default: fixed at 1)")
    d.add_argument("--seed", type=int, default=0, help="run seed of every trial (paired comparisons)")
    _common(d)
    from study.cli.train import add_run_options

    add_run_options(d)
    d.set_defaults(func=run_distill)
    s = tsub.add_parser("show", help="best trials, parameter importances; --export NAME writes a variants row")
    _common(s)
    s.add_argument("--results", default=None, help="results store root")
    s.add_argument("--export", default=None, metavar="NAME", help="row id for the best weights")
    s.add_argument("--variants-file", default=None,
                   help="table file of your own study to append the row to (default: tables/tuned.toml of the "
                        "--study folder); never a file of the paper's")
    s.set_defaults(func=run_show)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def _common(p) -> None:
    p.add_argument("--study-name", default="distill", help="study name (default: distill)")
    p.add_argument("--storage", default=None,
                   help="journal file path or RDB URL (default: <results>/tune/<study-name>.journal)")


def _spec(args, store):
    from study.canonical import check_study_name
    from study.cli.train import parse_roots
    from study.config import parse_overrides
    from study.search.space import TuneSpec
    from study.search.storage import default_storage

    check_study_name(args.study_name)  # a file name under the store, and job names: checked even with --storage
    if args.seed < 0:
        from study.errors import ConfigError

        raise ConfigError(f"--seed {args.seed}: expected a non-negative integer")
    return TuneSpec(
        dataset=args.dataset, n_trials=args.trials,
        storage=args.storage or default_storage(store, args.study_name), study_name=args.study_name,
        store_root=str(store.root), profile=args.profile, overrides=parse_overrides(args.overrides),
        seed=args.seed, tune_hard=args.tune_hard, roots=parse_roots(args.roots),
    )


def run_distill(args) -> int:
    from study.errors import ConfigError
    from study.launch.cpus import configure_process, local_share
    from study.search.results import summary
    from study.search.storage import load_study, prepare_study
    from study.search.workers import ensure_teacher, run_local
    from study.store.atomic import require_writable
    from study.store.runs import RESULTS_DIR, Store

    if args.trials < 1 or args.workers < 1:
        raise ConfigError("--trials and --workers must be at least 1")
    if args.launcher not in ("local", "slurm"):
        raise ConfigError(f"--launcher: unknown {args.launcher!r}; allowed: local, slurm")
    store = Store(args.results or RESULTS_DIR)
    require_writable(store.root, "the results store")
    spec = _spec(args, store)
    # Threads decided once: the local workers' share (and the teacher's, trained here first if missing).
    share = local_share([], jobs=args.workers if args.launcher == "local" else 1, threads=args.threads)
    print(f"search: {args.trials} trial(s), {args.workers} worker(s), dataset {args.dataset}, "
          f"profile {args.profile}; storage {spec.storage}")
    prepare_study(spec)
    # The teacher, if missing, trains here alone first: every CPU of the allocation, unless threads were given.
    configure_process(share.threads if share.chosen != "the allocation" else share.threads * share.jobs)
    ensure_teacher(spec)
    if args.launcher == "slurm":
        from study.search.slurm import submit_tune_workers

        jobs = submit_tune_workers(spec, args.workers, args.cluster, threads=args.threads)
        print(f"submitted {len(jobs)} worker task(s): {', '.join(jobs)}; `python -m study tune show` follows them")
        return 0
    print(f"local: {share.describe()}")
    run_local(spec, share)
    print(summary(load_study(spec, create=False)))
    return 0


def export_target(variants_file: str | None, paper_variants):
    """Where `--export` writes: a table file of the lab's own study, never the paper's files or the package."""
    from pathlib import Path

    from study.errors import ConfigError
    from study.settings import current

    own = current().own_study
    if variants_file is None:
        if own is None:
            raise ConfigError("tune show --export writes the row into your own study folder: pass --study DIR "
                              "(make one with `python -m study init DIR`) or --variants-file FILE in it; the "
                              "paper's variant files are never written")
        return own / "tables" / "tuned.toml"
    target = Path(variants_file).expanduser().resolve()
    own_tables = (own / "tables").resolve() if own is not None else None
    if own_tables is None or target.parent != own_tables:
        raise ConfigError(f"--variants-file {variants_file}: expected a .toml file in the tables/ folder of the "
                          f"--study folder ({own_tables or 'none given'}); the paper's variant files "
                          f"({Path(paper_variants).resolve()}) are never written")
    if target.suffix != ".toml":
        raise ConfigError(f"--variants-file {variants_file}: expected a .toml file")
    return target


def run_show(args) -> int:

    from study.canonical import check_study_name
    from study.search.results import export_best, same_config_rows, summary
    from study.search.space import TuneSpec
    from study.search.storage import default_storage, load_study
    from study.store.runs import RESULTS_DIR, Store
    from study.variants import VARIANTS_DIR

    store = Store(args.results or RESULTS_DIR)
    check_study_name(args.study_name)
    storage = args.storage or default_storage(store, args.study_name)
    spec = TuneSpec(dataset="", n_trials=0, storage=storage, study_name=args.study_name, store_root=str(store.root))
    study = load_study(spec, create=False, read_only=not args.export)
    print(summary(study))
    print(f"storage: {storage} (opens in optuna-dashboard"
          + (")" if "://" in storage else f": `optuna-dashboard {storage}`)"))
    if args.export:
        path = export_best(study, args.export, export_target(args.variants_file, VARIANTS_DIR))
        profile = (study.user_attrs.get("spec") or {}).get("profile", "paper")
        dataset = (study.user_attrs.get("spec") or {}).get("dataset", "isic2017")
        print(f"exported the best weights as row {args.export!r} in {path}; train it with "
              f"`python -m study run {args.export} --seeds 3 --profile {profile}"
              + (f" --datasets {dataset}`" if profile == "paper" else "`"))
        twins = same_config_rows(args.export, profile)
        if twins:
            print(f"note: the best weights are those of {', '.join(twins)} (same config): "
                  "the new row shares their runs")
    return 0
