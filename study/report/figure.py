"""Fig. 2: accuracy vs parameters, from our runs and, as a second figure, from the paper's Table 1.

As the paper's Fig. 2: one panel per training dataset, x = Params (M) on a log
scale, y = DSC (%), colour = FLOPs (G) on a log colour scale shared by both
figures, every model labelled; the x range is shared too, so the two figures
read alike. Our chosen rows ("(Ours)") are stars, and a thin grey bar is ±1
sample std over seeds (the paper's printed std on its figure).

Labels never overlap each other, a point, or the panel's edge: each is placed
by ``place_labels`` at the free spot nearest its point (measured with the
renderer), joined to it by a leader line when it had to move away; tick labels
are decades ("0.01", "0.1", "1") and are thinned if they would touch. The
panels are drawn at the size they are printed (``TEXT_WIDTH_IN`` is the width
of the report's page), so fonts are the sizes they say.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

from study.paper import number, paper_table
from study.report.collect import TableData, dataset_label
from study.report.format import OURS, display_name

PAPER_DATASETS = ("isic2017", "isic2018")
FORMATS = ("png", "pdf")
DPI = 150
TEXT_WIDTH_IN = 10.5  # report.tex: A4 landscape, 1.5 cm margins
PANEL_W, PANEL_H = 4.15, 3.55  # inches of one panel's axes
LEFT, GAP, RIGHT, BOTTOM, TOP = 0.62, 0.62, 1.0, 0.58, 0.55  # inches; TOP grows with the title's lines
LABEL_SIZE, TICK_SIZE, AXIS_SIZE, TITLE_SIZE = 7.5, 8, 9, 10
MARKER_S, OURS_S = 34, 110  # scatter sizes (points²)
CMAP = "viridis"
LABEL_GID = "point-label"


@dataclass(frozen=True)
class Point:
    name: str
    params_m: float
    dsc: float  # %
    dsc_std: float | None
    gflops: float

    @property
    def ours(self) -> bool:
        return OURS.lower() in self.name.lower()


def points_from_table(td: TableData, dataset: str) -> list[Point]:
    """Rows with a completed run on ``dataset`` and a Params and FLOPs (from the runs or counted)."""
    out = []
    for r in td.rows:
        dsc, params, flops = (r.cells.get(k) for k in (f"{dataset}_dsc", "params_m", "flops_g"))
        if dsc and params and flops:
            out.append(Point(display_name(r.name, r.is_reference), params.mean, dsc.mean, dsc.std, flops.mean))
    return out


def points_from_paper(dataset: str, table_id: str = "table1") -> list[Point]:
    out = []
    for row in paper_table(table_id).values():
        values = [number(row.get(k)) for k in (f"{dataset}_dsc", "params_m", "flops_g")]
        if all(v is not None for v in values):
            out.append(Point(row["name"], values[1], values[0], number(row.get(f"{dataset}_dsc_std")), values[2]))
    return out


def figure_width(panels: int) -> float:
    """Inches: the panels, the gaps between them and the colour bar."""
    n = max(1, panels)
    return LEFT + n * PANEL_W + (n - 1) * GAP + RIGHT


def latex_width(panels: int) -> str:
    """The width to include the figure at in report.tex: its own size, never wider than the page."""
    return f"{min(1.0, figure_width(panels) / TEXT_WIDTH_IN):.3f}\\linewidth"


# ------------------------------------------------------------------ axes

def _decade_ticks(lo: float, hi: float) -> list[float]:
    """Decades within [lo, hi]; 1-2-5 steps where fewer than two decades fit."""
    first, last = math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9)
    ticks = [10.0 ** k for k in range(first, last + 1)]
    if len(ticks) >= 2:
        return ticks
    return [m * 10.0 ** k for k in range(first - 1, last + 1) for m in (1, 2, 5) if lo <= m * 10.0 ** k <= hi]


def _tick_text(value: float) -> str:
    return f"{value:g}" if value >= 1e-4 else f"{value:.0e}"


def x_range(*groups: dict[str, list[Point]]) -> tuple[float, float]:
    """One Params range for every panel of both figures: the points, and room for labels at both ends."""
    values = [p.params_m for g in groups for pts in g.values() for p in pts if p.params_m > 0]
    if not values:
        return 0.005, 100.0
    return min(values) / 2.5, max(values) * 10


def _y_range(points: list[Point]) -> tuple[float, float]:
    low = min(p.dsc - (p.dsc_std or 0) for p in points)
    high = max(p.dsc + (p.dsc_std or 0) for p in points)
    pad = max(0.25, 0.1 * (high - low))
    return low - pad, high + pad


def _overlapping(boxes) -> bool:
    return any(_intersects(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def thin_ticks(ax, renderer, axis: str = "x") -> None:
    """Hide every other tick label of ``axis`` until no two visible ones touch."""
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    ticks = ax.get_xticks() if axis == "x" else ax.get_yticks()
    shown = [t for t, v in zip(labels, ticks) if t.get_text() and min(lo, hi) <= v <= max(lo, hi)]
    step = 1
    while step < len(shown):
        kept = shown[::step]
        if not _overlapping([_box(t.get_window_extent(renderer), 2) for t in kept]):
            break
        step += 1
    for k, t in enumerate(shown):
        t.set_visible(k % step == 0)


# ------------------------------------------------------------------ labels

def _box(bbox, pad: float = 0.0) -> tuple[float, float, float, float]:
    return bbox.x0 - pad, bbox.y0 - pad, bbox.x1 + pad, bbox.y1 + pad


def _intersects(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _segment_hits_box(p, q, box) -> bool:
    """Whether the segment p-q passes through the (open) box: Liang–Barsky clipping."""
    (x0, y0), (x1, y1) = p, q
    dx, dy = x1 - x0, y1 - y0
    t0, t1 = 0.0, 1.0
    for edge_p, edge_q in ((-dx, x0 - box[0]), (dx, box[2] - x0), (-dy, y0 - box[1]), (dy, box[3] - y0)):
        if edge_p == 0:
            if edge_q <= 0:
                return False
            continue
        t = edge_q / edge_p
        if edge_p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 >= t1:
            return False
    return True


def _segments_cross(a, b, c, d) -> bool:
    def orient(p, q, r):
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    return (orient(a, b, c) * orient(a, b, d) < 0) and (orient(c, d, a) * orient(c, d, b) < 0)


def _nearest_on_box(px, py, box):
    return min(max(px, box[0]), box[2]), min(max(py, box[1]), box[3])


@dataclass
class Placed:
    box: tuple[float, float, float, float]  # display pixels
    leader: tuple[tuple[float, float], tuple[float, float]] | None


REACHES = (0, 8, 16, 26, 38, 52, 70, 92, 120)  # points between a marker and its label
TRIES = 6  # greedy passes, each putting the labels that found no room first


def place_labels(ax, points: list[Point], renderer, sizes: list[float]) -> list[Placed | None]:
    """Put each point's label at the cheapest free spot: never on another label, on a point, across a
    leader line or outside the panel; a leader line joins a label that had to move away from its point.

    Greedy, the most crowded points first; a label that finds no free spot goes first on the next
    try (``TRIES`` in all). Returns the spots in the order of ``points``; None for a label
    with no free spot at all (then ``_draw_labels`` numbers the point instead).
    """
    scale = renderer.points_to_pixels(1.0)
    frame = _box(ax.get_window_extent(renderer), -2 * scale)
    centres = [tuple(ax.transData.transform((p.params_m, p.dsc))) for p in points]
    radii = [math.sqrt(s) / 2 * scale + 1.5 * scale for s in sizes]
    markers = [(x - r, y - r, x + r, y + r) for (x, y), r in zip(centres, radii)]
    bars = []
    for p, (x, y), r in zip(points, centres, radii):
        if p.dsc_std:
            _, top = ax.transData.transform((p.params_m, p.dsc + p.dsc_std))
            _, bottom = ax.transData.transform((p.params_m, p.dsc - p.dsc_std))
            bars += [(x - 2 * scale, y + r, x + 2 * scale, max(top, y + r)),  # the bar outside the marker
                     (x - 2 * scale, min(bottom, y - r), x + 2 * scale, y - r)]
    extents = [_text_extent(ax, p.name, renderer) for p in points]
    crowding = [sum(math.dist(c, o) < 60 * scale for o in centres) for c in centres]
    order = sorted(range(len(points)), key=lambda i: (-crowding[i], -points[i].dsc))
    best_try: dict[int, Placed] = {}
    for _ in range(TRIES):
        placed: dict[int, Placed] = {}
        failed = []
        for i in order:
            spot = _best_spot(i, centres, radii, extents[i], markers, bars, frame, placed, scale)
            if spot is None:
                failed.append(i)
            else:
                placed[i] = spot
        if len(placed) > len(best_try):
            best_try = placed
        if not failed:
            break
        order = failed + [i for i in order if i not in failed]
    return [best_try.get(i) for i in range(len(points))]


def _text_extent(ax, text: str, renderer, size: float = LABEL_SIZE) -> tuple[float, float]:
    probe = ax.text(0, 0, text, fontsize=size)
    bb = probe.get_window_extent(renderer)
    probe.remove()
    return bb.width, bb.height


def _candidates(cx, cy, r, w, h, scale):
    """Label boxes right, left, above and below the point, nearest first; (box, reach, side cost)."""
    gap = 2.5 * scale
    for reach in REACHES:
        d = r + gap + reach * scale
        steps = range(-10, 11) if reach else (0,)
        for k in sorted(steps, key=abs):
            dy = k * 0.55 * h
            yield (cx + d, cy + dy - h / 2, cx + d + w, cy + dy + h / 2), reach + abs(k) * 3, 0  # right
            yield (cx - d - w, cy + dy - h / 2, cx - d, cy + dy + h / 2), reach + abs(k) * 3, 6  # left
        for k in sorted(range(-6, 7), key=abs):
            dx = k * 0.2 * w
            yield (cx + dx - w / 2, cy + d, cx + dx + w / 2, cy + d + h), reach + abs(k) * 2, 3  # above
            yield (cx + dx - w / 2, cy - d - h, cx + dx + w / 2, cy - d), reach + abs(k) * 2, 3  # below


def _best_spot(i, centres, radii, extent, markers, bars, frame, placed, scale) -> Placed | None:
    """The cheapest free spot for label ``i``, or None. Hard: inside the panel, on no label, point or
    leader line. Costs: distance, the left side, error bars under the label or along its leader, and
    a leader crossing another leader, a label or a point."""
    cx, cy = centres[i]
    w, h = extent
    best, best_cost = None, math.inf
    for box, reach, side in _candidates(cx, cy, radii[i], w, h, scale):
        if not (frame[0] <= box[0] and box[2] <= frame[2] and frame[1] <= box[1] and box[3] <= frame[3]):
            continue
        padded = (box[0] - scale, box[1] - scale, box[2] + scale, box[3] + scale)
        if any(_intersects(padded, m) for m in markers):
            continue
        if any(_intersects(padded, p.box) for p in placed.values()):
            continue
        if any(p.leader and _segment_hits_box(*p.leader, padded) for p in placed.values()):
            continue
        near = _nearest_on_box(cx, cy, box)
        cost = reach + side + math.dist((cx, cy), near) / scale * 0.2
        cost += 12 * sum(_intersects(box, b) for b in bars)
        leader = None
        if reach > 0:
            direction = (near[0] - cx, near[1] - cy)
            length = math.hypot(*direction) or 1.0
            start = (cx + direction[0] / length * radii[i], cy + direction[1] / length * radii[i])
            leader = (start, near)
            cost += 40 * sum(_segment_hits_box(start, near, b) for b in bars)  # along a bar: ambiguous
            cost += 150 * sum(j != i and _segment_hits_box(start, near, m) for j, m in enumerate(markers))
            cost += 150 * sum(_segment_hits_box(start, near, p.box) for p in placed.values())
            cost += 60 * sum(bool(p.leader) and _segments_cross(start, near, *p.leader) for p in placed.values())
        if cost < best_cost:
            best, best_cost = Placed(box, leader), cost
    return best


def _draw_labels(ax, points: list[Point], renderer, sizes: list[float]) -> list[str]:
    """Label every point; a point whose name finds no free spot gets a number, and the numbers'
    names are returned ("1: U-Net") for a key under the panel."""
    to_data = ax.transData.inverted()
    spots = place_labels(ax, points, renderer, sizes)
    key = []
    names = list(points)
    missing = [k for k, s in enumerate(spots) if s is None]
    if missing:  # numbers instead of the names that found no room; the names go in a key
        numbers = {k: str(n + 1) for n, k in enumerate(missing)}
        names = [replace(p, name=numbers[k]) if k in numbers else p for k, p in enumerate(points)]
        spots = place_labels(ax, names, renderer, sizes)
        key = [f"{numbers[k]}: {points[k].name}" for k in missing]
    for p, spot in zip(names, spots):
        if spot is None:
            continue
        x, y = to_data.transform((spot.box[0], spot.box[1]))
        text = ax.text(x, y, p.name, fontsize=LABEL_SIZE, ha="left", va="bottom", zorder=4)
        text.set_gid(LABEL_GID)
        if spot.leader:
            (x0, y0), (x1, y1) = (to_data.transform(q) for q in spot.leader)
            ax.plot([x0, x1], [y0, y1], color="0.25", lw=0.6, zorder=1.5, solid_capstyle="butt")
    return key


# ------------------------------------------------------------------ the figure

def make_figure(panels: dict[str, list[Point]], title: str, flops_range: tuple[float, float],
                xlim: tuple[float, float] | None = None):
    """One figure, a panel per entry of ``panels`` (a matplotlib Figure, nothing written)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    panels = panels or {"no data": []}
    n = len(panels)
    width = figure_width(n)
    title = "\n".join(textwrap.fill(line, int(width * 11)) for line in title.split("\n"))
    top = TOP + 0.19 * (title.count("\n") + 1)
    height = BOTTOM + PANEL_H + top
    fig = Figure(figsize=(width, height), dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    norm = LogNorm(vmin=flops_range[0], vmax=flops_range[1])
    xlim = xlim or x_range(panels)
    ticks = _decade_ticks(*xlim)
    axes = []
    for k, (panel, points) in enumerate(panels.items()):
        left = LEFT + k * (PANEL_W + GAP)
        ax = fig.add_axes((left / width, BOTTOM / height, PANEL_W / width, PANEL_H / height))
        axes.append((ax, points))
        ax.set_xscale("log")
        ax.set_xlim(*xlim)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _tick_text(v)))
        ax.xaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10)), numticks=50))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(labelsize=TICK_SIZE)
        ax.set_title(panel, fontsize=TITLE_SIZE)
        ax.set_xlabel("Params (M, log scale)", fontsize=AXIS_SIZE)
        ax.set_ylabel("DSC (%)", fontsize=AXIS_SIZE)
        ax.grid(True, which="major", alpha=0.3, lw=0.6)
        if not points:
            ax.text(0.5, 0.5, "no completed runs", transform=ax.transAxes, ha="center", va="center", color="grey")
            continue
        ax.set_ylim(*_y_range(points))
        for p in points:
            if p.dsc_std:
                ax.errorbar(p.params_m, p.dsc, yerr=p.dsc_std, fmt="none", ecolor="0.72", elinewidth=0.6,
                            capsize=1.6, capthick=0.6, zorder=1)
        for ours in (False, True):
            group = [p for p in points if p.ours == ours]
            if group:
                ax.scatter([p.params_m for p in group], [p.dsc for p in group], c=[p.gflops for p in group],
                           cmap=CMAP, norm=norm, s=OURS_S if ours else MARKER_S, marker="*" if ours else "o",
                           edgecolors="black", linewidths=0.7 if ours else 0.5, zorder=3)
    bar = fig.add_axes((1 - (RIGHT - 0.22) / width, BOTTOM / height, 0.14 / width, PANEL_H / height))
    colorbar = fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), cax=bar)
    colorbar.set_label("FLOPs (G, log scale)", fontsize=AXIS_SIZE)
    colorbar.ax.tick_params(labelsize=TICK_SIZE)
    fig.suptitle(title, fontsize=TITLE_SIZE + 1, y=1 - 0.1 / height, va="top")
    renderer = canvas.get_renderer()
    for ax, points in axes:
        if points:
            key = _draw_labels(ax, points, renderer, [OURS_S if p.ours else MARKER_S for p in points])
            if key:
                ax.set_xlabel("Params (M, log scale)\n" + "; ".join(key), fontsize=AXIS_SIZE)
        thin_ticks(ax, renderer, "x")
        thin_ticks(ax, renderer, "y")
    return fig


