"""`python -m study run`: tables or rows x datasets x seeds, through a launcher."""

from __future__ import annotations

from study.cli.train import add_run_options, parse_roots


def register(sub) -> None:
    p = sub.add_parser("run", help="run tables or rows over datasets and seeds (skips completed runs)",
                       description="Expand rows x datasets x seeds, skip runs completed in the store, rerun "
                       "failed or interrupted ones, and hand the rest to a launcher. Teachers run before students.")
    p.add_argument("names", nargs="+", metavar="TABLE|ROW", help="table ids (table3) or row ids (t3-ours)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3, as the paper)")
    p.add_argument("--seed-list", default=None, help="explicit seeds, e.g. 0,4,7 (overrides --seeds)")
    p.add_argument("--datasets", default=None, help="comma-separated datasets (default: the table's / profile's)")
    p.add_argument("--launcher", default="local", help="local (default) or slurm")
    p.add_argument("--jobs", type=int, default=None,
                   help="local: runs at once (default: one per free CPU for 64x64 smoke runs, else 1)")
    p.add_argument("--cluster", default=None, help="slurm: cluster profile name in slurm/")
    p.add_argument("--dry-run", action="store_true", help="print the plan and an estimate of its cost, run nothing")
    add_run_options(p)
    p.add_argument("--track", choices=("none", "tensorboard"), default="none",
                   help="tensorboard: event files in each run's folder (needs the 'track' extra); default none")
    p.add_argument("--retrain-mixed", action="store_true",
                   help="local: train again the completed runs of a config whose runs were not computed alike "
                        "(numerics fingerprints differ) and whose fingerprint is not this machine's, with the "
                        "threads this launch gives each run")

    p.set_defaults(func=run)


