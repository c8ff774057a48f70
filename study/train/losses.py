"""The segmentation loss and the distillation terms of Section 3.6.

All functions take logits (B, 1, H, W) where the paper writes probabilities:
probabilities are sigmoid(logits). The BCE term is BCE with logits by default.
The release's nn.BCELoss on sigmoid outputs is not the same function in
float32: PyTorch clamps its log at -100, and once a pixel's sigmoid rounds to 1
(a logit past about 16.6) its loss is constant and its gradient zero, where BCE
with logits keeps a gradient at any logit. ``train.bce_input = "probabilities"``
selects the release's form (paper/differences.toml, bce-input).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

PROB_CLAMP = 1e-6  # DKD clamps probabilities to [1e-6, 1 - 1e-6]
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - Dice with smoothing 1, computed per sample and averaged (as the official BceDiceLoss)."""
    p, t = prob.flatten(1), target.flatten(1)
    score = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return 1 - score.mean()


def bce(logits: torch.Tensor, target: torch.Tensor, bce_input: str = "logits", reduction: str = "mean"):
    """The BCE term: with logits, or (``"probabilities"``) nn.BCELoss on sigmoid outputs, clamp included."""
    if bce_input == "probabilities":
        return F.binary_cross_entropy(torch.sigmoid(logits), target, reduction=reduction)
    return F.binary_cross_entropy_with_logits(logits, target, reduction=reduction)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, bce_input: str = "logits") -> torch.Tensor:
    """Eq. 18: BCE + Dice, weights 1 and 1."""
    return bce(logits, target, bce_input) + dice_loss(torch.sigmoid(logits), target)


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 14: pixel-wise Bernoulli KL(T || S), averaged over pixels."""
    s = torch.sigmoid(student_logits).clamp(PROB_CLAMP, 1 - PROB_CLAMP)
    t = torch.sigmoid(teacher_logits).clamp(PROB_CLAMP, 1 - PROB_CLAMP)
    kl = t * torch.log(t / s) + (1 - t) * torch.log((1 - t) / (1 - s))
    return kl.mean()


def kl_logit_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Conventional logit distillation (Hinton): KL between temperature-softened
    foreground/background distributions per pixel, times T^2, averaged over pixels."""
    s = torch.stack([student_logits, torch.zeros_like(student_logits)], dim=-1) / temperature
    t = torch.stack([teacher_logits, torch.zeros_like(teacher_logits)], dim=-1) / temperature
    kl = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), log_target=True, reduction="none").sum(-1)
    return kl.mean() * temperature**2


def attention_transfer_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Eqs. 15-16: softmax over each flattened probability map at temperature tau,
    KL(A_T || A_S) per image, averaged over the batch."""
    log_a_s = F.log_softmax(torch.sigmoid(student_logits).flatten(1) / tau, dim=1)
    log_a_t = F.log_softmax(torch.sigmoid(teacher_logits).flatten(1) / tau, dim=1)
    return F.kl_div(log_a_s, log_a_t, log_target=True, reduction="batchmean")


@functools.lru_cache(maxsize=8)
def _sobel(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The two kernels on ``device``, made once: a copy per step would be a host-to-device transfer
    (and a host sync on a GPU) in every distillation step with the gradient term."""
    kx = SOBEL_X.to(device=device, dtype=dtype)[None, None]
    return kx, kx.transpose(2, 3).contiguous()


def sobel_magnitude(prob: torch.Tensor) -> torch.Tensor:
    """sqrt(gx^2 + gy^2 + 1e-8) with 3x3 Sobel kernels, zero padding."""
    kx, ky = _sobel(prob.device, prob.dtype)
    gx = F.conv2d(prob, kx, padding=1)
    gy = F.conv2d(prob, ky, padding=1)
    return torch.sqrt(gx**2 + gy**2 + 1e-8)


def gradient_matching_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 17: mean squared difference of the Sobel gradient magnitudes."""
    return F.mse_loss(sobel_magnitude(torch.sigmoid(student_logits)), sobel_magnitude(torch.sigmoid(teacher_logits)))
