"""Optuna search over the weights of the hybrid distillation loss (Eq. 12).

Each trial is one run in the results store: the student (Table 7's full
strategy row) with the trial's weights, its checkpoint picked on a holdout part
carved from the TRAINING split (``train.selection = holdout``), and its value
the student's DSC on that holdout part. The test split never enters the
objective. The teacher is the full model with the same protocol, from the
store (trained into it first if missing).

Workers share one storage: a JournalStorage file under the results root by
default (safe for several processes, also on a shared file system), or any
RDB URL. Exactly ``n_trials`` trials are started: a worker claims a trial under
a file lock next to the storage (for an RDB storage without a shared folder,
at most workers - 1 extra trials can finish). A trial whose worker died stays
RUNNING in Optuna; the next worker to look marks it FAIL and enqueues a retry
with the same weights, which resumes the same run from its checkpoint.
"""

from __future__ import annotations

import json

import fcntl
import math
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from study.config import RunConfig
from study.errors import ConfigError
from study.lease import RunLease, pid_alive, store_now
from study.store import RunKey, Store

# Search space. lambda_s multiplies the DKD term together with the fixed soft
# factor (8.0), as in the official release.
SPACE = {
    "soft": (0.05, 2.0),
    "attention": (0.01, 1.0),
    "grad": (0.01, 1.0),
    "attention_tau": (0.1, 4.0),
}
HARD_RANGE = (0.25, 2.0)  # only with tune_hard
OFFICIAL = {"soft": 0.5, "attention": 0.2, "grad": 0.3, "attention_tau": 0.5}
BASE_ROW = "t7-full"


@dataclass(frozen=True)
class TuneSpec:
    """Everything a worker needs; picklable, so SLURM tasks get it too."""

    dataset: str
    n_trials: int
    storage: str
    study_name: str
    store_root: str
    profile: str = "paper"
    overrides: dict | None = None
    seed: int = 0
    tune_hard: bool = False
    roots: dict | None = None
    # Median pruner: wait for this many finished trials, and this many epochs in each.
    prune_startup_trials: int = 3
    prune_warmup_epochs: int = 2
    # A RUNNING trial on another host without a heartbeat for this long is taken as dead.
    grace_seconds: float = 1800.0

    def base_config(self) -> RunConfig:
        from study.variants import find_row

        overrides = dict(self.overrides or {})
        overrides["train"] = {**overrides.get("train", {}), "selection": "holdout"}
        return find_row(BASE_ROW).run_config(self.dataset, self.profile, overrides)

    def trial_config(self, params: dict) -> RunConfig:
        base = self.base_config()
        weights = {k: float(v) for k, v in params.items()}
        return replace(base, distill=replace(base.distill, **weights))


def default_storage(store: Store, study_name: str) -> str:
    return str(store.root / "tune" / f"{study_name}.journal")


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


def _record_start(line: bytes) -> int | None:
    """Where the last whole journal record in a bad line starts: a worker killed mid-write leaves a
    fragment, and the next writer's record is glued after it (``{"op_code"`` starts each record)."""
    at = line.rfind(b'{"op_code"')
    while at > 0:
        try:
            json.loads(line[at:])
            return at
        except ValueError:
            at = line.rfind(b'{"op_code"', 0, at)
    return None


def repair_journal(path: Path, log=None, lock: bool = True) -> Path | None:
    """Set aside every torn record of an Optuna journal, under the journal's own lock.

    A worker killed mid-append leaves a fragment without its newline; the next worker's record is
    then glued onto it and Optuna can no longer read the study. Each line that is not one JSON
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
            try:
                json.loads(body)
                whole = line.endswith(b"\n")
            except ValueError:
                whole = False
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


def _claim_lock_path(spec: TuneSpec) -> Path:
    if "://" in spec.storage:
        return Path(spec.store_root) / "tune" / f"{spec.study_name}.claim.lock"
    return Path(spec.storage + ".claim.lock")


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
        first = dict(OFFICIAL)
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


def _beat_path(spec: TuneSpec, number: int) -> Path:
    """A file the trial's worker rewrites at its claim and every epoch: its age, on the store's clock,
    says whether a worker on another host is still there (no two hosts' wall clocks are compared)."""
    return Path(spec.store_root) / "tune" / f"{spec.study_name}.beats" / f"trial-{number}"


def _beat(spec: TuneSpec, number: int) -> None:
    path = _beat_path(spec, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{socket.gethostname()} {os.getpid()}\n")


def _alive(trial, spec: TuneSpec) -> bool:
    attrs = trial.user_attrs
    host, pid = attrs.get("host"), attrs.get("pid")
    if host == socket.gethostname() and pid is not None:
        return pid == os.getpid() or pid_alive(int(pid))
    run_id = attrs.get("run_id")
    if run_id and RunKey.is_id(run_id):  # training: its run's lease, renewed every 30 s, judged on the store's clock
        if RunLease(Store(spec.store_root).run_dir(RunKey.from_id(run_id))).holder() is not None:
            return True
    path = _beat_path(spec, trial.number)
    try:
        with open(path, "rb") as fh:
            beat = os.fstat(fh.fileno()).st_mtime
    except OSError:
        return False  # never beat: a worker that died before its first heartbeat
    try:
        now = store_now(path.parent)
    except OSError:  # a folder this process cannot write: this host's clock, as leases do
        now = time.time()
    return now - beat < spec.grace_seconds


def reap_dead_trials(study, spec: TuneSpec, log=print) -> int:
    """Mark RUNNING trials whose worker is gone as FAIL and enqueue each once more."""
    from optuna.trial import TrialState

    reaped = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _alive(t, spec):
            continue
        study._storage.set_trial_user_attr(t._trial_id, "failure", "its worker died; retried")
        study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, "origin": t.user_attrs.get("origin", "")})
        reaped += 1
        log(f"trial {t.number}: its worker (pid {t.user_attrs.get('pid')} on {t.user_attrs.get('host')}) is gone; "
            "marked failed and enqueued again (it resumes the same run)")
    return reaped


