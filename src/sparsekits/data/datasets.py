"""Finding the cases of a dataset folder: KiTS23, nnU-Net raw, or a plain folder of images.

- KiTS23: ``case_XXXXX/imaging.nii.gz`` (+ ``segmentation.nii.gz`` when labelled).
- nnU-Net raw: ``dataset.json``, ``imagesTr/NAME_0000.nii.gz``, ``labelsTr/NAME.nii.gz``.
- Plain (for prediction): image files (NIfTI, NRRD, MetaImage: layout's IMAGE_SUFFIXES) and
  DICOM series subfolders; also one such file or one DICOM series folder given directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sparsekits.data.io import is_dicom_file, is_image_file
from sparsekits.errors import InputError
from sparsekits.layout import (
    KITS_CASE_GLOB,
    KITS_IMAGE,
    KITS_LABEL,
    NIFTI_OUT,
    NNUNET_CHANNEL,
    NNUNET_DATASET_JSON,
    NNUNET_IMAGES,
    NNUNET_LABELS,
    image_stem,
)


@dataclass(frozen=True)
class Case:
    case_id: str
    image: Path  # image file (NIfTI, NRRD, MetaImage) or DICOM series folder
    label: Path | None = None


def find_cases(path: str | Path) -> list[Case]:
    """The cases under ``path``, sorted by id, in whichever supported layout it uses."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    for finder in (_kits23_cases, _nnunet_cases, _plain_cases):
        cases = finder(path)
        if cases:
            return sorted(cases, key=lambda case: case.case_id)
    raise InputError(
        path,
        "no cases found: expected the KiTS23 layout (case_XXXXX/imaging.nii.gz), the nnU-Net "
        "raw layout (dataset.json, imagesTr/), or image files (NIfTI, NRRD, MetaImage) / DICOM "
        "series folders",
    )


def _kits23_cases(path: Path) -> list[Case]:
    if not path.is_dir():
        return []
    cases = []
    for folder in path.glob(KITS_CASE_GLOB):
        image = folder / KITS_IMAGE
        if image.is_file():
            label = folder / KITS_LABEL
            cases.append(Case(folder.name, image, label if label.is_file() else None))
    return cases


def _nnunet_cases(path: Path) -> list[Case]:
    images = path / NNUNET_IMAGES
    if not (path / NNUNET_DATASET_JSON).is_file() or not images.is_dir():
        return []
    try:
        ending = json.loads((path / NNUNET_DATASET_JSON).read_text()).get("file_ending", NIFTI_OUT)
    except (OSError, ValueError) as error:
        raise InputError(path / NNUNET_DATASET_JSON, f"unreadable JSON ({error})") from error
    cases = []
    for image in images.glob(f"*{NNUNET_CHANNEL}{ending}"):
        name = image.name[: -len(NNUNET_CHANNEL + ending)]
        label = path / NNUNET_LABELS / f"{name}{ending}"
        cases.append(Case(name, image, label if label.is_file() else None))
    return cases


def _plain_cases(path: Path) -> list[Case]:
    if path.is_file():
        return [Case(image_stem(path), path)] if is_image_file(path) else []
    if _holds_dicom(path):
        return [Case(path.name, path)]
    cases = []
    for entry in path.iterdir():
        if entry.is_file() and is_image_file(entry) and not entry.name.startswith("."):
            cases.append(Case(image_stem(entry), entry))
        elif entry.is_dir() and _holds_dicom(entry):
            cases.append(Case(entry.name, entry))
    return cases


def _holds_dicom(folder: Path) -> bool:
    return any(entry.is_file() and is_dicom_file(entry) for entry in folder.iterdir())
