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
import itertools
import math
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader

from study.config import RunConfig
from study.data.batched import ResidentSplit
from study.errors import StudyError
from study.metrics import PooledMetrics
from study.store.atomic import atomic_torch_save
from study.store.record import RunKey
from study.store.runs import Store
from study.train.confusion import confusion_counts
from study.train.data import RunData
from study.train.determinism import AlertLog, collect_alerts
from study.train.engine import make_optimizer, prepare_batch, prepare_model
from study.train.losses import bce as bce_term
from study.train.objective import Objective
from study.train.timing import epoch_clock

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


def _eval_batches(dataset, device: str):
    if isinstance(dataset, ResidentSplit):
        return dataset.batches(EVAL_BATCH)
    return ((images.to(device), masks.to(device)) for images, masks in make_loader(dataset, EVAL_BATCH, False))


def per_image_loss(logits: torch.Tensor, masks: torch.Tensor, bce_input: str = "logits") -> torch.Tensor:
    """(B,) BCE + Dice of each image alone, as ``bce_dice_loss`` on a batch of one."""
    bce = bce_term(logits, masks, bce_input, reduction="none").flatten(1).mean(1)
    p, t = torch.sigmoid(logits).flatten(1), masks.flatten(1)
    dice = (2 * (p * t).sum(1) + 1.0) / (p.sum(1) + t.sum(1) + 1.0)
    return bce + (1 - dice)


