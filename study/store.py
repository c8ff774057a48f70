"""The results store: one folder per run, named by its config hash and seed.

    <root>/runs/<config-hash>-s<seed>/
        record.json          the run record (status, config, metrics, provenance)
        metrics.csv          per-epoch metrics
        per_image_<split>.csv  TP/FP/FN/TN of every evaluated image
        model.pt             the selected weights (what evaluation used)
        checkpoints/last.pt  everything needed to resume
        checkpoints/best.pt  the lowest-selection-loss weights so far
        lock                 present while a process trains it

Every file is written to a temporary name and renamed, so a reader never sees
a torn file and a killed writer leaves the previous version intact.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from study.errors import StudyError

RESULTS_DIR = Path(os.environ.get("STUDY_RESULTS", Path(__file__).resolve().parent.parent / "results"))
STATUSES = ("running", "completed", "failed", "interrupted")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


def atomic_torch_save(path: Path, obj) -> None:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def pid_alive(pid: int) -> bool:
    """A live process on this host (a zombie, exited but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "\tZ" not in next(line for line in fh if line.startswith("State:"))
    except (OSError, StopIteration):
        return True


@dataclass(frozen=True)
class Store:
    root: Path = RESULTS_DIR

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def run_dir(self, config_hash: str, seed: int) -> Path:
        return self.root / "runs" / f"{config_hash}-s{seed}"

    def record_path(self, config_hash: str, seed: int) -> Path:
        return self.run_dir(config_hash, seed) / "record.json"

    def read_record(self, config_hash: str, seed: int) -> dict | None:
        return read_record(self.run_dir(config_hash, seed))

    def run_dirs(self) -> Iterator[Path]:
        runs = self.root / "runs"
        if runs.is_dir():
            yield from sorted(p for p in runs.iterdir() if p.is_dir())

    def records(self) -> Iterator[dict]:
        for d in self.run_dirs():
            record = read_record(d)
            if record is not None:
                yield record


def read_record(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "record.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StudyError(f"{path}: not a valid run record ({exc}); it was not written by this harness") from None


class RunLock:
    """Exclusive claim on a run folder, across processes (and hosts sharing a file system).

    Created with O_EXCL; a lock left by a dead process on this host is taken
    over. ``acquire`` returns False when another live process holds it.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "lock"
        self.held = False

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:  # being written right now, or garbage: look again
                    continue
                if not self._alive(owner):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(me)
            self.held = True
            return True
        return False

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def holder(self) -> dict | None:
        return self._owner()

    @staticmethod
    def _alive(owner: dict) -> bool:
        # Another host's process cannot be checked from here: taken as alive.
        if owner.get("host") != socket.gethostname():
            return True
        return pid_alive(int(owner.get("pid", -1)))

    def held_by_live_process(self) -> bool:
        owner = self._owner()
        return owner is not None and self._alive(owner)
