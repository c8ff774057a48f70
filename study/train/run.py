"""One run from the store's side: claim it, train it (study.train.loop), record what happened.

``train_run`` is the one entry point every launcher and the search use. It
holds the run's lease while it trains, turns SIGTERM into a recorded
interruption, and writes the record: ``running`` while it trains, then
``completed`` (sealed with the digests of its files), ``failed`` with the
reason, or ``interrupted`` (resumable). A config or data-root error found
before training leaves no run folder behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace

import torch

from study.config import RunConfig
from study.errors import ConfigError, DataError, StudyError
from study.models.mamba import get_backend
from study.plan import RunSpec
from study.settings import current
from study.store.atomic import atomic_torch_save, atomic_write_bytes, atomic_write_json
from study.store.lease import RunLease, is_lease_file
from study.store.record import MISSING, RunKey, RunRecord, Status
from study.store.runs import Store
from study.train.fingerprint import numerics_fingerprint
from study.train.loop import RunFailed, RunLost, Trainer, derive_seed, evaluate  # noqa: F401
from study.train.numerics import apply as apply_numerics
from study.train.outputs import evaluate_split
from study.train.provenance import git_commit, git_dirty, kernels_used, versions
from study.train.timing import epoch_clock_name
from study.train.track import make_tracker


class RunBusy(StudyError):
    """Another live process holds this run's lease."""


class RunStopped(StudyError):
    """Raised by an epoch callback to stop a run early (a pruned search trial): recorded
    as interrupted, so the run stays resumable."""


@dataclass
class RunContext:
    """Where a run lives and how it reports; built by ``train_spec``."""

    config: RunConfig
    key: RunKey
    teacher: RunKey | None  # a student's teacher run, planned (and trained) before it
    store: Store
    lease: RunLease
    progress: bool
    log: object = None  # callable(str) for one line per epoch, or None
    epoch_callback: object = None  # callable(epoch, entry); may raise RunStopped
    track: str | None = None  # "tensorboard": event files in the run folder (study.train.track)

    def check_lease(self) -> None:
        if self.lease.lost:
            raise RunLost(f"run {self.key.id}: this process's lease was taken over by another; it stops "
                          "without writing to the run")


def check_data_roots(config: RunConfig, roots: dict[str, str]) -> None:
    """Fail at once, before anything is written, if a real dataset is not configured."""
    from study.data import REAL_DATASETS, resolve_root
    from study.data.cache import require_cache_for

    names = sorted({config.data.dataset, *config.data.external})
    for name in names:
        if name in REAL_DATASETS:
            resolve_root(name, roots.get(name))  # DataError: where to download it, how to point at it
    require_cache_for(names)  # a cache to build in a folder this process cannot write: one line, now


def train_run(config: RunConfig, seed: int, store: Store, *, rows: tuple[str, ...] = (),
              train_teacher: bool = False, **options) -> RunRecord:
    """``train_spec`` for a config and seed. ``train_teacher``: a student's teacher is
    trained first, as its own run (never from inside the student's)."""
    spec = RunSpec.of(config, seed, rows)
    if train_teacher and spec.teacher is not None:
        teacher = RunSpec.of(config.teacher_config(), seed)
        keep = {k: options[k] for k in ("roots", "progress", "device", "log") if k in options}
        record = train_spec(teacher, store, **keep)
        if not record.completed:
            raise RunFailed(f"teacher run {teacher.run_id} did not complete: {record.reason}")
    return train_spec(spec, store, **options)


