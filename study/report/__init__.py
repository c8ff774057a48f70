"""The report: the paper's Tables 1–7, Fig. 2, reproduced-vs-paper and a claims audit, from the store.

One concept per module:

* ``collect``   the store -> the cells of each table (values per seed, gaps, failed runs)
* ``format``    printing numbers, escaping text, choosing bold / underline where they mean something
* ``counting``  Params and FLOPs of rows without runs, counted from the model (cached)
* ``coverage``  which tables have runs of their own (shown in full; the others named once)
* ``tables``    the tables as LaTeX (booktabs, jinja2 templates), Markdown and CSV
* ``complexity_table``  Params and FLOPs of every variant, counted, beside the paper's
* ``figure``, ``fig4``, ``curves``  Fig. 2, Fig. 4, each table's training curves (seaborn)
* ``compare``   every cell of the paper beside ours, with the difference and a flag
* ``audit``     the claims audit of the ablation tables (seed-level Welch tests + Holm; study.report.evidence)
* ``differences``  Table R's effects and the registry of paper / release / harness differences
* ``build``     all of it into one folder; ``documents`` (report.tex, report.md), ``html`` (report.html),
  ``folder`` (what the folder holds, pdflatex)
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
