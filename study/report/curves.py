"""A table's training curves in the report: every row, the mean over seeds with a ±1 std band.
(One run's own ``curves.png`` is written when it completes: ``study.train.curves``.)

A reader should see whether runs converged and whether the checkpoint rule picked a spike: the
selection DSC panel marks each run's selected epoch. The selection split is the test split under
the paper's rule (``train.selection = "paper"``), a holdout under ``holdout``.
"""

from __future__ import annotations

from pathlib import Path

from study.report.collect import TableData, dataset_label

FORMATS = ("png", "pdf")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def table_frame(td: TableData):
    """One line per (row, seed, epoch) of the table's completed runs on its first dataset."""
    import pandas as pd

    lines = []
    for cell in td.cell_runs:
        for record in cell.completed:
            selected = (record.details.get("selection") or {}).get("epoch")
            for h in record.details.get("history") or []:
                lines.append({"row": cell.row.name, "seed": record.seed, "dataset": cell.dataset,
                              "epoch": h.get("epoch"), "train loss": h.get("train_loss"),
                              "selection DSC (%)": None if h.get("selection_dsc") is None
                              else 100 * h["selection_dsc"],
                              "selected": h.get("epoch") == selected})
    return pd.DataFrame(lines)


def write_table_curves(td: TableData, out_dir: Path) -> list[Path]:
    """``curves_<table>.png|pdf``: each row's mean curve over seeds with a ±1 std band (seaborn), and
    the selected epochs as points; nothing when the table has no completed run with a history."""
    import seaborn as sns

    frame = table_frame(td)
    if frame.empty:
        return []
    plt = _pyplot()
    frame = frame[frame["dataset"] == frame["dataset"].iloc[0]]
    panels = ["train loss"] + (["selection DSC (%)"] if frame["selection DSC (%)"].notna().any() else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.4), squeeze=False)
    for ax, column in zip(axes[0], panels):
        sns.lineplot(data=frame, x="epoch", y=column, hue="row", errorbar=("sd", 1), ax=ax, linewidth=1.2,
                     legend=column == panels[-1])
        if column != "train loss":
            chosen = frame[frame["selected"]]
            sns.scatterplot(data=chosen, x="epoch", y=column, hue="row", ax=ax, legend=False, s=18,
                            edgecolor="black", linewidth=0.5)
    legend = axes[0][-1].get_legend()
    if legend is not None:
        legend.set_title(None)
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7, frameon=False)
    fig.suptitle(f"Table {td.number}: training curves ({dataset_label(frame['dataset'].iloc[0])}, profile "
                 f"{td.profile}); mean over seeds, band ±1 std; points: each run's selected epoch", fontsize=9)
    fig.tight_layout()
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"curves_{td.id}.{fmt}"
        fig.savefig(path, dpi=110 if fmt == "png" else None, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths
