"""The command line: help works fast, bench prints figures."""

import subprocess
import sys

import pytest
from conftest import REPO_ROOT


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "study", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300)


def test_help_lists_commands():
    out = _cli("--help")
    assert out.returncode == 0
    for command in ("complexity", "bench"):
        assert command in out.stdout


def test_help_does_not_import_torch():
    code = "import sys; from study.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.slow
def test_bench_prints_figures():
    out = _cli("bench", "--batch", "2", "--size", "64", "--repeats", "1", "--scan-length", "64")
    assert out.returncode == 0, out.stderr
    assert "train step" in out.stdout and "ms per image" in out.stdout
    assert "sequential reference" in out.stdout


@pytest.mark.slow
def test_user_error_is_one_line():
    out = _cli("bench", "--variant", "no-such-row", "--scan-length", "0")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: unknown table or row 'no-such-row'; see `python -m study list`"


def test_a_misspelt_command_or_choice_gets_a_guess_and_version_is_one_line():
    for argv, guess in ((["rn"], "did you mean 'run'?"), (["stauts"], "did you mean 'status'?"),
                        (["report", "--format", "htm"], "did you mean 'html'?")):
        done = subprocess.run([sys.executable, "-m", "study", *argv], capture_output=True, text=True, cwd=REPO_ROOT)
        assert done.returncode == 2 and guess in done.stderr, done.stderr
        assert "expected one of:" in done.stderr
    version = subprocess.run([sys.executable, "-m", "study", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("ultralbm-study ")