def train_spec(
    spec: RunSpec,
    store: Store,
    *,
    roots: dict[str, str] | None = None,
    progress: bool | None = None,
    device: str | None = None,
    stop_after_epochs: int | None = None,
    log=None,
    launcher_info: dict | None = None,
    epoch_callback=None,
    restart_unreadable: bool = False,
    track: str | None = None,
) -> RunRecord:
    """Train (or resume, or skip if completed) one run; returns its record.

    ``stop_after_epochs`` stops cleanly after that many epochs in this call,
    leaving a resumable run. ``launcher_info`` is stored in the record (a SLURM
    job's id and log paths). ``epoch_callback(epoch, entry)`` sees each epoch's
    metrics; it may raise ``RunStopped`` (the search's pruner does).
    ``restart_unreadable`` sets an unreadable checkpoint aside and starts over.
    """
    config, key, rows = spec.config, spec.key, spec.rows
    roots = roots or {}
    check_data_roots(config, roots)
    existing = store.load(key)
    if existing is not None and existing.completed:
        return existing
    store.require_folder(key)
    run_dir = store.run_dir(key)
    fresh = not run_dir.exists()
    lease = store.lease(key)
    if not lease.acquire():
        holder = lease.holder()
        raise RunBusy(f"run {key.id} is being trained by {holder.describe() if holder else 'another process'}")
    try:
        existing = store.load(key)  # again, under the lease: another process may have just finished it
        if existing is not None and existing.completed:
            return existing
        if existing is not None and existing.status is Status.DAMAGED:
            # A record sealed without its history (by a harness before the checkpoint held it) keeps its
            # checkpoints: the run resumes after its last epoch and seals again, nothing is retrained.
            reseal = any(f"field '{name}'" in (existing.reason or "") for name in ("history", "epochs_done"))
            aside = store.set_aside(key, keep=lambda n: is_lease_file(n) or (reseal and n == "checkpoints"))
            print(f"run {key.id} was damaged ({existing.reason}); its files were moved to {aside}"
                  + ("; it is sealed again from its checkpoints" if reseal else ""), file=sys.stderr)
            existing = None
        if restart_unreadable:
            _set_aside_checkpoint(store, key)
        lease.start_heartbeat()
        ctx = RunContext(config, key, spec.teacher, store, lease, sys.stderr.isatty() if progress is None else progress,
                         log, epoch_callback, track)
        return _run_with_record(ctx, existing, rows, roots, device, stop_after_epochs, launcher_info, fresh)
    finally:
        lease.release()


