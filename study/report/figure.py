"""Fig. 2: accuracy vs parameters, from our runs and, beside it, from the paper's Table 1.

One panel per training dataset; x = Params (M) on a log scale, y = DSC (%),
colour = FLOPs (G) on a log colour scale shared by both figures, every model
labelled. Written as PNG and PDF.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from study.paper import number, paper_table
from study.report.collect import TableData, dataset_label

PAPER_DATASETS = ("isic2017", "isic2018")
FORMATS = ("png", "pdf")


@dataclass(frozen=True)
class Point:
    name: str
    params_m: float
    dsc: float  # %
    dsc_std: float | None
    gflops: float


def points_from_table(td: TableData, dataset: str) -> list[Point]:
    """Rows with a completed run on ``dataset`` and a measured Params and FLOPs."""
    out = []
    for r in td.rows:
        dsc, params, flops = (r.cells.get(k) for k in (f"{dataset}_dsc", "params_m", "flops_g"))
        if dsc and params and flops:
            out.append(Point(r.name, params.mean, dsc.mean, dsc.std, flops.mean))
    return out


def points_from_paper(dataset: str, table_id: str = "table1") -> list[Point]:
    out = []
    for row in paper_table(table_id).values():
        values = [number(row.get(k)) for k in (f"{dataset}_dsc", "params_m", "flops_g")]
        if all(v is not None for v in values):
            out.append(Point(row["name"], values[1], values[0], number(row.get(f"{dataset}_dsc_std")), values[2]))
    return out


def draw(panels: dict[str, list[Point]], stem: Path, title: str, flops_range: tuple[float, float]) -> list[Path]:
    """One figure, a panel per entry of ``panels``; returns the files written (``stem``.png, .pdf)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    n = max(1, len(panels))
    width, height = 5.0 * n + 1.4, 4.6
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    # A fixed layout (a layout engine doubles the drawing time): inches turned into figure fractions.
    fig.subplots_adjust(left=0.75 / width, right=1 - 1.35 / width, bottom=0.6 / height, top=1 - 0.85 / height,
                        wspace=0.25)
    axes = fig.subplots(1, n, squeeze=False)[0]
    norm = LogNorm(vmin=flops_range[0], vmax=flops_range[1])
    cmap = "viridis"
    for ax, (panel, points) in zip(axes, panels.items() or {"no data": []}.items()):
        ax.set_xscale("log")
        ax.set_title(panel)
        ax.set_xlabel("Params (M, log scale)")
        ax.set_ylabel("DSC (%)")
        ax.grid(True, alpha=0.3)
        if not points:
            ax.set_xlim(0.005, 100)
            ax.text(0.5, 0.5, "no completed runs", transform=ax.transAxes, ha="center", va="center", color="grey")
            continue
        for p in points:
            if p.dsc_std:
                ax.errorbar(p.params_m, p.dsc, yerr=p.dsc_std, fmt="none", ecolor="grey", elinewidth=0.8,
                            capsize=2, zorder=1)
        ax.scatter([p.params_m for p in points], [p.dsc for p in points], c=[p.gflops for p in points],
                   cmap=cmap, norm=norm, s=42, edgecolors="black", linewidths=0.5, zorder=2)
        xs, ys = [p.params_m for p in points], [p.dsc - (p.dsc_std or 0) for p in points]
        ys_top = [p.dsc + (p.dsc_std or 0) for p in points]
        ax.set_xlim(min(xs) / 2, max(xs) * 8)
        pad = max(0.2, 0.08 * (max(ys_top) - min(ys)))
        ax.set_ylim(min(ys) - pad, max(ys_top) + pad)
        _label(ax, points)
    bar = fig.add_axes((1 - 1.0 / width, 0.6 / height, 0.15 / width, 1 - 1.45 / height))
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=bar, label="FLOPs (G, log scale)")
    fig.suptitle(title, fontsize=11)
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in FORMATS:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=150)
        written.append(path)
    return written


def _label(ax, points: list[Point], fontsize: float = 7) -> None:
    """Every point labelled, to its right, nudged up or down past labels already placed."""
    import math

    x0, x1 = (math.log10(v) for v in ax.get_xlim())
    y0, y1 = ax.get_ylim()
    width_in, height_in = ax.get_figure().get_size_inches() * ax.get_position().size
    line = fontsize * 1.25 / 72 / height_in  # one text line, in axes fractions
    char = fontsize * 0.55 / 72 / width_in
    placed: list[tuple[float, float, float, float]] = []
    for p in sorted(points, key=lambda q: -q.dsc):
        fx = (math.log10(p.params_m) - x0) / (x1 - x0) + 6 / 72 / width_in
        fy = (p.dsc - y0) / (y1 - y0)
        w = char * len(p.name)
        for step in (0, -1, 1, -2, 2, -3, 3, -4, 4):
            y = fy + step * line - line / 2
            box = (fx, y, fx + w, y + line)
            if not any(b[0] < box[2] and box[0] < b[2] and b[1] < box[3] and box[1] < b[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(p.name, (p.params_m, p.dsc), xytext=(box[0], box[1] + line / 2), textcoords="axes fraction",
                    fontsize=fontsize, va="center",
                    arrowprops=None if step == 0 else dict(arrowstyle="-", color="grey", lw=0.5))


def _flops_range(*groups: dict[str, list[Point]]) -> tuple[float, float]:
    values = [p.gflops for g in groups for pts in g.values() for p in pts if p.gflops > 0]
    if not values:
        return 0.01, 100.0
    low, high = min(values), max(values)
    return (low, high) if high > low else (low / 2, high * 2)


def write_fig2(td: TableData, out_dir: Path, stem: str = "fig2") -> list[Path]:
    """Fig. 2 from our Table 1 runs (``fig2``) and from the paper's numbers (``fig2_paper``)."""
    ours = {dataset_label(d): points_from_table(td, d) for d in td.datasets}
    paper = {dataset_label(d): points_from_paper(d, td.id) for d in PAPER_DATASETS}
    paper = {k: v for k, v in paper.items() if v}
    flops = _flops_range(ours, paper)
    title = f"Accuracy vs parameters: our runs (profile {td.profile})"
    if td.profile != "paper":
        title += "\nsynthetic data: not comparable to the paper"
    written = draw(ours, Path(out_dir) / stem, title, flops)
    if paper:
        written += draw(paper, Path(out_dir) / f"{stem}_paper", "Accuracy vs parameters: the paper's Table 1", flops)
    return written
