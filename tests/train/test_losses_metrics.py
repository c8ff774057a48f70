"""Each loss term against a hand computation; the pooled metric against plain NumPy."""

import math

import numpy as np
import pytest
import torch

from study.metrics import PooledMetrics, per_image_dice
from study.train.confusion import confusion_counts
from study.train.losses import (
    attention_transfer_loss,
    bce,
    bce_dice_loss,
    dice_loss,
    dkd_loss,
    gradient_matching_loss,
    kl_logit_loss,
    sobel_magnitude,
)

S_LOGITS = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]], dtype=torch.float64)
T_LOGITS = torch.tensor([[[[1.5, -2.0], [0.5, 3.0]]]], dtype=torch.float64)
MASK = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]], dtype=torch.float64)


def sig(v):
    return 1 / (1 + math.exp(-v))


def flat(t):
    return [float(v) for v in t.flatten()]


def test_bce_dice_by_hand():
    s, y = [sig(v) for v in flat(S_LOGITS)], flat(MASK)
    bce = -sum(yi * math.log(si) + (1 - yi) * math.log(1 - si) for si, yi in zip(s, y)) / 4
    dice = 1 - (2 * sum(si * yi for si, yi in zip(s, y)) + 1) / (sum(s) + sum(y) + 1)
    assert float(bce_dice_loss(S_LOGITS, MASK)) == pytest.approx(bce + dice, rel=1e-12)


def test_bce_on_probabilities_is_the_release_form():
    """train.bce_input = "probabilities": nn.BCELoss on sigmoid outputs, its clamp included. In float64
    and moderate logits it equals BCE with logits; in float32 past a logit of 16.64 its gradient is zero,
    where BCE with logits keeps one."""
    release = torch.nn.BCELoss()(torch.sigmoid(S_LOGITS).view(1, -1), MASK.view(1, -1))
    assert float(bce_dice_loss(S_LOGITS, MASK, "probabilities")) == pytest.approx(
        float(release + dice_loss(torch.sigmoid(S_LOGITS), MASK)), rel=1e-12)
    assert float(bce_dice_loss(S_LOGITS, MASK, "probabilities")) == pytest.approx(float(bce_dice_loss(S_LOGITS, MASK)))
    target = torch.zeros(1, 1, 1, 3)
    grads = {}
    for form in ("logits", "probabilities"):
        logits = torch.tensor([[[[10.0, 16.7, 30.0]]]], requires_grad=True)
        bce(logits, target, form, reduction="sum").backward()
        grads[form] = logits.grad.flatten().tolist()
    assert grads["logits"] == pytest.approx([sig(10.0), 1.0, 1.0], rel=1e-4)
    assert grads["probabilities"][0] == pytest.approx(sig(10.0), rel=1e-3) and grads["probabilities"][1:] == [0, 0]
    loss = bce(torch.tensor([30.0]), torch.zeros(1), "probabilities")
    assert float(loss) == pytest.approx(100.0)  # log(1 - 1) clamped at -100


def test_the_sobel_kernels_are_made_once_per_device_and_dtype():
    from study.train import losses

    losses._sobel.cache_clear()
    prob = torch.rand(2, 1, 8, 8)
    first = losses.sobel_magnitude(prob)
    for _ in range(3):
        assert torch.equal(losses.sobel_magnitude(prob), first)
    assert losses._sobel.cache_info().misses == 1  # no copy to the device per step


def test_training_does_not_fill_new_tensors_with_nan():
    """fill_uninitialized_memory, a debugging aid, is off in training (and recorded as such)."""
    from study.train.numerics import apply

    settings = apply("cpu")
    assert torch.are_deterministic_algorithms_enabled() and not torch.utils.deterministic.fill_uninitialized_memory
    assert settings["fill_uninitialized_memory"] is False


def test_dice_is_per_sample_then_averaged():
    prob = torch.tensor([[[[1.0, 0.0]]], [[[0.5, 0.5]]]], dtype=torch.float64)
    target = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 0.0]]]], dtype=torch.float64)
    per_sample = [1 - (2 * 1 + 1) / (1 + 1 + 1), 1 - (0 + 1) / (1 + 0 + 1)]
    assert float(dice_loss(prob, target)) == pytest.approx(sum(per_sample) / 2)


