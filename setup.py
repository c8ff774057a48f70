"""The paper's study files travel inside the wheel.

``variants/``, ``paper/`` and ``slurm/`` live at the top of the checkout, where a researcher
reads and cites them; a wheel (or ``pip install .``, or ``pip install git+...``) copies them into
the package as ``study/paper_study/``, where ``study.settings`` finds them when the package runs
outside a checkout. An editable install reads them in place. Everything else is pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

STUDY_FOLDERS = ("variants", "paper", "slurm")
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc")


class BuildWithStudyFiles(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        here = Path(__file__).resolve().parent
        for folder in STUDY_FOLDERS:
            target = Path(self.build_lib) / "study" / "paper_study" / folder
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(here / folder, target, ignore=SKIPPED)


setup(cmdclass={"build_py": BuildWithStudyFiles})
