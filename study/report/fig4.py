"""Fig. 4: segmentation results of every model on representative test cases, from stored runs.

Nothing is retrained: each completed run stores its test predictions
(``pred_test.npz``, the masks at the working size) and names the dataset cache
it was trained from, which holds the images. The cases are chosen by a stated
rule: the best, median and worst per-image Dice of the table's chosen row
("ours"), averaged over its seeds, among the images every shown model
predicted; or the ids given with ``--cases``. Each model is shown with its
lowest completed seed. Outlines: ground truth in green, prediction in magenta.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from study.errors import StudyError
from study.metrics import per_image_dice
from study.report.collect import TableData, dataset_label
from study.store.runs import Store

PREFERRED = ("isic2017", "isic2018", "synthetic")
FORMATS = ("png", "pdf")


@dataclass
class Fig4:
    files: list[Path]
    note: str  # what was drawn, or why nothing was


@dataclass
class _Model:
    name: str
    record: object  # RunRecord
    ids: list[str]
    masks: np.ndarray
    dice: dict[str, float]
    reference: bool = False  # the table's chosen row ("ours"), whose Dice picks the cases


def _models(td: TableData, store: Store, dataset: str) -> list[_Model]:
    from study.store.predictions import read_predictions

    out = []
    for cell in td.cell_runs:
        if cell.dataset != dataset or not cell.completed:
            continue
        record = sorted(cell.completed, key=lambda r: r.seed)[0]
        if "pred_test.npz" not in record.files:
            continue
        ids, masks = read_predictions(store.predictions_path(record.key))
        dice = {}
        for r in cell.completed:
            pids, counts = store.per_image(r, "test")
            for i, d in zip(pids, per_image_dice(counts)):
                dice.setdefault(i, []).append(float(d))
        model = _Model(cell.row.name, record, ids, masks, {i: float(np.mean(v)) for i, v in dice.items()})
        model.reference = cell.row.id == td.table.reference
        out.append(model)
    return sorted(out, key=lambda m: not m.reference)  # the chosen row first


def choose_cases(reference: _Model, common: list[str], n: int = 3) -> list[tuple[str, str]]:
    """(id, why): best, median and worst per-image Dice of ``reference`` among ``common``."""
    ranked = sorted(common, key=lambda i: (-reference.dice[i], i))
    picks = [(ranked[0], "best"), (ranked[len(ranked) // 2], "median"), (ranked[-1], "worst")]
    seen, out = set(), []
    for case, why in picks[:n]:
        if case not in seen:
            seen.add(case)
            out.append((case, why))
    return out


def _image(record, sample_id: str) -> np.ndarray | None:
    from study.data.cache import open_cache

    cache_dir = ((record.details.get("data") or {}).get("train") or {}).get("cache")
    try:
        cache = open_cache(cache_dir)
        row = int(cache.indices([sample_id])[0])
        return np.asarray(cache.images()[row]), np.asarray(cache.masks()[row]).astype(bool)
    except Exception:  # the cache was removed or lives on another machine
        return None


def write_fig4(td: TableData, store: Store, out_dir: Path, cases: list[str] | None = None) -> Fig4:
    dataset = next((d for d in PREFERRED if d in td.datasets), td.datasets[0] if td.datasets else None)
    models = _models(td, store, dataset) if dataset else []
    if len(models) < 2:
        return Fig4([], f"Fig. 4 not drawn: it needs completed runs of two or more models on one dataset "
                        f"(Table {td.number}, profile {td.profile}, {dataset_label(dataset or '-')}: {len(models)})")
    common = sorted(set.intersection(*(set(m.ids) for m in models)))
    reference = models[0]
    if cases:
        unknown = [c for c in cases if c not in common]
        if unknown:
            raise StudyError(f"--cases: {', '.join(unknown)} not among the {len(common)} test images every model "
                             f"predicted (e.g. {', '.join(common[:3])})")
        chosen = [(c, "chosen") for c in cases]
    else:
        chosen = choose_cases(reference, common)
    files = _draw(models, chosen, dataset, td, Path(out_dir))
    rule = "given with --cases" if cases else f"best, median and worst per-image Dice of {reference.name}"
    return Fig4(files, f"Fig. 4: {len(chosen)} {dataset_label(dataset)} test case(s), {rule}; "
                       f"{len(models)} models")


def _draw(models: list[_Model], chosen, dataset: str, td: TableData, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = len(models) + 1
    fig, axes = plt.subplots(len(chosen), cols, figsize=(1.55 * cols, 1.7 * len(chosen) + 0.5), squeeze=False)
    for r, (case, why) in enumerate(chosen):
        pair = _image(models[0].record, case)
        image, truth = pair if pair is not None else (None, None)
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            shape = models[0].masks.shape[1:]
            ax.imshow(image if image is not None else np.full((*shape, 3), 200, np.uint8))
            if truth is not None:
                ax.contour(truth, levels=[0.5], colors="#00c853", linewidths=1.0)
            if c == 0:
                ax.set_title(f"{case}\n({why})", fontsize=6)
                if r == 0:
                    ax.set_ylabel("image + truth", fontsize=6)
                continue
            model = models[c - 1]
            mask = model.masks[model.ids.index(case)]
            if mask.any():
                ax.contour(mask, levels=[0.5], colors="#d500f9", linewidths=1.0)
            head = f"{model.name}\n" if r == 0 else ""
            ax.set_title(f"{head}Dice {model.dice[case] * 100:.1f}", fontsize=6)
    note = "" if dataset != "synthetic" else " (synthetic data: a pipeline check)"
    fig.suptitle(f"Segmentation results on {dataset_label(dataset)} test cases{note}\n"
                 f"ground truth green, prediction magenta; profile {td.profile}", fontsize=7)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in FORMATS:
        path = out_dir / f"fig4.{fmt}"
        fig.savefig(path, dpi=150)
        written.append(path)
    plt.close(fig)
    return written
