"""The report: the paper's Tables 1–7, Fig. 2, reproduced-vs-paper and a claims audit, from the store.

One concept per module:

* ``collect``   the store -> the cells of each table (values per seed, gaps, failed runs)
* ``format``    printing numbers, escaping text, choosing bold / underline where they mean something
* ``counting``  Params and FLOPs of rows without runs, counted from the model (cached)
* ``coverage``  which tables have runs of their own; the others are rendered compactly
* ``tables``    Tables 1–7 as LaTeX (booktabs, jinja2 templates), Markdown and CSV
* ``figure``    Fig. 2, accuracy vs params, from our runs and from the paper's numbers
* ``compare``   every cell of the paper beside ours, with the difference and a flag
* ``audit``     the claims audit of the ablation tables (bootstrap, Wilcoxon + Holm)
* ``build``     all of it into one folder, and the standalone ``report.tex``
* ``synthetic`` stores of constructed records with known values (tests, demos)
"""

from study.report.audit import audit_table, audit_tables
from study.report.build import ReportResult, build_report, compile_pdf, parse_tables
from study.report.collect import Cell, TableData, collect_table, collect_tables
from study.report.compare import compare_table
from study.report.figure import write_fig2
from study.report.tables import render_table

__all__ = [
    "Cell", "ReportResult", "TableData", "audit_table", "audit_tables", "build_report", "collect_table",
    "collect_tables", "compare_table", "compile_pdf", "parse_tables", "render_table", "write_fig2",
]
