"""The report's tables from a store of constructed records with known values.

Golden LaTeX: ``tests/golden/report/``. After an intended change of the
output, regenerate with ``STUDY_REGEN_GOLDEN=1 python -m pytest tests/report/test_report_tables.py``
and review the diff before committing it.
"""

import difflib
import os

import pytest
from conftest import REPO_ROOT

from study.errors import ConfigError
from study.report.build import parse_tables
from study.report.collect import collect_table
from study.report.counting import fill_counted
from study.report.format import rank_marks
from study.report.synthetic import write_run
from study.report.tables import render_csv, render_latex, render_markdown, render_table
from study.store.runs import Store
from study.variants import load_tables

GOLDEN = REPO_ROOT / "tests" / "golden" / "report"
TABLES = load_tables()

# Table 3 under the paper profile (ISIC 2017): per row, the pooled DSC per seed (the IoU follows
# from the same counts: IoU = DSC / (2 - DSC)), params, GMACs.
KNOWN = {
    "t3-single-direction": ([0.8800, 0.8810, 0.8790], 34_166, 0.0587),
    "t3-unshared": ([0.8860, 0.8860, 0.8860], 43_250, 0.0591),
    "t3-self-attention": ([0.8850], 28_100, 0.0589),
    # t3-2dw-1mamba-id: no runs at all
    # t3-2dw-2mamba: one failed run, nothing completed
    "t3-1dw-3mamba": ([0.8750, 0.8760, 0.8740], 34_400, 0.0612),
    "t3-2id-2mamba": ([0.8770, 0.8780], 31_000, 0.0605),  # + seed 2 interrupted
    "t3-ours": ([0.8870, 0.8878, 0.8886], 34_166, 0.0587),
}


def known_store(root) -> Store:
    store = Store(root)
    table = TABLES["table3"]
    for row_id, (seeds, params, gmacs) in KNOWN.items():
        for seed, dsc in enumerate(seeds):
            write_run(store, table.row(row_id), "isic2017", seed, "paper", dsc=dsc, params=params, gmacs=gmacs)
    write_run(store, table.row("t3-2dw-2mamba"), "isic2017", 0, "paper", status="failed",
              reason="RunFailed: non-finite loss at epoch 12")
    write_run(store, table.row("t3-2id-2mamba"), "isic2017", 2, "paper", status="interrupted",
              reason="stopped after epoch 40 of 300")
    return store


@pytest.fixture(scope="module")
def table3(tmp_path_factory):
    td = collect_table(TABLES["table3"], known_store(tmp_path_factory.mktemp("store")), "auto")
    fill_counted([td])  # Params and FLOPs from the models (the records' own figures above never reach a table)
    return td


def _line(latex: str, name: str) -> str:
    return next(line for line in latex.splitlines() if line.startswith(name + " &"))


