"""Tiny CT-like volumes and DICOM series written on the fly for the data tests.

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


def write_dicom_series(
    folder: Path,
    hu: np.ndarray,
    spacing=(0.8, 0.8, 2.0),
    origin=(-100.0, -120.0, 50.0),
    direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
    series_uid: str = "1.2.826.0.1.3680043.2.1125.1",
    skip_slices: tuple[int, ...] = (),
    file_prefix: str | None = None,
):
    """Write ``hu`` [X, Y, Z] as a CT DICOM series with SimpleITK (LPS geometry); return the
    SimpleITK image it came from."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    volume = sitk.GetImageFromArray(hu.transpose(2, 1, 0).astype(np.int16))
    volume.SetSpacing(spacing)
    volume.SetOrigin(origin)
    volume.SetDirection(direction)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    orientation = "\\".join(str(v) for v in (*direction[0::3], *direction[1::3]))
    for k in range(hu.shape[2]):
        if k in skip_slices:
            continue
        plane = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (
            ("0008|0060", "CT"),
            ("0020|000d", series_uid + ".0"),
            ("0020|000e", series_uid),
            ("0020|0032", "\\".join(f"{v:.6f}" for v in position)),
            ("0020|0037", orientation),
            ("0020|0013", str(k + 1)),
            ("0008|0018", f"{series_uid}.{k + 1}"),
        ):
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{file_prefix or series_uid}-{k:03d}.dcm"))
        writer.Execute(plane)
    return volume