def draw(panels: dict[str, list[Point]], stem: Path, title: str, flops_range: tuple[float, float],
         xlim: tuple[float, float] | None = None) -> list[Path]:
    """One figure written as ``stem``.png and .pdf; returns the files written."""
    fig = make_figure(panels, title, flops_range, xlim)
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in FORMATS:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=DPI)
        written.append(path)
    return written


def _flops_range(*groups: dict[str, list[Point]]) -> tuple[float, float]:
    values = [p.gflops for g in groups for pts in g.values() for p in pts if p.gflops > 0]
    if not values:
        return 0.01, 100.0
    low, high = min(values), max(values)
    return (low, high) if high > low else (low / 2, high * 2)


def fig2_panels(td: TableData | None) -> tuple[dict[str, list[Point]], dict[str, list[Point]]]:
    """(ours, the paper's): panel title -> points."""
    ours = {dataset_label(d): points_from_table(td, d) for d in td.datasets} if td is not None else {}
    paper = {dataset_label(d): points_from_paper(d, td.id if td is not None else "table1") for d in PAPER_DATASETS}
    return ours, {k: v for k, v in paper.items() if v}


def write_fig2(td: TableData, out_dir: Path, stem: str = "fig2", ours_too: bool = True) -> list[Path]:
    """Fig. 2 from our Table 1 runs (``fig2``, unless ``ours_too`` is False) and from the paper's
    numbers (``fig2_paper``): same colour scale, same Params range."""
    ours, paper = fig2_panels(td)
    if not ours_too:
        ours = {}
    flops = _flops_range(ours, paper)
    xlim = x_range(ours, paper)
    written = []
    if ours:
        title = f"Accuracy vs parameters: our runs (profile {td.profile})"
        if set(td.datasets) - set(PAPER_DATASETS):
            title += "\nsynthetic data: not comparable to the paper"
        written += draw(ours, Path(out_dir) / stem, title, flops, xlim)
    if paper:
        written += draw(paper, Path(out_dir) / f"{stem}_paper", "Accuracy vs parameters: the paper's Table 1",
                        flops, xlim)
    return written
