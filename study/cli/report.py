"""`python -m study report`: the paper's tables, Fig. 2, reproduced-vs-paper and the claims audit."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="the tables, figures and training curves, reproduced vs paper, a claims audit: PDF, HTML, Markdown",
        description="Render the paper's tables from the results store (mean ± std over seeds; best bold and "
        "second underlined where they stand apart by more than the larger std; – for gaps; Params and FLOPs of "
        "rows without runs counted from the model), Fig. 2 from our runs and from the paper's, every cell "
        "against the paper's, and an audit of each ablation table's 'ours is best' claim. Nothing is trained. "
        "Files an earlier report wrote in the output folder and this one did not are removed and named.",
    )
    p.add_argument("--tables", default=None, metavar="N,N,...", help="tables to render, e.g. 1,3,7 (default: all)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: <results>/report)")
    p.add_argument("--format", dest="fmt", default="all", choices=("all", "latex", "markdown", "html", "csv"),
                   help="all (default): LaTeX (and report.pdf where pdflatex is installed), Markdown and one "
                        "self-contained report.html; or just one format. Formats add up in one folder")
    p.add_argument("--profile", default="auto",
                   help="which runs fill the tables: a profile of variants/base.toml (paper, smoke, release, or your own), "
                   "or auto: per table, the first profile with completed runs (paper, smoke, then yours)")
    p.add_argument("--cases", default=None, metavar="ID,ID,...",
                   help="Fig. 4: these test images (default: best, median and worst per-image Dice of ours)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="the overrides the runs were made with, as given to `run` (repeatable)")
    p.add_argument("--results", default=None, help="results store root (default: $STUDY_RESULTS or ./results)")
    p.add_argument("--no-figure", dest="figure", action="store_false", help="skip Fig. 2")
    p.add_argument("--no-audit", dest="audit", action="store_false", help="skip the claims audit")
    p.add_argument("--bootstrap", type=int, default=None, metavar="B",
                   help="bootstrap draws for the secondary, image-level intervals of the audit and Table R (default 2000)")
    p.add_argument("--pdf", action="store_true", default=None,
                   help="compile report.tex with pdflatex, or fail (default: when pdflatex is installed)")
    p.add_argument("--no-pdf", dest="pdf", action="store_false", help="do not compile report.tex")
    p.add_argument("--seeds", type=int, default=None,
                   help="only seeds 0..N-1 (default: every stored seed), for tables and audit alike")
    p.set_defaults(func=run)


def run(args) -> int:
    from study.report.audit import N_BOOT
    from study.report.build import build_report, parse_tables
    from study.store.runs import RESULTS_DIR, Store
    from study.variants import load_tables

    if args.seeds is not None and args.seeds < 1:
        from study.errors import ConfigError

        raise ConfigError(f"--seeds {args.seeds}: expected at least 1 (seeds 0..N-1)")
    variants = load_tables()
    tables = parse_tables(args.tables, variants)
    store = Store(args.results or RESULTS_DIR)
    from study.store.atomic import require_writable

    require_writable(args.out or store.root / "report", "the report folder")
    from study.config import parse_overrides

    result = build_report(store, args.out, tables, profile=args.profile, fmt=args.fmt, figure=args.figure,
                          overrides=parse_overrides(args.overrides),
                          cases=[c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else None,
                          audit=args.audit, n_boot=args.bootstrap or N_BOOT, pdf=args.pdf, variants=variants,
                          seeds=None if args.seeds is None else list(range(args.seeds)),
                          progress=lambda line: print(line, flush=True))
    for note in result.notes:
        print(f"note: {note}")
    from study.report.audit import judged, unjudged_lines

    for td in result.tables:
        n = td.typical_n("metric")
        cover = result.coverage.get(td.id)
        failed = f", {len(td.problems)} run(s) not completed" if td.problems else ""
        if cover is not None and cover.compact:
            shared = (f" (shares the runs of Table{'s' if len(cover.shared_with) > 1 else ''} "
                      f"{', '.join(cover.shared_with)})" if cover.shared_with else "")
            seeds = f"no runs of its own{shared}" if cover.has_runs else "no runs"
            print(f"Table {td.number}: profile {td.profile}, {seeds}{failed} (not shown in full; its Params "
                  "and FLOPs are in the complexity table)")
        else:
            print(f"Table {td.number}: profile {td.profile}, {n} seed(s) per cell{failed}")
    for a in result.audits:
        if judged(a):
            print(f"audit Table {a.number} ({a.dataset}): {a.verdict}")
    for line in unjudged_lines(result.audits):
        print(f"audit: cannot be judged: {line}")
    print(f"wrote {len(result.files)} file(s):")
    for path in result.files:
        print(f"  {path.name}")
    print(f"report folder: {result.out_dir}")
    return 0
