"""paper/differences.toml: every difference among paper, release and harness, held to the config and Table R."""

from __future__ import annotations

import shutil

import pytest
from conftest import REPO_ROOT

from study.config import merge
from study.errors import ConfigError
from study.paper import differences
from study.variants import find_row, load_tables

REGISTRY = differences()
KNOBBED = [d for d in REGISTRY.of_kind("release", "protocol") if d.knob]
RELEASE_KNOBS = [d for d in REGISTRY.of_kind("release") if d.knob]
# Hashes of default configs from before the switches existed: stored runs keep their identity.
STORED_HASHES = {("ultralbm", "isic2017", "paper"): "d5a392783609685b",
                 ("t7-full", None, "smoke"): "6cbcd36bd0f8ba3c"}


def _reference(d) -> str:
    return "t7-full" if "distill" in d.override else "ultralbm"


def test_every_listed_difference_is_registered():
    ids = {d.id for d in REGISTRY.differences}
    for expected in ("bidirectional-flip-axis", "mamba-conv1d-init", "distillation-selection", "distillation-drop-last",
                     "rotation-interpolation", "rotation-frame", "mask-targets", "train-script-incomplete",
                     "grad-loss-scale", "dkd-factor", "ege-unet-deep-supervision", "kl-distill-row",
                     "distillation-script-incomplete", "lmbp-glmbp-stages", "table2-iou-gain", "eq7-fusion",
                     "release-split", "rotation-per-run", "checkpoint-selection"):
        assert expected in ids, expected
    assert len(REGISTRY.of_kind("complexity")) == 9
    assert REGISTRY.release_commit == "0a99c437bbc2d5a3a1b90a6ca040592f7f023411"


@pytest.mark.parametrize("d", KNOBBED, ids=lambda d: d.id)
def test_every_knob_is_a_config_field_that_changes_a_run(d):
    row = find_row(_reference(d))
    default = row.run_config("isic2017", "paper")
    switched = row.run_config("isic2017", "paper", d.override)
    assert switched.hash != default.hash
    section, field = d.knob.split(" = ")[0].split(".")
    assert switched.to_dict()[section][field] != default.to_dict()[section][field]


def test_default_configs_keep_their_stored_hashes():
    for (row_id, dataset, profile), expected in STORED_HASHES.items():
        assert find_row(row_id).run_config(dataset, profile).hash == expected


@pytest.mark.parametrize("d", [d for d in REGISTRY.of_kind("release") if d.table_r], ids=lambda d: d.id)
@pytest.mark.parametrize("profile", ["paper", "smoke"])
def test_every_table_r_row_is_its_reference_with_that_one_switch(d, profile):
    table = load_tables()["tabler"]
    row = table.row(d.table_r)
    reference = table.row(row.compare_with or table.reference)
    want = reference.run_config(None, profile, d.override)
    assert row.run_config(None, profile).to_dict() == want.to_dict()


def _all_release(override_of=lambda d: d.override, skip=()):
    combined: dict = {}
    for d in RELEASE_KNOBS:
        if d.id not in skip:
            combined = merge(combined, override_of(d))
    return combined


def test_the_release_profile_sets_every_release_switch_and_nothing_else():
    for row_id in ("ultralbm", "t7-full"):
        row = find_row(row_id)
        got = row.run_config("isic2017", "release")
        want = row.run_config("isic2017", "paper", _all_release())
        if got.distill.enabled:  # the student's teacher is the release's model too
            assert got.teacher_config().model == want.teacher_config().model.__class__(
                **{**want.teacher_config().model.__dict__, "bidirectional_flip": "channel", "mamba_conv_init": "release"})
            assert got.distill.teacher == {"bidirectional_flip": "channel", "mamba_conv_init": "release"}
            got_d = {k: v for k, v in got.to_dict()["distill"].items() if k != "teacher"}
            want_d = {k: v for k, v in want.to_dict()["distill"].items() if k != "teacher"}
            assert got_d == want_d
        assert {k: got.to_dict()[k] for k in ("model", "data", "train")} == \
               {k: want.to_dict()[k] for k in ("model", "data", "train")}
    unet = find_row("unet").run_config("isic2017", "release")  # the model switches are UltraLBM-UNet's only
    assert unet.data.mask_targets == "soft" and "bidirectional_flip" not in unet.to_dict()["model"]


