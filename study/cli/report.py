"""`python -m study report`: the paper's tables, Fig. 2, reproduced-vs-paper and the claims audit."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="LaTeX tables 1-7, the accuracy-vs-params figure, reproduced vs paper, and a claims audit",
        description="Render the paper's tables from the results store (mean ± std over seeds, best bold, "
        "second underlined, – for gaps), Fig. 2 from our runs beside the paper's, every cell against the "
        "paper's, and an audit of each ablation table's 'ours is best' claim. Nothing is trained.",
    )
    p.add_argument("--tables", default=None, metavar="N,N,...", help="tables to render, e.g. 1,3,7 (default: all)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: <results>/report)")
    p.add_argument("--format", dest="fmt", default="latex", choices=("latex", "markdown", "csv"),
                   help="table format (default latex; latex also writes the comparison and audit as Markdown)")
    p.add_argument("--profile", default="auto", choices=("auto", "paper", "smoke"),
                   help="which runs fill the tables; auto: per table, paper runs if any are stored, else smoke")
    p.add_argument("--results", default=None, help="results store root (default: $STUDY_RESULTS or ./results)")
    p.add_argument("--no-figure", dest="figure", action="store_false", help="skip Fig. 2")
    p.add_argument("--no-audit", dest="audit", action="store_false", help="skip the claims audit")
    p.add_argument("--bootstrap", type=int, default=None, metavar="B",
                   help="bootstrap draws for the audit's intervals (default 2000)")
    p.add_argument("--pdf", action="store_true", help="also compile report.tex with pdflatex")
    p.add_argument("--seeds", type=int, default=None,
                   help="only seeds 0..N-1 (default: every stored seed), for tables and audit alike")
    p.set_defaults(func=run)


def run(args) -> int:
    from study.report.audit import N_BOOT
    from study.report.build import build_report, parse_tables
    from study.store import RESULTS_DIR, Store
    from study.variants import load_tables

    variants = load_tables()
    tables = parse_tables(args.tables, variants)
    store = Store(args.results or RESULTS_DIR)
    result = build_report(store, args.out, tables, profile=args.profile, fmt=args.fmt, figure=args.figure,
                          audit=args.audit, n_boot=args.bootstrap or N_BOOT, pdf=args.pdf, variants=variants,
                          seeds=None if args.seeds is None else list(range(args.seeds)))
    for note in result.notes:
        print(f"note: {note}")
    for td in result.tables:
        n = td.typical_n("metric")
        seeds = "no completed runs" if n is None else f"{n} seed(s) per cell"
        failed = f", {len(td.problems)} run(s) not completed" if td.problems else ""
        print(f"Table {td.number}: profile {td.profile}, {seeds}{failed}")
    for a in result.audits:
        print(f"audit Table {a.number} ({a.dataset}): {a.verdict}")
    print(f"wrote {len(result.files)} file(s):")
    for path in result.files:
        print(f"  {path.name}")
    print(f"report folder: {result.out_dir}")
    return 0
