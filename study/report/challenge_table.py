"""The ISIC challenge's metrics beside the paper's: one table of every real-data cell that has them.

The paper pools pixels at the working size; the challenge scores each image at
its original size and averages over images (``study.challenge``). Each line
is a table row trained on a dataset and evaluated on a split (its test part,
or PH2), with the mean over seeds of each metric in %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from study.challenge import CHALLENGE_METRICS
from study.report.collect import TableData, dataset_label
from study.report.format import latex_escape, markdown_escape
from study.store.runs import Store

LABELS = {"jaccard": "Jaccard", "threshold_jaccard": "Thr. Jaccard", "dice": "Dice", "sensitivity": "Sens.",
          "specificity": "Spec.", "accuracy": "Acc."}


@dataclass
class ChallengeLine:
    table: str
    row: str
    trained_on: str
    split: str
    n: int
    means: dict[str, float]


def challenge_lines(tables: list[TableData], store: Store) -> list[ChallengeLine]:
    """One line per (table, row, training set, scored split): the challenge's metrics computed from
    each verified run's per-image challenge counts (not the record's summary of them)."""
    from study.challenge import challenge_scores
    from study.store.per_image import parse_counts

    out = []
    for td in tables:
        for cell in td.cell_runs:
            by_split: dict[str, list[dict]] = {}
            for r in cell.completed:
                for split in r.challenge:
                    path = store.challenge_path(r.key, split)
                    _, counts = parse_counts(path.read_bytes(), str(path))
                    by_split.setdefault(split, []).append(challenge_scores(counts))
            for split, runs in by_split.items():
                means = {m: 100 * float(np.mean([s[m] for s in runs if m in s])) for m in CHALLENGE_METRICS}
                name = "test part" if split == "test" else dataset_label(split)
                out.append(ChallengeLine(td.number, cell.row.name, dataset_label(cell.dataset), name, len(runs), means))
    return out


def _caption(lines: list[ChallengeLine]) -> str:
    return ("The ISIC challenge's metrics (%): each prediction resized to its image's original size, thresholded "
            "at 0.5, scored against the original mask (> 128) and averaged over images; threshold Jaccard counts "
            "an image under 0.65 as 0. Mean over n seeds. The paper's tables pool pixels at the working size "
            "instead, so these numbers differ from them by construction.")


def render_latex(lines: list[ChallengeLine]) -> str:
    head = " & ".join(["Table", "Model", "Trained on", "Scored on", "n"] + [LABELS[m] for m in CHALLENGE_METRICS])
    body = [" & ".join([latex_escape(v) for v in (line.table, line.row, line.trained_on, line.split, line.n)]
                       + [f"{line.means[m]:.2f}" for m in CHALLENGE_METRICS]) + r" \\" for line in lines]
    # Numbered "C" (the challenge's), not after the paper's seven tables.
    return "\n".join([r"\begingroup\renewcommand{\thetable}{C}", r"\begin{table}[htbp]", r"\centering",
                      r"\footnotesize",
                      r"\caption{" + latex_escape(_caption(lines)) + "}",
                      r"\begin{tabular}{lllll" + "r" * len(CHALLENGE_METRICS) + "}", r"\toprule", head + r" \\",
                      r"\midrule", *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", r"\endgroup", ""])


def render_markdown(lines: list[ChallengeLine]) -> str:
    head = ["Table", "Model", "Trained on", "Scored on", "n"] + [LABELS[m] for m in CHALLENGE_METRICS]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows += ["| " + " | ".join([markdown_escape(v) for v in (line.table, line.row, line.trained_on, line.split,
                                                              line.n)]
                               + [f"{line.means[m]:.2f}" for m in CHALLENGE_METRICS]) + " |" for line in lines]
    return "\n".join([f"*{_caption(lines)}*", "", *rows, ""])
