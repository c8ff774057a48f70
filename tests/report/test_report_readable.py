"""What a new user meets in the report: marks that mean something, Params and FLOPs without runs, tables
without runs shown compactly and said once, a short comparison, a compact audit, a tidy output folder.

The smoke-like store is what ``study run table3 --seeds 3 --profile smoke`` leaves (constructed, nothing
trained); Params and FLOPs are counted by a stand-in counter except in one test that counts a real model.
"""

import csv
import io
import json

import pytest

from study.report import counting
from study.report.audit import audit_tables, unjudged_lines
from study.report.audit import render_markdown as audit_markdown
from study.report.build import MANIFEST, build_report
from study.report.collect import collect_table, collect_tables
from study.report.compare import NOT_COMPARABLE
from study.report.compare import render_csv as compare_csv
from study.report.compare import render_markdown as compare_markdown
from study.report.counting import CountedCell, fill_counted
from study.report.format import BEST, SECOND, rank_marks
from study.report.synthetic import demo_store, write_run
from study.report.tables import caption_sentences, render_csv, render_latex, render_markdown, render_table
from study.store.runs import Store
from study.variants import load_tables

TABLES = load_tables()


def fake_counter(row):
    """Params and GMACs from the row id: distinct, instant, recognisable."""
    return 10_000 + 7 * sum(map(ord, row.id)), 0.05 + (sum(map(ord, row.id)) % 97) / 10_000


@pytest.fixture(autouse=True)
def instant_counting(monkeypatch, tmp_path):
    """No model is built in these tests (one test counts a real model on purpose); the cache is the test's own."""
    monkeypatch.setattr(counting, "count_row", fake_counter)
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory):
    """What `study run table3 --seeds 3 --profile smoke` leaves: Table 3's runs, nothing else."""
    root = tmp_path_factory.mktemp("smoke")
    return demo_store(root, {"table3": TABLES["table3"]}, "smoke", images=12, failed=0)


# ---------------------------------------------------------------- marks

def test_a_value_seven_rows_share_is_never_underlined():
    params = ["0.034"] * 7 + ["0.028"]
    assert rank_marks(params, higher_is_better=False) == [None] * 7 + [BEST]
    assert rank_marks(["0.060", "0.060", "0.059"], False) == [None, None, BEST]
    assert rank_marks(["0.028", "0.031", "0.034", "0.034"], False) == [BEST, SECOND, None, None]
    assert rank_marks(["0.028", "0.028", "0.031"], False) == [None, None, None]  # tied best: no best


def test_means_are_marked_only_beyond_the_larger_std():
    # 85.78 vs 85.76 with stds of ~1.2: nothing to separate them
    assert rank_marks(["85.78", "85.76", "80.00"], True, ["1.21", "1.18", "0.50"]) == [None, None, None]
    # apart by more than the larger std: best, then second (apart from the third too)
    assert rank_marks(["88.78", "87.50", "86.00"], True, ["0.08", "0.10", "0.20"]) == [BEST, SECOND, None]
    # best apart, second not apart from the third: best only
    assert rank_marks(["88.78", "87.50", "87.45"], True, ["0.08", "0.10", "0.20"]) == [BEST, None, None]
    # exactly the larger std is not "more than"
    assert rank_marks(["88.00", "87.50", "80.00"], True, ["0.50", "0.10", "0.10"]) == [None, None, None]
    # a one-run cell (no std) at the top or second: nothing can be said
    assert rank_marks(["89.00", "88.00", "80.00"], True, [None, "0.10", "0.10"]) == [None, None, None]
    assert rank_marks(["89.00", "88.00", "80.00"], True, ["0.10", None, "0.10"]) == [None, None, None]
    # two rows only: a best, never a "second of two"
    assert rank_marks(["89.00", "88.00"], True, ["0.10", "0.10"]) == [BEST, None]