def test_golden_latex(table3):
    rendered = render_latex(table3)
    golden = GOLDEN / "table3_paper.tex"
    if os.environ.get("STUDY_REGEN_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered)
    expected = golden.read_text()
    diff = "".join(difflib.unified_diff(expected.splitlines(True), rendered.splitlines(True),
                                        str(golden), "rendered"))
    assert rendered == expected, (
        f"the rendered Table 3 differs from {golden}.\nIf the change is intended, regenerate it with\n"
        f"  STUDY_REGEN_GOLDEN=1 python -m pytest tests/report/test_report_tables.py\nand review the diff.\n{diff}")


def test_auto_profile_picks_the_paper_runs(table3):
    assert table3.profile == "paper" and table3.datasets == ("isic2017",)


def test_mean_std_and_marks_on_the_right_cells(table3):
    latex = render_latex(table3)
    # Params, FLOPs, IoU, DSC (the paper's column order for the ablations)
    ours = _line(latex, r"DWConv + 2 Bi-Mamba + Identity (Ours)")
    assert r"\textbf{79.82 $\pm$ 0.13}" in ours  # IoU: 0.29 above the next mean, more than either std
    assert r"\textbf{88.78 $\pm$ 0.08}" in ours  # DSC: 0.18 above the next, more than either std
    unshared = _line(latex, "Bi-Mamba (Unshared Weights)")
    assert r"& 88.60 $\pm$ 0.00 \\" in unshared  # second, but next to a one-run 88.50: not marked
    assert r"& 79.53 $\pm$ 0.00 &" in unshared
    attention = _line(latex, "Bi-Self-Attention")
    assert r"& 88.50$^{n=1}$ \\" in attention  # one seed: no ±, the count shown, never marked
    assert r"\textbf{0.028}" in attention  # fewest params, no other row at 0.028: bold (lower is better)
    assert "& 0.059 &" in attention  # FLOPs 0.059 is printed by four rows: no mark
    assert r"\underline{0.031}" in _line(latex, "2 Identity + 2 Bi-Mamba")  # second fewest params, alone
    single = _line(latex, "Single-Direction Mamba")
    assert "88.00 $\\pm$ 0.10" in single and r"\textbf" not in single and r"\underline" not in single
    assert latex.count(r"\underline") == 1  # 0.034 is printed by three rows: never underlined


def test_gaps_and_failed_runs(table3):
    latex = render_latex(table3)
    # no completed run: Params and FLOPs counted from the model (*), no metrics
    assert _line(latex, "2 DWConv + 1 Bi-Mamba + Identity").endswith("0.037$^*$ & 0.059$^*$ & -- & -- \\\\")
    assert _line(latex, "2 DWConv + 2 Bi-Mamba").endswith("0.037$^*$ & 0.059$^*$ & -- & -- \\\\")
    assert "2 DWConv + 2 Bi-Mamba (ISIC 2017, seed 0): failed: RunFailed: non-finite loss at epoch 12" in latex
    assert "2 Identity + 2 Bi-Mamba (ISIC 2017, seed 2): interrupted: stopped after epoch 40 of 300" in latex
    assert "$^{n=2}$" in _line(latex, "2 Identity + 2 Bi-Mamba")


def test_booktabs_and_caption(table3):
    latex = render_latex(table3)
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert latex.count(rule) == 1
    assert r"\begin{tabular}{lcccc}" in latex and "|" not in latex
    caption = next(line for line in latex.splitlines() if line.startswith(r"\caption{"))
    assert "(ISIC 2017)" in caption and "ddof = 1" in caption and "n = 3 seeds" in caption
    assert "Profile paper" in caption


def test_markdown_and_csv(table3):
    md = render_markdown(table3)
    assert "| Bi-Self-Attention | **0.028** | 0.059 | 79.37 (n=1) | 88.50 (n=1) |" in md
    assert "| 2 DWConv + 1 Bi-Mamba + Identity | 0.037* | 0.059* | – | – |" in md
    assert "- 2 DWConv + 2 Bi-Mamba (ISIC 2017, seed 0): failed: RunFailed" in md
    csv_text = render_csv(table3)
    header, *lines = csv_text.splitlines()
    assert "isic2017_dsc_std" in header and "isic2017_dsc_n" in header
    ours = next(line for line in lines if ",t3-ours," in line)
    assert ",88.78," in ours and ours.split(",")[3] == "DWConv + 2 Bi-Mamba + Identity (Ours)"


def test_rank_marks_use_printed_values():
    # exact quantities: a best printed by two rows is no best
    assert rank_marks(["88.78", "88.78", "88.50", None, "87.00"], True) == [None, None, None, None, None]
    # means: 88.779 and 88.781 print alike, so they tie whatever their raw values
    assert rank_marks(["88.78", "88.78", "80.00"], True, ["0.01", "0.01", "0.01"]) == [None, None, None]
    assert rank_marks(["0.034", "0.028", "0.031"], False) == [None, "best", "second"]
    assert rank_marks(["0.060", "0.060"], False) == [None, None]  # all equal: no best
    assert rank_marks([None, "1.00"], True) == [None, None]


def test_smoke_store_renders_synthetic_columns(tmp_path):
    store = Store(tmp_path)
    row = TABLES["table1"].row("ultralbm")
    for seed, dsc in enumerate((0.80, 0.82)):
        write_run(store, row, None, seed, "smoke", dsc=dsc)
    td = collect_table(TABLES["table1"], store, "auto")
    assert td.profile == "smoke" and td.datasets == ("synthetic",) and td.external == ()
    latex = render_table(td, "latex")
    assert r"\multicolumn{2}{c}{Synthetic}" in latex
    assert "not comparable to the paper" in latex
    assert "81.00 $\\pm$ 1.41" in _line(latex, "UltraLBM-UNet (Ours)")


def test_table1_pools_ph2_over_both_training_sets(tmp_path):
    store = Store(tmp_path)
    row = TABLES["table1"].row("ultralbm")
    ph2 = {"isic2017": (0.90, 0.91, 0.92), "isic2018": (0.93, 0.94, 0.95)}
    for dataset, values in ph2.items():
        for seed, value in enumerate(values):
            write_run(store, row, dataset, seed, "paper", dsc=0.88,
                      external={"ph2": {"dsc": value, "iou": value / (2 - value)}})
    td = collect_table(TABLES["table1"], store, "paper")
    assert td.external == ("ph2",)
    cell = td.row("ultralbm").cells["ph2_dsc"]
    assert cell.n == 6 and cell.mean == pytest.approx(92.5)
    latex = render_latex(td)
    assert "92.50 $\\pm$ 1.87" in _line(latex, "UltraLBM-UNet (Ours)")
    assert r"\multicolumn{2}{c}{PH2}" in latex and r"\cmidrule(lr){6-7}" in latex
    assert "n = 6 runs" in latex  # the caption says what PH2 pools
    assert td.row("ultralbm").cells["isic2017_dsc"].n == 3


def test_parse_tables():
    assert parse_tables("1,3,7", TABLES) == ["table1", "table3", "table7"]
    assert parse_tables("table2, 2", TABLES) == ["table2"]
    assert parse_tables(None, TABLES) == list(TABLES)
    with pytest.raises(ConfigError, match=r"unknown table '9'; available: 1, 2, 3, 4, 5, 6, 7"):
        parse_tables("1,9", TABLES)
