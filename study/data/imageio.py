"""Decoding one image/mask pair and resizing it to the working size.

Every way a file can be wrong (unreadable, truncated, not binary, not the
size of its image) ends in a DataError that names the file and says what was
expected. Nothing here knows about dataset layouts.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from study.errors import DataError

# Recorded in the cache metadata so a reader knows how the arrays were made.
RESIZE_METHOD = {
    "image": "Pillow BILINEAR resize of the RGB image straight to size x size (aspect not kept)",
    "mask": "Pillow BILINEAR resize of the {0,255} mask, then foreground = value >= 128",
}
RESIZE_TAG = "bilinear-t128"  # short form of RESIZE_METHOD, part of the cache key

MASK_THRESHOLD = 128
# The largest image read, in pixels: the biggest ISIC 2018 image is about 30 MP. Checked from the
# header before anything is decoded, so a small file claiming a huge size (a 164 KB PNG of 169 MP)
# costs nothing.
MAX_PIXELS = 64_000_000


_strict_lock = threading.Lock()
_strict_users = 0
_saved_truncated_setting = False


@contextlib.contextmanager
def _strict_decoding():
    # A user (or another library) may have switched Pillow to pad truncated
    # files with grey; a truncated JPEG must fail here instead. The setting is
    # global, and pairs are decoded on several threads: the first thread in
    # switches it off, the last one out restores it.
    global _strict_users, _saved_truncated_setting
    with _strict_lock:
        if _strict_users == 0:
            _saved_truncated_setting = ImageFile.LOAD_TRUNCATED_IMAGES
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        _strict_users += 1
    try:
        yield
    finally:
        with _strict_lock:
            _strict_users -= 1
            if _strict_users == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _saved_truncated_setting


class UnreadableFile(DataError):
    """A file is missing, truncated or not an image."""


class MaskNotBinary(DataError):
    """A mask holds values other than background and lesion."""


class SizeMismatch(DataError):
    """A mask is not the size of its image."""


def _open_decoded(path: Path, what: str) -> Image.Image:
    try:
        with _strict_decoding(), warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is judged below
            with Image.open(path) as opened:  # reads the header only
                width, height = opened.size
                if width * height > MAX_PIXELS:
                    raise UnreadableFile(f"{path}: the {what} claims {width}x{height} pixels "
                                         f"({width * height / 1e6:.0f} MP), over the limit of "
                                         f"{MAX_PIXELS / 1e6:.0f} MP; expected a dermoscopy image")
                opened.load()  # decode now
                return opened.copy()
    except FileNotFoundError:
        raise UnreadableFile(f"{path}: file not found; expected the {what}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableFile(f"{path}: cannot decode the {what} ({exc}); expected a readable image file") from None


def read_image(path: Path) -> np.ndarray:
    """The image as (H, W, 3) uint8 RGB."""
    image = _open_decoded(path, "image")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def read_mask(path: Path) -> np.ndarray:
    """The mask as (H, W) bool (True = lesion).

    Accepted: 1-bit masks (PH2), grey masks holding only {0,255} or only
    {0,1}, and colour masks whose pixels are pure black or pure white (PH2's
    IMD002). Anything else is an error, not something to threshold silently.
    """
    mask = _open_decoded(path, "mask")
    if mask.mode == "1":
        return np.asarray(mask, dtype=bool)
    if mask.mode in ("RGB", "RGBA"):
        rgb = np.asarray(mask.convert("RGB"))
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise MaskNotBinary(f"{path}: colour mask with unequal channels; expected a binary black/white mask")
        values = rgb[..., 0]
    elif mask.mode in ("L", "P", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(mask.convert("L") if mask.mode in ("P", "LA") else mask)
    else:
        raise MaskNotBinary(f"{path}: mask in unsupported mode {mask.mode!r}; expected a binary grey mask")
    distinct = np.unique(values)
    if not (set(distinct.tolist()) <= {0, 255} or set(distinct.tolist()) <= {0, 1}):
        shown = ", ".join(str(v) for v in distinct[:6].tolist()) + (", ..." if len(distinct) > 6 else "")
        raise MaskNotBinary(
            f"{path}: expected a binary mask ({{0,255}} or {{0,1}}), found {len(distinct)} distinct values ({shown})"
        )
    return values > 0


@dataclass(frozen=True)
class DecodedPair:
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def foreground_fraction(self) -> float:
        return float(self.mask.mean())


def read_pair(image_path: Path, mask_path: Path) -> DecodedPair:
    image = read_image(image_path)
    mask = read_mask(mask_path)
    if image.shape[:2] != mask.shape:
        raise SizeMismatch(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path.name} is "
            f"{image.shape[1]}x{image.shape[0]}; expected the same size"
        )
    return DecodedPair(image, mask)


def resize_mask_soft(mask: np.ndarray, size: int) -> np.ndarray:
    """A (H, W) bool mask resized bilinearly to (size, size) uint8 in [0, 255], not thresholded:
    the soft target the authors' release trains on (it resizes the mask tensor, then uses it as is)."""
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BILINEAR),
                      dtype=np.uint8)


def stretch_and_resize(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 stretched to [0, 255] by its own min and max, then resized to (size, size, 3)
    bilinearly in float32, channel by channel, and rounded to uint8: the release's order."""
    low, high = int(image.min()), int(image.max())
    stretched = (image.astype(np.float32) - low) * (255.0 / (high - low)) if high > low else np.zeros(image.shape,
                                                                                                      np.float32)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(stretched[..., c]), "F").resize(
        (size, size), Image.Resampling.BILINEAR)) for c in range(3)]
    return np.clip(np.rint(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)


def resize_pair(pair: DecodedPair, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(size, size, 3) uint8 image and (size, size) uint8 {0,1} mask."""
    image = Image.fromarray(pair.image).resize((size, size), Image.Resampling.BILINEAR)
    mask_array = (resize_mask_soft(pair.mask, size) >= MASK_THRESHOLD).astype(np.uint8)
    return np.asarray(image, dtype=np.uint8), mask_array
