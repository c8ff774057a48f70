"""A lab's own study folder: `init`, `--study`, and docs/own-study.md run as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from study.own_study import init_study
from study.variants import load_tables

BLOCK = re.compile(r"<!-- own-study-test -->\s*```bash\n(.*?)```", re.S)


def _study(*args, cwd, env=None):
    environ = {k: v for k, v in os.environ.items() if k not in ("STUDY_RESULTS", "STUDY_DIR")}
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**environ, **(env or {})})


@pytest.mark.slow
def test_the_own_study_page_runs_as_written_from_an_empty_folder(tmp_path):
    commands = [line for line in BLOCK.search((REPO_ROOT / "docs" / "own-study.md").read_text()).group(1).splitlines()
                if line.strip()]
    assert commands[0].startswith("python -m study init")
    for command in commands:
        argv = shlex.split(command)
        done = _study(*argv[3:], cwd=tmp_path)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    report = (tmp_path / "my-study" / "results" / "report" / "report.md").read_text()
    assert "Forward-only Mamba in both Mamba chunks" in report and "Table my-ablation" in report
    records = list((tmp_path / "my-study" / "results" / "runs").glob("*/record.json"))
    assert len(records) == 2  # both rows, in the study's own store
    assert not (REPO_ROOT / "my-study").exists()


@pytest.mark.slow
def test_init_never_overwrites_and_a_study_folder_joins_the_paper_tables(tmp_path):
    written = init_study(tmp_path / "lab")
    assert {p.name for p in written} == {"README.md", "datasets.toml", "my-ablation.toml", "my-cluster.toml"}
    again = _study("init", str(tmp_path / "lab"), cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr and "never overwrites" in again.stderr
    tables = load_tables(own=tmp_path / "lab")
    assert "my-ablation" in tables and "table3" in tables
    assert tables["my-ablation"].reference == "mine-paper"
    # A paper row and the study's row of the same config are one config (they share runs).
    assert tables["my-ablation"].rows[0].run_config().hash == next(
        r for r in tables["table3"].rows if r.id == "t3-ours").run_config().hash


@pytest.mark.slow
def test_study_folder_mistakes_are_one_clear_error(tmp_path):
    bad = _study("--study", str(tmp_path / "nowhere"), "list", cwd=tmp_path)
    assert bad.returncode == 2 and "not a study folder" in bad.stderr and "study init" in bad.stderr
    init_study(tmp_path / "lab")
    clash = tmp_path / "lab" / "tables" / "table3.toml"
    clash.write_text('[[rows]]\nid = "x-row"\nname = "x"\n')
    named = _study("--study", str(tmp_path / "lab"), "list", cwd=tmp_path)
    assert named.returncode == 2 and "a table named 'table3' already exists" in named.stderr
    clash.unlink()
    (tmp_path / "lab" / "tables" / "dup.toml").write_text('[[rows]]\nid = "t3-ours"\nname = "x"\n')
    dup = _study("--study", str(tmp_path / "lab"), "list", cwd=tmp_path)
    assert dup.returncode == 2 and "row 't3-ours': id already used in" in dup.stderr


@pytest.mark.slow
def test_cluster_profiles_of_the_study_join_the_paper_ones(tmp_path):
    init_study(tmp_path / "lab")
    done = _study("--study", str(tmp_path / "lab"), "sbatch", "mine-paper", "--seeds", "1", "--profile", "smoke",
                  "--cluster", "my-cluster",
                  "--no-snapshot", "--out", str(tmp_path / "scripts"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    script = next((tmp_path / "scripts").glob("*.sbatch")).read_text()
    assert "#SBATCH --partition=gpu" in script and "#SBATCH --mem=32G" in script
