"""The ISIC challenge's own segmentation scores, beside the paper's (torch-free: numpy and Pillow).

The paper's code (``study.metrics``) pools every pixel of a split at the
working size (256x256) into ONE confusion matrix. The ISIC 2016-2018 lesion
segmentation challenges score differently, and this module reproduces their
scorer (the ``isic-challenge-scoring`` package, 5.6.0: ``segmentation.py``,
``metrics.py``, ``load_image.py``, ``confusion.py``):

1. Each image at its ORIGINAL resolution. The prediction must be the size of
   the released truth mask (the scorer refuses any other size), so a
   working-size probability map is resized to the image's size and thresholded
   (:func:`upsample_prediction`); the truth mask is the released file,
   binarised as the scorer does (:func:`read_truth_mask`).
2. One confusion matrix per image (:func:`image_counts`), and every metric per
   image (:func:`per_image_scores`). Where a ratio is undefined (0/0) the scorer
   gives a "freebie" 1.0: sensitivity when the truth is empty, specificity when
   the truth covers the whole image, Jaccard and Dice when truth and
   prediction are both empty. Threshold Jaccard is the Jaccard where it is at
   least 0.65 (``>=``, so exactly 0.65 is kept) and 0 below.
3. The mean over images, each image weighing the same (macro average,
   :func:`challenge_scores`).

Scoring one image of a split, from a working-size probability map ``prob``::

    truth = read_truth_mask(mask_path)
    pred = upsample_prediction(prob, (truth.shape[1], truth.shape[0]))
    counts = image_counts(pred, truth)

Counts are ``(tp, fp, fn, tn)``, the order of ``study.train.confusion`` and of
``per_image_<split>.csv``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from study.errors import DataError

# The scorer's per-image metrics, named as in its ``macro_average`` Series.
CHALLENGE_METRICS = ("jaccard", "threshold_jaccard", "dice", "sensitivity", "specificity", "accuracy")
# segmentation.py: ``metrics.binary_threshold_jaccard(..., threshold=0.65)``, kept when ``>=``.
THRESHOLD_JACCARD = 0.65
# segmentation.py binarises both masks with ``> 128`` on the 8-bit grey values.
# (Stricter than the harness's resize, which keeps ``>= 128``: a grey 128 is
# background here. Released masks hold only 0 and 255, so it never matters for them.)
TRUTH_THRESHOLD = 128
# The harness's own threshold on probabilities, with its comparison: foreground
# is ``prob >= 0.5``, as in ``study.train.confusion.confusion_counts`` (not
# imported: that module needs torch).
PREDICTION_THRESHOLD = 0.5

UPSAMPLE_METHOD = (
    "Pillow BILINEAR resize of the float32 ('F') probability map to the original width x height, "
    "then foreground = prob >= 0.5"
)


def upsample_prediction(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The working-size probability map at the original image size, thresholded: (height, width) bool.

    ``prob`` is (h, w) with values in [0, 1]; ``size`` is ``(width, height)``,
    Pillow's order (``Image.open(path).size``). The map is resized as a float32
    ('F') Pillow image with BILINEAR, which for an enlargement is the usual
    half-pixel-centred bilinear interpolation (torch's ``align_corners=False``)
    with the border pixels repeated; a reduction (a working size larger than
    the image) is Pillow's antialiased triangle filter. Then ``>= 0.5``.
    Probabilities go through float32, so a value within ~1e-7 of 0.5 may land
    on either side.
    """
    values = np.asarray(prob)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"prediction: expected a non-empty (h, w) probability map, got shape {values.shape}")
    if values.dtype.kind not in "fiub":
        raise TypeError(f"prediction: expected probabilities as numbers, got dtype {values.dtype}")
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size: expected (width, height), got {size!r}") from None
    if width <= 0 or height <= 0 or (width, height) != tuple(size):
        raise ValueError(f"size: expected positive integers (width, height), got {size!r}")
    values = np.ascontiguousarray(values, dtype=np.float32)
    if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
        raise ValueError(
            "prediction: expected probabilities in [0, 1] (after the sigmoid), "
            f"found values in [{np.nanmin(values)}, {np.nanmax(values)}]"
            + (" and NaN/inf" if not np.isfinite(values).all() else "")
        )
    image = Image.fromarray(values)
    assert image.mode == "F", image.mode
    resized = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized) >= PREDICTION_THRESHOLD


