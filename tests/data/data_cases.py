"""Tiny CT-like volumes written on the fly for the data tests (DICOM: tests/dicom_series.py).

(A uniquely named module: `from conftest import` would pick whichever conftest.py loaded first.)
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

LPS_AFFINE = np.array(
    [[-1.5, 0, 0, 40.0], [0, -1.5, 0, 30.0], [0, 0, 2.5, -20.0], [0, 0, 0, 1]], dtype=float
)


def synthetic_case(shape=(48, 52, 30), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """HU (int16) and labels (uint8): air, a body ellipse, two kidneys, a tumour and a cyst."""
    rng = np.random.default_rng(seed)
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    cx, cy, cz = (n / 2 for n in shape)
    hu = np.full(shape, -1000, dtype=np.int16)
    hu[
        np.broadcast_to(
            ((x - cx) / (0.45 * shape[0])) ** 2 + ((y - cy) / (0.4 * shape[1])) ** 2 <= 1, shape
        )
    ] = 40
    labels = np.zeros(shape, dtype=np.uint8)
    for side in (-1, 1):
        kx = cx + side * 0.25 * shape[0]
        kidney = ((x - kx) / 5) ** 2 + ((y - cy) / 6) ** 2 + ((z - cz) / 7) ** 2 <= 1
        labels[kidney], hu[kidney] = 1, 180
    tumour = ((x - (cx - 0.25 * shape[0])) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) <= 6
    labels[tumour], hu[tumour] = 2, 90
    cyst = ((x - (cx + 0.25 * shape[0])) ** 2 + (y - cy - 3) ** 2 + (z - cz) ** 2) <= 3
    labels[cyst], hu[cyst] = 3, 10
    hu = (hu + rng.normal(0, 5, shape)).astype(np.int16)
    return hu, labels


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray = LPS_AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def write_kits_case(root: Path, case_id: str, seed: int = 0, affine=LPS_AFFINE) -> Path:
    hu, labels = synthetic_case(seed=seed)
    write_nifti(root / case_id / "imaging.nii.gz", hu, affine)
    write_nifti(root / case_id / "segmentation.nii.gz", labels, affine)
    return root / case_id
