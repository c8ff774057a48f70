"""Fig. 2 as one would publish it: no label on another label or on a point, ticks that never collide,
panels printed at the size they are drawn."""

import itertools

import numpy as np
import pytest

from study.report.figure import (
    LABEL_GID,
    TEXT_WIDTH_IN,
    Point,
    figure_width,
    latex_width,
    make_figure,
    points_from_paper,
    x_range,
)


def _boxes(fig):
    """Per panel: the label boxes, the marker boxes and the panel box, in display pixels."""
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_gid() == LABEL_GID]
        if not labels:
            continue
        label_boxes = [t.get_window_extent(renderer) for t in labels]
        markers = []
        for collection in ax.collections:
            if not hasattr(collection, "get_sizes"):  # error bars
                continue
            offsets = ax.transData.transform(collection.get_offsets())
            radius = np.sqrt(collection.get_sizes()[0]) / 2 * renderer.points_to_pixels(1.0)
            markers += [(x - radius, y - radius, x + radius, y + radius) for x, y in offsets]
        out.append((ax, labels, label_boxes, markers, ax.get_window_extent(renderer)))
    return out


def _overlap(a, b) -> bool:
    a = (a.x0, a.y0, a.x1, a.y1) if hasattr(a, "x0") else a
    b = (b.x0, b.y0, b.x1, b.y1) if hasattr(b, "x0") else b
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def assert_readable(fig, n_points: dict[str, int]):
    panels = _boxes(fig)
    assert {ax.get_title(): len(labels) for ax, labels, *_ in panels} == n_points  # every model labelled
    for ax, labels, boxes, markers, frame in panels:
        for (ta, a), (tb, b) in itertools.combinations(zip(labels, boxes), 2):
            assert not _overlap(a, b), f"{ax.get_title()}: '{ta.get_text()}' overlaps '{tb.get_text()}'"
        for text, box in zip(labels, boxes):
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, \
                f"{ax.get_title()}: '{text.get_text()}' leaves the panel"
            hit = [m for m in markers if _overlap(box, m)]
            assert not hit, f"{ax.get_title()}: '{text.get_text()}' covers a point"
    assert_ticks_apart(fig)


def assert_ticks_apart(fig):
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        for labels, ticks, (lo, hi) in ((ax.get_xticklabels(), ax.get_xticks(), ax.get_xlim()),
                                        (ax.get_yticklabels(), ax.get_yticks(), ax.get_ylim())):
            shown = [t.get_window_extent(renderer) for t, v in zip(labels, ticks)
                     if t.get_visible() and t.get_text() and min(lo, hi) <= v <= max(lo, hi)]
            for a, b in itertools.combinations(shown, 2):
                assert not _overlap(a, b), f"tick labels touch in panel '{ax.get_title()}'"
        assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))  # minor ticks are never labelled


def paper_panels():
    return {"ISIC 2017": points_from_paper("isic2017"), "ISIC 2018": points_from_paper("isic2018")}


def test_the_papers_dense_isic2017_cluster_is_labelled_without_overlap():
    panels = paper_panels()
    fig = make_figure(panels, "the paper", (0.01, 70))
    assert_readable(fig, {k: len(v) for k, v in panels.items()})
    assert {len(v) for v in panels.values()} == {16}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_our_runs_around_the_papers_numbers_are_labelled_without_overlap(seed):
    rng = np.random.default_rng(seed)
    panels = {name: [Point(p.name, p.params_m, p.dsc + rng.normal(0, 0.6), abs(rng.normal(0.7, 0.4)), p.gflops)
                     for p in points] for name, points in paper_panels().items()}
    fig = make_figure(panels, "ours", (0.01, 70), x_range(panels, paper_panels()))
    assert_readable(fig, {k: len(v) for k, v in panels.items()})


def test_one_panel_of_synthetic_runs_in_a_narrow_range():
    points = [Point("UltraLBM-UNet (Ours)", 0.034, 88.1, 1.6, 0.059),
              Point("UltraLBM-UNet-T (Ours)", 0.011, 86.0, 1.2, 0.019)]
    fig = make_figure({"Synthetic": points}, "ours", (0.01, 0.1), x_range({"Synthetic": points}))
    assert_readable(fig, {"Synthetic": 2})
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_visible() and t.get_text()]
    assert "0.01" in ticks and "0.1" in ticks  # plain decades, not 2×10⁻² beside 3×10⁻²


def test_a_single_point_panel_has_ticks_that_do_not_collide():
    points = [Point("UltraLBM-UNet (Ours)", 0.034, 88.1, 1.6, 0.059)]
    fig = make_figure({"Synthetic": points}, "ours", (0.01, 0.1), (0.02, 0.08))
    assert_readable(fig, {"Synthetic": 1})
    assert [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_visible()] == ["0.02", "0.05"]


def test_panels_are_printed_at_the_size_they_are_drawn():
    assert figure_width(2) <= TEXT_WIDTH_IN * 1.01  # two panels fit the report's page at their own size
    assert latex_width(2) == "1.000\\linewidth"
    one = float(latex_width(1).split("\\")[0])
    assert one == pytest.approx(figure_width(1) / TEXT_WIDTH_IN, abs=1e-3) and one < 0.6  # same panel size


def test_a_name_with_no_room_becomes_a_number_with_a_key():
    long = "A model whose name is far too long to fit anywhere inside the panel, however the labels are arranged"
    points = [Point(long, 0.05, 87.0, 0.3, 0.06), Point("U-Net", 7.8, 86.2, 0.8, 13.7),
              Point("UltraLBM-UNet (Ours)", 0.034, 88.8, 0.4, 0.06)]
    fig = make_figure({"ISIC 2017": points}, "t", (0.01, 70), (0.005, 100))
    ax = fig.axes[0]
    labels = sorted(t.get_text() for t in ax.texts if t.get_gid() == LABEL_GID)
    assert labels == ["1", "U-Net", "UltraLBM-UNet (Ours)"]
    assert ax.get_xlabel() == f"Params (M, log scale)\n1: {long}"
    assert_readable(fig, {"ISIC 2017": 3})