def evaluate(model, dataset, device: str = "cpu", on_batch=None, bce_input: str = "logits") -> tuple[float, np.ndarray]:
    """(mean per-image BCE + Dice loss, per-image TP/FP/FN/TN counts) on ``dataset``.

    ``dataset``: a ResidentSplit (the batched pipeline) or a SegmentationDataset (per sample).
    The loss is averaged per image, as the official code's batch-size-1 test loader does; losses
    and counts stay on the device until the end.
    ``on_batch(first_index, probabilities)`` sees each batch's (b, h, w) float32 probabilities
    (the stored predictions and the challenge's metrics are made from them).
    """
    model.eval()
    losses, counts = [], []
    seen = 0
    with torch.inference_mode():
        for images, masks in _eval_batches(dataset, device):
            logits = model.forward_logits(prepare_batch(images, model))
            losses.append(per_image_loss(logits, masks, bce_input))
            probs = torch.sigmoid(logits)
            counts.append(confusion_counts(probs, masks))
            if on_batch is not None:
                on_batch(seen, probs[:, 0].float().cpu().numpy())
            seen += images.shape[0]
    return float(torch.cat(losses).double().mean()), torch.cat(counts).cpu().numpy()


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
    resident: dict = field(default_factory=dict)  # id(dataset) -> its ResidentSplit
    alerts: AlertLog = field(default_factory=AlertLog)  # ops PyTorch warned cannot repeat (CUDA)

    @classmethod
    def set_up(cls, config: RunConfig, key: RunKey, store: Store, data: RunData, teacher, device: str) -> "Trainer":
        seed_everything(derive_seed(key.seed, "init"))
        t = config.train
        model = prepare_model(config.build_model(), t.engine, device)
        optimizer = make_optimizer(model, t.engine, lr=t.lr, betas=t.betas, eps=t.eps, weight_decay=t.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.t_max, eta_min=t.eta_min)
        if teacher is not None:
            teacher = prepare_model(teacher, t.engine, device)
        objective = Objective(config.distill, teacher, t.bce_input)
        return cls(config, key, store, data, model, optimizer, scheduler, objective, device)

    def split(self, dataset):
        """The dataset as the configured pipeline serves it (resident splits are made once)."""
        if self.config.data.pipeline != "batched" or dataset is None:
            return dataset
        if id(dataset) not in self.resident:
            self.resident[id(dataset)] = ResidentSplit(dataset, self.device)
        return self.resident[id(dataset)]

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

    def _batches(self, drop_last: bool):
        t, seed, epoch = self.config.train, self.key.seed, self.epoch
        order_seed, augment_seed = derive_seed(seed, "order", epoch), derive_seed(seed, "augment", epoch)
        if self.config.data.pipeline == "batched":
            return self.split(self.data.train).batches(t.batch_size, order_seed, augment_seed, drop_last)
        self.data.train.reseed(augment_seed)
        loader = make_loader(self.data.train, t.batch_size, shuffle=True, seed=order_seed, drop_last=drop_last)
        return ((images.to(self.device), masks.to(self.device)) for images, masks in loader)

    def run_epoch(self, check=lambda: None, progress: bool = False) -> dict:
        """Train one epoch; return its history entry (selection metrics added by ``select``).

        The entry times the epoch's parts: ``seconds`` (wall), ``step_seconds`` (forward,
        backward and optimizer), ``data_seconds`` (making batches), ``select_seconds``; the
        step and data parts by the device's clock (``study.train.timing``).
        """
        t, epoch = self.config.train, self.epoch
        started = time.perf_counter()
        seed_everything(derive_seed(self.key.seed, "epoch", epoch))
        # A model that cannot train on a short last batch (MambaU-Lite, as its release), or a
        # student configured as the release's distillation loader (distill.drop_last).
        drop_last = ((bool(getattr(self.model, "train_drop_last", False)) or self.config.drops_last_batch)
                     and len(self.data.train) > t.batch_size)
        batches = self._batches(drop_last)
        if progress:
            from tqdm import tqdm

            steps = len(self.data.train) // t.batch_size if drop_last else -(-len(self.data.train) // t.batch_size)
            batches = tqdm(batches, total=steps, desc=f"{self.key.id} epoch {epoch + 1}/{t.epochs}", leave=False,
                           position=1)
        self.model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        totals: dict[str, torch.Tensor] = {}
        batch_total, steps = None, 0  # the mean of per-batch losses: the release's distillation selection
        n = 0
        on_cpu = torch.device(self.device).type == "cpu"
        clock = epoch_clock(self.device)
        iterator = iter(batches)
        with collect_alerts(self.alerts):
            for step in itertools.count():
                clock.begin("data")
                batch = next(iterator, None)
                clock.end("data")
                if batch is None:
                    break
                clock.begin("step")
                check()
                images, masks = batch
                loss, terms = self.objective(self.model.forward_logits(prepare_batch(images, self.model)),
                                             images, masks)
                # On a GPU a per-step check would wait for the device; the epoch's sums are checked below.
                if on_cpu and not torch.isfinite(loss):
                    raise RunFailed(f"non-finite loss ({float(loss.detach())}) at epoch {epoch + 1}, batch {step + 1}")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                bs = images.shape[0]
                n += bs
                batch_total = loss.detach() if batch_total is None else batch_total + loss.detach()
                steps += 1
                for k, v in {"loss": loss, **terms}.items():
                    v = v.detach() * bs if torch.is_tensor(v) else torch.tensor(float(v) * bs)
                    totals[k] = totals[k] + v if k in totals else v
                clock.end("step")
        parts = clock.seconds()
        step_s, data_s = parts.get("step", 0.0), parts.get("data", 0.0)
        sums = {k: float(v) for k, v in totals.items()}
        if not math.isfinite(sums["loss"]):
            raise RunFailed(f"non-finite loss ({sums['loss']}) in epoch {epoch + 1}")
        self.scheduler.step()
        entry = {"epoch": epoch + 1, "lr": lr, "train_loss": sums["loss"] / n}
        if self.config.selects_on_train_loss:
            entry["train_loss_per_batch"] = float(batch_total) / steps
        entry.update({f"train_{k}": v / n for k, v in sums.items() if k != "loss"})
        selecting = time.perf_counter()
        self.select(entry)
        now = time.perf_counter()
        entry.update(seconds=round(now - started, 3), step_seconds=round(step_s, 3), data_seconds=round(data_s, 3),
                     select_seconds=round(now - selecting, 3))
        return entry

    def select(self, entry: dict) -> None:
        """Keep the best weights so far: lowest loss on the selection split, or lowest training
        loss for a student chosen as the release chooses it (``distill.selection``)."""
        if self.config.selects_on_train_loss:
            loss = entry["train_loss_per_batch"]
        elif self.data.selection is None:
            return
        else:
            loss, counts = evaluate(self.model, self.split(self.data.selection), self.device,
                                   bce_input=self.config.train.bce_input)
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
        if self.best["epoch"] is not None:
            path = self.store.checkpoint_path(self.key, "best")
            self.model.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
            return {"epoch": self.best["epoch"], "loss": self.best["loss"]}
        return {"epoch": t.epochs, "loss": None}


__all__ = ["Trainer", "evaluate", "derive_seed", "seed_everything", "RunFailed", "RunLost"]
