"""One run: train, checkpoint every epoch, resume, select, evaluate, record.

Determinism: every random stream derives from the run seed. The model's
initial weights from (seed, "init"); each epoch's batch order, augmentations
and torch RNG from (seed, epoch). Nothing random carries from one epoch to the
next except through the weights and optimizer state that the checkpoint holds,
so a run killed at any point and resumed from its last checkpoint ends with
bit-identical metrics on CPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import study
from study.config import RunConfig
from study.errors import StudyError
from study.store import RunLock, Store, atomic_torch_save, atomic_write_bytes, atomic_write_json, read_record
from study.train.data import RunData, build_run_data
from study.train.losses import bce_dice_loss
from study.train.metrics import PooledMetrics, confusion_counts
from study.train.objective import Objective

EVAL_BATCH = 16


class RunFailed(StudyError):
    """The run cannot go on (non-finite loss, missing teacher, ...); recorded as failed."""


class RunBusy(StudyError):
    """Another live process holds this run's lock."""


class RunStopped(StudyError):
    """Raised by an epoch callback to stop a run early (a pruned search trial): recorded
    as interrupted, so the run stays resumable."""


def derive_seed(seed: int, *tags) -> int:
    text = ":".join(str(t) for t in (seed, *tags))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _git_commit() -> str | None:
    override = os.environ.get("STUDY_GIT_COMMIT")  # set by the SLURM snapshot
    if override:
        return override
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(study.__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _versions() -> dict:
    import numpy
    import thop

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "study": study.__version__, "thop": getattr(thop, "__version__", "unknown")}


@dataclass
class RunContext:
    """Where a run lives and how it reports; built by ``train_run``."""

    config: RunConfig
    seed: int
    store: Store
    run_dir: Path
    progress: bool
    log: object = None  # callable(str) for one line per epoch, or None
    epoch_callback: object = None  # callable(epoch, entry); may raise RunStopped


def _loader(dataset, batch_size, shuffle, seed=None) -> DataLoader:
    generator = None
    if shuffle:
        generator = torch.Generator().manual_seed(seed)
    # num_workers=0: the augmentation stream then lives in this process and is
    # reseeded per epoch, which is what makes resume exact.
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)


@torch.no_grad()
def evaluate(model, dataset, device: str = "cpu") -> tuple[float, np.ndarray]:
    """(mean per-image BCE + Dice loss, per-image TP/FP/FN/TN counts) on ``dataset``.

    The loss is averaged per image, as the official code's batch-size-1 test
    loader does.
    """
    model.eval()
    losses, counts = [], []
    for images, masks in _loader(dataset, EVAL_BATCH, shuffle=False):
        images, masks = images.to(device), masks.to(device)
        logits = model.forward_logits(images)
        for i in range(images.shape[0]):
            losses.append(float(bce_dice_loss(logits[i:i + 1], masks[i:i + 1])))
        counts.append(confusion_counts(torch.sigmoid(logits), masks).cpu().numpy())
    return float(np.mean(losses)), np.concatenate(counts)


def _write_counts(path: Path, ids, counts: np.ndarray) -> None:
    lines = ["id,tp,fp,fn,tn"] + [f"{i},{a},{b},{c},{d}" for i, (a, b, c, d) in zip(ids, counts.tolist())]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def _write_history(path: Path, history: list[dict]) -> None:
    if not history:
        return
    keys = list(history[0])
    for h in history:
        keys += [k for k in h if k not in keys]
    lines = [",".join(keys)] + [",".join("" if h.get(k) is None else str(h.get(k)) for k in keys) for h in history]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def _load_teacher(ctx: RunContext, train_teacher: bool, roots, device):
    teacher_cfg = ctx.config.teacher_config()
    teacher_dir = ctx.store.run_dir(teacher_cfg.hash, ctx.seed)
    record = read_record(teacher_dir)
    if record is None or record.get("status") != "completed":
        if not train_teacher:
            state = "missing" if record is None else record.get("status")
            raise RunFailed(
                f"distillation needs its teacher run {teacher_dir.name} (the full model, same dataset and seed), "
                f"which is {state} in {ctx.store.root}; train it first (`python -m study train --variant ultralbm "
                f"--dataset {ctx.config.data.dataset} --seed {ctx.seed}` with the same profile) or pass --train-teacher"
            )
        record = train_run(teacher_cfg, ctx.seed, ctx.store, roots=roots, progress=ctx.progress, log=ctx.log)
        if record["status"] != "completed":
            raise RunFailed(f"teacher run {teacher_dir.name} did not complete: {record.get('reason')}")
    from study.models import build_model

    teacher = build_model(teacher_cfg.arch, {k: v for k, v in teacher_cfg.to_dict()["model"].items() if k != "arch"})
    teacher.load_state_dict(torch.load(teacher_dir / "model.pt", map_location=device, weights_only=True))
    return teacher.to(device), teacher_dir.name


