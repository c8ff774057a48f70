"""A run's identity and its record, typed and validated at the store's boundary.

A run's identity, ``RunKey`` (config hash + seed), is defined here beside the
record that carries it; the store (``study.store.runs``) derives every path
from it. ``Status`` names every state a run can be in; ``RunRecord`` is what
``record.json`` holds, parsed and checked when read. Bytes read from a store
that a whole lab writes to are never trusted: a record that does not parse is
reported as damaged, never executed, never allowed to stop the reading of
the others.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Mapping

from study.errors import StudyError
from study.metrics import pooled_scores

RECORD_FORMAT = 2  # 2: integrity digests and pooled counts of every completed run
_HISTORY_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
_SPLIT = re.compile(r"[a-z0-9][a-z0-9_]*")
_HASH = re.compile(r"[0-9a-f]{16}")
_RUN_ID = re.compile(r"([0-9a-f]{16})-s(0|[1-9][0-9]{0,8})")


class RecordError(StudyError):
    """A record (or a file it vouches for) is not what the harness writes."""


@dataclass(frozen=True, order=True)
class RunKey:
    """A run's identity: the hash of its resolved config and its seed."""

    config_hash: str
    seed: int

    def __post_init__(self):
        if not isinstance(self.config_hash, str) or not _HASH.fullmatch(self.config_hash):
            raise RecordError(f"config hash {self.config_hash!r}: expected 16 lowercase hex digits")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 10**9:
            raise RecordError(f"seed {self.seed!r}: expected an integer from 0 to 999999999")

    @property
    def id(self) -> str:
        return f"{self.config_hash}-s{self.seed}"

    @classmethod
    def from_id(cls, run_id: str) -> "RunKey":
        match = _RUN_ID.fullmatch(run_id) if isinstance(run_id, str) else None
        if not match:
            raise RecordError(f"run id {run_id!r}: expected <16 hex digits>-s<seed>")
        return cls(match.group(1), int(match.group(2)))

    @staticmethod
    def is_id(name: str) -> bool:
        return bool(_RUN_ID.fullmatch(name))

    def __str__(self) -> str:
        return self.id


