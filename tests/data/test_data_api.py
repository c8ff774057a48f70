"""The package surface: every advertised name resolves, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT

import study.data


def test_every_exported_name_resolves():
    for name in study.data.__all__:
        assert getattr(study.data, name) is not None, name


def test_importing_the_package_does_not_import_torch():
    program = "import sys, study.data, study.cli.data; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True,
        cwd=REPO_ROOT,
    )
    assert result.stdout.strip() == "False"