def test_dkd_by_hand():
    s, t = [sig(v) for v in flat(S_LOGITS)], [sig(v) for v in flat(T_LOGITS)]
    kl = [ti * math.log(ti / si) + (1 - ti) * math.log((1 - ti) / (1 - si)) for si, ti in zip(s, t)]
    assert float(dkd_loss(S_LOGITS, T_LOGITS)) == pytest.approx(sum(kl) / 4, rel=1e-9)


def test_dkd_clamps_saturated_probabilities():
    student = torch.tensor([[[[-100.0]]]], dtype=torch.float64)  # p ~ 0, clamped to 1e-6
    teacher = torch.tensor([[[[100.0]]]], dtype=torch.float64)  # p ~ 1, clamped to 1 - 1e-6
    t, s = 1 - 1e-6, 1e-6
    expected = t * math.log(t / s) + (1 - t) * math.log((1 - t) / (1 - s))
    assert float(dkd_loss(student, teacher)) == pytest.approx(expected, rel=1e-6)


def test_kl_with_temperature_by_hand():
    tau = 3.0
    total = 0.0
    for zs, zt in zip(flat(S_LOGITS), flat(T_LOGITS)):
        ps, pt = sig(zs / tau), sig(zt / tau)
        total += pt * math.log(pt / ps) + (1 - pt) * math.log((1 - pt) / (1 - ps))
    assert float(kl_logit_loss(S_LOGITS, T_LOGITS, tau)) == pytest.approx(total / 4 * tau**2, rel=1e-9)


def test_attention_transfer_by_hand():
    tau = 0.5

    def softmax(values):
        e = [math.exp(v / tau) for v in values]
        return [x / sum(e) for x in e]

    a_s = softmax([sig(v) for v in flat(S_LOGITS)])
    a_t = softmax([sig(v) for v in flat(T_LOGITS)])
    expected = sum(t * math.log(t / s) for s, t in zip(a_s, a_t))
    assert float(attention_transfer_loss(S_LOGITS, T_LOGITS, tau)) == pytest.approx(expected, rel=1e-9)


def test_sobel_and_gradient_matching_by_hand():
    prob = torch.tensor([[[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]]], dtype=torch.float64)
    # centre pixel: gx = (1*1 + 2*1 + 1*1) - 0 = 4, gy = 0 (rows are equal)
    assert float(sobel_magnitude(prob)[0, 0, 1, 1]) == pytest.approx(math.sqrt(16 + 1e-8))
    # zero padding at the top-left corner: gx = 0 (all zero neighbours), gy = 0
    assert float(sobel_magnitude(prob)[0, 0, 0, 0]) == pytest.approx(math.sqrt(1e-8))

    s = torch.sigmoid(S_LOGITS)
    t = torch.sigmoid(T_LOGITS)

    def magnitude(p):  # 2x2 map with zero padding, by explicit sums
        p = p[0, 0].tolist()
        get = lambda r, c: p[r][c] if 0 <= r < 2 and 0 <= c < 2 else 0.0  # noqa: E731
        kx = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
        out = []
        for r in range(2):
            for c in range(2):
                gx = sum(kx[i][j] * get(r + i - 1, c + j - 1) for i in range(3) for j in range(3))
                gy = sum(kx[j][i] * get(r + i - 1, c + j - 1) for i in range(3) for j in range(3))
                out.append(math.sqrt(gx * gx + gy * gy + 1e-8))
        return out

    expected = sum((a - b) ** 2 for a, b in zip(magnitude(s), magnitude(t))) / 4
    assert float(gradient_matching_loss(S_LOGITS, T_LOGITS)) == pytest.approx(expected, rel=1e-9)


def test_pooled_metrics_equal_plain_numpy():
    rng = np.random.default_rng(0)
    prob = rng.random((5, 1, 16, 16))
    mask = (rng.random((5, 1, 16, 16)) > 0.6).astype(np.float64)
    counts = confusion_counts(torch.from_numpy(prob), torch.from_numpy(mask)).numpy()
    pred = (prob >= 0.5).ravel().astype(int)
    true = (mask >= 0.5).ravel().astype(int)
    cm = np.bincount(true * 2 + pred, minlength=4).reshape(2, 2)  # rows: truth, cols: prediction
    tn, fp, fn, tp = cm.ravel()
    m = PooledMetrics.from_counts(counts).as_dict()
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (tp, fp, fn, tn)
    assert m["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert m["dsc"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["accuracy"] == pytest.approx((tp + tn) / cm.sum())
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    # pooled over pixels is not the mean of per-image Dice
    assert per_image_dice(counts).mean() != pytest.approx(m["dsc"], abs=1e-12)
