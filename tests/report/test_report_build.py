"""The whole report on a constructed store: files, figure, comparison, a real pdflatex compile, the CLI."""

import subprocess
import sys

import pytest
from conftest import REPO_ROOT, require_executable
from PIL import Image

from study.report.build import build_report, compile_pdf
from study.report.collect import collect_table
from study.report.compare import DOCUMENTED, NO_RUNS, ONE_RUN, OUTSIDE, compare_table
from study.report.compare import render_markdown as compare_markdown
from study.report.counting import fill_counted
from study.report.synthetic import demo_store, write_run
from study.store.runs import Store
from study.variants import load_tables

TABLES = load_tables()
SELECTED = ["table1", "table3", "table6"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    store = demo_store(root, {t: TABLES[t] for t in SELECTED}, "smoke", images=24)
    return build_report(store, tables=SELECTED, n_boot=200)


@pytest.mark.slow
def test_files_written_in_the_default_folder(report):
    names = {p.name for p in report.files}
    assert report.out_dir.name == "report" and report.out_dir.parent.name.startswith("store")
    assert {"table1.tex", "table3.tex", "table6.tex", "report.tex", "compare.tex", "compare.md",
            "audit.tex", "audit.md", "fig2.png", "fig2.pdf", "fig2_paper.png", "fig2_paper.pdf"} <= names
    assert all(p.is_file() and p.stat().st_size > 0 for p in report.files)
    text = (report.out_dir / "report.tex").read_text()
    for t in SELECTED:
        assert rf"\input{{{t}}}" in text
    assert r"\input{table2}" not in text
    assert "Runs that did not complete" in text and "non-finite loss" in text  # the demo's failed run


@pytest.mark.slow
def test_figures_open_as_images(report):
    for name in ("fig2.png", "fig2_paper.png"):
        with Image.open(report.out_dir / name) as image:
            image.verify()
        with Image.open(report.out_dir / name) as image:
            assert image.format == "PNG" and image.size[0] > 400
    for name in ("fig2.pdf", "fig2_paper.pdf"):
        assert (report.out_dir / name).read_bytes()[:5] == b"%PDF-"
    # each figure in its own float, printed at the size it is drawn: a panel is as wide in both
    text = (report.out_dir / "report.tex").read_text()
    assert "0.49\\linewidth" not in text and text.count("{fig2") == 2
    assert r"\includegraphics[width=0.550\linewidth,height=0.36\textheight,keepaspectratio]{fig2.pdf}" in text
    assert r"\includegraphics[width=1.000\linewidth,height=0.36\textheight,keepaspectratio]{fig2_paper.pdf}" in text
    assert r"\renewcommand{\thefigure}{2a}" in text and r"\renewcommand{\thefigure}{2b}" in text


def test_report_compiles_with_pdflatex(report):
    require_executable("pdflatex")
    pdf = compile_pdf(report.out_dir / "report.tex", timeout=120)
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000
    log = (report.out_dir / "report.log").read_text(errors="replace")
    assert "Overfull \\hbox" not in log  # nothing runs off the page


def test_comparison_flags(tmp_path):
    store = Store(tmp_path)
    table = TABLES["table3"]
    ours = table.row("t3-ours")  # paper: IoU 79.82, DSC 88.78, 0.034 M, 0.060 G
    for seed, dsc in enumerate((0.8870, 0.8880, 0.8890)):  # 88.80 ± 0.10: 88.78 inside
        write_run(store, ours, "isic2017", seed, "paper", dsc=dsc)
    for seed, dsc in enumerate((0.8000, 0.8010, 0.8020)):  # far below the paper's 88.05 / 78.65
        write_run(store, table.row("t3-single-direction"), "isic2017", seed, "paper", dsc=dsc)
    write_run(store, table.row("t3-unshared"), "isic2017", 0, "paper", dsc=0.88, params=1)  # an edited count
    write_run(store, table.row("t3-2dw-2mamba"), "isic2017", 0, "paper", dsc=0.88)
    td = collect_table(table, store, "paper")
    fill_counted([td])  # every row's Params and FLOPs from its model, never from a record
    cells = {(c.row_id, c.column.our_key): c for c in compare_table(td)}
    assert cells[("t3-ours", "isic2017_dsc")].flag == ""
    assert cells[("t3-ours", "isic2017_dsc")].diff == pytest.approx(0.02)
    assert cells[("t3-single-direction", "isic2017_iou")].flag == OUTSIDE
    assert cells[("t3-ours", "params_m")].flag == "" and cells[("t3-ours", "flops_g")].flag == ""
    assert cells[("t3-unshared", "isic2017_dsc")].flag == ONE_RUN
    # The record's edited count (1) never reaches a table: its model counts 43,286, the paper's 0.043.
    assert cells[("t3-unshared", "params_m")].ours.mean == pytest.approx(0.043286)
    assert cells[("t3-unshared", "params_m")].flag == ""
    assert cells[("t3-2dw-2mamba", "params_m")].flag == DOCUMENTED  # 36,838 against the printed 0.043
    assert cells[("t3-1dw-3mamba", "isic2017_dsc")].flag == NO_RUNS
    md = compare_markdown([td])
    line = next(line for line in md.splitlines() if line.startswith("| Single-Direction Mamba | ISIC 2017 IoU"))
    assert line.startswith("| Single-Direction Mamba | ISIC 2017 IoU (%) | 78.65 | 66.81 ± 0.14 (n=3) | -11.84 | "
                           "<0.0001 (") and line.endswith(f"| **{OUTSIDE}** |"), line
    assert cells[("t3-ours", "isic2017_dsc")].p > 0.5  # 88.80 ± 0.10 over three seeds against the paper's 88.78
    assert len(cells) == 8 * 4  # every printed cell of the paper's Table 3


def test_partial_and_empty_stores_render(tmp_path):
    result = build_report(Store(tmp_path / "empty"), tmp_path / "out", ["table6"], fmt="markdown", figure=False,
                          n_boot=50)
    assert result.notes and "holds no runs" in result.notes[0]
    assert not (tmp_path / "out" / "table6.md").exists()  # no runs: the table is named, not printed
    complexity = (tmp_path / "out" / "complexity.md").read_text()
    assert "| 6 | w/o | 0.034* | 0.034 | 0.059* | 0.060 | match |" in complexity  # counted from the models
    assert "Table 6 has no runs under profile paper" in (tmp_path / "out" / "report.md").read_text()
    assert "Cannot be judged" in (tmp_path / "out" / "audit.md").read_text()
    assert (tmp_path / "out" / "report.md").is_file()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "study", "report", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300)


