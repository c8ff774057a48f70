"""One complexity table for every variant of the report: Params and FLOPs counted, beside the paper's.

Params and FLOPs are the same for every user (they depend on the models, not on
the runs), so the report prints them once for all rows, instead of repeating a
Params/FLOPs-only table for each table without runs of its own. Each value is a
run's own count where the row has a completed run, else counted from the model
the same way (thop MACs at 1×3×256×256, the paper's convention; marked *).
"""

from __future__ import annotations

from dataclasses import dataclass

from study.complexity import paper_verdicts
from study.paper import paper_row
from study.report.collect import TableData
from study.report.counting import is_counted
from study.report.format import DASH, display_name, latex_escape, markdown_escape


@dataclass(frozen=True)
class ComplexityLine:
    table: str
    row: str
    params_m: float | None
    gmacs: float | None
    counted: bool  # from the model, not from a run
    paper_params: str | None
    paper_flops: str | None
    verdict: str  # "match", "documented", "differs", or "" (no paper value)


def _word(verdict) -> str:
    return {"match": "match", "documented": "documented", "MISMATCH": "differs", "stale-note": "match (stale note)"}\
        .get(verdict.status, "")


def complexity_lines(tables: list[TableData]) -> list[ComplexityLine]:
    seen: set[str] = set()
    out = []
    for td in tables:
        for row in td.rows:
            if row.unavailable:
                continue
            params, flops = row.cells.get("params_m"), row.cells.get("flops_g")
            paper = paper_row(td.table.id, row.id) or {}
            p = params.mean if params is not None else None
            g = flops.mean if flops is not None else None
            verdicts = paper_verdicts(row.id, None if p is None else round(p * 1e6), g, paper.get("params_m"),
                                      paper.get("flops_g"))
            words = [w for w in (_word(v) for v in verdicts) if w]
            verdict = "differs" if "differs" in words else ("documented" if "documented" in words else
                                                             ("match" if words else ""))
            key = f"{td.id}/{row.id}"
            if key in seen:
                continue
            seen.add(key)
            out.append(ComplexityLine(td.number, display_name(row.name, row.is_reference), p, g,
                                      is_counted(params) or is_counted(flops), paper.get("params_m"),
                                      paper.get("flops_g"), verdict))
    return out


HEADER = ["Table", "Model", "Params (M)", "paper", "FLOPs (G)", "paper", "vs paper"]
CAPTION = ("Params and FLOPs of every variant, counted from its model (thop MACs at 1×3×256×256, the paper's "
           "convention; never a record's own figures; * a variant without a completed run) beside the paper's printed "
           "values. “documented”: a printed "
           "value no reading of the architecture reproduces, with the reason in paper/differences.toml; “differs”: "
           "an undocumented mismatch.")


def _cells(line: ComplexityLine) -> list[str]:
    star = "*" if line.counted else ""
    return [line.table, line.row, DASH if line.params_m is None else f"{line.params_m:.3f}{star}",
            line.paper_params or DASH, DASH if line.gmacs is None else f"{line.gmacs:.3f}{star}",
            line.paper_flops or DASH, line.verdict or DASH]


def render_latex(lines: list[ComplexityLine]) -> str:
    body = [" & ".join(latex_escape(c) for c in _cells(line)) + r" \\" for line in lines]
    return "\n".join([
        r"% The complexity of every variant, written by `python -m study report`: do not edit.",
        r"{\small " + latex_escape(CAPTION) + r"\par}", r"{\footnotesize", r"\begin{longtable}{llrrrrl}",
        r"\toprule", " & ".join(latex_escape(h) for h in HEADER) + r" \\", r"\midrule", r"\endhead",
        *body, r"\bottomrule", r"\end{longtable}", r"}", ""])


def render_markdown(lines: list[ComplexityLine]) -> str:
    rows = ["| " + " | ".join(HEADER) + " |", "|---|---|---:|---:|---:|---:|---|"]
    rows += ["| " + " | ".join(markdown_escape(c) for c in _cells(line)) + " |" for line in lines]
    return "\n".join(["## Complexity of every variant", "", f"*{CAPTION}*", "", *rows, ""])