class Status(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    DAMAGED = "damaged"  # files do not match the record, or the record does not parse

    def __str__(self) -> str:
        return self.value


# What `status` and the report say of a planned run that has no run status of its own.
MISSING = "missing"  # no record at all
QUEUED = "queued"  # waiting in a cluster's queue, no record yet


@dataclass(frozen=True)
class FileDigest:
    """What a completed record vouches for about one file of its run folder."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Counts:
    """A confusion matrix pooled over every pixel of a split, and the images it sums."""

    tp: int
    fp: int
    fn: int
    tn: int
    images: int

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.tp, self.fp, self.fn, self.tn


class KeyedByRun:
    """The views of a run's identity shared by everything that carries a ``key`` (a RunSpec, a RunRecord)."""

    key: RunKey

    @property
    def run_id(self) -> str:
        return self.key.id

    @property
    def seed(self) -> int:
        return self.key.seed

    @property
    def config_hash(self) -> str:
        return self.key.config_hash


@dataclass(frozen=True)
class RunRecord(KeyedByRun):
    """The content of ``record.json``: typed fields for what the harness reads back,
    ``details`` for provenance a person reads (history, versions, attempts, ...)."""

    key: RunKey
    status: Status
    config: Mapping[str, Any] | None  # the resolved config (None only for an unparsable record)
    reason: str | None = None
    rows: tuple[str, ...] = ()
    epochs_done: int = 0
    requeues: int = 0
    test: Mapping[str, float] | None = None  # pooled metrics (fractions)
    external: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    pooled: Mapping[str, Counts] = field(default_factory=dict)  # split -> pooled counts
    # split -> the ISIC challenge's per-image averages at original resolution (real datasets)
    challenge: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    files: Mapping[str, FileDigest] = field(default_factory=dict)  # file name -> digest
    params: int | None = None
    gmacs_thop: float | None = None
    wall_time_s: float | None = None
    launcher: Mapping[str, Any] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)

    # -- convenient views
    @property
    def completed(self) -> bool:
        return self.status is Status.COMPLETED

    @property
    def dataset(self) -> str | None:
        return ((self.config or {}).get("data") or {}).get("dataset")

    def scores(self, split: str = "test") -> dict[str, float] | None:
        """IoU, DSC, accuracy, sensitivity, specificity of ``split``, computed from the pooled counts
        the record vouches for (never copied from its summary fields); None without counts."""
        counts = self.pooled.get(split)
        return None if counts is None else pooled_scores(*counts.as_tuple())

    @property
    def test_dsc(self) -> float | None:
        scores = self.scores("test")
        return None if scores is None else scores["dsc"]

    def attempt_kernels(self) -> list[str]:
        """What computed each attempt, in words (``kernel_summary``), in order; attempts that
        recorded none (older records) are left out. ``details`` is untrusted: odd entries are skipped."""
        attempts = self.details.get("attempts")
        if not isinstance(attempts, list):
            return []
        return [kernel_summary(a) for a in attempts if isinstance(a, Mapping) and isinstance(a.get("kernels"), Mapping)]

    def fingerprints(self) -> list[str]:
        """Each attempt's numerics fingerprint (``study.train.fingerprint``), in order; attempts without one
        (older records) and odd entries are left out."""
        attempts = self.details.get("attempts")
        if not isinstance(attempts, list):
            return []
        return [a["fingerprint"] for a in attempts if isinstance(a, Mapping) and isinstance(a.get("fingerprint"), str)
                and re.fullmatch(r"[0-9a-f]{16}", a["fingerprint"])]

    @property
    def mixed_kernels(self) -> bool:
        """The run was resumed on kernels that round differently from those it started on."""
        return len(set(self.attempt_kernels())) > 1

    def with_status(self, status: Status, reason: str | None) -> "RunRecord":
        return replace(self, status=status, reason=reason)

    @classmethod
    def damaged(cls, key: "RunKey", reason: str) -> "RunRecord":
        """What an unreadable record stands for: its folder's identity and why."""
        return cls(key, Status.DAMAGED, None, reason=reason)

    # -- JSON
    def to_json(self) -> dict:
        out = dict(self.details)
        out.update({
            "format": RECORD_FORMAT, "run_id": self.key.id, "config_hash": self.key.config_hash,
            "seed": self.key.seed, "status": self.status.value, "reason": self.reason,
            "config": self.config, "rows": list(self.rows), "epochs_done": self.epochs_done,
            "requeues": self.requeues,
        })
        if self.test is not None:
            out["test"] = dict(self.test)
        if self.external:
            out["external"] = {k: dict(v) for k, v in self.external.items()}
        if self.challenge:
            out["challenge"] = {k: dict(v) for k, v in self.challenge.items()}
        if self.pooled:
            out["pooled"] = {k: {"tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn, "images": c.images}
                             for k, c in self.pooled.items()}
        if self.files:
            out["files"] = {k: {"sha256": d.sha256, "size": d.size} for k, d in self.files.items()}
        for name in ("params", "gmacs_thop", "wall_time_s"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.launcher:
            out["launcher"] = dict(self.launcher)
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "RunRecord":
        """Parse and validate; ``RecordError`` naming ``where`` and the field otherwise."""
        return _Parser(where).record(obj)


_TYPED = {"format", "run_id", "config_hash", "seed", "status", "reason", "config", "rows", "epochs_done",
          "requeues", "test", "external", "pooled", "challenge", "files", "params", "gmacs_thop", "wall_time_s", "launcher"}


def kernel_summary(attempt: Mapping) -> str:
    """The parts of an attempt's kernels that change float rounding, in words: the device kind, the
    Mamba scan and conv, the input layout, C kernels or PyTorch ops on a CPU, the kernel packages'
    versions on a GPU. Library paths and hosts are left out: two nodes building the same kernels agree."""
    kernels = attempt.get("kernels") or {}
    device = str(attempt.get("device") or "?").split(":")[0]
    parts = [device, f"scan {kernels.get('scan', '?')}", f"conv1d {kernels.get('conv1d', '?')}"]
    if kernels.get("memory_format"):
        parts.append(str(kernels["memory_format"]))
    cpu = kernels.get("cpu")
    if isinstance(cpu, str):
        parts.append("C kernels" if cpu.startswith("native CPU kernels") else "PyTorch ops")
    cuda = kernels.get("cuda")
    if isinstance(cuda, Mapping):
        parts += [f"{name} {cuda.get(name) or 'absent'}" for name in ("mamba_ssm", "causal_conv1d")]
    return ", ".join(parts)


class _Parser:
    def __init__(self, where: str):
        self.where = where

    def fail(self, what: str):
        raise RecordError(f"{self.where}: {what}")

    def number(self, value, name: str, *, integer=False, optional=True, minimum=None, allow_nan=False):
        if value is None and optional:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**62:
            self.fail(f"field '{name}': {str(value)[:30]}... is too large to be a count or a score")
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if ok and allow_nan and not integer and math.isnan(value):
            return value  # a score undefined on this split (no foreground anywhere)
        if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
            self.fail(f"field '{name}': expected {'an integer' if integer else 'a finite number'}, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(f"field '{name}': expected at least {minimum}, got {value!r}")
        return value

    def mapping(self, value, name: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(f"field '{name}': expected an object, got {type(value).__name__}")
        return value

    def metrics(self, value, name: str) -> dict[str, float] | None:
        if value is None:
            return None
        out = {}
        for k, v in self.mapping(value, name).items():
            out[str(k)] = self.number(v, f"{name}.{k}", optional=False, allow_nan=True)
        return out

    def record(self, obj) -> RunRecord:
        if not isinstance(obj, dict):
            self.fail(f"expected a JSON object, got {type(obj).__name__}")
        try:
            key = RunKey(obj.get("config_hash"), obj.get("seed"))
        except RecordError as exc:
            self.fail(str(exc))
        if obj.get("run_id") not in (None, key.id):
            self.fail(f"field 'run_id' {obj.get('run_id')!r} does not match config_hash and seed ({key.id})")
        try:
            status = Status(obj.get("status"))
        except ValueError:
            self.fail(f"field 'status': {obj.get('status')!r} is not one of {', '.join(s.value for s in Status)}")
        if status is Status.DAMAGED:
            self.fail("field 'status': 'damaged' is never written to a record")
        config = obj.get("config")
        if not isinstance(config, dict):
            self.fail("field 'config': expected the resolved config (an object)")
        reason = obj.get("reason")
        if reason is not None and not isinstance(reason, str):
            self.fail(f"field 'reason': expected text, got {type(reason).__name__}")
        rows = obj.get("rows") or []
        if not isinstance(rows, list) or not all(isinstance(r, str) for r in rows):
            self.fail("field 'rows': expected a list of row ids")
        external = {str(k): self.metrics(v, f"external.{k}") for k, v in self.mapping(obj.get("external"),
                                                                                         "external").items()}
        challenge = {str(k): self.metrics(v, f"challenge.{k}") for k, v in self.mapping(obj.get("challenge"),
                                                                                           "challenge").items()}
        record = RunRecord(
            key=key, challenge=challenge, status=status, config=config, reason=reason, rows=tuple(rows),
            epochs_done=self.number(obj.get("epochs_done", 0), "epochs_done", integer=True, minimum=0),
            requeues=self.number(obj.get("requeues", 0), "requeues", integer=True, minimum=0),
            test=self.metrics(obj.get("test"), "test"), external=external,
            pooled=self.pooled(obj.get("pooled")), files=self.files(obj.get("files")),
            params=self.number(obj.get("params"), "params", integer=True, minimum=0),
            gmacs_thop=self.number(obj.get("gmacs_thop"), "gmacs_thop", minimum=0),
            wall_time_s=self.number(obj.get("wall_time_s"), "wall_time_s", minimum=0),
            launcher=self.mapping(obj.get("launcher"), "launcher"),
            details={k: v for k, v in obj.items() if k not in _TYPED},
        )
        if "history" in obj:
            self.history(obj["history"])
        if status is Status.COMPLETED:
            self.completed_checks(record, obj)
        return record

    def history(self, value) -> None:
        """Every epoch's entry, field by field: the curves, the search objective and the cost estimates
        read only a history that passed this."""
        if not isinstance(value, list):
            self.fail(f"field 'history': expected a list of epochs, got {type(value).__name__}")
        for i, entry in enumerate(value):
            name = f"history[{i}]"
            if not isinstance(entry, dict):
                self.fail(f"field '{name}': expected an object, got {type(entry).__name__}")
            epoch = self.number(entry.get("epoch"), f"{name}.epoch", integer=True, optional=False, minimum=1)
            if epoch != i + 1:
                self.fail(f"field '{name}.epoch': {epoch}, expected {i + 1} (epochs in order, none missing)")
            for key, v in entry.items():
                if not isinstance(key, str) or not _HISTORY_KEY.fullmatch(key):
                    self.fail(f"field '{name}': key {key!r} is not allowed")
                low = 0 if key.endswith("seconds") or key == "lr" else None
                v = self.number(v, f"{name}.{key}", minimum=low)
                if key.endswith("_dsc") and v is not None and not 0 <= v <= 1:
                    self.fail(f"field '{name}.{key}': {v!r}, expected a fraction in [0, 1]")

    def completed_checks(self, record: RunRecord, obj: dict) -> None:
        """What a completed record must hold together: its whole history, and metrics that follow
        from the pooled counts it vouches for (an edited number is a damaged record, field named)."""
        if record.test is None:
            self.fail("a completed record has no test metrics")
        history = obj.get("history")
        if not isinstance(history, list):
            self.fail("field 'history': a completed record has no per-epoch history")
        if len(history) != record.epochs_done:
            self.fail(f"field 'history': {len(history)} epochs, but epochs_done says {record.epochs_done}")
        epochs = ((record.config or {}).get("train") or {}).get("epochs")
        if isinstance(epochs, int) and record.epochs_done != epochs:
            self.fail(f"field 'epochs_done': {record.epochs_done}, but the config trains {epochs} epochs")
        for split, counts in record.pooled.items():
            metrics = record.test if split == "test" else record.external.get(split)
            if metrics is None:
                self.fail(f"field '{'test' if split == 'test' else 'external.' + split}': missing, but the record "
                          f"has pooled counts for {split}")
            self.metrics_follow(metrics, counts, "test" if split == "test" else f"external.{split}")

    def metrics_follow(self, metrics: Mapping[str, float], counts: "Counts", name: str) -> None:
        derived = {**pooled_scores(*counts.as_tuple()), "tp": counts.tp, "fp": counts.fp, "fn": counts.fn,
                   "tn": counts.tn}
        for key, want in derived.items():
            got = metrics.get(key)
            if got is None:
                continue  # an older record without this score: the tables compute it from the counts
            same = (math.isnan(want) and math.isnan(got)) or math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-15)
            if not same:
                self.fail(f"field '{name}.{key}': {got!r} does not follow from the pooled counts, which give "
                          f"{want!r}")

    def pooled(self, value) -> dict[str, Counts]:
        out = {}
        for split, c in self.mapping(value, "pooled").items():
            if not _SPLIT.fullmatch(str(split)):
                self.fail(f"field 'pooled': split name {split!r} is not allowed")
            c = self.mapping(c, f"pooled.{split}")
            out[split] = Counts(*(self.number(c.get(n), f"pooled.{split}.{n}", integer=True, optional=False,
                                              minimum=0) for n in ("tp", "fp", "fn", "tn", "images")))
        return out

    def files(self, value) -> dict[str, FileDigest]:
        out = {}
        for name, d in self.mapping(value, "files").items():
            # Names are looked up inside the run folder: no separators, no parent references.
            if not re.fullmatch(r"[a-z0-9_]+\.(pt|csv|npz)", str(name)):
                self.fail(f"field 'files': file name {name!r} is not allowed")
            d = self.mapping(d, f"files.{name}")
            digest = d.get("sha256")
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                self.fail(f"field 'files.{name}.sha256': expected 64 hex digits")
            out[name] = FileDigest(digest, self.number(d.get("size"), f"files.{name}.size", integer=True,
                                                       optional=False, minimum=0))
        return out
