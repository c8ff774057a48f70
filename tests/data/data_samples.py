"""Small dataset folders built in tmp_path from copies of the real samples.

Bad-input cases (truncated JPEG, missing mask, wrong-size mask, ...) are made
by damaging these copies, never the shared originals.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ISIC2017_IMAGES = "ISIC-2017_Training_Data"
ISIC2017_MASKS = "ISIC-2017_Training_Part1_GroundTruth"
PH2_CASES = Path("PH2Dataset") / "PH2 Dataset images"


def isic_ids(real_samples: Path, count: int | None = None) -> list[str]:
    ids = sorted(p.stem for p in (real_samples / "ISIC2017" / ISIC2017_IMAGES).glob("ISIC_*.jpg"))
    return ids[:count] if count else ids


def copy_isic_pair(real_samples: Path, sample_id: str, image_dest: Path, mask_dest: Path, mask_name: str | None = None):
    source = real_samples / "ISIC2017"
    image_dest.mkdir(parents=True, exist_ok=True)
    mask_dest.mkdir(parents=True, exist_ok=True)
    # copyfile, not copy: the shared originals are read-only and the copies get damaged.
    shutil.copyfile(source / ISIC2017_IMAGES / f"{sample_id}.jpg", image_dest / f"{sample_id}.jpg")
    mask_file = mask_name or f"{sample_id}_segmentation.png"
    shutil.copyfile(source / ISIC2017_MASKS / f"{sample_id}_segmentation.png", mask_dest / mask_file)


def make_isic2017(real_samples: Path, root: Path, ids: list[str], part: str = "Training") -> Path:
    """An ISIC 2017 release root holding ``ids`` in the ``part`` folders."""
    images = root / f"ISIC-2017_{part}_Data"
    masks = root / f"ISIC-2017_{part}_Part1_GroundTruth"
    for sample_id in ids:
        copy_isic_pair(real_samples, sample_id, images, masks)
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    return root


def make_pre_split(real_samples: Path, root: Path, train: list[str], val: list[str]) -> Path:
    """The MALUNet / EGE-UNet download convention: train|val / images|masks."""
    for part, ids in (("train", train), ("val", val)):
        for sample_id in ids:
            copy_isic_pair(real_samples, sample_id, root / part / "images", root / part / "masks")
    return root


def make_ph2(real_samples: Path, root: Path, ids: list[str]) -> Path:
    # File by file: copytree would also copy the read-only mode of the shared folders.
    for case in ids:
        source = real_samples / "PH2" / PH2_CASES / case
        for path in source.rglob("*.bmp"):
            target = root / PH2_CASES / path.relative_to(source.parent)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return root


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
