"""`python -m study train`: one run of a variant on a dataset with a seed."""

from __future__ import annotations

import sys


def add_run_options(p) -> None:
    """Options shared by `train` and `run`: profile, overrides, store, data roots."""
    p.add_argument("--profile", default="paper",
                   help="a profile of variants/base.toml: paper (the paper's protocol, default), smoke "
                        "(synthetic, CPU) or release (the authors' release's behaviour)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--results", default=None, help="results store root (default: $STUDY_RESULTS or ./results)")
    p.add_argument("--root", dest="roots", action="append", default=[], metavar="DATASET=PATH",
                   help="where a dataset lives, e.g. --root isic2017=/data/ISIC2017 (repeatable; `train "
                        "--dataset NAME` also takes a bare PATH)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per run (default: $STUDY_THREADS, else the allocation's CPUs shared by the "
                        "runs at once; on SLURM: the task's CPUs shared by its runs, and --threads N asks each "
                        "task for N x runs_per_task CPUs)")


def parse_roots(items: list[str], dataset: str | None = None) -> dict[str, str]:
    """``--root DATASET=PATH`` (repeatable); a bare ``--root PATH`` where the command names its one
    ``dataset`` already. The one syntax of every command that takes ``--root``."""
    from study.datasets import DATASETS
    from study.errors import ConfigError

    roots = {}
    for item in items:
        name, sep, path = item.partition("=")
        if sep and name.strip() in DATASETS:
            name = name.strip()
            if dataset is not None and name != dataset:
                raise ConfigError(f"--root {item!r}: names {name}, but this command is about {dataset}")
        elif dataset is not None:
            name, path = dataset, item  # a bare path (which may itself hold '=')
        else:
            raise ConfigError(f"--root {item[:200]!r}: expected DATASET=PATH, e.g. --root isic2017=/data/ISIC2017 "
                              f"(datasets: {', '.join(d for d in DATASETS if d != 'synthetic')})")
        from study.data.roots import checked_path

        roots[name] = checked_path(path, f"--root {name}")
    return roots


def register(sub) -> None:
    p = sub.add_parser("train", help="train and evaluate one run (variant x dataset x seed)",
                       description="Train one run, checkpointing every epoch; a run whose folder holds a "
                       "checkpoint resumes from it, a completed run is not redone.")
    p.add_argument("--variant", required=True, help="row id, e.g. ultralbm, t3-single-direction")
    p.add_argument("--dataset", default=None,
                   help="a declared dataset: isic2017, isic2018, ph2, synthetic or one of your study's "
                        "(default: the profile's / table's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-teacher", action="store_true", help="for a distillation row: train the missing teacher first")
    p.add_argument("--restart-unreadable", action="store_true",
                   help="set an unreadable checkpoint aside and train the run from scratch")
    p.add_argument("--track", choices=("none", "tensorboard"), default="none",
                   help="tensorboard: event files in each run's folder (needs the 'track' extra); default none")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from study.config import parse_overrides
    from study.errors import ConfigError, StudyError
    from study.store.atomic import require_writable
    from study.store.record import RunKey
    from study.store.runs import RESULTS_DIR, Store
    from study.train.run import check_data_roots, train_run
    from study.variants import find_row

    if args.seed < 0:
        raise ConfigError(f"--seed {args.seed}: expected a non-negative integer")
    from study.launch.cpus import configure_process, local_share

    configure_process(local_share([], jobs=1, threads=args.threads).threads)
    row = find_row(args.variant)
    config = row.run_config(args.dataset, args.profile, parse_overrides(args.overrides))
    roots = parse_roots(args.roots, config.data.dataset if args.dataset else None)
    check_data_roots(config, roots)  # before anything is written or printed as started
    store = Store(args.results or RESULTS_DIR)
    require_writable(store.root, "the results store")
    key = RunKey(config.hash, args.seed)
    print(f"run {key.id}: {row.id} on {config.data.dataset}, seed {args.seed}, profile {args.profile}")
    print(f"folder {store.run_dir(key)}")
    before = store.load(key)
    if before is not None and before.completed:
        print("already completed in the store: nothing trained (delete the folder to train it again)")
    try:
        record = train_run(config, args.seed, store, rows=(row.id,), roots=roots,
                           train_teacher=args.train_teacher, log=print,
                           restart_unreadable=args.restart_unreadable, track=args.track)
    except StudyError:
        raise  # one line from the CLI: what went wrong and where
    except Exception as exc:  # recorded in the run's record (with its traceback): one line here
        print(f"failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"the record, with the traceback: {store.record_path(key)}", file=sys.stderr)
        return 1
    if not record.completed:
        print(f"{record.status}: {record.reason}")
        return 1
    t = record.test
    print(f"completed: test IoU {t['iou'] * 100:.2f}  DSC {t['dsc'] * 100:.2f}  "
          f"(selected epoch {record.details['selection']['epoch']}, {record.details['selection']['mode']} selection)")
    for name, m in record.external.items():
        print(f"  external {name}: IoU {m['iou'] * 100:.2f}  DSC {m['dsc'] * 100:.2f}")
    print(f"params {record.params:,}  GMACs {record.gmacs_thop:.4f}  wall {record.wall_time_s:.1f} s")
    return 0

