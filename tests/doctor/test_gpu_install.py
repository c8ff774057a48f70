"""scripts/check-gpu-install: its judgement, on pip reports it recorded from the registry.

The recordings were made by running the script against PyPI (`--record`): `documented/` with
docs/install.md's GPU lines, `previous-docs/` with the lines it had before (no constraints file,
mamba-ssm>=2.2.2), where pip replaces torch 2.6.0 and triton 3.2.0 at the mamba-ssm step. No
registry is needed here; a change to the documented lines must be recorded again.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util

from conftest import REPO_ROOT

GOLDEN = REPO_ROOT / "tests" / "golden" / "gpu-install"


def _script():
    path = REPO_ROOT / "scripts" / "check-gpu-install"
    loader = importlib.machinery.SourceFileLoader("check_gpu_install", str(path))
    spec = importlib.util.spec_from_loader("check_gpu_install", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_documented_lines_replace_neither_torch_nor_triton(capsys):
    script = _script()
    assert script.main(["--analyse", str(GOLDEN / "documented")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no step replaces torch or triton"


def test_the_recording_is_of_the_lines_the_docs_hold_now():
    import json

    script = _script()
    steps = script.documented_steps(REPO_ROOT / "docs" / "install.md")
    recorded = [json.loads((GOLDEN / "documented" / f"step{i}.json").read_text())["args"]
                for i in range(1, len(steps) + 1)]
    assert recorded == steps, "docs/install.md's GPU lines changed: run scripts/check-gpu-install --record again"
    assert all("constraints/gpu.txt" in " ".join(step) for step in steps)


def test_the_previous_lines_are_caught_replacing_torch_and_triton(capsys):
    script = _script()
    assert script.main(["--analyse", str(GOLDEN / "previous-docs")]) == 1
    out = capsys.readouterr().out
    assert "would replace torch 2.6.0 with torch 2.15.0" in out and "would replace triton 3.2.0 with triton 3.9.0" in out
    assert "step5" in out and out.splitlines()[-1] == "2 step(s) would replace torch or triton"


def test_the_judgement_names_each_replaced_package():
    script = _script()
    report = {"install": [{"name": "torch", "version": "2.7.0"}, {"name": "mamba_ssm", "version": "2.3.1"}]}
    assert script.judge("step 3", {"torch": "2.6.0", "triton": "3.2.0"}, report) == [
        "step 3: would replace torch 2.6.0 with torch 2.7.0"]
    assert script.judge("step 1", {}, report) == []
