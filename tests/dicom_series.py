"""DICOM series written on the fly (SimpleITK, LPS geometry) for the tests of every package."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_dicom_series(
    folder: Path,
    hu: np.ndarray,
    spacing=(0.8, 0.8, 2.0),
    origin=(-100.0, -120.0, 50.0),
    direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
    series_uid: str = "1.2.826.0.1.3680043.2.1125.1",
    skip_slices: tuple[int, ...] = (),
    file_prefix: str | None = None,
    modality: str = "CT",
    frame_of_reference_uid: str | None = None,
):
    """Write ``hu`` [X, Y, Z] as a DICOM series of ``modality`` with SimpleITK (LPS geometry),
    with a FrameOfReferenceUID when given (SimpleITK writes none); return the SimpleITK image it
    came from."""
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
            ("0008|0060", modality),
            ("0020|000d", series_uid + ".0"),
            ("0020|000e", series_uid),
            ("0020|0032", "\\".join(f"{v:.6f}" for v in position)),
            ("0020|0037", orientation),
            ("0020|0013", str(k + 1)),
            ("0008|0018", f"{series_uid}.{k + 1}"),
            *([("0020|0052", frame_of_reference_uid)] if frame_of_reference_uid else []),
        ):
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{file_prefix or series_uid}-{k:03d}.dcm"))
        writer.Execute(plane)
    return volume
