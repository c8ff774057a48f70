"""`python -m study complexity`: params and MACs of variants beside the paper."""

from __future__ import annotations

DEFAULT_ROWS = ["ultralbm", "ultralbm-t"]


def register(sub) -> None:
    p = sub.add_parser(
        "complexity",
        help="params and GMACs of variants, under two counting conventions, beside the paper",
        description="Params and GMACs at 1x3xSIZExSIZE of the named tables or rows "
        "(default: the two UltraLBM models), beside the paper's numbers.",
    )
    p.add_argument("names", nargs="*", metavar="TABLE|ROW", help="table ids (table3) or row ids (t3-ours)")
    p.add_argument("--all", action="store_true", help="every row of every table")
    p.add_argument("--check", action="store_true",
                   help="exit 1 unless every listed row matches the paper or is a documented mismatch")
    p.add_argument("--size", type=int, default=256, help="input size (default 256)")
    p.add_argument("--no-ptflops", action="store_true", help="skip the ptflops count (faster)")
    p.set_defaults(func=run)


def run(args) -> int:
    from study.complexity import CONVENTIONS, format_rows, measure_row
    from study.variants import load_tables, select_rows

    names = list(load_tables()) if args.all else (args.names or DEFAULT_ROWS)
    rows = select_rows(names)
    results = []
    for row in rows:
        results.append(measure_row(row, size=args.size, with_ptflops=not args.no_ptflops))
    print(format_rows(results))
    print()
    print("Params: plain sum of numel, shared weights once; the paper prints millions to 3 decimals.")
    for key, text in CONVENTIONS.items():
        print(f"GMACs {key}: {text}.")
    main = {r.row_id: r for r in results if r.row_id in DEFAULT_ROWS and not r.unavailable}
    if main:
        counted = ", ".join(
            f"{r.row_id} thop {r.gmacs_thop:.4f}"
            + ("" if r.gmacs_ptflops is None else f" / ptflops {r.gmacs_ptflops:.4f}")
            + f" vs paper {r.paper_flops}"
            for r in main.values()
        )
        print(f"No standard counter gives the paper's FLOPs to three decimals ({counted}); "
              "the FLOPs check allows 5% under the thop convention.")
    failed = [r for r in results if not r.unavailable and not r.ok]
    unavailable = [r for r in results if r.unavailable]
    if unavailable:
        print(f"{len(unavailable)} row(s) unavailable (model not registered): "
              + ", ".join(r.row_id for r in unavailable))
    if args.check:
        if failed:
            print("check FAILED: " + ", ".join(r.row_id for r in failed))
            return 1
        print(f"check passed: {len(results) - len(unavailable)} row(s) match the paper or are documented mismatches")
    return 0