def _set_aside_checkpoint(store: Store, key: RunKey) -> None:
    path = store.checkpoint_path(key, "last")
    if path.exists():
        target = path.with_name(f"last.pt.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(path, target)
        print(f"checkpoint {path} set aside as {target.name}; the run starts from scratch", file=sys.stderr)


def _start_record(ctx: RunContext, existing: RunRecord | None, rows, launcher_info) -> dict:
    """The record of this attempt, as JSON: carried-over fields of an earlier attempt, then this one's."""
    record = {"run_id": ctx.key.id, "config_hash": ctx.key.config_hash, "seed": ctx.key.seed,
              "config": ctx.config.to_dict(), "rows": sorted(set(rows) | set(existing.rows if existing else ())),
              "status": Status.RUNNING.value, "reason": None, "host": socket.gethostname(), "pid": os.getpid(),
              "requeues": 0}
    if existing is not None:
        resumed = existing.status in (Status.RUNNING, Status.INTERRUPTED)
        record["requeues"] = existing.requeues + (1 if resumed else 0)
        record["previous_status"] = existing.status.value
        record["attempts"] = list(existing.details.get("attempts") or [])
        if existing.launcher:
            record["launcher"] = dict(existing.launcher)
    if launcher_info:  # e.g. SLURM job id, array task, log paths: shown by `study status`
        record["launcher"] = launcher_info
    # One entry per process that started (or resumed) this run: "exactly once" is checkable.
    record.setdefault("attempts", []).append(
        {"host": socket.gethostname(), "pid": os.getpid(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return record


def save_record(store: Store, record: dict) -> RunRecord:
    typed = RunRecord.from_json(record, f"record of run {record.get('run_id')}")
    store.write_record(typed)
    return typed


def _run_with_record(ctx: RunContext, existing, rows, roots, device, stop_after_epochs,
                     launcher_info, fresh: bool) -> RunRecord:
    record = _start_record(ctx, existing, rows, launcher_info)
    started_training = False
    previous_term = None
    try:
        if hasattr(signal, "SIGTERM") and threading.current_thread() is threading.main_thread():
            # SIGTERM (a cluster's kill, `kill`) becomes an interruption, recorded as such.
            previous_term = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if torch.device(device).type == "cuda" and torch.device(device).index is not None:
            torch.cuda.set_device(device)  # so that anything naming plain "cuda" means this run's GPU
        trainer = _prepare(ctx, record, roots, device)
        atomic_write_json(ctx.store.config_path(ctx.key), ctx.config.to_dict())
        save_record(ctx.store, record)
        started_training = True
        return _train(ctx, trainer, record, stop_after_epochs)
    except RunLost:
        raise  # another process owns the run now: write nothing
    except (ConfigError, DataError):
        if not started_training:  # found before training: nothing is recorded
            if fresh:  # and nothing of this run existed before this call: leave nothing behind
                shutil.rmtree(ctx.store.run_dir(ctx.key), ignore_errors=True)
            raise
        record["traceback"] = traceback.format_exc()[-4000:]
        _finish_unhappy(ctx, record, Status.FAILED, _reason(sys.exc_info()[1]))
        raise
    except KeyboardInterrupt:
        _finish_unhappy(ctx, record, Status.INTERRUPTED,
                        "interrupted (Ctrl-C or SIGTERM); resumes from its last checkpoint")
        raise
    except RunStopped as exc:
        _finish_unhappy(ctx, record, Status.INTERRUPTED, f"stopped: {exc}")
        raise
    except Exception as exc:  # recorded, then re-raised for the caller to report
        record["traceback"] = traceback.format_exc()[-4000:]
        _finish_unhappy(ctx, record, Status.FAILED, _reason(exc))
        raise
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)


def _finish_unhappy(ctx: RunContext, record: dict, status: Status, reason: str) -> None:
    if ctx.lease.lost:
        return
    record.update(status=status.value, reason=reason)
    try:
        save_record(ctx.store, record)
    except StudyError as exc:  # a full disk: the previous record stays; its lease will go stale
        print(f"warning: could not record run {ctx.key.id} as {status}: {exc}", file=sys.stderr)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _load_teacher(ctx: RunContext, device):
    """The student's teacher: a completed run of the store, planned and trained before this one."""
    teacher_cfg, teacher_key = ctx.config.teacher_config(), ctx.teacher
    record = ctx.store.load(teacher_key)
    if record is None or not record.completed:
        state = MISSING if record is None else f"{record.status} ({record.reason})"
        raise RunFailed(
            f"distillation needs its teacher run {teacher_key.id} (the full model, same dataset and seed), "
            f"which is {state} in {ctx.store.root}; train it first (`python -m study train --variant ultralbm "
            f"--dataset {ctx.config.data.dataset} --seed {ctx.key.seed}` with the same profile) or pass --train-teacher"
        )
    teacher = teacher_cfg.build_model()
    path = ctx.store.model_path(teacher_key)
    teacher.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return teacher.to(device), teacher_key.id


def _prepare(ctx: RunContext, record: dict, roots, device) -> Trainer:
    """Data, teacher, model and optimizer, resumed from the last checkpoint when there is one."""
    from study.train.data import build_run_data

    get_backend()  # a misspelt STUDY_MAMBA_BACKEND fails here, before any data is loaded
    numerics = apply_numerics(device, ctx.config.train.deterministic)
    data = build_run_data(ctx.config, ctx.key.seed, roots)
    record["data"] = data.provenance
    teacher = None
    if ctx.config.distill.enabled:
        teacher, record["teacher"] = _load_teacher(ctx, device)
    trainer = Trainer.set_up(ctx.config, ctx.key, ctx.store, data, teacher, device)
    if trainer.resume():
        record["resumed_from_epoch"] = trainer.epoch
    # The checkpoint is the truth about progress: a run resumed after its last epoch (stopped
    # while it evaluated or sealed) seals the history and epoch count it holds.
    record.update(epochs_done=trainer.epoch, history=trainer.history)
    # Which kernels ran changes float rounding, not the function: provenance, not identity (like threads).
    # The top-level fields are this attempt's; every attempt keeps its own, so a run resumed on
    # another node or device shows it.
    kernels = kernels_used(device, trainer.model)
    this_attempt = {"device": str(device), "threads": torch.get_num_threads(), "kernels": kernels,
                    "epoch_clock": epoch_clock_name(device),
                    "numerics": numerics, "fingerprint": numerics_fingerprint(ctx.config, device)}
    record["attempts"][-1].update(this_attempt)
    record.update(this_attempt, versions=versions(), git_commit=git_commit(), git_dirty=git_dirty(),
                  own_study=str(current().own_study) if current().own_study else None,
                  selection={"mode": ctx.config.selection_mode, "split": data.selection_split})
    return trainer


def _train(ctx: RunContext, trainer: Trainer, record: dict, stop_after_epochs) -> RunRecord:
    t, store, key = ctx.config.train, ctx.store, ctx.key
    started = time.time()
    end_epoch = t.epochs if stop_after_epochs is None else min(t.epochs, trainer.epoch + stop_after_epochs)
    tracker = make_tracker(ctx.track, store.tensorboard_dir(key), ctx.config.to_dict(), key.id)
    try:
        return _epochs_then_finish(ctx, trainer, record, started, end_epoch, tracker)
    finally:
        tracker.close(_scores_for(record))


def _scores_for(record: dict) -> dict | None:
    return record.get("test") if record.get("status") == Status.COMPLETED.value else None


def _epochs_then_finish(ctx: RunContext, trainer: Trainer, record: dict, started: float, end_epoch: int,
                        tracker) -> RunRecord:
    t, store, key = ctx.config.train, ctx.store, ctx.key
    while trainer.epoch < end_epoch:
        entry = trainer.run_epoch(ctx.check_lease, ctx.progress)
        ctx.check_lease()
        trainer.checkpoint(entry, trainer.wall_before + time.time() - started)
        # What PyTorch warned cannot repeat bit for bit (on CUDA), kept per attempt.
        record["attempts"][-1]["nondeterministic_ops"] = trainer.alerts.as_list()
        atomic_write_bytes(store.metrics_path(key), _history_csv(trainer.history))
        record.update(epochs_done=trainer.epoch, history=trainer.history)
        save_record(store, record)
        if ctx.log:
            sel = "" if "selection_dsc" not in entry else (
                f", {trainer.data.selection_split} loss {entry['selection_loss']:.4f} "
                f"DSC {entry['selection_dsc'] * 100:.2f}")
            ctx.log(f"{key.id} epoch {entry['epoch']}/{t.epochs}: train loss {entry['train_loss']:.4f}{sel} "
                    f"({entry['seconds']:.2f} s: steps {entry['step_seconds']:.2f}, data {entry['data_seconds']:.2f}, "
                    f"selection {entry['select_seconds']:.2f})")
        tracker.on_epoch(entry)
        if ctx.epoch_callback:
            ctx.epoch_callback(entry["epoch"], entry)
    if len(trainer.history) < t.epochs:  # stopped early on purpose: resumable, not completed
        record.update(status=Status.INTERRUPTED.value, reason=f"stopped after epoch {len(trainer.history)} of {t.epochs}")
        return save_record(store, record)
    return _finish(ctx, trainer, record, started)


def _finish(ctx: RunContext, trainer: Trainer, record: dict, started: float) -> RunRecord:
    """Select, evaluate on the test split and every external set, write the files, seal the record."""
    from study.complexity import count_params, macs_thop

    store, key = ctx.store, ctx.key
    record["selection"].update(trainer.selected_model())
    atomic_torch_save(store.model_path(key), trainer.model.state_dict())
    splits = {"test": trainer.data.test, **trainer.data.external}
    results = {}
    for split, dataset in splits.items():
        ctx.check_lease()
        results[split] = evaluate_split(trainer.model, dataset, trainer.device, store, key, split,
                                        keep_predictions=split == "test", served=trainer.split(dataset),
                                        bce_input=trainer.config.train.bce_input)
    record["test"] = results["test"].scores
    record["external"] = {s: r.scores for s, r in results.items() if s != "test"}
    record["challenge"] = {s: r.challenge for s, r in results.items() if r.challenge is not None}
    cpu_model = ctx.config.build_model()
    record["params"] = count_params(cpu_model)
    record["gmacs_thop"] = macs_thop(cpu_model) / 1e9
    record["wall_time_s"] = round(trainer.wall_before + time.time() - started, 3)
    record.update(status=Status.COMPLETED.value, reason=None, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    typed = RunRecord.from_json(record, f"record of run {key.id}")
    pooled = {s: r.pooled for s, r in results.items()}
    typed = store.seal(replace(typed, pooled=pooled), list(splits), [f for r in results.values() for f in r.extra_files])
    ctx.check_lease()
    store.write_record(typed)
    # metrics.csv from the sealed record's own history: whatever epoch a resume or a reseal began at
    atomic_write_bytes(store.metrics_path(key), _history_csv(typed.details.get("history") or []))
    _draw_curves(store, typed)
    return typed


def _draw_curves(store: Store, record: RunRecord) -> None:
    """``curves.png`` beside the record: a convenience drawn from the history, never a reason to fail."""
    from study.train.curves import write_run_curves

    try:
        selection = record.details.get("selection") or {}
        write_run_curves(record.details.get("history") or [], selection.get("epoch"), store.curves_path(record.key),
                         f"run {record.run_id} ({', '.join(record.rows) or 'no row'})", selection.get("split") or "selection")
    except Exception as exc:  # noqa: BLE001  a plotting problem (fonts, a full disk) leaves the run completed
        print(f"warning: run {record.run_id}: curves.png not drawn ({type(exc).__name__}: {exc})", file=sys.stderr)


def _history_csv(history: list[dict]) -> bytes:
    keys: list[str] = []
    for h in history:
        keys += [k for k in h if k not in keys]
    lines = [",".join(keys)] + [",".join("" if h.get(k) is None else str(h.get(k)) for k in keys) for h in history]
    return ("\n".join(lines) + "\n").encode()


__all__ = ["train_run", "train_spec", "evaluate", "derive_seed", "RunFailed", "RunBusy", "RunStopped", "RunLost",
           "check_data_roots", "save_record"]
