"""The search's workers: each claims trials until the study has its trials, and trains each
trial as one run of the results store.

Exactly ``n_trials`` trials are started: a worker claims a trial under a file
lock next to the storage (for an RDB storage without a shared folder, at most
workers - 1 extra trials can finish). A trial whose worker died stays RUNNING in
Optuna; the next worker to look marks it FAIL and enqueues a retry with the same
weights, which resumes the same run from its checkpoint.
"""

from __future__ import annotations

import fcntl
import functools
import math
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from study.errors import StudyError
from study.launch.pool import Outcome, WorkerPool
from study.launch.workers import worker_device
from study.search.space import TuneSpec, suggest
from study.search.storage import load_study
from study.store.lease import pid_alive, store_now
from study.store.record import RunKey
from study.store.runs import Store


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
        if Store(spec.store_root).lease(RunKey.from_id(run_id)).holder() is not None:
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
    """Mark RUNNING trials whose worker is gone as FAIL and enqueue each once more.

    Through Optuna's public API (``Study.tell`` takes a trial number, from any process). Optuna's
    own stale-trial reaping (``heartbeat_interval``, ``fail_stale_trials``) is not used: it judges a
    trial by the gap between its worker's wall clock and the reaper's, and the workers of one search
    run on several hosts; liveness here is a lease or a beat file's age on the store's own clock."""
    from optuna.trial import TrialState

    reaped = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _alive(t, spec):
            continue
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, "retry_reason": "its worker died",
                                                  "origin": t.user_attrs.get("origin", "")})
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
        record = train_spec(RunSpec.of(config, spec.seed, (f"tune:{spec.study_name}",)), store, device=worker_device(),
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


def run_worker(spec: TuneSpec, log=print) -> int:
    """Claim and run trials until the study has its trials; returns how many this worker ran
    (in whatever process its pool or job put it, with the threads it was given there)."""
    study = load_study(spec, create=False)
    ran = 0
    while True:
        trial = _claim(study, spec)
        if trial is None:
            return ran
        run_trial(study, trial, spec, log)
        ran += 1


def worker_outcome(spec: TuneSpec, number: int) -> Outcome:
    """One search worker as a pool's work: its trials, as an Outcome."""
    started = time.monotonic()
    ran = run_worker(spec, log=lambda m: print(m, flush=True))
    return Outcome(f"search worker {number}", "completed", f"{ran} trial(s)", None, time.monotonic() - started)


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


def run_local(spec: TuneSpec, share, log=print) -> None:
    """``share.jobs`` workers on this machine with ``share.threads`` threads each (``study.launch.cpus``)."""
    with WorkerPool(share.jobs, share.threads) as pool:
        for _, outcome in pool.run(functools.partial(worker_outcome, spec), range(share.jobs),
                                   name=lambda n: f"search worker {n}"):
            if outcome.status != "completed":
                raise StudyError(f"{outcome.name}: {outcome.reason}")