def test_table_r_all_release_rows_are_the_release_switches_but_the_split():
    table = load_tables()["tabler"]
    for row_id, reference_id in (("tr-release", "tr-harness"), ("tr-release-t", "tr-harness-t")):
        got = table.row(row_id).run_config(None, "paper")
        want = table.row(reference_id).run_config(None, "paper", _all_release(skip=("release-split",)))
        got, want = got.to_dict(), want.to_dict()
        if got["distill"]:
            got["distill"].pop("teacher"), want["distill"].pop("teacher")
        assert got == want, row_id


def test_a_bad_entry_names_itself_and_the_field(tmp_path):
    paper = tmp_path / "paper"
    shutil.copytree(REPO_ROOT / "paper", paper)
    with (paper / "differences.toml").open("a") as fh:
        fh.write('\n[[difference]]\nid = "half-done"\nkind = "release"\narea = "model"\npaper = "p"\n'
                 'release = "r"\nrelease_ref = "x.py:1"\nharness = "h"\ntable_r = "tr-harness"\n')
    differences.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"\(half-done\): give either 'knob'"):
            differences(paper)
    finally:
        differences.cache_clear()


def test_table1_t_row_is_the_full_strategy_student_and_plans_its_teacher_first():
    from study.plan import expand

    t = find_row("ultralbm-t").run_config("isic2017", "paper")
    full = find_row("t7-full").run_config("isic2017", "paper")
    assert t.distill == full.distill and t.model == full.model and t.distill.enabled
    # its teacher is Table 1's own full-model run on the same dataset (with its PH2 evaluation)
    assert t.teacher_config().hash == find_row("ultralbm").run_config("isic2017", "paper").hash
    # under smoke (synthetic data, no PH2) it is the very same run as Table 7's Full Strategy
    assert find_row("ultralbm-t").run_config(None, "smoke").hash == find_row("t7-full").run_config(None, "smoke").hash
    runs = expand(["ultralbm-t"], [0], profile="smoke")
    assert [r.is_student for r in runs] == [False, True]
    assert runs[1].teacher is not None and runs[0].run_id in {runs[1].teacher.id}


def test_show_names_the_teacher(capsys):
    from study.cli import main

    assert main(["show", "ultralbm-t", "--dataset", "isic2017", "--full"]) == 0
    out = capsys.readouterr().out
    assert '"soft": 0.5' in out and '"attention": 0.2' in out and '"grad": 0.3' in out
    assert "distillation student: its teacher is config" in out and "the runs of ultralbm)" in out


