"""One run's training curves, ``curves.png`` in its folder: loss and selection DSC per epoch, the
selected epoch marked, so a reader sees whether it converged and whether the rule picked a spike."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CURVES_FILE = "curves.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_run_curves(history: list[dict], selected_epoch: int | None, path: Path, title: str,
                     split: str = "selection") -> Path:
    """Loss and selection DSC per epoch of one run (``split``: the split it selects on), its selected
    epoch marked."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    has_dsc = any(h.get("selection_dsc") is not None for h in history)
    fig, axes = plt.subplots(1, 2 if has_dsc else 1, figsize=(8 if has_dsc else 4.5, 3), squeeze=False)
    loss_ax = axes[0][0]
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    if any(h.get("selection_loss") is not None for h in history):
        loss_ax.plot(epochs, [h.get("selection_loss") for h in history], label=f"{split} loss (selection)")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(fontsize=8)
    if has_dsc:
        dsc_ax = axes[0][1]
        dsc = [100 * h["selection_dsc"] if h.get("selection_dsc") is not None else np.nan for h in history]
        dsc_ax.plot(epochs, dsc, color="tab:green")
        dsc_ax.set_xlabel("epoch")
        dsc_ax.set_ylabel(f"{split} DSC (%)")
        if selected_epoch:
            dsc_ax.plot([selected_epoch], [dsc[selected_epoch - 1]], "o", color="black", label="selected")
            dsc_ax.legend(fontsize=8)
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if selected_epoch:
            ax.axvline(selected_epoch, color="grey", linestyle=":", linewidth=1)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


