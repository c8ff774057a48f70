"""`python -m study sbatch`: write plain sbatch array scripts to read and submit yourself."""

from __future__ import annotations

from study.cli.train import add_run_options


def register(sub) -> None:
    p = sub.add_parser("sbatch", help="write SLURM array scripts for tables or rows (submit them yourself)",
                       description="Expand rows x datasets x seeds like `run`, skip runs completed in the store, "
                       "and write one array script per wave (students after their teachers), a runs.json they "
                       "read, and submit.sh. Resources come from a cluster profile in slurm/. Nothing is submitted.")
    p.add_argument("names", nargs="+", metavar="TABLE|ROW", help="table ids (table3) or row ids (t3-ours)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3, as the paper)")
    p.add_argument("--seed-list", default=None, help="explicit seeds, e.g. 0,4,7 (overrides --seeds)")
    p.add_argument("--datasets", default=None, help="comma-separated datasets (default: the table's / profile's)")
    p.add_argument("--cluster", default=None, help="cluster profile name in slurm/ (or a .toml path)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write the scripts (default: <store>/sbatch/<names>-<time>)")
    p.add_argument("--no-snapshot", action="store_true",
                   help="run the source tree as it is when the jobs start, not a snapshot of it now")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import re
    import shlex
    import sys
    import time
    from pathlib import Path

    from study.cli.run import check_data_roots, plan_from_args
    from study.cli.train import parse_roots
    from study.launch.slurm import load_profile, write_sbatch
    from study.store.atomic import require_writable
    from study.store.runs import RESULTS_DIR, Store

    profile = load_profile(args.cluster).with_threads(args.threads)  # threads decided once, per run of a task
    store = Store(Path(args.results or RESULTS_DIR).resolve())
    require_writable(store.root, "the results store")
    plan = plan_from_args(args, store)
    if not plan.todo:
        print("nothing to do")
        return 0
    roots = parse_roots(args.roots)
    check_data_roots(plan.todo, roots)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", "+".join(args.names))[:60]
    out = Path(args.out) if args.out else store.root / "sbatch" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = "python -m study sbatch " + " ".join(shlex.quote(a) for a in sys.argv[2:]) \
        if len(sys.argv) > 1 and sys.argv[1] == "sbatch" else f"python -m study sbatch {' '.join(args.names)}"
    files = write_sbatch(plan.todo, store, profile, out, roots=roots, name=name, command=command,
                         snapshot=False if args.no_snapshot else None)
    snap = files.snapshot
    print(f"cluster profile {profile.name}: {profile.describe_share()}")
    print(f"code {'snapshot ' if snap.path else ''}{snap.code_root}"
          f" (commit {(snap.commit or 'unknown')[:12]}{', uncommitted changes' if snap.dirty else ''})")
    for path in files.scripts + files.student_scripts:
        print(f"  wrote {path}")
    print(f"  wrote {files.runs_file} (what each task trains)")
    if files.student_scripts:
        print(f"submit with: {files.submit_script}   (students wait for their teachers: --dependency=afterany)")
    else:
        print("submit with: " + "; ".join(f"sbatch {p}" for p in files.scripts) + f"   (or {files.submit_script})")
    print("follow with: python -m study status")
    return 0
