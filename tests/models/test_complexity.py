"""Complexity columns: params and MACs against the paper, and a --check that can fail."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from torch import nn

from study.complexity import count_params, macs_ptflops, macs_thop, measure_row
from study.models import build_model
from study.variants import load_tables


def _rows():
    # The UltraLBM family with both counters; the baselines are checked by the CLI test below
    # (and their exact counts by tests/models/test_baselines_*.py).
    return [r for t in load_tables().values() for r in t.rows if not r.unavailable and r.arch == "ultralbm"]


@pytest.fixture(scope="module")
def measured():
    return {r.id: measure_row(r) for r in _rows()}


@pytest.mark.slow
def test_every_row_matches_or_is_documented(measured):
    bad = {rid: (m.params_verdict.status, m.flops_verdict.status) for rid, m in measured.items() if not m.ok}
    assert not bad


@pytest.mark.slow
def test_rows_the_notes_find_consistent_match_in_params(measured):
    # ../shared/notes/paper-complexity.md: these readings reproduce the printed params.
    consistent = ["ultralbm", "ultralbm-t", "t2-all-glmbp", "t2-2lmbp-glmbp", "t3-single-direction",
                  "t3-unshared", "t3-self-attention", "t3-2dw-1mamba-id", "t3-1dw-3mamba", "t3-2id-2mamba",
                  "t4-single-conv", "t5-unified-7", "t5-unified-3", "t5-335", "t5-355",
                  "t6-none", "t6-stage-wise", "t6-shared"]
    assert all(measured[r].params_verdict.status == "match" for r in consistent)
    inconsistent = ["t2-all-lmbp", "t3-2dw-2mamba", "t4-4dwconv", "t5-unified-5"]
    assert all(measured[r].params_verdict.status == "documented" for r in inconsistent)


def test_counts_of_the_official_models(measured):
    assert measured["ultralbm"].params == 34_166 and measured["ultralbm-t"].params == 10_956
    # thop with the Mamba invisible; the official release counts 0.0587 and 0.0185.
    assert measured["ultralbm"].gmacs_thop == pytest.approx(0.0587, abs=5e-5)
    assert measured["ultralbm-t"].gmacs_thop == pytest.approx(0.0185, abs=5e-5)
    # The explicit count sees the Mamba and so is larger.
    assert measured["ultralbm"].gmacs_ptflops > measured["ultralbm"].gmacs_thop


def test_thop_convention_hides_exactly_the_mamba():
    model = build_model("ultralbm", {"glmbp_routing": ["dwconv", "dwconv", "dwconv", "identity"]})
    with_mamba = build_model("ultralbm")
    # Same conv/linear skeleton; the Mamba adds nothing under the paper's convention
    # beyond the DwConv it replaces in chunks 1-2, which the two routings differ by.
    assert macs_thop(with_mamba) < macs_thop(model)
    assert count_params(with_mamba) > count_params(model)


def test_ptflops_failure_is_an_error():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 1)

        def forward(self, x):
            raise ValueError("boom")

    with pytest.raises(RuntimeError, match="ptflops failed"):
        macs_ptflops(Broken())


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "study", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.slow
def test_cli_check_passes_and_prints_conventions():
    out = _cli("complexity", "--check")
    assert out.returncode == 0, out.stderr
    assert "check passed" in out.stdout
    assert "No standard counter gives the paper's FLOPs" in out.stdout
    assert "classic thop 0.1.1" in out.stdout


@pytest.mark.slow
def test_cli_check_fails_when_the_paper_disagrees(tmp_path):
    paper = tmp_path / "paper"
    shutil.copytree(REPO_ROOT / "paper", paper)
    text = (paper / "table1.csv").read_text().replace(",0.034,0.060", ",0.035,0.060")
    (paper / "table1.csv").write_text(text)
    out = _cli("complexity", "ultralbm", "--check", "--no-ptflops", env={"STUDY_PAPER": str(paper)})
    assert out.returncode == 1
    assert "check FAILED: ultralbm" in out.stdout


@pytest.mark.slow
def test_cli_check_fails_on_a_stale_mismatch_note(tmp_path):
    paper = tmp_path / "paper"
    shutil.copytree(REPO_ROOT / "paper", paper)
    with (paper / "differences.toml").open("a") as fh:
        fh.write('\n[[difference]]\nid = "x"\nkind = "complexity"\nrow = "t6-none"\nquantity = "params"\n'
                 'note = "wrongly claimed"\n')
    out = _cli("complexity", "t6-none", "--check", "--no-ptflops", env={"STUDY_PAPER": str(paper)})
    assert out.returncode == 1
    assert "stale-note" in out.stdout


@pytest.mark.slow
def test_cli_all_lists_every_row_and_checks_table1():
    # Every row of Tables 1-7 against the paper; Table 1's baselines included.
    out = _cli("complexity", "--all", "--check", "--no-ptflops")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "check passed" in out.stdout
    for table in load_tables().values():
        for row in table.rows:
            assert row.id in out.stdout
    assert "unavailable" not in out.stdout  # every row's model is registered