@pytest.fixture(scope="module")
def table_r_store(tmp_path_factory):
    """The README's Table R commands, as written (3 seeds, smoke): a store and its report."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("table-r")
    for command in (["run", "tabler", "--seeds", "3", "--profile", "smoke"], ["report", "--tables", "tabler", "--no-pdf"]):
        done = subprocess.run([sys.executable, "-m", "study", *command, "--results", str(root)], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return root


@pytest.mark.slow
def test_table_r_report_gives_a_seed_level_verdict_per_row(table_r_store):
    report = table_r_store / "report"
    text = (report / "differences.md").read_text()
    table_r = load_tables()["tabler"]
    measured = [r for r in table_r.rows if r.id not in ("tr-harness", "tr-harness-t")]
    assert {"tr-null", "tr-null-t"} <= {r.id for r in measured}
    for row in measured:
        line = next(line for line in text.splitlines() if line.startswith(f"| {row.name} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == "3/3", line  # three seeds of the row, three of its reference
        float(cells[5])  # the smallest difference these seeds detect
        assert cells[6].startswith("Pipeline check (synthetic data): "), line
        assert any(v in cells[6] for v in ("changes DSC", "no detectable effect", "no effect: identical")), line
        if "no detectable effect" in cells[6]:
            assert "seeds per config would be needed" in cells[6] or "should suffice" in cells[6], line
        assert cells[7].startswith(("+", "-", "0")), line  # the image-level view, secondary
    for row_name in ("Harness default on the next seeds (null row)", "Harness student on the next seeds (null row)"):
        null = next(line for line in text.splitlines() if line.startswith(f"| {row_name} |"))
        assert "no detectable effect at 3 seeds" in null, null
    assert "Synthetic data: every row is a pipeline check" in text
    for d in REGISTRY.of_kind("release", "protocol"):
        assert f"## {d.id} ({d.area})" in text
        measured_line = next(line for line in text.split(f"## {d.id} ({d.area})")[1].splitlines()
                             if line.startswith("- **Measured**"))
        if d.table_r:
            assert "Pipeline check (synthetic data)" in measured_line, measured_line
    assert "identical results" in next(line for line in text.splitlines() if line.startswith("| Soft"))
    for switched in ("| Normalised at full resolution", "| nn.BCELoss on probabilities"):  # the switch reached training
        assert "identical" not in next(line for line in text.splitlines() if line.startswith(switched))
    assert "Table R" in (report / "tabler.tex").read_text() and "\\input{differences}" in (report / "report.tex").read_text()


@pytest.mark.slow
def test_seeds_0_2_against_3_5_of_one_config_show_no_effect(table_r_store):
    """The reference config under seeds 0-2 and 3-5: no detectable effect, from Table R and from the
    claims audit's machinery (the image-level view calls the same runs different)."""
    from study.report import audit
    from study.report.collect import collect_table
    from study.report.differences import measure
    from study.store.runs import Store

    store = Store(table_r_store)
    td = collect_table(load_tables()["tabler"], store, "smoke")
    ref, null = td.runs_for("tr-harness", "synthetic"), td.runs_for("tr-null", "synthetic")
    assert ref.config_hash == null.config_hash
    assert [r.seed for r in ref.completed] == [0, 1, 2] and [r.seed for r in null.completed] == [3, 4, 5]
    row = audit.compare_cells(store, audit.RowAudit("tr-null", "null"), null, ref, 200, audit._rng("null"))
    ((p_holm, result),) = audit.judge([row.dsc])
    assert result == audit.NO_DIFFERENCE and p_holm > audit.ALPHA
    effects = {e.row_id: e for e in measure(td, store, 200)}
    assert effects["tr-null"].stats.result == audit.NO_DIFFERENCE
    assert "no detectable effect at 3 seeds" in effects["tr-null"].verdict


def test_status_and_the_tables_give_the_null_row_the_seeds_after(tmp_path):
    """`status tabler --seeds 3` expects the null row's seeds 3-5, and the tables split the reference's runs."""
    from study.report.collect import collect_table
    from study.report.synthetic import write_run
    from study.store.runs import Store
    from study.store.status import table_status

    table = load_tables()["tabler"]
    store = Store(tmp_path)
    for seed in range(6):
        write_run(store, table.row("tr-harness"), None, seed, "smoke", dsc=0.80 + seed / 100)
    for seed in range(3):
        write_run(store, table.row("tr-flip-channel"), None, seed, "smoke", dsc=0.8)
    cells = {c.row_id: c.counts for c in table_status(table, store, [0, 1, 2], "smoke")}
    assert cells["tr-harness"] == {"completed": 3} and cells["tr-null"] == {"completed": 3}
    td = collect_table(table, store, "smoke")
    assert td.row("tr-harness").cells["synthetic_dsc"].runs == ("s0", "s1", "s2")
    assert td.row("tr-null").cells["synthetic_dsc"].runs == ("s3", "s4", "s5")
