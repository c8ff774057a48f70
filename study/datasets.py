"""The datasets the harness knows by name, and where each one is published.

The download addresses and folder names live here once, so that error
messages, ``data check`` and the README say the same thing. Torch-free and
below both the config (which names the datasets) and the data package (which
reads them).
"""

from __future__ import annotations

from dataclasses import dataclass

from study.errors import DataError

# The synthetic set's generator (study.data.synthetic), part of every synthetic run's config and
# of its cache key: bump it whenever the pictures change.
SYNTHETIC_GENERATOR_VERSION = 2


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # what the user types: ``isic2017``
    title: str  # what a report prints: ``ISIC 2017 Task 1``
    download: str  # where the original release is published
    files: str  # which archives of that release to unpack into one root
    paper_count: str  # how many pairs the paper used, for the user to compare
    needs_root: bool = True
    pairs: int | None = None  # image/mask pairs of the release the paper used (cost estimates)
    label: str = ""  # a table's column header: ``ISIC 2017``

    @property
    def env_var(self) -> str:
        return f"STUDY_DATA_{self.name.upper()}"


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="isic2017",
            title="ISIC 2017 Task 1",
            download="https://challenge.isic-archive.com/data/#2017",
            files=(
                "ISIC-2017_Training_Data.zip, ISIC-2017_Training_Part1_GroundTruth.zip, "
                "ISIC-2017_Validation_Data.zip, ISIC-2017_Validation_Part1_GroundTruth.zip"
            ),
            paper_count="2,150 (2,000 training + 150 validation)",
            pairs=2150,
            label="ISIC 2017",
        ),
        DatasetInfo(
            name="isic2018",
            title="ISIC 2018 Task 1",
            download="https://challenge.isic-archive.com/data/#2018",
            files=(
                "ISIC2018_Task1-2_Training_Input.zip, ISIC2018_Task1_Training_GroundTruth.zip, "
                "ISIC2018_Task1-2_Validation_Input.zip, ISIC2018_Task1_Validation_GroundTruth.zip"
            ),
            paper_count="2,694 (2,594 training + 100 validation)",
            pairs=2694,
            label="ISIC 2018",
        ),
        DatasetInfo(
            name="ph2",
            title="PH2",
            download="https://www.fc.up.pt/addi/ph2%20database.html",
            files="PH2Dataset.rar (unpacks to PH2Dataset/PH2 Dataset images/IMDxxx/...)",
            paper_count="200 (all used for evaluation only)",
            pairs=200,
            label="PH2",
        ),
        DatasetInfo(
            name="synthetic",
            title="synthetic dermoscopy-like lesions",
            download="(generated; nothing to download)",
            files="",
            paper_count="(not in the paper)",
            label="Synthetic",
            needs_root=False,
        ),
    )
}

REAL_DATASETS = tuple(name for name, info in DATASETS.items() if info.needs_root)


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}") from None
