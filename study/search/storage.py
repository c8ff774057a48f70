"""Where a search lives: an Optuna study in a journal file (or an RDB URL), opened, repaired and
created here.

A JournalStorage file under the results root by default is safe for several
processes, also on a shared file system; a worker killed while appending leaves
a torn record, which is set aside under the journal's lock before anyone reads it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from study.errors import ConfigError
from study.search.space import BASE_ROW, TuneSpec, official_weights
from study.store.runs import Store


def default_storage(store: Store, study_name: str) -> str:
    from study.canonical import check_study_name

    return str(store.root / "tune" / f"{check_study_name(study_name)}.journal")


def open_storage(storage: str, read_only: bool = False):
    """A JournalStorage for a file path, else an RDB URL (sqlite://, postgresql://...). ``read_only``
    (``tune show``): nothing is created or repaired; the journal is read from a private copy, so a
    labmate who can only read the store can look at a search."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if "://" in storage:
        return optuna.storages.RDBStorage(storage)
    path = Path(storage)
    if read_only:
        if not path.is_file():
            raise ConfigError(f"no search journal at {path}; start a search with `study tune distill`")
        import shutil
        import tempfile

        copy = Path(tempfile.mkdtemp(prefix="study-tune-show-")) / path.name
        shutil.copyfile(path, copy)
        repair_journal(copy, log=lambda line: None, lock=False)
        path = copy
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_journal(path)
    # The open-lock (O_EXCL on a lock file) works on NFS, unlike symlinks on some mounts.
    return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def _is_operation(body: bytes) -> bool:
    """One whole journal record: a JSON object with one of Optuna's operation codes (and a worker id).
    Valid JSON that is no operation (a line a person or another program wrote) cannot be replayed."""
    try:
        obj = json.loads(body)
    except ValueError:
        return False
    if not isinstance(obj, dict) or not isinstance(obj.get("worker_id"), str):
        return False
    code = obj.get("op_code")
    return isinstance(code, int) and not isinstance(code, bool) and code in _operation_codes()


def _operation_codes() -> set[int]:
    try:
        from optuna.storages.journal._storage import JournalOperation
    except ImportError:  # a later Optuna that moved it: its journal format, its codes
        return set(range(0, 64))
    return {op.value for op in JournalOperation}


def _record_start(line: bytes) -> int | None:
    """Where the last whole journal record in a bad line starts: a worker killed mid-write leaves a
    fragment, and the next writer's record is glued after it (``{"op_code"`` starts each record)."""
    at = line.rfind(b'{"op_code"')
    while at > 0:
        if _is_operation(line[at:]):
            return at
        at = line.rfind(b'{"op_code"', 0, at)
    return None


def repair_journal(path: Path, log=None, lock: bool = True) -> Path | None:
    """Set aside every torn record of an Optuna journal, under the journal's own lock.

    A worker killed mid-append leaves a fragment without its newline; the next worker's record is
    then glued onto it and Optuna can no longer read the study. A line that is valid JSON but no
    Optuna operation is set aside the same way. Each line that is not one JSON
    record keeps the whole record glued at its end (if any) and loses the fragment before it, which
    goes to ``<journal>.torn-<time>-<pid>``; the journal is rewritten in place atomically. Returns
    that file, or None when the journal is whole."""
    from optuna.storages.journal import JournalFileOpenLock

    if not path.is_file() or path.stat().st_size == 0:
        return None
    guard = JournalFileOpenLock(str(path)) if lock else None
    try:
        if guard is not None:
            guard.acquire()
    except OSError as exc:  # a journal this process may only read: leave it as it is
        (log or _stderr)(f"{path}: not checked for torn records ({exc.strerror or exc})")
        return None
    try:
        kept, torn = [], []
        for line in path.read_bytes().splitlines(keepends=True):
            body = line.rstrip(b"\r\n")
            whole = line.endswith(b"\n") and _is_operation(body)
            if whole:
                kept.append(line)
                continue
            start = _record_start(body) if line.endswith(b"\n") else None
            torn.append(body if start is None else body[:start])
            if start is not None:
                kept.append(body[start:] + b"\n")
        if not torn:
            return None
        aside = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        aside.write_bytes(b"\n".join(torn) + b"\n")
        fresh = path.with_name(f".{path.name}.repair-{os.getpid()}")
        fresh.write_bytes(b"".join(kept))
        os.replace(fresh, path)
    finally:
        if guard is not None:
            guard.release()
    size = sum(len(t) for t in torn)
    (log or _stderr)(f"{path}: {len(torn)} torn record(s) ({size} bytes, a worker killed while writing); set "
                     f"aside as {aside.name}, and the search goes on from the whole records")
    return aside


def _stderr(line: str) -> None:
    import sys

    print(f"warning: {line}", file=sys.stderr)


def load_study(spec: TuneSpec, create: bool = True, read_only: bool = False):
    import optuna

    pruner = optuna.pruners.MedianPruner(n_startup_trials=spec.prune_startup_trials,
                                         n_warmup_steps=spec.prune_warmup_epochs)
    # No fixed sampler seed: parallel workers with one seed would propose the same weights.
    sampler = optuna.samplers.TPESampler()
    if create:
        return optuna.create_study(study_name=spec.study_name, storage=open_storage(spec.storage),
                                   direction="maximize", pruner=pruner, sampler=sampler, load_if_exists=True)
    try:
        return optuna.load_study(study_name=spec.study_name, storage=open_storage(spec.storage, read_only),
                                 pruner=pruner, sampler=sampler)
    except KeyError:
        raise ConfigError(f"no study {spec.study_name!r} in {spec.storage}; start it with `study tune distill`") from None


def prepare_study(spec: TuneSpec, log=print):
    """Create (or continue) the study; enqueue the official weights as trial 0 of a new study."""
    study = load_study(spec)
    if not study.trials:
        first = official_weights()
        if spec.tune_hard:
            first["hard"] = 1.0
        study.enqueue_trial(first, user_attrs={"origin": "official weights"})
        log(f"new study {spec.study_name!r} in {spec.storage}; trial 0 = the official weights {first}")
    else:
        log(f"continuing study {spec.study_name!r}: {len(study.trials)} trial(s) so far")
    study.set_user_attr("spec", {"dataset": spec.dataset, "profile": spec.profile, "seed": spec.seed,
                                 "n_trials": spec.n_trials, "base_row": BASE_ROW,
                                 "objective": "student DSC on the holdout part of the training split"})
    return study
