"""The claims audit on constructed per-image data: it finds a known effect, and none where there is none."""

import numpy as np
import pytest

from study.report.audit import (
    NO_DIFFERENCE,
    NOT_COMPARED,
    OURS_BETTER,
    ROW_BETTER,
    Paired,
    audit_paired,
    audit_table,
    bootstrap_differences,
    holm,
    image_dice_differences,
    render_latex,
    render_markdown,
    seed_differences,
    seed_ttest_p,
    wilcoxon_p,
)
from study.report.collect import collect_table
from study.report.synthetic import counts_for_dice, write_run
from study.store.runs import Store
from study.variants import load_tables

TABLES = load_tables()
IMAGES = 150
SEEDS = (0, 1, 2)
IDS = [f"ISIC_{i:07d}" for i in range(IMAGES)]


def dice_per_seed(shift: float, noise: float, tag: int):
    """Per seed, per image Dice: a shared per-image difficulty, plus ``shift`` and independent noise."""
    rng = np.random.default_rng(1234)
    difficulty = rng.uniform(0.80, 0.95, IMAGES)
    out = []
    for seed in SEEDS:
        own = np.random.default_rng([tag, seed])
        out.append(np.clip(difficulty + shift + noise * own.standard_normal(IMAGES), 0.3, 0.999))
    return out


def paired(shift: float, noise: float = 0.01) -> Paired:
    ref = [counts_for_dice(d) for d in dice_per_seed(0.0, 0.005, tag=1)]
    row = [counts_for_dice(d) for d in dice_per_seed(shift, noise, tag=2)]
    return Paired(SEEDS, tuple(tuple(IDS) for _ in SEEDS), tuple(row), tuple(ref))


def test_known_effect_is_found():
    r = audit_paired(paired(-0.03), n_boot=500)
    assert r.delta_dsc == pytest.approx(-3.0, abs=0.5)
    assert r.ci_dsc[1] < 0 and r.ci_iou[1] < 0 and r.ci_dsc[0] < r.delta_dsc < r.ci_dsc[1]
    assert r.p_wilcoxon < 1e-6


def test_no_effect_finds_none():
    r = audit_paired(paired(0.0), n_boot=500)
    assert abs(r.delta_dsc) < 0.3
    assert r.ci_dsc[0] < 0 < r.ci_dsc[1]
    assert r.p_wilcoxon > 0.05


def test_identical_runs_give_p_one_and_a_zero_interval():
    p = paired(0.0)
    same = Paired(p.seeds, p.ids, p.ref, p.ref)
    r = audit_paired(same, n_boot=200)
    assert r.delta_dsc == 0 and r.ci_dsc == (0.0, 0.0) and r.p_wilcoxon == 1.0 and r.p_ttest is None


def test_pairing_is_by_image_id_not_position():
    p = paired(-0.02)
    order = np.random.default_rng(5).permutation(IMAGES)
    shuffled = Paired(p.seeds, tuple(tuple(np.asarray(ids)[order]) for ids in p.ids),
                      tuple(c[order] for c in p.row), tuple(c[order] for c in p.ref))
    assert np.allclose(np.sort(image_dice_differences(p)), np.sort(image_dice_differences(shuffled)))
    assert np.allclose(seed_differences(p)[0], seed_differences(shuffled)[0])


def test_bootstrap_is_paired_and_reproducible():
    p = paired(-0.01)
    a = bootstrap_differences(p, 300, np.random.default_rng(0))[0]
    b = bootstrap_differences(p, 300, np.random.default_rng(0))[0]
    assert np.array_equal(a, b) and a.shape == (300,)
    # Paired draws: the spread of the difference is far below that of either row alone.
    assert a.std() < 0.01


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_small_tests():
    assert wilcoxon_p(np.zeros(10)) == 1.0
    assert seed_ttest_p(np.array([0.01])) is None
    assert 0 < seed_ttest_p(np.array([-0.010, -0.012, -0.008])) < 0.05


def _audit_store(tmp_path, shifts: dict[str, float]) -> Store:
    """Table 4 (paper profile, ISIC 2017): each row's per-image Dice = ours + its shift."""
    store = Store(tmp_path)
    table = TABLES["table4"]
    ref = dice_per_seed(0.0, 0.005, tag=1)
    for seed in SEEDS:
        write_run(store, table.row("t4-ours"), "isic2017", seed, "paper", counts=counts_for_dice(ref[seed]), ids=IDS)
    for k, (row_id, shift) in enumerate(shifts.items()):
        dice = dice_per_seed(shift, 0.01, tag=10 + k)
        for seed in SEEDS:
            order = np.random.default_rng(seed).permutation(IMAGES)  # files list images in any order
            write_run(store, table.row(row_id), "isic2017", seed, "paper",
                      counts=counts_for_dice(dice[seed])[order], ids=[IDS[i] for i in order])
    return store


def _audit(store):
    td = collect_table(TABLES["table4"], store, "paper")
    (audit,) = audit_table(td, store, n_boot=300)
    return audit, {r.row_id: r for r in audit.rows}


def test_table_audit_finds_the_effect_and_not_the_null(tmp_path):
    audit, rows = _audit(_audit_store(tmp_path, {"t4-4dwconv": -0.03, "t4-single-conv": 0.0}))
    assert rows["t4-4dwconv"].result == OURS_BETTER
    assert rows["t4-single-conv"].result == NO_DIFFERENCE
    assert rows["t4-4dwconv"].n_seeds == 3 and rows["t4-4dwconv"].n_images == IMAGES
    assert rows["t4-4dwconv"].p_holm >= rows["t4-4dwconv"].p_wilcoxon
    assert audit.verdict.startswith(("Not shown", "Not supported"))
    assert audit.low_power


def test_supported_and_contradicted(tmp_path):
    audit, _ = _audit(_audit_store(tmp_path / "a", {"t4-4dwconv": -0.03, "t4-single-conv": -0.02}))
    assert audit.verdict == "Supported: ours is significantly better than every other row."
    audit, rows = _audit(_audit_store(tmp_path / "b", {"t4-4dwconv": -0.03, "t4-single-conv": +0.02}))
    assert rows["t4-single-conv"].result == ROW_BETTER
    assert audit.verdict.startswith("Contradicted: “Single-Branch Conv")


def test_partial_store_is_not_judged_and_renders(tmp_path):
    store = _audit_store(tmp_path, {"t4-4dwconv": -0.03})
    audit, rows = _audit(store)
    assert rows["t4-single-conv"].result == NOT_COMPARED and rows["t4-single-conv"].note == "no completed run"
    assert "Not judged (no paired runs): “Single-Branch Conv" in audit.verdict
    latex, md = render_latex([audit]), render_markdown([audit])
    assert "almost no power" in latex and "almost no power" in md
    assert "not compared: no completed run" in md
    assert "\u2212" not in latex and "Δ" not in latex  # escaped for pdflatex


def test_no_reference_runs(tmp_path):
    store = Store(tmp_path)
    write_run(store, TABLES["table4"].row("t4-4dwconv"), "isic2017", 0, "paper", dsc=0.88)
    audit, rows = _audit(store)
    assert audit.verdict.startswith("Cannot be judged") and rows["t4-4dwconv"].result == NOT_COMPARED