def _grey_values(image: Image.Image, path: Path) -> np.ndarray:
    """The 8-bit grey values the scorer would threshold (its own loader: modes '1' and 'L' only)."""
    if image.mode == "1":
        # As load_image.load_segmentation_image: a 1-bit mask becomes 0/255 grey.
        return np.asarray(image.convert("L"))
    if image.mode == "L":
        return np.asarray(image)
    # The scorer refuses every other mode ("is not single-channel (greyscale)").
    # A colour mask whose channels agree (PH2's IMD002 is such an RGB file) is
    # read here as its grey value; any other colour mask is refused too.
    if image.mode in ("RGB", "RGBA", "P"):
        rgb = np.asarray(image.convert("RGB"))
        grey = rgb[..., 0]
        if not (np.array_equal(grey, rgb[..., 1]) and np.array_equal(grey, rgb[..., 2])):
            raise DataError(f"{path}: colour mask with unequal channels; expected a grey or black/white mask")
        return grey
    if image.mode == "LA":
        return np.asarray(image.getchannel("L"))
    raise DataError(f"{path}: mask in mode {image.mode!r}; expected an 8-bit grey ('L') or 1-bit ('1') mask")


def read_truth_mask(path: str | os.PathLike) -> np.ndarray:
    """The released mask file as the challenge reads it: (height, width) bool, foreground = grey > 128.

    Modes '1' and 'L' are read exactly as the scorer reads them; a colour mask
    whose channels are equal (which the scorer would refuse) is read as its
    grey value. No resizing: this is the mask at the image's original size.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            values = _grey_values(image, path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; expected a ground-truth mask") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot decode the mask ({exc}); expected a readable image file") from None
    return values > TRUTH_THRESHOLD


def image_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` of one image, from two bool masks of the same shape."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    for name, array in (("prediction", pred), ("truth", truth)):
        if array.dtype != np.bool_:
            # Refused rather than cast: bool(255) and bool(1) are both True, which
            # is not the scorer's > 128 rule on a grey mask.
            raise TypeError(
                f"{name}: expected a bool mask (upsample_prediction / read_truth_mask), got dtype {array.dtype}"
            )
    if pred.shape != truth.shape:
        raise ValueError(f"prediction is {pred.shape} but the truth is {truth.shape}; expected the same shape")
    tp = int(np.count_nonzero(pred & truth))
    predicted, actual = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    fp, fn = predicted - tp, actual - tp
    return tp, fp, fn, int(pred.size) - tp - fp - fn


def _as_counts(counts) -> np.ndarray:
    array = np.asarray(counts)
    if array.shape == (4,):
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"counts: expected an (n, 4) array of tp, fp, fn, tn; got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise TypeError(f"counts: expected integer pixel counts, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if (array < 0).any():
        raise ValueError("counts: negative pixel count; expected tp, fp, fn, tn >= 0")
    if (array.sum(axis=1) == 0).any():
        row = int(np.flatnonzero(array.sum(axis=1) == 0)[0])
        raise ValueError(f"counts: row {row} counts no pixel; expected every image to have at least one")
    return array


def _ratio_or_freebie(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # num / den in float64 (the scorer divides numpy int64 scalars: the same
    # IEEE division), and the scorer's freebie 1.0 where den == 0.
    return np.divide(num, den, out=np.ones(num.shape, dtype=np.float64), where=den != 0)


def per_image_scores(counts) -> dict[str, np.ndarray]:
    """Each challenge metric per image, from (n, 4) counts ``tp, fp, fn, tn``; keys in CHALLENGE_METRICS order."""
    tp, fp, fn, tn = _as_counts(counts).T
    jaccard = _ratio_or_freebie(tp, tp + fp + fn)
    scores = {
        "jaccard": jaccard,
        "threshold_jaccard": np.where(jaccard >= THRESHOLD_JACCARD, jaccard, 0.0),
        "dice": _ratio_or_freebie(2 * tp, 2 * tp + fp + fn),
        "sensitivity": _ratio_or_freebie(tp, tp + fn),
        "specificity": _ratio_or_freebie(tn, tn + fp),
        "accuracy": (tp + tn) / (tp + fp + fn + tn),
    }
    return {name: scores[name] for name in CHALLENGE_METRICS}


def challenge_scores(counts) -> dict[str, float]:
    """The challenge's score of a set of images: each metric averaged over images (macro average)."""
    scores = per_image_scores(counts)
    if len(scores["jaccard"]) == 0:
        raise ValueError("counts: no image; expected at least one to average over")
    return {name: float(np.mean(values)) for name, values in scores.items()}
