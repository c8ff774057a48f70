"""Where the tests find what lies outside the repository: the one place.

``../shared`` (real dataset samples) and system tools (pdflatex, SLURM) are
looked up here. For a user without them the tests that need them skip with a
reason; under ``CI=true`` a missing piece is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("STUDY_SHARED", REPO_ROOT.parent / "shared"))
REAL_SAMPLES = SHARED / "data" / "real-samples"
IN_CI = os.environ.get("CI", "").lower() == "true"


def _missing(reason: str):
    if IN_CI:
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def real_samples() -> Path:
    """The real dermoscopy samples in their original release layouts."""
    if not REAL_SAMPLES.is_dir():
        _missing(f"real samples not found at {REAL_SAMPLES} (set STUDY_SHARED)")
    return REAL_SAMPLES


def require_executable(name: str) -> str:
    """Path of a system tool the test needs (pdflatex, sbatch, ...)."""
    path = shutil.which(name)
    if path is None:
        _missing(f"{name} is not installed")
    return path


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Tests never write into the user's preprocessing cache: one cache per session."""
    previous = os.environ.get("STUDY_CACHE")
    os.environ["STUDY_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("STUDY_CACHE", None)
    else:
        os.environ["STUDY_CACHE"] = previous
