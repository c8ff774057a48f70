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
# (dataset, folder under real-samples/, image/mask pairs it holds): see its README.
REAL_SAMPLE_PAIRS = [("isic2017", "ISIC2017", 60), ("isic2018", "ISIC2018", 12), ("ph2", "PH2", 20)]


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


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A preprocessing cache of this test's own (STUDY_CACHE points at it)."""
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


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


# --- SLURM: the single-node cluster of slurm/local-cluster.sh, once per session ---------------

SLURM_TOOLS = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "munged", "munge", "unmunge",
               "runuser")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _running(pid: int) -> bool:
    from study.store.lease import pid_alive

    return pid_alive(pid)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running single-node SLURM cluster on localhost (2 stand-in GPUs); yields its slurm.conf path.

    Started with ``slurm/local-cluster.sh start`` (state, logs and PID files in a
    temporary folder; clients find it through SLURM_CONF, set here for the
    session) and stopped again by PID with ``local-cluster.sh stop``.
    """
    import subprocess

    search = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [t for t in SLURM_TOOLS if shutil.which(t, path=search) is None]
    if missing:
        _missing(f"the local SLURM cluster needs {', '.join(missing)} "
                 "(apt-get install --no-install-recommends slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
        _missing("the local SLURM cluster needs root (munged runs as the munge user; slurmd launches the jobs)")
    base = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "PATH": search, "STUDY_SLURM_NO_INSTALL": "1", "STUDY_SLURM_GPUS": "2",
           "STUDY_SLURM_CTLD_PORT": str(_free_port()), "STUDY_SLURM_SLURMD_PORT": str(_free_port())}
    script = REPO_ROOT / "slurm" / "local-cluster.sh"
    started = subprocess.run(["bash", str(script), "start", str(base)], env=env, capture_output=True, text=True,
                             timeout=180)
    if started.returncode != 0:
        subprocess.run(["bash", str(script), "stop", str(base)], env=env, capture_output=True, timeout=120)
        logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((base / "log").glob("*.log")))
        pytest.fail(f"the local SLURM cluster did not start:\n{started.stdout}{started.stderr}{logs}")
    previous = {k: os.environ.get(k) for k in ("SLURM_CONF", "PATH")}
    os.environ["SLURM_CONF"] = str(base / "slurm.conf")
    os.environ["PATH"] = search
    pids = {p.stem: int(p.read_text().strip()) for p in base.glob("*.pid") if p.read_text().strip().isdigit()}
    try:
        yield base / "slurm.conf"
    finally:
        stopped = subprocess.run(["bash", str(script), "stop", str(base)], env=env, capture_output=True,
                                 text=True, timeout=180)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        assert stopped.returncode == 0, f"local-cluster.sh stop failed:\n{stopped.stdout}{stopped.stderr}"
        left = {name: pid for name, pid in pids.items() if _running(pid)}
        assert not left, f"still running after local-cluster.sh stop: {left}"
