"""Code snapshots: the frozen copy of the code a submitted job imports.

Every submission runs from ``<store>/snapshots/<id>/`` (the id is a hash of the
copied files: unchanged code reuses it), so edits made after submitting don't
change queued jobs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from study.errors import StudyError
from study.store.atomic import atomic_write_json
from study.train.provenance import CODE_PARTS, git_state

SOURCE_ROOT = Path(__file__).resolve().parent.parent.parent  # holds study/, variants/, paper/, slurm/
# what a job needs of the source tree: the parts whose git state a run records (study.train.provenance)
SNAPSHOT_PARTS = CODE_PARTS


@dataclass(frozen=True)
class Snapshot:
    """A frozen copy of the code that jobs import; ``path`` None: the live source tree."""

    path: Path | None
    commit: str | None
    dirty: bool

    @property
    def code_root(self) -> Path:
        return self.path or SOURCE_ROOT

    @property
    def id(self) -> str | None:
        return self.path.name if self.path else None


def _snapshot_files(root: Path) -> list[Path]:
    out = []
    for part in SNAPSHOT_PARTS:
        base = root / part
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix not in (".pyc", ".pyo") \
                    and not any(p.endswith(".egg-info") for p in rel.parts):
                out.append(rel)
    return out


def make_snapshot(snapshots_dir: Path, source: Path = SOURCE_ROOT) -> Snapshot:
    """Copy study/, variants/, paper/ to ``snapshots_dir/<hash of their files>/`` (reused when unchanged)."""
    files = _snapshot_files(source)
    if not any(f.parts[0] == "study" for f in files):
        raise StudyError(f"cannot snapshot the code: no study/ package under {source}")
    digest = hashlib.sha256()
    for rel in files:
        digest.update(str(rel).encode() + b"\0" + (source / rel).read_bytes() + b"\0")
    commit, dirty = git_state(source)
    target = Path(snapshots_dir) / digest.hexdigest()[:16]
    if not (target / "SNAPSHOT.json").is_file():
        tmp = Path(snapshots_dir) / f".tmp-{uuid.uuid4().hex}"
        for rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, tmp / rel)
        atomic_write_json(tmp / "SNAPSHOT.json", {
            "source": str(source), "commit": commit, "dirty": dirty, "files": len(files),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        try:
            os.rename(tmp, target)
        except OSError:  # another submission made the same snapshot first
            shutil.rmtree(tmp, ignore_errors=True)
    return Snapshot(target, commit, dirty)


def live_code() -> Snapshot:
    commit, dirty = git_state(SOURCE_ROOT)
    return Snapshot(None, commit, dirty)
