"""The README's examples run as written, so the docs cannot rot.

Every fenced block that follows a ``<!-- readme-test -->`` marker, in the README
and then in each page of ``docs/``, is run line by line from the repository
root, in order; each command must exit 0. The
results store is a temporary folder shared by all of them (so "run, status,
run again" works as documented) and never the repository's own results/.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

BLOCK = re.compile(r"<!-- readme-test -->\s*```(?:bash|console)\n(.*?)```", re.S)


def _pages():
    return [REPO_ROOT / "README.md"] + sorted((REPO_ROOT / "docs").glob("*.md"))


def _commands():
    text = "\n".join(page.read_text() for page in _pages())
    commands = []
    for block in BLOCK.findall(text):
        commands += [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return commands


def test_readme_has_tested_examples():
    assert _commands(), "README.md has no <!-- readme-test --> block"


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("readme-results")


@pytest.mark.slow
@pytest.mark.parametrize("command", _commands())
def test_readme_command(command, results_dir):
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable  # the interpreter running the tests
    env = {**os.environ, "STUDY_RESULTS": str(results_dir)}
    out = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"


def test_the_readme_is_a_short_guide_whose_links_resolve():
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for page in _pages():
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_the_audit_verdict_words_are_the_docs_words():
    from study.report.audit import VERDICTS

    report_doc = (REPO_ROOT / "docs" / "report.md").read_text()
    listed = re.search(r"<!-- verdicts -->(.*?)<!-- /verdicts -->", report_doc, re.S).group(1)
    assert sorted(re.findall(r"\*\*([^*]+)\*\*", listed)) == sorted(VERDICTS)
