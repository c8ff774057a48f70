"""Write paper/release/input_fixture.npz: the network inputs the authors' release makes of real images.

    python paper/release/make_input_fixture.py RELEASE_CHECKOUT SAMPLES [OUT]

RELEASE_CHECKOUT is a checkout of LinLinLin-X/UltraLBM-UNet at the commit named in
RELEASE_COMMIT; SAMPLES is the ISIC 2017 folder of the real samples
(``../shared/data/real-samples/ISIC2017``). Nothing of the release is copied here:
its ``dataset/dataset.py`` (NPY_datasets) reads the images and its
``configs/config_setting.py`` test transform (``myNormalize('isic17')``,
``myToTensor``, ``myResize(256, 256)`` from its ``utils.py``) makes each input,
exactly as its ``test.py`` does. The images are linked into the ``val/images`` and
``val/masks`` folders that NPY_datasets lists.

The release was tested with torchvision 0.23.0 (its README); that wheel's compiled
extension needs CUDA libraries, so where it cannot load, this script declares the
two operator schemas torchvision registers fake kernels for at import (``nms``,
``qnms``). The resize itself is PyTorch's antialiased bilinear interpolation,
which no stand-in touches.

A full input is 3 x 256 x 256 floats; the fixture keeps, for every image, the
values at 4096 fixed pixel positions (all three channels) as uint16 in 1/256
grey levels, and the whole tensor's min, max and mean.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RELEASE_COMMIT = "0a99c437bbc2d5a3a1b90a6ca040592f7f023411"
POSITIONS = 4096
SIZE = 256
FIXED_POINT = 256  # stored value = round(grey level * 256)


def _declare_torchvision_ops() -> None:
    import torch

    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError:  # its extension did not load: the schemas its fake kernels need are missing
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    library = torch.library.Library("torchvision", "DEF")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    _declare_torchvision_ops.library = library  # kept alive for the process


def _linked_folder(samples: Path, where: Path) -> list[str]:
    images = sorted((samples / "ISIC-2017_Training_Data").glob("ISIC_*.jpg"))
    (where / "val" / "images").mkdir(parents=True)
    (where / "val" / "masks").mkdir(parents=True)
    ids = []
    for image in images:
        mask = samples / "ISIC-2017_Training_Part1_GroundTruth" / f"{image.stem}_segmentation.png"
        (where / "val" / "images" / image.name).symlink_to(image.resolve())
        (where / "val" / "masks" / mask.name).symlink_to(mask.resolve())
        ids.append(image.stem)
    return ids


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    checkout, samples = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    out = Path(argv[2]) if len(argv) == 3 else Path(__file__).with_name("input_fixture.npz")
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    if commit != RELEASE_COMMIT:
        print(f"{checkout} is at {commit or 'no git commit'}, expected {RELEASE_COMMIT}", file=sys.stderr)
        return 2
    _declare_torchvision_ops()
    import torchvision

    sys.path.insert(0, str(checkout))
    from configs.config_setting import setting_config
    from dataset.dataset import NPY_datasets

    positions = np.sort(np.random.default_rng(2026).choice(SIZE * SIZE, POSITIONS, replace=False))
    with tempfile.TemporaryDirectory() as tmp:
        ids = _linked_folder(samples, Path(tmp))
        dataset = NPY_datasets(tmp + "/", setting_config, train=False)
        values, summary = [], []
        for index in range(len(dataset)):
            image, _ = dataset[index]
            array = image.numpy().astype(np.float64).reshape(3, -1)
            values.append(np.rint(array[:, positions] * FIXED_POINT).astype(np.uint16))
            summary.append((array.min(), array.max(), array.mean()))
    np.savez_compressed(out, ids=np.asarray(ids), positions=positions, values=np.stack(values),
                        summary=np.asarray(summary), fixed_point=FIXED_POINT, commit=RELEASE_COMMIT,
                        torchvision=torchvision.__version__, dataset=setting_config.datasets)
    print(f"wrote {out}: {len(ids)} images from the release at {RELEASE_COMMIT} (torchvision {torchvision.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
