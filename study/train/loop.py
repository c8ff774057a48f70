"""The training loop of one run in named steps: set up, resume, one epoch, select and evaluate.

Determinism: every random stream derives from the run seed. The model's
initial weights from (seed, "init"); each epoch's batch order, augmentations
and torch RNG from (seed, epoch). Nothing random carries from one epoch to the
next except through the weights and optimizer state that the checkpoint holds,
so a run killed at any point and resumed from its last checkpoint ends with
bit-identical metrics on CPU.

Checkpoints hold tensors and plain values only, and are read with
``weights_only=True``: a checkpoint from a shared store cannot run code.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader

from study.config import RunConfig
from study.errors import StudyError
from study.record import RunKey
from study.store import Store, atomic_torch_save
from study.train.data import RunData
from study.train.losses import bce_dice_loss
from study.train.metrics import PooledMetrics, confusion_counts
from study.train.objective import Objective

EVAL_BATCH = 16


class RunFailed(StudyError):
    """The run cannot go on (non-finite loss, missing teacher, unreadable checkpoint); recorded as failed."""


class RunLost(StudyError):
    """This process's lease was taken over (it was presumed dead): it must stop writing to the run."""


def derive_seed(seed: int, *tags) -> int:
    text = ":".join(str(t) for t in (seed, *tags))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loader(dataset, batch_size, shuffle, seed=None, drop_last: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    # num_workers=0: the augmentation stream then lives in this process and is
    # reseeded per epoch, which is what makes resume exact.
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0,
                      drop_last=drop_last)


@torch.no_grad()
def evaluate(model, dataset, device: str = "cpu", on_batch=None) -> tuple[float, np.ndarray]:
    """(mean per-image BCE + Dice loss, per-image TP/FP/FN/TN counts) on ``dataset``.

    The loss is averaged per image, as the official code's batch-size-1 test loader does.
    ``on_batch(first_index, probabilities)`` sees each batch's (b, h, w) float32 probabilities
    (the stored predictions and the challenge's metrics are made from them).
    """
    model.eval()
    losses, counts = [], []
    seen = 0
    for images, masks in make_loader(dataset, EVAL_BATCH, shuffle=False):
        images, masks = images.to(device), masks.to(device)
        logits = model.forward_logits(images)
        for i in range(images.shape[0]):
            losses.append(float(bce_dice_loss(logits[i:i + 1], masks[i:i + 1])))
        probs = torch.sigmoid(logits)
        counts.append(confusion_counts(probs, masks).cpu().numpy())
        if on_batch is not None:
            on_batch(seen, probs[:, 0].float().cpu().numpy())
        seen += images.shape[0]
    return float(np.mean(losses)), np.concatenate(counts)


@dataclass
class Trainer:
    """One run's model, optimizer and progress; ``epoch`` counts finished epochs."""

    config: RunConfig
    key: RunKey
    store: Store
    data: RunData
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    objective: Objective
    device: str
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": None, "loss": math.inf})
    epoch: int = 0
    wall_before: float = 0.0

    @classmethod
    def set_up(cls, config: RunConfig, key: RunKey, store: Store, data: RunData, teacher, device: str) -> "Trainer":
        seed_everything(derive_seed(key.seed, "init"))
        model = config.build_model().to(device)
        t = config.train
        optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=t.betas, eps=t.eps,
                                      weight_decay=t.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.t_max, eta_min=t.eta_min)
        return cls(config, key, store, data, model, optimizer, scheduler, Objective(config.distill, teacher), device)

    def resume(self) -> bool:
        """Load ``checkpoints/last.pt`` if there is one; True when resumed."""
        path = self.store.checkpoint_path(self.key, "last")
        if not path.is_file():
            return False
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            history, best, epoch = list(state["history"]), dict(state["best"]), int(state["epoch"])
        except Exception as exc:  # an unpickling refusal, a torn or foreign file, a wrong architecture
            raise RunFailed(f"{path}: cannot be loaded as this run's checkpoint ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}); nothing was run from it. "
                            "Train again with --restart-unreadable to set it aside and start from scratch") from None
        self.history, self.best, self.epoch = history, best, epoch
        self.wall_before = float(state.get("wall_time_s", 0.0))
        return True

    def run_epoch(self, check=lambda: None, progress: bool = False) -> dict:
        """Train one epoch; return its history entry (selection metrics added by ``select``)."""
        t, seed, epoch = self.config.train, self.key.seed, self.epoch
        started = time.time()
        seed_everything(derive_seed(seed, "epoch", epoch))
        self.data.train.reseed(derive_seed(seed, "augment", epoch))
        # A model that cannot train on a short last batch says so (MambaU-Lite, as its release).
        drop_last = bool(getattr(self.model, "train_drop_last", False)) and len(self.data.train) > t.batch_size
        loader = make_loader(self.data.train, t.batch_size, shuffle=True, seed=derive_seed(seed, "order", epoch),
                             drop_last=drop_last)
        self.model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        totals: dict[str, float] = {}
        n = 0
        if progress:
            from tqdm import tqdm

            loader = tqdm(loader, desc=f"{self.key.id} epoch {epoch + 1}/{t.epochs}", leave=False, position=1)
        for step, (images, masks) in enumerate(loader):
            check()
            images, masks = images.to(self.device), masks.to(self.device)
            loss, terms = self.objective(self.model.forward_logits(images), images, masks)
            if not torch.isfinite(loss):
                raise RunFailed(f"non-finite loss ({float(loss.detach())}) at epoch {epoch + 1}, batch {step + 1}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            bs = images.shape[0]
            n += bs
            totals["loss"] = totals.get("loss", 0.0) + float(loss.detach()) * bs
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + float(v) * bs
        self.scheduler.step()
        entry = {"epoch": epoch + 1, "lr": lr, "train_loss": totals["loss"] / n}
        entry.update({f"train_{k}": v / n for k, v in totals.items() if k != "loss"})
        self.select(entry)
        entry["seconds"] = round(time.time() - started, 3)
        return entry

    def select(self, entry: dict) -> None:
        """Score the selection split and keep the best weights so far (lowest selection loss)."""
        if self.data.selection is None:
            return
        loss, counts = evaluate(self.model, self.data.selection, self.device)
        entry["selection_loss"] = loss
        entry["selection_dsc"] = PooledMetrics.from_counts(counts).as_dict()["dsc"]
        if loss < self.best["loss"]:
            self.best = {"epoch": entry["epoch"], "loss": loss}
            atomic_torch_save(self.store.checkpoint_path(self.key, "best"), self.model.state_dict())

    def checkpoint(self, entry: dict, wall_s: float) -> None:
        self.history.append(entry)
        self.epoch = entry["epoch"]
        atomic_torch_save(self.store.checkpoint_path(self.key, "last"), {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "history": self.history,
            "best": self.best, "wall_time_s": wall_s,
        })

    def selected_model(self) -> dict:
        """Load the selected weights; return where they came from."""
        t = self.config.train
        if self.data.selection is not None and self.best["epoch"] is not None:
            path = self.store.checkpoint_path(self.key, "best")
            self.model.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
            return {"epoch": self.best["epoch"], "loss": self.best["loss"]}
        return {"epoch": t.epochs, "loss": None}


__all__ = ["Trainer", "evaluate", "derive_seed", "seed_everything", "RunFailed", "RunLost"]
