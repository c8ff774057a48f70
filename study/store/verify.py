"""`study verify`: check every run of a store against what its record vouches for."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from study.store.record import Status
from study.store.runs import Store


@dataclass
class StoreCheck:
    counts: Counter = field(default_factory=Counter)  # status value -> runs
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (run id, why)
    strays: list[Path] = field(default_factory=list)  # entries of runs/ that are not runs
    set_aside: list[Path] = field(default_factory=list)  # damaged runs moved aside earlier

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.strays


def verify_store(store: Store, progress=None, check_record=None) -> StoreCheck:
    """Read every record (hashing every file it vouches for); ``progress(i, n)`` after each run.

    ``check_record(record)`` returns why a parsed record is damaged beyond what the store can see
    alone (its config against its hash, its Params and MACs against its model: the CLI passes the
    checks that need the models), or None."""
    check = StoreCheck()
    keys = list(store.keys())
    for i, key in enumerate(keys):
        record = store.load(key)
        if record is None:
            check.damaged.append((key.id, "a run folder without record.json"))
            check.counts[Status.DAMAGED.value] += 1
        else:
            problem = check_record(record) if check_record and record.status is not Status.DAMAGED else None
            if problem:
                record = record.with_status(Status.DAMAGED, problem)
            check.counts[record.status.value] += 1
            if record.status is Status.DAMAGED:
                check.damaged.append((key.id, record.reason or Status.DAMAGED.value))
        if progress:
            progress(i + 1, len(keys))
    check.strays = store.strays()
    check.set_aside = store.set_aside_dirs()
    return check