def _claim(study, spec: TuneSpec):
    """Start a trial if fewer than n_trials are started and not failed; else None."""
    from optuna.trial import TrialState

    with _locked(_claim_lock_path(spec)):
        reap_dead_trials(study, spec, log=lambda _m: None)
        started = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                           TrialState.RUNNING))
        if len(started) >= spec.n_trials:
            return None
        trial = study.ask()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("heartbeat", time.time())  # for people; liveness reads _beat_path
        _beat(spec, trial.number)
        if os.environ.get("SLURM_JOB_ID"):
            trial.set_user_attr("slurm_job_id", os.environ["SLURM_JOB_ID"])
        return trial


def suggest(trial, spec: TuneSpec) -> dict:
    params = {name: trial.suggest_float(name, low, high, log=True) for name, (low, high) in SPACE.items()}
    if spec.tune_hard:
        params["hard"] = trial.suggest_float("hard", *HARD_RANGE, log=True)
    return params


def run_trial(study, trial, spec: TuneSpec, log=print) -> None:
    import optuna

    from study.plan import RunSpec
    from study.train.run import RunStopped, train_spec

    params = suggest(trial, spec)
    config = spec.trial_config(params)
    trial.set_user_attr("run_id", RunKey(config.hash, spec.seed).id)

    def on_epoch(epoch: int, entry: dict) -> None:
        trial.set_user_attr("heartbeat", time.time())
        _beat(spec, trial.number)
        value = entry.get("selection_dsc")
        if value is None or math.isnan(value):
            return
        trial.report(value, step=epoch)
        if trial.should_prune():
            raise RunStopped(f"pruned by the search (trial {trial.number}) at epoch {epoch}")

    store = Store(spec.store_root)
    try:
        record = train_spec(RunSpec.of(config, spec.seed, (f"tune:{spec.study_name}",)), store,
                            roots=spec.roots or {}, progress=False, epoch_callback=on_epoch)
    except RunStopped:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        log(f"trial {trial.number}: pruned")
        return
    except Exception as exc:  # a failing configuration: recorded in its run and in the trial
        trial.set_user_attr("failure", f"{type(exc).__name__}: {exc}")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log(f"trial {trial.number}: failed: {exc}")
        return
    if not record.completed:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return
    try:
        chosen = int(record.details["selection"]["epoch"])
        value = float(record.details["history"][chosen - 1]["selection_dsc"])
        if math.isnan(value):
            raise ValueError("NaN")
    except (KeyError, IndexError, TypeError, ValueError) as exc:  # an odd record: the search moves on
        _fail_and_retry_once(study, trial, f"run {record.run_id}: its record gives no holdout DSC for its "
                                           f"selected epoch ({type(exc).__name__}: {exc})", log)
        return
    trial.set_user_attr("selected_epoch", chosen)
    study.tell(trial, value)
    pretty = ", ".join(f"{k} {v:.3g}" for k, v in params.items())
    log(f"trial {trial.number}: holdout DSC {value * 100:.2f} ({pretty})")


def _fail_and_retry_once(study, trial, why: str, log) -> None:
    """Mark the trial failed with ``why`` and enqueue its weights once more (not a retry of a retry)."""
    import optuna

    trial.set_user_attr("failure", why)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    if "retry_of" not in trial.user_attrs:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number,
                                                       "origin": trial.user_attrs.get("origin", "")})
    log(f"trial {trial.number}: failed: {why}" + ("" if "retry_of" in trial.user_attrs else "; enqueued again"))


def run_worker(spec: TuneSpec, threads: int | None = None, log=print) -> int:
    """Claim and run trials until the study has its trials; returns how many this worker ran."""
    if threads:
        from study.launch.workers import set_threads

        set_threads(threads)
    study = load_study(spec, create=False)
    ran = 0
    while True:
        trial = _claim(study, spec)
        if trial is None:
            return ran
        run_trial(study, trial, spec, log)
        ran += 1