@pytest.mark.slow
def test_cli_prints_the_folder_and_files(tmp_path):
    store = Store(tmp_path)
    for seed in (0, 1):
        write_run(store, TABLES["table6"].row("t6-shared"), None, seed, "smoke", dsc=0.85 + seed / 100)
    out = _cli("--results", str(tmp_path), "--tables", "6", "--format", "csv", "--no-figure", "--bootstrap", "50")
    assert out.returncode == 0, out.stderr
    assert "Table 6: profile smoke, 2 seed(s) per cell" in out.stdout
    assert "  table6.csv" in out.stdout and out.stdout.rstrip().endswith(f"report folder: {tmp_path / 'report'}")
    assert (tmp_path / "report" / "table6.csv").read_text().count("\n") == 4


@pytest.mark.slow
def test_cli_unknown_table_is_one_line():
    out = _cli("--tables", "1,9", "--results", "/nonexistent")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --tables: unknown table '9'; available: 1, 2, 3, 4, 5, 6, 7, R"


def test_seeds_option_keeps_tables_and_audit_on_the_same_runs(tmp_path):
    store = Store(tmp_path)
    t6 = load_tables()["table6"]
    for seed in range(4):
        for row in t6.rows:
            write_run(store, row, None, seed, "smoke", dsc=0.8 + 0.01 * seed)
    all_seeds = build_report(store, tmp_path / "all", ["table6"], profile="smoke", figure=False, n_boot=50)
    three = build_report(store, tmp_path / "three", ["table6"], profile="smoke", figure=False, n_boot=50,
                         seeds=[0, 1, 2])
    assert all_seeds.tables[0].typical_n("metric") == 4
    assert three.tables[0].typical_n("metric") == 3
    assert "n = 3 seeds" in (tmp_path / "three" / "table6.tex").read_text()
    report_tex = (tmp_path / "three" / "report.tex").read_text()
    assert "\\usepackage[T1]{fontenc}" in report_tex and "\\setcounter{table}{5}" in report_tex


@pytest.mark.slow
def test_cli_names_the_files_an_earlier_report_left(tmp_path):
    store = Store(tmp_path)
    for seed in (0, 1):
        write_run(store, TABLES["table6"].row("t6-none"), None, seed, "smoke", dsc=0.85 + seed / 100)
        write_run(store, TABLES["table3"].row("t3-single-direction"), None, seed, "smoke", dsc=0.8)
    common = ("--results", str(tmp_path), "--format", "csv", "--no-figure", "--no-audit")
    first = _cli(*common, "--tables", "3,6,7")
    assert first.returncode == 0, first.stderr
    assert "Table 7: profile smoke, no runs (not shown in full" in first.stdout
    assert "Table 6: profile smoke, 2 seed(s) per cell" in first.stdout
    second = _cli(*common, "--tables", "6")
    assert second.returncode == 0, second.stderr
    assert (f"note: removed 1 file(s) an earlier report wrote in {tmp_path / 'report'} and this one did not: "
            "table3.csv") in second.stdout
    assert not (tmp_path / "report" / "table3.csv").exists() and (tmp_path / "report" / "table6.csv").is_file()