def seeds_from(args) -> list[int]:
    from study.errors import ConfigError

    if args.seed_list:
        try:
            seeds = [int(s) for s in args.seed_list.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seed-list {args.seed_list!r}: expected comma-separated integers") from None
        if not seeds or min(seeds) < 0:
            raise ConfigError(f"--seed-list {args.seed_list!r}: expected non-negative integers")
        return seeds
    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: expected at least 1")
    return list(range(args.seeds))


def check_data_roots(runs, roots: dict[str, str]) -> None:
    """Fail at once, before anything starts, if a real dataset is not configured."""
    from study.train.run import check_data_roots as check

    for run in runs:
        check(run.config, roots)


def plan_from_args(args, store):
    """The command's rows x datasets x seeds, checked against the store; prints what it found."""
    from study.config import parse_overrides
    from study.plan import plan_runs

    datasets = args.datasets.split(",") if args.datasets else None
    plan = plan_runs(args.names, seeds_from(args), store, datasets=datasets, profile=args.profile,
                     overrides=parse_overrides(args.overrides))
    for row in plan.unavailable:
        print(f"unavailable: {row.id} ({row.name}): {row.unavailable}")
    print(f"plan: {len(plan.all)} run(s): {len(plan.todo)} to run, {len(plan.done)} completed (skipped), "
          f"{len(plan.busy)} running or queued elsewhere; store {store.root}")
    for run_id, why in plan.damaged.items():
        print(f"  damaged {run_id}: {why}; its files are set aside and it is trained again")
    for run in plan.busy:
        if run.run_id in plan.holders:
            print(f"  held    {run.run_id} {run.label}: {plan.holders[run.run_id]}")
    for run, epoch in resumable(plan, store):
        print(f"  resume  {run.run_id} {run.label}: from its last checkpoint ({epoch} of "
              f"{run.config.train.epochs} epochs recorded done)")
    return plan


def resumable(plan, store) -> list:
    """(run, epochs it has done) for each run to train that will resume from a checkpoint."""
    out = []
    for run in plan.todo:
        if not store.checkpoint_path(run.key, "last").is_file():
            continue
        record = store.load(run.key, verify=False)
        if record is not None and not record.completed and record.epochs_done:
            out.append((run, record.epochs_done))
    return out


def human_duration(seconds: float, prefix: str = "") -> str:
    """"42 s", "3.5 min", "8.0 h", "20.1 days" (with ``prefix``: "8.0 CPU-hours")."""
    units = [(86400, "days"), (3600, "hours"), (60, "minutes")] if prefix else [(86400, "days"), (3600, "h"),
                                                                                 (60, "min")]
    for size, name in units:
        if seconds >= 2 * size or (size == 60 and seconds >= size):
            return f"{seconds / size:.1f} {prefix}{name}"
    return f"{seconds:.0f} {prefix}seconds" if prefix else f"{seconds:.0f} s"


def retrain_mixed(args, plan, store) -> None:
    """Move to ``plan.todo`` (their files set aside) the completed runs of mixed configs whose numerics
    fingerprint differs from what this machine computes with this launch's threads; students of a teacher
    trained again follow it."""
    import torch

    from study.errors import ConfigError
    from study.launch.cpus import local_share
    from study.store.status import mixed_numerics
    from study.train.fingerprint import numerics_fingerprint

    if args.launcher != "local":
        raise ConfigError("--retrain-mixed compares with this machine's numerics: use it with the local launcher")
    mixed = mixed_numerics(r for r in (store.load(spec.key) for spec in plan.done) if r is not None)
    if not mixed:
        print("retrain-mixed: the completed runs of every config were computed alike")
        return
    threads = local_share([spec.config.data.size for spec in plan.done], args.jobs, args.threads).threads
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        here: dict[str, str] = {}
        again: set = set()
        for spec in list(plan.done):
            runs = mixed.get(spec.key.config_hash)
            if runs is None:
                continue
            if spec.key.config_hash not in here:
                here[spec.key.config_hash] = numerics_fingerprint(spec.config, device)
            prints = runs.get(spec.run_id, [])
            if prints != [here[spec.key.config_hash]]:
                again.add(spec.key)
                print(f"  retrain {spec.run_id} {spec.label}: fingerprint {' -> '.join(prints) or 'none'}, this "
                      f"machine's {here[spec.key.config_hash]} ({threads} thread(s))")
        again |= {spec.key for spec in plan.done if spec.teacher in again}
    finally:
        torch.set_num_threads(before)
    for spec in list(plan.done):
        if spec.key in again:
            store.set_aside(spec.key)
            plan.done.remove(spec)
            plan.todo.append(spec)
    plan.todo.sort(key=lambda spec: spec.is_student)


def make_launcher(args, plan):
    """The launcher, with the CPU share decided once: what --dry-run prints is what the launch uses."""
    from study.errors import ConfigError
    from study.launch import get_launcher

    if args.launcher == "local":
        from study.launch.cpus import local_share

        share = local_share([r.config.data.size for r in plan.todo], args.jobs, args.threads)
        return get_launcher("local", share=share, track=args.track)
    if args.jobs is not None:
        raise ConfigError("--jobs is for the local launcher; on SLURM a task's runs at once are the cluster "
                          "profile's runs_per_task")
    return get_launcher(args.launcher, cluster=args.cluster, track=args.track, threads=args.threads)


def describe_share(launcher) -> str:
    share = getattr(launcher, "share", None)
    return f"local: {share.describe()}" if share is not None else f"SLURM: {launcher.profile.describe_share()}"


def print_estimate(plan, store, args, launcher) -> None:
    """Each run's estimated cost, and the plan's total in CPU-minutes or, on a GPU cluster, GPU-hours."""
    from study.cost import cost_rates, estimate_seconds, measured_wall_times

    share, gpus, per_task = getattr(launcher, "share", None), 0, 1
    if args.launcher == "slurm":
        profile = launcher.profile
        gpus, per_task = profile.gpus_per_task, profile.runs_per_task
    device = "cuda" if gpus else "cpu"
    records = list(store.records())  # read and verified once, for both kinds of figure
    measured, rates = measured_wall_times(records), cost_rates(store, records)
    total = 0.0
    for r in plan.todo:
        seconds, how = estimate_seconds(r, measured, rates, device)
        total += seconds
        print(f"  run   {r.run_id}  {r.label}  ~{human_duration(seconds)} ({how})")
    for r in plan.busy:
        print(f"  busy  {r.run_id}  {r.label}")
    for r in plan.done:
        print(f"  skip  {r.run_id}  {r.label}  (completed)")
    if gpus:
        hours = total / per_task * gpus / 3600
        print(f"estimated cost: {hours:.1f} GPU-hours on cluster profile {profile.name} ({gpus} GPU(s) per task, "
              f"{per_task} run(s) per task sharing them, assumed not to slow each other)")
        if not any(k[2] == "cuda" for k in rates):
            print("  no GPU epochs recorded in this store and no `study bench --device cuda --record` figure: "
                  "the per-run figures above are CPU estimates, so this overstates a GPU's cost")
        return
    jobs = share.jobs if share else 1
    print(f"estimated cost: {human_duration(total, 'CPU-')} of training"
          + (f", about {human_duration(total / jobs)} with {jobs} runs at once" if jobs > 1 else "")
          + " (from completed runs of the same config, recorded epoch times or bench figures where there are "
          "any; otherwise a rough 2-core CPU figure)")


def run(args) -> int:
    from study.store.atomic import require_writable
    from study.store.runs import RESULTS_DIR, Store

    store = Store(args.results or RESULTS_DIR)
    if not args.dry_run:
        require_writable(store.root, "the results store")
    plan = plan_from_args(args, store)
    if args.retrain_mixed and not args.dry_run:
        retrain_mixed(args, plan, store)
    if args.dry_run:
        launcher = make_launcher(args, plan)
        print(describe_share(launcher))
        print_estimate(plan, store, args, launcher)
        check_data_roots(plan.todo, parse_roots(args.roots))  # a dataset the runs would miss: said now
        return 0
    if not plan.todo:
        print("nothing to do" if not plan.holders else
              f"nothing to do here: {len(plan.holders)} run(s) left untrained, held by a live process elsewhere; "
              "run again when it ends")
        return 0 if not plan.holders else 1
    roots = parse_roots(args.roots)
    check_data_roots(plan.todo, roots)
    launcher = make_launcher(args, plan)
    report = launcher.launch(plan.todo, store, roots=roots, log=print)
    if report.submitted:
        print(f"submitted {len(report.submitted)} run(s)"
              + (f", {len(report.busy)} still queued from before" if report.busy else "")
              + "; follow them with `python -m study status`")
    else:
        print(f"done: {len(report.completed)} completed, {len(report.failed)} failed, "
              f"{len(report.busy)} left to another process")
    for run_id, reason in report.failed.items():
        print(f"  failed {run_id}: {reason}")
    left = list(report.busy) if args.launcher == "local" else []  # SLURM's busy runs are queued, not left
    held = [r.run_id for r in plan.busy if r.run_id in plan.holders]
    if args.launcher == "slurm" and held:  # held by this store's own running SLURM jobs: not left
        from study.launch.slurm import queued_runs

        held = [run_id for run_id in held if run_id not in queued_runs(store, held)]
    left += held
    if report.interrupted:
        return 130
    if args.launcher == "local" and left:
        # Whoever trained them: the exit code says whether every requested run is completed in the store.
        left = [spec.run_id for spec in plan.all if spec.run_id in set(left) and not _completed(store, spec.key)]
        if not left:
            print("every requested run is completed in the store (some by another process)")
    if left:
        print(f"{len(left)} run(s) left untrained, held by a live process elsewhere; run again when it ends")
    return 0 if report.ok and not left else 1


def _completed(store, key) -> bool:
    record = store.load(key)
    return record is not None and record.completed