def ensure_teacher(spec: TuneSpec, log=print) -> str:
    """Train the teacher (same protocol: holdout selection) into the store unless it is there."""
    from study.plan import RunSpec
    from study.train.run import train_spec

    teacher = RunSpec.of(spec.base_config().teacher_config(), spec.seed)
    record = Store(spec.store_root).load(teacher.key)
    if record is not None and record.completed:
        return record.run_id
    log(f"training the teacher {teacher.run_id} (full model, holdout selection) into the store first")
    record = train_spec(teacher, Store(spec.store_root), roots=spec.roots or {}, progress=False)
    return record.run_id


def _local_worker(spec: TuneSpec, threads: int, parent_pid: int) -> int:
    from study.launch.workers import exit_with_parent

    exit_with_parent(parent_pid)
    return run_worker(spec, threads, log=lambda m: print(m, flush=True))


def run_local(spec: TuneSpec, workers: int, log=print) -> None:
    if workers <= 1:
        run_worker(spec, log=log)
        return
    import multiprocessing

    from study.launch.cpus import default_threads

    threads = default_threads(workers)
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_local_worker, args=(spec, threads, os.getpid())) for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=30)
        raise


# ---- reading a study back -------------------------------------------------------------


def summary(study, top: int = 5) -> str:
    import optuna
    from optuna.trial import TrialState

    counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    lines = [f"study {study.study_name}: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n)]
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        return "\n".join(lines + ["no completed trial yet"])
    done.sort(key=lambda t: t.value, reverse=True)
    lines.append("best trials (student DSC on the holdout part of the training split):")
    for t in done[:top]:
        pretty = ", ".join(f"{k} {v:.4g}" for k, v in t.params.items())
        origin = f"  [{t.user_attrs['origin']}]" if t.user_attrs.get("origin") else ""
        lines.append(f"  #{t.number:<3d} DSC {t.value * 100:.2f}  {pretty}  run {t.user_attrs.get('run_id')}{origin}")
    if len(done) >= 2:
        try:
            importances = optuna.importance.get_param_importances(study)
            lines.append("parameter importances (fANOVA): " +
                         ", ".join(f"{k} {v:.2f}" for k, v in importances.items()))
        except (RuntimeError, ValueError) as exc:
            lines.append(f"parameter importances: not available ({exc})")
    else:
        lines.append("parameter importances: need at least 2 completed trials")
    return "\n".join(lines)


def export_best(study, name: str, variants_file: Path) -> Path:
    """Append the best trial's weights as a new row of a variants file (never overwriting a row)."""
    import tomllib

    from optuna.trial import TrialState

    from study.record import check_row_id
    from study.variants import load_tables

    check_row_id(name, "--export")
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise ConfigError(f"study {study.study_name!r} has no completed trial to export")
    best = max(done, key=lambda t: t.value)
    variants_file = Path(variants_file)
    if not variants_file.is_file():
        raise ConfigError(f"{variants_file}: no such variants file (export appends a row to an existing table)")
    original = variants_file.read_text()
    if name in {r.id for t in load_tables(variants_file.parent).values() for r in t.rows}:
        raise ConfigError(f"{variants_file}: a row with id {name!r} already exists; choose another --export name")
    weights = {"hard": best.params.get("hard", 1.0), **{k: best.params[k] for k in SPACE}}
    distill = ", ".join(f"{k} = {v:.6g}" for k, v in weights.items())
    # The student is the base row's model (Table 7's -T): its own options, never a copy typed here.
    from study.variants import find_row

    student = {k: v for k, v in find_row(BASE_ROW).model.items() if k != "arch"}
    model = "".join(f"model.{k} = {json.dumps(v)}\n" for k, v in sorted(student.items()))
    block = (
        f"\n# Exported by `study tune show --export {name}` from study {study.study_name!r}, trial {best.number} "
        f"(holdout DSC {best.value * 100:.2f}).\n"
        f"[[rows]]\nid = \"{name}\"\nname = \"Tuned weights ({name})\"\n{model}"
        f"distill = {{ {distill} }}\n"
    )
    variants_file.write_text(original + block)
    try:  # the file must still load; else put it back exactly as it was
        tomllib.loads(variants_file.read_text())
        load_tables.cache_clear()
        load_tables(variants_file.parent)
    except Exception:
        variants_file.write_text(original)
        load_tables.cache_clear()
        raise
    load_tables.cache_clear()
    return variants_file


def same_config_rows(name: str, variants_dir: Path, profile: str) -> list[str]:
    """Rows that resolve to the same config as row ``name`` (they share its runs)."""
    from study.variants import load_tables

    load_tables.cache_clear()
    tables = load_tables(variants_dir)
    rows = [r for t in tables.values() for r in t.rows if not r.unavailable]
    target = next(r for r in rows if r.id == name)
    digest = target.run_config(profile=profile).hash
    return [r.id for r in rows if r.id != name and r.run_config(profile=profile).hash == digest]