def test_caption_states_the_marking_rule(tmp_path):
    store = Store(tmp_path)
    for seed in range(3):
        for row in TABLES["table6"].rows:
            write_run(store, row, None, seed, "smoke", dsc=0.80 + 0.01 * seed)
    td = collect_table(TABLES["table6"], store, "smoke")
    caption = " ".join(caption_sentences(td))
    assert "differs from the next-ranked mean by more than the larger of the two stds" in caption
    assert "(a one-run cell, without std, never)" in caption
    assert "when no other row prints the same value" in caption
    assert "italic: second best" in " ".join(caption_sentences(td, markdown=True))
    latex = render_latex(td)
    assert r"\textbf" not in latex.split(r"\midrule")[1] and r"\underline" not in latex  # all rows alike


# ---------------------------------------------------------------- (Ours)

def test_the_reference_row_always_says_ours(tmp_path):
    td = collect_table(TABLES["table6"], Store(tmp_path), "smoke")
    assert "| w (Ours) |" in render_markdown(td)
    assert "\nw (Ours) &" in render_latex(td)
    assert "\nStage-wise &" in render_latex(td)
    assert "(Ours) (Ours)" not in render_latex(collect_table(TABLES["table3"], Store(tmp_path), "smoke"))
    store = Store(tmp_path / "runs")
    for row in TABLES["table6"].rows:
        for seed, dsc in ((0, 0.80), (1, 0.81)):  # two seeds: a between-seed comparison exists
            write_run(store, row, None, seed, "smoke", dsc=dsc)
    audits = audit_tables([collect_table(TABLES["table6"], store, "smoke")], store, n_boot=20)
    assert audits[0].reference_name == "w (Ours)"
    assert "Ours: w (Ours), 2 completed seed(s)." in audit_markdown(audits)


# ---------------------------------------------------------------- Params and FLOPs without runs

def test_params_and_flops_are_counted_for_rows_without_runs(tmp_path):
    td = collect_table(TABLES["table3"], Store(tmp_path), "smoke")
    assert all("params_m" not in r.cells for r in td.rows)
    assert fill_counted([td]) == len({counting.model_key(r.row) for r in td.rows})
    ours = td.row("t3-ours")
    assert isinstance(ours.cells["params_m"], CountedCell)
    assert ours.cells["params_m"].mean == pytest.approx(fake_counter(ours.row)[0] / 1e6)
    csv_text = render_csv(td)
    assert "params_m_source" in csv_text.splitlines()[0] and ",counted," in csv_text


def test_counted_cells_are_marked_beside_measured_ones(tmp_path):
    store = Store(tmp_path)
    for seed in range(3):
        write_run(store, TABLES["table3"].row("t3-single-direction"), None, seed, "smoke", dsc=0.8)
    td = collect_table(TABLES["table3"], store, "smoke")
    fill_counted([td])
    latex = render_latex(td)
    single = next(line for line in latex.splitlines() if line.startswith("Single-Direction Mamba &"))
    unshared = next(line for line in latex.splitlines() if line.startswith("Bi-Mamba (Unshared Weights) &"))
    # its runs recorded the real count (write_run counts the model), and the table counts the same model
    assert "& 0.034 &" in single and "$^*$" not in single  # counted from its model, unmarked: it has runs
    assert "$^*$" in unshared  # counted
    caption = " ".join(caption_sentences(td))
    assert "counted from each row's model, as its runs count it; *: a row without a completed run" in caption


def test_counts_are_cached_and_recounted_when_the_code_changes(tmp_path, monkeypatch):
    calls = []

    def counter(row):
        calls.append(row.id)
        return fake_counter(row)

    td = collect_table(TABLES["table6"], Store(tmp_path), "smoke")
    fill_counted([td], counter)
    assert len(calls) == 3
    cached = json.loads(counting.cache_path().read_text())
    assert cached["code"] == counting.code_digest() and len(cached["models"]) == 3
    fill_counted([collect_table(TABLES["table6"], Store(tmp_path), "smoke")], counter)
    assert len(calls) == 3  # all three from the cache
    monkeypatch.setattr(counting, "code_digest", lambda: "another version of the models")
    fill_counted([collect_table(TABLES["table6"], Store(tmp_path), "smoke")], counter)
    assert len(calls) == 6


