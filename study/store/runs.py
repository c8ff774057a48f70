"""The results store: one folder per run, named by its key (config hash and seed).

    <root>/runs/<config-hash>-s<seed>/
        record.json            the run record (status, config, metrics, integrity digests, provenance)
        config.json            the resolved config
        metrics.csv            per-epoch metrics
        per_image_<split>.csv  TP/FP/FN/TN of every evaluated image
        model.pt               the selected weights (what evaluation used)
        checkpoints/last.pt    everything needed to resume (tensors and plain values only)
        checkpoints/best.pt    the lowest-selection-loss weights so far
        lease.<n>              present while a process trains it (see study.store.lease)
    <root>/runs/<id>.damaged-<time>/   a damaged run's files, set aside before it was trained again

The store owns every path and the run id: nothing else spells them. Every file
is written to a temporary name and renamed, so a reader never sees a torn
file and a killed writer leaves the previous version intact; files get the
permissions of the process's umask, so a lab sharing the store can read them.
A completed record vouches for its files (sha256, size, pooled counts): a run
whose files do not match is *damaged*, and so is a record that does not parse.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from study.errors import StudyError
from study.settings import current
from study.store.atomic import atomic_write_json
from study.store.files import FILE_LIMIT, UnsafeFile, open_regular, read_regular
from study.store.per_image import parse_counts
from study.store.record import FileDigest, RecordError, RunKey, RunRecord, Status

RESULTS_DIR = current().results
ASIDE_MARK = ".damaged-"


def file_digest(path: Path) -> FileDigest:
    """sha256 and size of a regular file, never through a link (UnsafeFile otherwise)."""
    h = hashlib.sha256()
    size = 0
    with os.fdopen(open_regular(path, FILE_LIMIT), "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return FileDigest(h.hexdigest(), size)


@dataclass(frozen=True)
class Store:
    root: Path = RESULTS_DIR

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # -- paths: the only place they are spelled
    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run_dir(self, key: RunKey) -> Path:
        return self.runs_dir / key.id

    @property
    def log_folders(self) -> tuple[Path, Path]:
        """Where the launchers keep job logs: submitit's (``slurm/``) and plain sbatch scripts' by default
        (``sbatch/``). A log named anywhere else is not opened by the store's readers."""
        return self.root / "slurm", self.root / "sbatch"

    @property
    def lease_period_path(self) -> Path:
        """The store's lease period, written once (``study.store.lease.store_period``)."""
        return self.root / "lease-period.json"

    def lease(self, key: RunKey):
        """The lease of a run, at the store's lease period."""
        from study.store.lease import RunLease, store_period

        period = store_period(self.lease_period_path) if self.root.is_dir() else None
        return RunLease(self.run_dir(key), period)

    def bench_path(self, device: str) -> Path:
        """``study bench --record``'s figures for one device kind (cpu, cuda), read by cost estimates."""
        return self.root / "bench" / f"{device}.json"

    def record_path(self, key: RunKey) -> Path:
        return self.run_dir(key) / "record.json"

    def config_path(self, key: RunKey) -> Path:
        return self.run_dir(key) / "config.json"

    def metrics_path(self, key: RunKey) -> Path:
        return self.run_dir(key) / "metrics.csv"

    def model_path(self, key: RunKey) -> Path:
        return self.run_dir(key) / MODEL_FILE

    def curves_path(self, key: RunKey) -> Path:
        """The run's training curves, drawn when it completes (derived from its history: not sealed)."""
        return self.run_dir(key) / "curves.png"

    def tensorboard_dir(self, key: RunKey) -> Path:
        return self.run_dir(key) / "tensorboard"

    def checkpoint_path(self, key: RunKey, which: str = "last") -> Path:
        if which not in ("last", "best"):
            raise ValueError(which)
        return self.run_dir(key) / "checkpoints" / f"{which}.pt"

    def per_image_path(self, key: RunKey, split: str) -> Path:
        return self.run_dir(key) / per_image_name(split)

    def challenge_path(self, key: RunKey, split: str) -> Path:
        return self.run_dir(key) / challenge_name(split)

    def predictions_path(self, key: RunKey, split: str = "test") -> Path:
        return self.run_dir(key) / predictions_name(split)

    def linked(self, key: RunKey) -> bool:
        """The run's folder is a symbolic link: never followed, never trained into or moved from."""
        return self.run_dir(key).is_symlink()

    def require_folder(self, key: RunKey) -> None:
        """One line, before anything is read or written, for a run folder that is a link."""
        if self.linked(key):
            raise StudyError(f"{self.run_dir(key)}: a symbolic link, not a folder of the store; refusing to "
                             "follow it (remove the link, or move the folder it points to into the store)")

    # -- records
    def load(self, key: RunKey, *, verify: bool = True) -> RunRecord | None:
        """The run's record, or None if it has none. A record that does not parse, or a completed
        one whose files do not match it, comes back with status ``damaged`` and the reason; so does a
        run folder that is a link or a record that is no regular file (never followed or read)."""
        path = self.record_path(key)
        if self.linked(key):
            return RunRecord.damaged(key, f"{self.run_dir(key)}: a symbolic link, not a folder of the store "
                                          "(not followed)")
        try:
            data = read_regular(path)
        except FileNotFoundError:
            return None
        except UnsafeFile as exc:
            return RunRecord.damaged(key, str(exc))
        except OSError as exc:
            return RunRecord.damaged(key, f"{path}: cannot read ({exc.strerror or exc})")
        try:
            record = RunRecord.from_json(json.loads(data), str(path))
        except (ValueError, RecordError, OverflowError) as exc:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
            text = (str(exc) if isinstance(exc, RecordError) else f"{path}: holds a number too large ({exc})"
                    if isinstance(exc, OverflowError) else f"{path}: not valid JSON ({exc})")
            return RunRecord.damaged(key, text)
        if record.key != key:
            return RunRecord.damaged(key, f"{path}: holds run {record.key.id}, not {key.id}")
        if verify and record.completed:
            problem = integrity_problem(self, record)
            if problem:
                return record.with_status(Status.DAMAGED, problem)
        return record

    def write_record(self, record: RunRecord) -> None:
        atomic_write_json(self.record_path(record.key), record.to_json())

    def keys(self) -> Iterator[RunKey]:
        for path in self._entries():
            if path.is_dir() and RunKey.is_id(path.name):
                yield RunKey.from_id(path.name)

    def records(self, *, verify: bool = True) -> Iterator[RunRecord]:
        """Every run folder holding a record, damaged ones included (``record.status``)."""
        for key in self.keys():
            record = self.load(key, verify=verify)
            if record is not None:
                yield record

    def strays(self) -> list[Path]:
        """Entries of ``runs/`` that are neither a run folder nor a set-aside damaged run (links included)."""
        return [p for p in self._entries()
                if p.is_symlink() or not (p.is_dir() and (RunKey.is_id(p.name) or self._is_aside(p.name)))]

    def set_aside_dirs(self) -> list[Path]:
        return [p for p in self._entries() if p.is_dir() and not p.is_symlink() and self._is_aside(p.name)]

    def _entries(self) -> list[Path]:
        try:
            return sorted(self.runs_dir.iterdir())
        except FileNotFoundError:
            return []

    @staticmethod
    def _is_aside(name: str) -> bool:
        head, mark, _ = name.partition(ASIDE_MARK)
        return bool(mark) and RunKey.is_id(head)

    # -- integrity
    def seal(self, record: RunRecord, splits: list[str], extra: list[str] = ()) -> RunRecord:
        """The record with digests of its model, per-image files and ``extra`` files, as they are on disk."""
        from dataclasses import replace

        names = [MODEL_FILE] + [per_image_name(s) for s in splits] + list(extra)
        return replace(record, files={n: file_digest(self.run_dir(record.key) / n) for n in names})

    def per_image(self, record: RunRecord, split: str):
        """(ids, counts) of a verified completed run's split; the counts are those its record vouches for."""
        path = self.per_image_path(record.key, split)
        return parse_counts(read_regular(path), str(path))

    def set_aside(self, key: RunKey, keep=lambda name: False) -> Path:
        """Move a damaged run's files (all but those ``keep`` names) to ``runs/<id>.damaged-<time>/``:
        never deleted, so a person can look at what went wrong."""
        self.require_folder(key)  # never move a linked folder's files (someone else's) into the store
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.runs_dir / f"{key.id}{ASIDE_MARK}{stamp}-{os.getpid()}"
        aside.mkdir(parents=True)
        for entry in sorted(self.run_dir(key).iterdir()):
            if not keep(entry.name):
                os.replace(entry, aside / entry.name)
        return aside


