"""What a researcher expects around the runs: curves and TensorBoard, a report in every format that
adds up, honest verdicts on synthetic data, an HTML page that works in a browser, quick views."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, _missing
from runs import tiny

from study.errors import ConfigError
from study.report.build import build_report
from study.report.synthetic import counts_for_dice, write_run
from study.store.runs import Store
from study.train.run import train_run
from study.variants import load_tables

TABLES = load_tables()


def _cli(*args, cwd=REPO_ROOT):
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


# ------------------------------------------------------------------ curves and TensorBoard


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("tracked"))
    record = train_run(tiny(train={"epochs": 3}), 0, store, progress=False, track="tensorboard")
    return store, record


def test_a_completed_run_draws_its_curves(tracked_run):
    from PIL import Image

    store, record = tracked_run
    with Image.open(store.curves_path(record.key)) as image:
        assert image.format == "PNG" and image.size[0] > 500


def test_tensorboard_events_hold_the_stored_history(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store, record = tracked_run
    events = EventAccumulator(str(store.tensorboard_dir(record.key)))
    events.Reload()
    history = record.details["history"]
    for key in ("train_loss", "selection_dsc", "lr"):
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [h["epoch"] for h in history]
        assert [s.value for s in scalars] == pytest.approx([h[key] for h in history], rel=1e-6)
    assert "config" in events.Tags()["tensors"] or events.Tags()["tensors"]  # the config, as text


def test_an_unknown_tracker_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="--track 'wandb': expected one of none, tensorboard"):
        train_run(tiny(train={"epochs": 1}), 0, Store(tmp_path), progress=False, track="wandb")


# ------------------------------------------------------------------ the report


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory):
    """Table 3 under the smoke profile with per-image counts and histories: what `run table3` leaves."""
    store = Store(tmp_path_factory.mktemp("smoke"))
    table = TABLES["table3"]
    for k, row in enumerate(table.rows):
        for seed in range(3):
            dice = np.clip(0.80 + 0.01 * k - 0.02 * (row.id != table.reference) + 0.005 * seed
                           + 0.03 * np.random.default_rng([k, seed]).standard_normal(20), 0.3, 0.99)
            write_run(store, row, None, seed, "smoke", counts=counts_for_dice(dice),
                      ids=[f"synthetic_{i:06d}" for i in range(20)])
    return store


def test_formats_add_up_in_one_folder(smoke_store, tmp_path):
    out = tmp_path / "report"
    latex = build_report(smoke_store, out, ["table3"], fmt="latex", figure=False, n_boot=50, pdf=shutil.which(
        "pdflatex") is not None)
    markdown = build_report(smoke_store, out, ["table3"], fmt="markdown", figure=False, n_boot=50)
    html = build_report(smoke_store, out, ["table3"], fmt="html", figure=False, n_boot=50)
    assert not markdown.removed and not html.removed
    names = {p.name for p in out.iterdir()}
    assert {"report.tex", "table3.tex", "report.md", "table3.md", "report.html"} <= names
    if latex.pdf is not None:
        assert "report.pdf" in names
    again = build_report(smoke_store, out, ["table3"], fmt="markdown", figure=False, n_boot=50)
    assert not again.removed  # the same files again: nothing stale


def test_a_synthetic_audit_is_a_pipeline_check_never_a_verdict(smoke_store, tmp_path):
    result = build_report(smoke_store, tmp_path / "r", ["table3"], fmt="markdown", figure=False, n_boot=50)
    (audit,) = [a for a in result.audits if a.table_id == "table3"]
    assert audit.verdict.startswith("Pipeline check (synthetic data, not a verdict on the paper's claim)")
    text = (tmp_path / "r" / "audit.md").read_text()
    assert "The paper's claim" not in text and "Not supported" not in text and "Supported" not in text


def test_the_report_draws_each_table_s_curves(smoke_store, tmp_path):
    from PIL import Image

    result = build_report(smoke_store, tmp_path / "r", ["table3"], fmt="markdown", n_boot=50)
    path = tmp_path / "r" / "curves_table3.png"
    with Image.open(path) as image:
        assert image.size[0] > 800
    assert "![curves_table3.png](curves_table3.png)" in (tmp_path / "r" / "report.md").read_text()
    assert path in result.files


def _browser():
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        _missing("the HTML report is tested in Debian's chromium with chromium-driver (apt-get install chromium "
                 "chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


@pytest.mark.slow
def test_the_html_report_works_in_a_real_browser(smoke_store, tmp_path):
    from selenium.webdriver.common.by import By

    result = build_report(smoke_store, tmp_path / "r", ["table3"], fmt="html", n_boot=50)
    page = tmp_path / "r" / "report.html"
    assert page in result.files and not [p for p in (tmp_path / "r").iterdir() if p.suffix == ".md"]
    driver = _browser()
    try:
        driver.get(page.as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert errors == []
        images = driver.find_elements(By.TAG_NAME, "img")
        assert images and all(driver.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
        runs = driver.find_element(By.ID, "runs")

        def dsc_column():
            return [float(r.find_elements(By.TAG_NAME, "td")[4].text)
                    for r in runs.find_elements(By.CSS_SELECTOR, "tbody tr")]

        assert len(dsc_column()) == 8 * 3
        runs.find_elements(By.TAG_NAME, "th")[4].click()
        assert dsc_column() == sorted(dsc_column())
        runs.find_elements(By.TAG_NAME, "th")[4].click()
        assert dsc_column() == sorted(dsc_column(), reverse=True)
        first = runs.find_element(By.CSS_SELECTOR, "tbody tr a")
        target = driver.find_element(By.ID, first.get_attribute("href").split("#")[1])
        assert "config" in target.text and "per-image scores" in target.text
    finally:
        driver.quit()


# ------------------------------------------------------------------ quick views and one --root syntax


@pytest.mark.slow
def test_status_summarises_what_has_runs(smoke_store):
    done = _cli("status", "--results", str(smoke_store.root))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    tables = [line for line in lines if line.startswith("  ")]
    # one line per table with (shared) smoke runs: all but Table 7 (its rows are students); none for paper
    assert [line.split()[0] for line in tables] == [t for t in TABLES if t != "table7"]
    assert any(line.split()[:3] == ["table3", "smoke", "24"] for line in tables)
    assert "no runs under profile paper: table1, table2" in done.stdout and "row by row" in done.stdout


@pytest.mark.slow
def test_show_is_compact_and_diffs_rows_and_runs(smoke_store):
    compact = _cli("show", "t3-single-direction")
    assert compact.returncode == 0 and len(compact.stdout.splitlines()) <= 4
    assert 'model.glmbp_routing = ["mamba_fwd", "mamba_fwd", "dwconv", "identity"]' in compact.stdout
    rows = _cli("show", "t7-full", "--diff", "t7-kl")
    assert rows.stdout.splitlines()[0] == "t7-full vs t7-kl: 4 field(s) differ"
    assert "  distill.kl: 0.0 -> 0.5" in rows.stdout
    a, b = sorted(k.id for k in smoke_store.keys())[:2]
    runs = _cli("show", a, "--diff", b, "--results", str(smoke_store.root))
    assert runs.returncode == 0 and runs.stdout.startswith(f"run {a} vs run {b}: ")


def test_one_root_syntax(real_samples, tmp_path):
    from study.cli.train import parse_roots

    assert parse_roots(["isic2017=/a", "ph2=/b"]) == {"isic2017": "/a", "ph2": "/b"}
    assert parse_roots(["/data/x=y"], "isic2017") == {"isic2017": "/data/x=y"}  # a bare path may hold '='
    with pytest.raises(ConfigError, match="expected DATASET=PATH, e.g. --root isic2017=/data/ISIC2017"):
        parse_roots(["/data/ISIC2017"])
    with pytest.raises(ConfigError, match="names ph2, but this command is about isic2017"):
        parse_roots(["ph2=/b"], "isic2017")
    named = _cli("data", "check", "ph2", "--root", f"ph2={real_samples / 'PH2'}")
    bare = _cli("data", "check", "ph2", "--root", str(real_samples / "PH2"))
    assert named.returncode == bare.returncode == 0 and named.stdout == bare.stdout


@pytest.mark.slow
def test_a_missing_root_says_the_root_syntax(tmp_path):
    env = {**os.environ, "STUDY_DATA_ISIC2017": "", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "study", "run", "t6-none", "--seeds", "1", "--dry-run",
                           "--results", str(tmp_path / "r")], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 2 and "--root isic2017=PATH" in done.stderr
    assert "estimated cost:" in done.stdout  # the dry run prices the plan, then says what it would miss


# ------------------------------------------------------------------ the small things


def test_durations_read_as_people_say_them():
    from study.cli.run import human_duration

    assert human_duration(28896 * 60, "CPU-") == "20.1 CPU-days"
    assert human_duration(42) == "42 s" and human_duration(150) == "2.5 min"


@pytest.mark.slow
def test_did_you_mean():
    assert "did you mean 'table3'?" in _cli("run", "tabel3", "--dry-run").stderr
    assert "did you mean 't3-ours'?" in _cli("show", "t3-our").stderr


def test_parquet_without_pyarrow_is_one_clear_error(smoke_store, tmp_path, monkeypatch):
    import builtins

    from study.store.index import export_index

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow":
            raise ImportError("no pyarrow")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(ConfigError, match=r"pip install 'ultralbm-study\[parquet\]'"):
        export_index(smoke_store, tmp_path / "runs.parquet")