def test_a_real_model_is_counted_as_its_runs_count_it(monkeypatch):
    from study.complexity import count_params, macs_thop

    monkeypatch.undo()  # the real counter
    row = TABLES["table6"].row("t6-none")
    params, gmacs = counting.count_row(row)
    model = row.build_model()
    assert params == count_params(model) == 34_165
    assert gmacs == pytest.approx(macs_thop(model) / 1e9) and gmacs == pytest.approx(0.0587, abs=5e-4)


# ---------------------------------------------------------------- which tables have runs

def test_a_smoke_report_says_once_which_tables_have_runs(smoke_store, tmp_path):
    result = build_report(smoke_store, tmp_path / "out", n_boot=20, figure=False)
    cover = result.coverage
    assert cover["table3"].own and not cover["table3"].compact
    for t in ("table1", "table2", "table4", "table5", "table6"):
        assert cover[t].compact and cover[t].has_runs and cover[t].shared_with == ("3",), t
    assert cover["table7"].compact and not cover["table7"].has_runs
    summary = " ".join(result.summary)
    assert summary.startswith("Tables with runs: Table 3 (every row; profile smoke, Synthetic, 3 seeds per cell).")
    assert ("Not shown in full (every row's Params and FLOPs are in the complexity table): Tables 1, 2, 4, 5, 6 "
            "and R hold only their “(Ours)” row: the same runs as Table 3, shown there; Table 7 has no runs under "
            "profile smoke.") in summary
    report = (tmp_path / "out" / "report.tex").read_text()
    assert report.count("Tables with runs:") == 1 and "Table 2: profile" not in report


def test_only_tables_with_runs_in_full_and_one_complexity_table(smoke_store, tmp_path):
    build_report(smoke_store, tmp_path / "out", n_boot=20, figure=False)
    out = tmp_path / "out"
    assert not (out / "table7.tex").exists() and not (out / "table1.tex").exists()  # named once, not repeated
    t3 = (out / "table3.tex").read_text()
    assert r"\begin{tabular}{lcccc}" in t3 and "IoU" in t3  # the table with runs, in full
    complexity = (out / "complexity.md").read_text()
    lines = [line for line in complexity.splitlines() if line.startswith("| ") and not line.startswith("| Table")]
    names = {line.split(" | ")[1] for line in lines}
    assert {"U-Net", "w/o", "Full Strategy (Ours)", "UltraLBM-UNet-T (Ours)"} <= names
    for line in lines:  # every row of every table: counted (*) where it has no run, beside the paper's value
        assert "–" not in line.split(" | ")[2], line
    ours = next(line for line in lines if line.startswith("| 3 | DWConv + 2 Bi-Mamba + Identity (Ours) |")).split(" | ")
    assert ours[2] != "–" and not ours[2].endswith("*")  # a row with runs: counted from its model, no *
    t7 = next(line for line in lines if line.startswith("| 7 | w/o Distill |")).split(" | ")
    assert t7[2].endswith("*") and t7[3] == "0.011" and t7[5] == "0.019"  # counted (fake counts here), the paper's
    assert "\\input{complexity}" in (out / "report.tex").read_text()


def test_a_smoke_table1_caption_names_both_datasets(tmp_path):
    store = Store(tmp_path)
    for seed in range(2):
        write_run(store, TABLES["table1"].row("ultralbm"), None, seed, "smoke", dsc=0.8)
    td = collect_table(TABLES["table1"], store, "smoke")
    caption = caption_sentences(td)[0]
    assert caption == ("Comparison on ISIC 2017, ISIC 2018 and PH2, and model complexity (in the paper: ISIC 2017, "
                       "ISIC 2018 and PH2; these runs: Synthetic).")
    assert render_table(td, "latex").count(r"\multicolumn{2}{c}{Synthetic}") == 1


# ---------------------------------------------------------------- reproduced vs paper

