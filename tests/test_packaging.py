"""The package installed from a wheel, used from another folder: the paper's study files travel
inside it (setup.py copies variants/, paper/, slurm/ into study/paper_study/), and nothing a
command writes lands in the installed package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT


def _tracked_copy(to: Path) -> Path:
    """The checkout's tracked files (a fresh build, no stale build/ folder), or the tree less its outputs."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.fail("git ls-files failed in the checkout") if os.environ.get("CI") else pytest.skip("not a git checkout")
    for name in filter(None, listed.stdout.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)
    return to


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding only the built wheel; the test environment's packages give the dependencies."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = _tracked_copy(tmp / "src")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("ultralbm_study-*.whl")
    env = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies (torch and the rest) from this environment, not the package itself: this
    # folder is added as a path, so its editable-install hook is never run.
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # A pure-Python wheel installs by unpacking it into site-packages. (pip install --prefix from this
    # environment would also uninstall this environment's own copy of the package.)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return python, Path(site) / "study"


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.slow
def test_the_wheel_works_from_any_folder_and_writes_only_there(installed, tmp_path):
    python, package = installed
    assert (package / "paper_study" / "variants" / "base.toml").is_file()
    before = _files(package)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDY_")}
    env.update(PYTHONPATH="", STUDY_CACHE=str(tmp_path / "cache"))

    def study(*args):
        done = subprocess.run([str(python), "-m", "study", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    where = subprocess.run([str(python), "-c", "import study; print(study.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True).stdout
    assert where.startswith(str(package)), where  # the wheel's copy, not the checkout
    assert "t3-ours" in study("list")
    assert "config hash" in study("show", "t3-ours")
    out = study("run", "t3-ours", "--seeds", "1", "--profile", "smoke", "--set", "train.epochs=1",
                "--set", "data.synthetic_count=40")
    assert "1 completed" in out
    study("report", "--tables", "3", "--profile", "smoke", "--format", "markdown")
    assert list((tmp_path / "results" / "runs").glob("*/record.json"))
    assert (tmp_path / "results" / "report" / "report.md").is_file()
    # The own-study template and the datasets file travel in the wheel too.
    study("init", "lab")
    assert "my-ablation" in study("--study", "lab", "list")
    assert _files(package) == before  # nothing written into the installed package
