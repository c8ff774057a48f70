"""Procedural dermoscopy-like images with exact masks: the embedded default dataset.

Each image is an irregular pigmented lesion with a fuzzy border, colour
variation and dark globules on a skin-tone background, with the distractors
that keep a brightness threshold from solving it: darker skin patches,
vignetting and the black corners of a dermoscope's field, dark hairs crossing
everything, lesions that are lighter than some backgrounds, and sensor noise.
The mask is the lesion's exact shape at pixel centres.

Image ``i`` of seed ``s`` depends only on ``(s, i)``, so a smaller count is a
prefix of a larger one and any size is the same scene rasterised finer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from study.errors import DataError

# (name, probability, RGB mean): dark and mid browns dominate as in ISIC; tan and
# pink lesions are about as bright as darker skin, which defeats a threshold.
LESION_KINDS = (
    ("dark brown", 0.35, (92.0, 58.0, 44.0)),
    ("brown", 0.30, (138.0, 92.0, 70.0)),
    ("tan", 0.20, (178.0, 132.0, 108.0)),
    ("pink", 0.15, (204.0, 124.0, 126.0)),
)
LIGHT_SKIN = np.array((236.0, 202.0, 182.0))
DARK_SKIN = np.array((152.0, 106.0, 82.0))
HAIR_COLOUR = np.array((38.0, 28.0, 24.0))
MIN_LESION_CONTRAST = 60.0  # RGB distance between lesion and skin colour


@dataclass(frozen=True)
class SyntheticSpec:
    """How many synthetic pairs, from which seed (the size is the cache's)."""

    count: int = 200
    seed: int = 0

    def __post_init__(self):
        if self.count < 1:
            raise DataError(f"synthetic count must be at least 1, got {self.count}")


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, roughly unit-variance noise varying over ``cells`` per side."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC))
    return field / (field.std() + 1e-6)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def _lesion(rng: np.random.Generator, x: np.ndarray, y: np.ndarray):
    """Mask (bool), soft alpha and normalised depth (0 at border, 1 at centre)."""
    cx, cy = np.clip(rng.normal(0.0, 0.18, size=2), -0.35, 0.35)
    # Lesions cover about 7-50% of the image (ISIC's masks: 6-71% in the samples, mean 33%).
    base_radius = rng.uniform(0.3, 0.8)
    aspect = rng.uniform(0.65, 1.0)
    angle = rng.uniform(0, np.pi)
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = (-(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)) / aspect
    rho = np.hypot(u, v)
    # Low harmonics make the outline asymmetric, high ones ragged. cos(k theta + phase)
    # is the real part of (e^{i theta})^k e^{i phase}: powers are cheaper than cosines.
    direction = (u + 1j * v) / np.maximum(rho, 1e-6)
    power = direction.copy()
    radius = np.ones_like(rho)
    for k in range(2, 10):
        power *= direction
        amplitude = rng.uniform(0.0, 0.16) / k**0.7
        radius += amplitude * (power * np.exp(1j * rng.uniform(0, 2 * np.pi))).real
    radius = base_radius * np.maximum(radius, 0.35)
    depth = (radius - rho) / base_radius
    mask = depth > 0
    softness = rng.uniform(0.02, 0.08)  # how fuzzy the border looks, not where it is
    alpha = _sigmoid(depth / softness)
    return mask, alpha, np.clip(depth * base_radius / radius, 0.0, 1.0)


def _globules(rng: np.random.Generator, size: int) -> np.ndarray:
    """Dark dots, (size, size) float in [0, 1]: Gaussian blobs drawn in small windows."""
    dots = np.zeros((size, size), np.float32)
    for _ in range(rng.integers(0, 14)):
        centre = (rng.uniform(-0.6, 0.6, 2) + 1) / 2 * size
        sigma = rng.uniform(0.008, 0.03) / 2 * size
        low = np.maximum(np.floor(centre - 3 * sigma), 0).astype(int)
        high = np.minimum(np.ceil(centre + 3 * sigma) + 1, size).astype(int)
        cols = np.arange(low[0], high[0]) + 0.5 - centre[0]
        rows = np.arange(low[1], high[1]) + 0.5 - centre[1]
        blob = np.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / (2 * sigma**2))
        window = dots[low[1] : high[1], low[0] : high[0]]
        np.maximum(window, blob, out=window)
    return dots