def test_smoke_runs_are_not_comparable_and_the_comparison_is_short(smoke_store, tmp_path):
    tables = collect_tables(list(TABLES.values()), smoke_store)
    fill_counted(tables)
    lines = [line for line in csv.DictReader(io.StringIO(compare_csv(tables))) if line["table"] == "table3"]
    metrics = [line for line in lines if line["column"].endswith(("_iou", "_dsc"))]
    assert len(metrics) == 16 and {line["flag"] for line in metrics} == {f"{NOT_COMPARABLE} (synthetic)"}
    assert {line["flag"] for line in lines if line["column"] == "params_m"} <= {"", "differs", "documented mismatch"}
    md = compare_markdown(tables)
    assert "| Row |" not in md and md.count("no runs") == 1 and "Nothing to compare" in md
    assert "Tables 1, 2, 3, 4, 5 and 6: not comparable (synthetic)" in md
    assert "Table 7: no runs under profile paper." in md
    assert len(md.splitlines()) < 12


def test_only_rows_with_runs_are_listed(tmp_path, monkeypatch):
    monkeypatch.undo()  # the real counter: the paper's Params and FLOPs are compared with real counts
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    store = Store(tmp_path)
    for seed in range(3):
        write_run(store, TABLES["table3"].row("t3-ours"), "isic2017", seed, "paper", dsc=0.886 + 0.002 * seed)
    td = collect_table(TABLES["table3"], store, "paper")
    fill_counted([td])
    md = compare_markdown([td])
    table_lines = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| Row")]
    assert len(table_lines) == 4  # IoU, DSC, Params, FLOPs of the one row with runs
    assert "4 of 32 cells have our runs; 0 flagged. No runs: “Single-Direction Mamba”, “Bi-Mamba (Unshared" in md


# ---------------------------------------------------------------- audit

def test_audits_that_cannot_be_judged_take_one_line(smoke_store):
    tables = collect_tables([TABLES[t] for t in ("table2", "table3", "table4", "table7")], smoke_store, "smoke")
    audits = audit_tables(tables, smoke_store, n_boot=20)
    assert unjudged_lines(audits) == [
        "Tables 2 and 4 (Synthetic, profile smoke): no other row has a seed-level comparison with ours (two or more "
        "completed seeds on each side).",
        "Table 7 (Synthetic, profile smoke): ours (the reference row) has no completed run.",
    ]
    md = audit_markdown(audits)
    assert md.count("## Table") == 1 and "## Table 3:" in md
    nothing = audit_markdown([a for a in audits if a.table_id != "table3"])
    assert "95% CI" not in nothing and "Cannot be judged: Tables 2 and 4" in nothing


# ---------------------------------------------------------------- the output folder

def test_files_of_an_earlier_report_are_removed_and_named(tmp_path):
    store = Store(tmp_path / "store")
    for seed in range(2):
        write_run(store, TABLES["table6"].row("t6-shared"), None, seed, "smoke", dsc=0.85 + seed / 100)
    out = tmp_path / "out"
    out.mkdir()
    (out / "table5.tex").write_text("% my own notes\n")  # a report-like name no report recorded
    (out / "notes.txt").write_text("mine\n")
    for seed in range(2):  # Tables 3 and 6 each with a row of its own
        write_run(store, TABLES["table3"].row("t3-single-direction"), None, seed, "smoke", dsc=0.8)
        write_run(store, TABLES["table6"].row("t6-none"), None, seed, "smoke", dsc=0.81)
    first = build_report(store, out, ["table3", "table6"], figure=False, n_boot=20, fmt="latex", pdf=False)
    assert {"table3.tex", "table6.tex"} <= set((out / MANIFEST).read_text().split())
    assert first.removed == [] and any("table5.tex" in n and "left alone" in n for n in first.notes)
    second = build_report(store, out, ["table6"], figure=False, n_boot=20, fmt="latex", pdf=False)
    assert second.removed == ["table3.tex"] and not (out / "table3.tex").exists()
    assert any(n.startswith("removed 1 file(s) an earlier report wrote") and "table3.tex" in n for n in second.notes)
    assert (out / "table5.tex").read_text() == "% my own notes\n" and (out / "notes.txt").is_file()
    assert (out / "table6.tex").is_file() and "table3.tex" not in (out / MANIFEST).read_text()