MODEL_FILE = "model.pt"


def per_image_name(split: str) -> str:
    return f"per_image_{split}.csv"


def challenge_name(split: str) -> str:
    return f"per_image_challenge_{split}.csv"


def predictions_name(split: str) -> str:
    return f"pred_{split}.npz"


def integrity_problem(store: Store, record: RunRecord) -> str | None:
    """Why a completed run's files do not match its record, or None when they do."""
    run_dir = store.run_dir(record.key)
    if not record.files or "test" not in record.pooled:
        return "completed record without integrity data (written by an older harness, or edited)"
    splits = ["test", *record.external]
    needed = [MODEL_FILE] + [per_image_name(s) for s in splits]
    for name in needed:
        if name not in record.files:
            return f"the record vouches for no {name}"
    for name, expected in record.files.items():
        path = run_dir / name
        try:
            actual = _cached_digest(path)
        except FileNotFoundError:
            return f"{name} is missing"
        except UnsafeFile as exc:
            return str(exc)
        except OSError as exc:
            return f"{name} cannot be read ({exc.strerror or exc})"
        if actual.size != expected.size:
            return f"{name} has {actual.size} bytes, the record says {expected.size}"
        if actual.sha256 != expected.sha256:
            return f"{name} differs from what the record vouches for (sha256)"
    for split in splits:
        pooled = record.pooled.get(split)
        if pooled is None:
            return f"the record has no pooled counts for {split}"
        try:
            _, counts = store.per_image(record, split)
        except StudyError as exc:
            return str(exc)
        if len(counts) != pooled.images:
            return f"{per_image_name(split)} has {len(counts)} images, the record says {pooled.images}"
        if tuple(int(v) for v in counts.sum(axis=0)) != pooled.as_tuple():
            return f"{per_image_name(split)} does not sum to the record's pooled counts"
    return _challenge_problem(store, record)


def _challenge_problem(store: Store, record: RunRecord) -> str | None:
    """The record's challenge scores must follow from the per-image challenge counts it vouches for."""
    from study.challenge import challenge_scores

    for split, scores in record.challenge.items():
        name = challenge_name(split)
        if name not in record.files:
            return f"the record has challenge scores for {split} but vouches for no {name}"
        path = store.challenge_path(record.key, split)
        try:
            _, counts = parse_counts(read_regular(path), str(path))
            derived = challenge_scores(counts)
        except (StudyError, ValueError) as exc:
            return str(exc)
        for metric, value in scores.items():
            want = derived.get(metric)
            if want is None or not math.isclose(value, want, rel_tol=1e-12, abs_tol=1e-15):
                return (f"field 'challenge.{split}.{metric}': {value!r} does not follow from {name}, which "
                        f"gives {want!r}")
    return None


_DIGESTS: dict[tuple, FileDigest] = {}


def _cached_digest(path: Path) -> FileDigest:
    st = os.lstat(path)  # FileNotFoundError for a missing file; a link is refused by file_digest
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digest(path)
    return _DIGESTS[key]