def _hairs(rng: np.random.Generator, size: int) -> np.ndarray:
    """Alpha of dark hair strands, (size, size) float in [0, 1]."""
    if rng.random() < 0.45:
        return np.zeros((size, size), np.float32)
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    scale = size / 256
    for _ in range(rng.integers(2, 11)):
        start, control, end = rng.uniform(-0.1, 1.1, size=(3, 2)) * size
        t = np.linspace(0, 1, 24)[:, None]
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
        width = max(1, int(round(rng.uniform(1.0, 2.6) * scale)))
        draw.line([tuple(p) for p in curve.tolist()], fill=int(rng.uniform(170, 255)), width=width)
    layer = layer.filter(ImageFilter.GaussianBlur(0.3 + 0.4 * scale))
    return np.asarray(layer, dtype=np.float32) / 255.0


def synthetic_pair(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of ``seed``: (size, size, 3) uint8 and (size, size) uint8 {0,1}."""
    rng = np.random.default_rng([seed, index])
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(centres, centres, indexing="ij")  # pixel centres in [-1, 1]

    # Skin: a tone between light and dark, fine texture, darker blotches.
    tone = rng.uniform(0, 1)
    skin = ((1 - tone) * LIGHT_SKIN + tone * DARK_SKIN + rng.normal(0, 6, 3)).astype(np.float32)
    texture = 1 + 0.035 * _smooth_field(rng, size, 12)
    blotch = _sigmoid((_smooth_field(rng, size, int(rng.integers(3, 6))) - rng.uniform(0.2, 1.2)) / 0.3)
    blotch_depth = rng.uniform(0.0, 0.35)
    background = skin[None, None, :] * (texture * (1 - blotch_depth * blotch))[..., None]
    background = background * np.array([1.0, 0.93, 0.9], np.float32) ** (blotch[..., None] * 2)  # redder

    # Lesion: a colour from LESION_KINDS, darker towards the centre, mottled, with globules.
    probabilities = np.array([kind[1] for kind in LESION_KINDS])
    kind = rng.choice(len(LESION_KINDS), p=probabilities / probabilities.sum())
    colour = np.array(LESION_KINDS[kind][2]) * rng.uniform(0.88, 1.1, 3)
    # A lesion the colour of its skin would be unlearnable: keep a minimum colour
    # distance, reached by darkening (how real pale lesions still differ from skin).
    while np.linalg.norm(colour - skin) < MIN_LESION_CONTRAST:
        colour = colour * 0.92
    colour = colour.astype(np.float32)
    mask, alpha, depth = _lesion(rng, x, y)
    core = depth ** rng.uniform(0.5, 2.0) * rng.uniform(0.1, 0.45)
    mottling = 1 + 0.09 * _smooth_field(rng, size, int(rng.integers(6, 14)))
    lesion = colour[None, None, :] * ((1 - core) * mottling)[..., None]
    lesion = lesion * (1 - 0.45 * _globules(rng, size) * mask)[..., None]
    opacity = np.clip(rng.uniform(0.82, 1.0) + 0.08 * _smooth_field(rng, size, 5), 0.7, 1.0)
    blend = (alpha * opacity)[..., None]
    picture = background * (1 - blend) + lesion * blend

    # Illumination: vignetting, sometimes the black rim of the dermoscope.
    radius2 = x**2 + y**2
    picture = picture * (1 - rng.uniform(0.03, 0.45) * radius2 / 2)[..., None]
    if rng.random() < 0.35:
        rim = _sigmoid((np.sqrt(radius2) - rng.uniform(0.95, 1.3)) / rng.uniform(0.01, 0.06))
        picture = picture * (1 - rng.uniform(0.75, 0.95) * rim)[..., None]

    hair = _hairs(rng, size)[..., None] * rng.uniform(0.7, 0.95)
    picture = picture * (1 - hair) + HAIR_COLOUR * hair
    picture = picture + rng.uniform(2, 6) * rng.standard_normal(picture.shape, dtype=np.float32)
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8), mask.astype(np.uint8)


def make_synthetic(count: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` synthetic pairs: images (N, size, size, 3) uint8, masks (N, size, size) uint8 {0,1}."""
    if count < 1 or size < 8:
        raise DataError(f"synthetic data needs count >= 1 and size >= 8, got count={count}, size={size}")
    images = np.empty((count, size, size, 3), np.uint8)
    masks = np.empty((count, size, size), np.uint8)
    for index in range(count):
        images[index], masks[index] = synthetic_pair(seed, index, size)
    return images, masks


def synthetic_ids(count: int) -> tuple[str, ...]:
    return tuple(f"synthetic_{index:06d}" for index in range(count))