def _base_record(ctx: RunContext, rows) -> dict:
    return {
        "run_id": ctx.run_dir.name,
        "config_hash": ctx.config.hash,
        "seed": ctx.seed,
        "config": ctx.config.to_dict(),
        "rows": sorted(set(rows)),
        "status": "running",
        "reason": None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "requeues": 0,
    }


def train_run(
    config: RunConfig,
    seed: int,
    store: Store,
    *,
    rows: tuple[str, ...] = (),
    roots: dict[str, str] | None = None,
    progress: bool | None = None,
    train_teacher: bool = False,
    device: str | None = None,
    stop_after_epochs: int | None = None,
    log=None,
    launcher_info: dict | None = None,
    epoch_callback=None,
) -> dict:
    """Train (or resume, or skip if completed) one run; returns its record.

    ``stop_after_epochs`` stops cleanly after that many epochs in this call,
    leaving a resumable run (used by the resume tests and a time-limited job).
    ``launcher_info`` is stored in the record (a SLURM job's id and log paths).
    ``epoch_callback(epoch, entry)`` sees each epoch's metrics; it may raise
    ``RunStopped`` (the search's pruner does).
    """
    run_dir = store.run_dir(config.hash, seed)
    existing = read_record(run_dir)
    if existing and existing.get("status") == "completed":
        return existing
    lock = RunLock(run_dir)
    if not lock.acquire():
        raise RunBusy(f"run {run_dir.name} is being trained by {lock.holder()}")
    existing = read_record(run_dir)  # again, under the lock: another process may have just finished it
    if existing and existing.get("status") == "completed":
        lock.release()
        return existing
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ctx = RunContext(config, seed, store, run_dir, sys.stderr.isatty() if progress is None else progress, log,
                     epoch_callback)
    record = _base_record(ctx, rows + tuple((existing or {}).get("rows", ())))
    if existing:
        record["requeues"] = existing.get("requeues", 0) + (1 if existing.get("status") in ("running", "interrupted") else 0)
        record["previous_status"] = existing.get("status")
        for key in ("attempts", "launcher"):
            if key in existing:
                record[key] = existing[key]
    if launcher_info:  # e.g. SLURM job id, array task, log paths: shown by `study status`
        record["launcher"] = launcher_info
    # One entry per process that started (or resumed) this run: "exactly once" is checkable.
    record.setdefault("attempts", []).append(
        {"host": socket.gethostname(), "pid": os.getpid(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    atomic_write_json(run_dir / "config.json", config.to_dict())
    previous_term = None
    try:
        # SIGTERM (a cluster's kill, `kill`) becomes an interruption, recorded as such.
        if hasattr(signal, "SIGTERM") and _is_main_thread():
            previous_term = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        record = _train(ctx, record, roots or {}, train_teacher, device, stop_after_epochs)
        return json.loads(json.dumps(record, default=str))  # exactly what record.json holds
    except KeyboardInterrupt:
        record.update(status="interrupted", reason="interrupted (Ctrl-C or SIGTERM); resumes from its last checkpoint")
        atomic_write_json(run_dir / "record.json", record)
        raise
    except RunStopped as exc:
        record.update(status="interrupted", reason=f"stopped: {exc}")
        atomic_write_json(run_dir / "record.json", record)
        raise
    except Exception as exc:  # recorded, then re-raised for the caller to report
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc()[-4000:])
        atomic_write_json(run_dir / "record.json", record)
        raise
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
        lock.release()


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _train(ctx: RunContext, record: dict, roots, train_teacher, device, stop_after_epochs) -> dict:
    from study.complexity import count_params, macs_thop
    from study.models import build_model

    cfg, seed, run_dir = ctx.config, ctx.seed, ctx.run_dir
    started = time.time()
    torch.use_deterministic_algorithms(True, warn_only=True)
    data: RunData = build_run_data(cfg, seed, roots)
    record["data"] = data.provenance
    teacher = None
    if cfg.distill.enabled:
        teacher, record["teacher"] = _load_teacher(ctx, train_teacher, roots, device)

    seed_everything(derive_seed(seed, "init"))
    model_options = {k: v for k, v in cfg.to_dict()["model"].items() if k != "arch"}
    model = build_model(cfg.arch, model_options).to(device)
    t = cfg.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=t.betas, eps=t.eps, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.t_max, eta_min=t.eta_min)
    objective = Objective(cfg.distill, teacher)

    ckpt_dir = run_dir / "checkpoints"
    history: list[dict] = []
    best = {"epoch": None, "loss": math.inf}
    start_epoch = 0
    wall_before = 0.0
    last = ckpt_dir / "last.pt"
    if last.is_file():
        state = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"]
        wall_before = state.get("wall_time_s", 0.0)
        record["resumed_from_epoch"] = start_epoch

    record.update(device=device, threads=torch.get_num_threads(), versions=_versions(), git_commit=_git_commit(),
                  selection={
        "mode": t.selection, "split": data.selection_split})
    atomic_write_json(run_dir / "record.json", record)

    end_epoch = t.epochs if stop_after_epochs is None else min(t.epochs, start_epoch + stop_after_epochs)
    for epoch in range(start_epoch, end_epoch):
        epoch_start = time.time()
        seed_everything(derive_seed(seed, "epoch", epoch))
        data.train.reseed(derive_seed(seed, "augment", epoch))
        loader = _loader(data.train, t.batch_size, shuffle=True, seed=derive_seed(seed, "order", epoch))
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        totals: dict[str, float] = {}
        n = 0
        batches = loader
        if ctx.progress:
            from tqdm import tqdm

            batches = tqdm(loader, desc=f"{run_dir.name} epoch {epoch + 1}/{t.epochs}", leave=False)
        for step, (images, masks) in enumerate(batches):
            images, masks = images.to(device), masks.to(device)
            loss, terms = objective(model.forward_logits(images), images, masks)
            if not torch.isfinite(loss):
                raise RunFailed(f"non-finite loss ({float(loss.detach())}) at epoch {epoch + 1}, batch {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bs = images.shape[0]
            n += bs
            totals["loss"] = totals.get("loss", 0.0) + float(loss.detach()) * bs
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + float(v) * bs
        scheduler.step()
        entry = {"epoch": epoch + 1, "lr": lr, "train_loss": totals["loss"] / n}
        entry.update({f"train_{k}": v / n for k, v in totals.items() if k != "loss"})
        if data.selection is not None:
            sel_loss, sel_counts = evaluate(model, data.selection, device)
            entry["selection_loss"] = sel_loss
            entry["selection_dsc"] = PooledMetrics.from_counts(sel_counts).as_dict()["dsc"]
            if sel_loss < best["loss"]:
                best = {"epoch": epoch + 1, "loss": sel_loss}
                atomic_torch_save(ckpt_dir / "best.pt", model.state_dict())
        entry["seconds"] = round(time.time() - epoch_start, 3)
        history.append(entry)
        wall = wall_before + (time.time() - started)
        atomic_torch_save(last, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch + 1, "history": history, "best": best, "wall_time_s": wall,
        })
        _write_history(run_dir / "metrics.csv", history)
        record.update(epochs_done=epoch + 1, history=history)
        atomic_write_json(run_dir / "record.json", record)
        if ctx.log:
            sel = "" if "selection_dsc" not in entry else (
                f", {data.selection_split} loss {entry['selection_loss']:.4f} DSC {entry['selection_dsc']:.4f}")
            ctx.log(f"{run_dir.name} epoch {epoch + 1}/{t.epochs}: train loss {entry['train_loss']:.4f}{sel} "
                    f"({entry['seconds']:.1f} s)")
        if ctx.epoch_callback:
            ctx.epoch_callback(epoch + 1, entry)

    if len(history) < t.epochs:  # stopped early on purpose: resumable, not completed
        record.update(status="interrupted", reason=f"stopped after epoch {len(history)} of {t.epochs}")
        atomic_write_json(run_dir / "record.json", record)
        return record

    # Selection: the lowest selection loss (paper: on the test split itself), or the last epoch.
    if data.selection is not None and best["epoch"] is not None:
        model.load_state_dict(torch.load(ckpt_dir / "best.pt", map_location=device, weights_only=True))
    record["selection"].update(epoch=best["epoch"] if data.selection is not None else t.epochs,
                               loss=None if data.selection is None else best["loss"])
    atomic_torch_save(run_dir / "model.pt", model.state_dict())

    test_loss, test_counts = evaluate(model, data.test, device)
    _write_counts(run_dir / "per_image_test.csv", data.test.ids, test_counts)
    record["test"] = {"loss": test_loss, **PooledMetrics.from_counts(test_counts).as_dict()}
    record["external"] = {}
    for name, ds in data.external.items():
        ext_loss, ext_counts = evaluate(model, ds, device)
        _write_counts(run_dir / f"per_image_{name}.csv", ds.ids, ext_counts)
        record["external"][name] = {"loss": ext_loss, **PooledMetrics.from_counts(ext_counts).as_dict()}

    cpu_model = build_model(cfg.arch, model_options)
    record["params"] = count_params(cpu_model)
    record["gmacs_thop"] = macs_thop(cpu_model) / 1e9
    record["wall_time_s"] = round(wall_before + time.time() - started, 3)
    record.update(status="completed", reason=None, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    atomic_write_json(run_dir / "record.json", record)
    return record


__all__ = ["train_run", "evaluate", "derive_seed", "RunFailed", "RunBusy"]
