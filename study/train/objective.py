"""The training objective of a run: BCE + Dice, or the hybrid distillation loss (Eq. 12)."""

from __future__ import annotations

import torch
from torch import nn

from study.config import DistillConfig
from study.train.engine import prepare_batch
from study.train.losses import (
    attention_transfer_loss,
    bce_dice_loss,
    dkd_loss,
    gradient_matching_loss,
    kl_logit_loss,
)


class Objective:
    """Callable (student logits, images, masks) -> (total loss, {term: value}).

    With distillation, the teacher is frozen and in eval mode; its logits are
    computed here under no_grad on the same (augmented) batch.
    """

    def __init__(self, distill: DistillConfig, teacher: nn.Module | None = None, bce_input: str = "logits"):
        self.distill = distill
        self.bce_input = bce_input
        self.teacher = teacher
        if distill.enabled and teacher is None:
            raise ValueError("distillation needs a teacher")
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)

    def __call__(self, logits: torch.Tensor, images: torch.Tensor, masks: torch.Tensor):
        d = self.distill
        hard = bce_dice_loss(logits, masks, self.bce_input)
        if not d.enabled:
            return hard, {"hard": hard.detach()}
        with torch.no_grad():
            teacher_logits = self.teacher.forward_logits(prepare_batch(images, self.teacher))
        terms = {"hard": hard}
        total = d.hard * hard
        if d.soft:
            terms["soft"] = dkd_loss(logits, teacher_logits)
            total = total + d.soft * d.soft_factor * terms["soft"]
        if d.kl:
            terms["kl"] = kl_logit_loss(logits, teacher_logits, d.kl_temperature)
            total = total + d.kl * terms["kl"]
        if d.attention:
            terms["attention"] = attention_transfer_loss(logits, teacher_logits, d.attention_tau)
            total = total + d.attention * terms["attention"]
        if d.grad:
            terms["grad"] = gradient_matching_loss(logits, teacher_logits)
            total = total + d.grad * terms["grad"]
        return total, {k: v.detach() for k, v in terms.items()}
