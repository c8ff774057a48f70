"""study.challenge: the ISIC challenge's per-image scores, checked against the challenge's own scorer.

The oracle is the ``isic-challenge-scoring`` package (the ``dev`` extra): the
same truth files and prediction PNGs go into its ``SegmentationScore.from_dir``
and into study.challenge, and the same numbers must come out.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI, REPO_ROOT
from PIL import Image

from study.challenge import (
    CHALLENGE_METRICS,
    PREDICTION_THRESHOLD,
    THRESHOLD_JACCARD,
    challenge_scores,
    image_counts,
    per_image_scores,
    read_truth_mask,
    upsample_prediction,
)
from study.data.layouts import get_dataset_source
from study.errors import DataError

TOL = 1e-12
# The scorer (5.6.0) calls Series.rename(..., inplace=True), deprecated in pandas 3.1 (gone in pandas 4).
SCORER_WARNINGS = pytest.mark.filterwarnings("ignore:The inplace keyword in Series.rename is deprecated")
WORKING = 64  # working size of the made-up predictions (the harness uses 256; 64 keeps this fast)


def require_scorer():
    """The isic_challenge_scoring package: a skip without it, a failure under CI=true."""
    if IN_CI:
        try:
            return importlib.import_module("isic_challenge_scoring")
        except ImportError as exc:
            pytest.fail(f"required under CI=true: isic-challenge-scoring ({exc}); pip install -e '.[dev]'")
    return pytest.importorskip("isic_challenge_scoring", reason="isic-challenge-scoring is not installed "
                               "(the dev extra: pip install -e '.[dev]')")


# --- the rules, on hand-made counts ------------------------------------------------------------


def test_metric_names_and_threshold():
    assert CHALLENGE_METRICS == ("jaccard", "threshold_jaccard", "dice", "sensitivity", "specificity", "accuracy")
    assert THRESHOLD_JACCARD == 0.65


def test_ordinary_image():
    # tp, fp, fn, tn
    scores = per_image_scores(np.array([[60, 20, 10, 910]]))
    assert scores["jaccard"][0] == 60 / 90
    assert scores["threshold_jaccard"][0] == 60 / 90
    assert scores["dice"][0] == 120 / 150
    assert scores["sensitivity"][0] == 60 / 70
    assert scores["specificity"][0] == 910 / 930
    assert scores["accuracy"][0] == 970 / 1000
    assert list(scores) == list(CHALLENGE_METRICS)


def test_empty_truth_and_empty_prediction_is_perfect():
    scores = per_image_scores(np.array([[0, 0, 0, 500]]))
    assert {name: float(v[0]) for name, v in scores.items()} == dict.fromkeys(CHALLENGE_METRICS, 1.0)


def test_empty_truth_with_a_prediction():
    scores = per_image_scores(np.array([[0, 30, 0, 470]]))
    assert scores["jaccard"][0] == 0.0 and scores["threshold_jaccard"][0] == 0.0 and scores["dice"][0] == 0.0
    assert scores["sensitivity"][0] == 1.0  # freebie: no lesion pixel to find
    assert scores["specificity"][0] == 470 / 500
    assert scores["accuracy"][0] == 470 / 500


def test_prediction_empty_on_a_lesion():
    scores = per_image_scores(np.array([[0, 0, 40, 460]]))
    assert scores["jaccard"][0] == 0.0 and scores["dice"][0] == 0.0 and scores["sensitivity"][0] == 0.0
    assert scores["specificity"][0] == 1.0 and scores["accuracy"][0] == 460 / 500


def test_truth_covering_the_whole_image_gets_the_specificity_freebie():
    scores = per_image_scores(np.array([[300, 0, 200, 0]]))
    assert scores["specificity"][0] == 1.0
    assert scores["sensitivity"][0] == 300 / 500 and scores["jaccard"][0] == 300 / 500
    assert scores["threshold_jaccard"][0] == 0.0  # 0.6 < 0.65


def test_prediction_covering_the_whole_image():
    scores = per_image_scores(np.array([[300, 200, 0, 0]]))
    assert scores["specificity"][0] == 0.0 and scores["sensitivity"][0] == 1.0
    assert scores["accuracy"][0] == 300 / 500


@pytest.mark.parametrize(
    "tp, fp, expected",
    [(649, 351, 0.0), (651, 349, 0.651), (13, 7, 0.65), (1, 0, 1.0)],
    ids=["0.649-counts-0", "0.651-kept", "exactly-0.65-kept", "perfect"],
)
def test_threshold_jaccard_at_the_threshold(tp, fp, expected):
    scores = per_image_scores(np.array([[tp, fp, 0, 1000]]))
    assert scores["jaccard"][0] == tp / (tp + fp)
    assert scores["threshold_jaccard"][0] == expected


def test_scores_are_averaged_per_image_not_pooled():
    counts = np.array([[10, 0, 0, 90], [0, 0, 900, 100]])  # a perfect small image, a missed large lesion
    scores = challenge_scores(counts)
    assert scores["jaccard"] == 0.5 and scores["dice"] == 0.5 and scores["sensitivity"] == 0.5
    assert scores["specificity"] == 1.0 and scores["accuracy"] == (1.0 + 0.1) / 2
    assert scores["threshold_jaccard"] == 0.5
    pooled_jaccard = 10 / 910
    assert abs(scores["jaccard"] - pooled_jaccard) > 0.4
    assert all(type(v) is float for v in scores.values())
    assert list(scores) == list(CHALLENGE_METRICS)


def test_one_row_of_counts_is_one_image():
    assert challenge_scores(np.array([5, 1, 1, 3]))["jaccard"] == 5 / 7
    assert per_image_scores(np.zeros((0, 4), dtype=np.int64))["jaccard"].shape == (0,)


@pytest.mark.parametrize(
    "counts, error",
    [
        (np.array([[1, 2, 3]]), ValueError),
        (np.array([[1, -2, 3, 4]]), ValueError),
        (np.array([[0, 0, 0, 0]]), ValueError),
        (np.array([[1.0, 2.0, 3.0, 4.0]]), TypeError),
        (np.array([[True, False, False, True]]), TypeError),
        (np.zeros((0, 4), dtype=np.int64), ValueError),  # challenge_scores of no image
    ],
    ids=["three-columns", "negative", "no-pixel", "float", "bool", "no-image"],
)
def test_bad_counts_are_refused(counts, error):
    with pytest.raises(error):
        challenge_scores(counts)


def test_image_counts():
    truth = np.zeros((4, 5), dtype=bool)
    truth[1:3, 1:4] = True  # 6 pixels
    pred = np.zeros((4, 5), dtype=bool)
    pred[1:3, 2:5] = True  # 6 pixels, 4 of them on the lesion
    assert image_counts(pred, truth) == (4, 2, 2, 12)
    assert all(type(v) is int for v in image_counts(pred, truth))
    assert image_counts(truth, truth) == (6, 0, 0, 14)
    assert image_counts(np.zeros_like(truth), np.zeros_like(truth)) == (0, 0, 0, 20)
    with pytest.raises(ValueError, match="same shape"):
        image_counts(pred, truth.T)
    with pytest.raises(TypeError, match="bool"):
        image_counts(pred.astype(np.uint8) * 255, truth)


# --- upsampling the working-size prediction ---------------------------------------------------------


def test_upsample_shape_order_and_threshold():
    out = upsample_prediction(np.full((64, 64), 0.5), (30, 20))  # (width, height)
    assert out.shape == (20, 30) and out.dtype == np.bool_
    assert out.all()  # 0.5 is foreground: prob >= 0.5, as the harness
    assert not upsample_prediction(np.full((64, 64), 0.4999), (30, 20)).any()
    # A working size larger than the image (a reduction) works too.
    assert upsample_prediction(np.ones((64, 64)), (7, 5)).shape == (5, 7)


def test_upsample_is_half_pixel_bilinear():
    # [0, 0.6] stretched to 8 pixels: half-pixel centres give 0, 0, .075, .225, .375, .525, .6, .6;
    # align_corners=True would give foreground from pixel 6 only, nearest from pixel 4.
    out = upsample_prediction(np.array([[0.0, 0.6]]), (8, 1))
    assert out.tolist() == [[False] * 5 + [True] * 3]


def _bilinear_half_pixel(prob: np.ndarray, width: int, height: int) -> np.ndarray:
    """Independent reference: bilinear with half-pixel centres and clamped borders (align_corners=False)."""

    def axis(n_out: int, n_in: int):
        x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(x).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), x - lo

    r0, r1, ty = axis(height, prob.shape[0])
    c0, c1, tx = axis(width, prob.shape[1])
    rows = prob[r0] * (1 - ty)[:, None] + prob[r1] * ty[:, None]
    return rows[:, c0] * (1 - tx) + rows[:, c1] * tx


def test_upsample_matches_a_reference_bilinear():
    prob = np.random.default_rng(0).random((64, 64))
    width, height = 1022, 767
    reference = _bilinear_half_pixel(prob, width, height)
    ours = upsample_prediction(prob, (width, height))
    clear = np.abs(reference - PREDICTION_THRESHOLD) > 1e-5  # float32 rounding may flip a pixel at 0.5
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(ours[clear], reference[clear] >= PREDICTION_THRESHOLD)


@pytest.mark.parametrize(
    "prob, size, error",
    [
        (np.ones((4, 4, 1)), (8, 8), ValueError),
        (np.ones((4, 4)) * 1.5, (8, 8), ValueError),
        (np.array([[0.1, np.nan]]), (8, 8), ValueError),
        (np.array([[-2.0, 0.5]]), (8, 8), ValueError),  # a logit map passed by mistake
        (np.ones((4, 4)), (0, 8), ValueError),
        (np.ones((4, 4)), (8.5, 8), ValueError),
    ],
    ids=["3d", "above-1", "nan", "logits", "zero-width", "fractional-width"],
)
def test_upsample_refuses_bad_input(prob, size, error):
    with pytest.raises(error):
        upsample_prediction(prob, size)


def test_same_threshold_as_the_harness():
    import torch

    from study.train import confusion as harness  # imports torch; study.challenge itself does not

    assert harness.THRESHOLD == PREDICTION_THRESHOLD
    counts = harness.confusion_counts(torch.tensor([[[0.5, 0.4999]]]), torch.tensor([[[1.0, 1.0]]]))
    ours = image_counts(upsample_prediction(np.array([[0.5, 0.4999]]), (2, 1)), np.ones((1, 2), dtype=bool))
    assert tuple(counts[0].tolist()) == ours == (1, 0, 1, 0)


def test_module_is_torch_free():
    code = "import sys, study.challenge; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=60)


# --- reading truth masks ----------------------------------------------------------------------------


def test_read_truth_mask_thresholds_above_128(tmp_path):
    grey = np.array([[0, 127, 128], [129, 200, 255]], dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    assert read_truth_mask(tmp_path / "grey.png").tolist() == [[False, False, False], [True, True, True]]
    bits = np.array([[True, False], [False, True]])
    Image.fromarray(bits).convert("1").save(tmp_path / "bits.bmp")
    assert read_truth_mask(tmp_path / "bits.bmp").tolist() == bits.tolist()


def test_read_truth_mask_refusals(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_truth_mask(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot decode"):
        read_truth_mask(tmp_path / "junk.png")
    colour = np.zeros((2, 2, 3), dtype=np.uint8)
    colour[0, 0] = (255, 0, 0)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match="unequal channels"):
        read_truth_mask(tmp_path / "colour.png")


def test_read_truth_mask_agrees_with_the_scorers_loader(tmp_path, real_samples):
    require_scorer()
    from isic_challenge_scoring.load_image import load_segmentation_image
    from isic_challenge_scoring.types import ScoreError

    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(grey, mode="L").save(tmp_path / "ramp.png")
    ph2 = get_dataset_source("ph2", real_samples / "PH2")
    one_bit = next(p.mask for p in ph2.pairs if Image.open(p.mask).mode == "1")
    for path in (tmp_path / "ramp.png", one_bit):
        np.testing.assert_array_equal(read_truth_mask(path), load_segmentation_image(path) > 128)

    # PH2's IMD002 mask is an RGB file (black/white, equal channels): the scorer refuses it,
    # study.challenge reads its grey value, the same lesion as the harness's own reader.
    from study.data.imageio import read_mask

    rgb = next(p.mask for p in ph2.pairs if Image.open(p.mask).mode == "RGB")
    with pytest.raises(ScoreError, match="single-channel"):
        load_segmentation_image(rgb)
    np.testing.assert_array_equal(read_truth_mask(rgb), read_mask(rgb))
    np.testing.assert_array_equal(read_truth_mask(rgb), np.asarray(Image.open(rgb))[..., 0] > 128)


# --- the oracle: the challenge's scorer on the real samples ----------------------------------------


def _box_blur(values: np.ndarray, times: int) -> np.ndarray:
    for _ in range(times):
        padded = np.pad(values, 1, mode="edge")
        values = sum(padded[i:i + values.shape[0], j:j + values.shape[1]] for i in range(3) for j in range(3)) / 9
    return values


def imperfect_prediction(truth: np.ndarray, seed: int, shift: int, blur: int, noise: float) -> np.ndarray:
    """A (64, 64) probability map: the truth at 64x64, shifted, blurred, plus deterministic noise."""
    small = np.asarray(Image.fromarray(truth.astype(np.float32)).resize((WORKING, WORKING), Image.Resampling.BILINEAR))
    small = np.roll(small, (shift, -shift // 2), axis=(0, 1))
    small = _box_blur(small, blur)
    small = small + noise * np.random.default_rng(seed).standard_normal(small.shape)
    return np.clip(small, 0.0, 1.0)


# (shift in working pixels, blur passes, noise sd) per ISIC image; the first is predicted empty,
# the second all foreground. The spread puts per-image Jaccards on both sides of 0.65.
ISIC_PLANS = ["empty", "full", (0, 0, 0.0), (1, 1, 0.1), (2, 1, 0.2), (3, 2, 0.3), (5, 1, 0.15), (8, 2, 0.25),
              (12, 1, 0.1), (4, 3, 0.4), (6, 0, 0.05), (20, 1, 0.1)]
PH2_COUNT = 4


def _plan_prediction(plan, truth: np.ndarray, seed: int) -> np.ndarray:
    if plan == "empty":
        return np.zeros((WORKING, WORKING))
    if plan == "full":
        return np.ones((WORKING, WORKING))
    return imperfect_prediction(truth, seed, *plan)


@pytest.fixture(scope="module")
def scored_folders(real_samples, tmp_path_factory):
    """truth/ and pred/ folders the scorer reads, and our counts for each image id (the scorer's names)."""
    base = tmp_path_factory.mktemp("challenge")
    truth_dir, pred_dir = base / "truth", base / "pred"
    truth_dir.mkdir()
    pred_dir.mkdir()
    counts: dict[str, tuple[int, int, int, int]] = {}

    def add(image_id: str, truth_file: Path, prob: np.ndarray, truth_name: str | None = None):
        # The truth: the ORIGINAL file, linked under a name whose stem holds the id.
        (truth_dir / (truth_name or truth_file.name)).symlink_to(truth_file)
        truth = read_truth_mask(truth_file)
        pred = upsample_prediction(prob, (truth.shape[1], truth.shape[0]))
        # A submission: an 8-bit grey PNG, 0/255, at the original size, named by the image id.
        Image.fromarray(pred.astype(np.uint8) * 255, mode="L").save(pred_dir / f"{image_id}_segmentation.png")
        counts[image_id] = image_counts(pred, truth)

    isic = get_dataset_source("isic2017", real_samples / "ISIC2017")
    chosen = isic.pairs[::5][: len(ISIC_PLANS)]  # every fifth sample: several original sizes
    assert len(chosen) == len(ISIC_PLANS)
    for seed, (pair, plan) in enumerate(zip(chosen, ISIC_PLANS)):
        with Image.open(pair.image) as image:
            assert image.size == Image.open(pair.mask).size  # the size the prediction is resized to
        add(pair.id, pair.mask, _plan_prediction(plan, read_truth_mask(pair.mask), seed))

    # PH2 ids are IMDxxx; the scorer only knows ISIC_ + 7 digits (re.search(r'ISIC_[0-9]{7}') on the
    # truth file's stem), so the PH2 copies get made-up ids ISIC_92000xx (xx: the PH2 number).
    # The files themselves are the original 1-bit BMP masks. (IMD002's mask is RGB, which the
    # scorer refuses: see test_read_truth_mask_agrees_with_the_scorers_loader.)
    ph2 = get_dataset_source("ph2", real_samples / "PH2")
    one_bit = [p for p in ph2.pairs if Image.open(p.mask).mode == "1"][:PH2_COUNT]
    assert len(one_bit) == PH2_COUNT
    for k, pair in enumerate(one_bit):
        fake_id = f"ISIC_92{int(pair.id[3:]):05d}"
        plan = ISIC_PLANS[3 + 2 * k]
        add(fake_id, pair.mask, _plan_prediction(plan, read_truth_mask(pair.mask), 100 + k),
            truth_name=f"{fake_id}_segmentation.bmp")

    # Made-up truths for the freebies the real samples never need: an empty truth (predicted
    # empty, and predicted with a blob) and a truth covering the whole image.
    made = base / "made"
    made.mkdir()
    for fake_id, truth_value, prob in [
        ("ISIC_9100001", 0, np.zeros((WORKING, WORKING))),
        ("ISIC_9100002", 0, np.pad(np.ones((8, 8)), 28)),
        ("ISIC_9100003", 255, _box_blur(np.pad(np.ones((40, 40)), 12), 2)),
    ]:
        path = made / f"{fake_id}_segmentation.png"
        Image.fromarray(np.full((300, 410), truth_value, dtype=np.uint8), mode="L").save(path)
        add(fake_id, path, prob)
    return truth_dir, pred_dir, counts


@SCORER_WARNINGS
def test_macro_averages_equal_the_scorers(scored_folders):
    require_scorer()
    from isic_challenge_scoring.segmentation import SegmentationScore

    truth_dir, pred_dir, counts = scored_folders
    theirs = SegmentationScore.from_dir(truth_dir, pred_dir).macro_average
    ours = challenge_scores(np.array(list(counts.values())))
    assert set(theirs.index) == set(CHALLENGE_METRICS)
    for name in CHALLENGE_METRICS:
        assert abs(ours[name] - float(theirs[name])) <= TOL, (name, ours[name], float(theirs[name]))


@SCORER_WARNINGS
def test_per_image_scores_and_counts_equal_the_scorers(scored_folders):
    require_scorer()
    from isic_challenge_scoring.confusion import create_binary_confusion_matrix
    from isic_challenge_scoring.load_image import iter_image_pairs
    from isic_challenge_scoring.segmentation import SegmentationScore

    truth_dir, pred_dir, counts = scored_folders
    ids = list(counts)
    ours = per_image_scores(np.array([counts[i] for i in ids]))
    pairs = list(iter_image_pairs(truth_dir, pred_dir))
    assert sorted(p.image_id for p in pairs) == sorted(ids)
    for pair in pairs:
        row = ids.index(pair.image_id)
        cm = create_binary_confusion_matrix(pair.truth_image > 128, pair.prediction_image > 128)
        assert counts[pair.image_id] == (cm["TP"], cm["FP"], cm["FN"], cm["TN"]), pair.image_id
        # The scorer keeps only the mean; the mean over one image is that image's score.
        theirs = SegmentationScore([pair]).macro_average
        for name in CHALLENGE_METRICS:
            assert abs(ours[name][row] - float(theirs[name])) <= TOL, (pair.image_id, name)


def test_the_oracle_exercises_every_rule(scored_folders):
    _, _, counts = scored_folders
    scores = per_image_scores(np.array(list(counts.values())))
    jaccard = scores["jaccard"]
    tp, fp, fn, tn = np.array(list(counts.values())).T
    assert ((jaccard > 0) & (jaccard < THRESHOLD_JACCARD)).any()  # a Jaccard that the threshold zeroes
    assert ((jaccard >= THRESHOLD_JACCARD) & (jaccard < 1)).any()  # one it keeps
    assert ((tp + fp + fn) == 0).any()  # Jaccard/Dice freebie: empty truth, empty prediction
    assert ((tp + fn == 0) & (fp > 0)).any()  # sensitivity freebie beside a Jaccard of 0
    assert ((tn + fp) == 0).any()  # specificity freebie: truth covering the image
    assert ((tp + fp == 0) & (fn > 0)).any()  # an empty prediction on a lesion
    assert ((fn + tn == 0) & (fp > 0) & (tp > 0)).any()  # an all-foreground prediction on a lesion
